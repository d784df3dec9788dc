/**
 * Teachers, aggregated targets and students scored alike on one split: which
 * items count, what they cost, and one row shape for eval.ts's table and JSON.
 * The figures themselves come from ./metrics.ts; a student's predictions from
 * ./student.ts (it loads TensorFlow.js, so it is a separate file).
 */
import { DistilleryError } from '../errors.ts';
import type { Store, TaskRow } from '../store/store.ts';
import { buildTargets, loadView, resolveTeachers, taskItems, type TaskItems, type TargetsOptions } from '../targets/from-store.ts';
import { softmaxT } from '../targets/softmax.ts';
import { classificationMetrics, type ClassificationMetrics } from './metrics.ts';

export type EvalKind = 'teacher' | 'targets' | 'student';

/** What labeling cost: the money recorded in the store (every paid response, valid or not) over the items that got a label. */
export interface EvalCost {
  /** Total paid, in the price table's currency (USD). */
  paid: number;
  /** Items (all splits) with a valid label from it: what was paid for. */
  labeled: number;
  /** 1000 · paid / labeled; 0 for a student (no API call). */
  per1000: number;
}

export interface Evaluation {
  kind: EvalKind;
  /** A teacher's name (or name#run), the aggregation (`mean(a,b)`), or the student's folder. */
  name: string;
  split: string;
  /** Gold-labelled items of the split, and how many of them it answered: the metrics are over these. */
  gold: number;
  answered: number;
  metrics: ClassificationMetrics;
  cost: EvalCost;
  /** Students: wall-clock milliseconds per item of predicting the split (batches of 256, after a warm-up batch). */
  latencyMsPerItem: number | null;
  /** Students: agreement with the teachers' aggregated label over the split's items that have one. */
  teacherAgreement?: number | null;
}

/** The gold-labelled items of a split (indices into items.items), refused when there are none. */
export function goldItemsOf(task: TaskRow, items: TaskItems, split: string): number[] {
  const idx: number[] = [];
  items.items.forEach((it, i) => {
    if (it.split === split && items.gold[i] !== null) idx.push(i);
  });
  if (idx.length === 0) throw noGoldItems(task, split, [...new Set(items.items.map((it) => it.split))].sort());
  return idx;
}

export function noGoldItems(task: TaskRow, split: string, splits: string[]): DistilleryError {
  return new DistilleryError(`task "${task.name}" has no gold-labelled items in split "${split}" (splits: ${splits.join(', ') || 'none'})`);
}

/** One labeler's answers on the split's gold items: those with an answer are scored. */
function scored(
  labels: readonly string[],
  items: TaskItems,
  idx: number[],
  hard: (number | null)[],
  probs: (ArrayLike<number> | null)[],
): { answered: number; metrics: ClassificationMetrics } {
  const kept = idx.filter((i) => hard[i] !== null);
  return {
    answered: kept.length,
    metrics: classificationMetrics(
      labels,
      kept.map((i) => items.gold[i]!),
      kept.map((i) => hard[i]!),
      kept.map((i) => probs[i]),
    ),
  };
}

function costOf(store: Store, runIds: number[], labeled: number): EvalCost {
  const paid = runIds.reduce((s, id) => s + store.runCost(id), 0);
  return { paid, labeled, per1000: labeled ? (1000 * paid) / labeled : 0 };
}

/**
 * Each teacher (`teachers`: a comma list of names or run ids, default all, the reviewers' runs included) on
 * a split. A teacher's answer is its stated (hard) label; its probabilities
 * are its stored soft label at temperature 1, where it has one.
 */
export function evaluateTeachers(store: Store, task: TaskRow, split: string, teachers?: string): Evaluation[] {
  const items = taskItems(store, task);
  const idx = goldItemsOf(task, items, split);
  // Reviewers' runs (human:NAME) are scored like any teacher against imported gold.
  return resolveTeachers(store, task, teachers, { humans: true }).map((source) => {
    const view = loadView(store, task, items, source);
    const probs = view.logprobs.map((z) => (z ? softmaxT(z, 1) : null));
    const labeled = view.hard.filter((h) => h !== null).length;
    return {
      kind: 'teacher',
      name: source.name,
      split,
      gold: idx.length,
      ...scored(task.labels, items, idx, view.hard, probs),
      cost: costOf(
        store,
        source.runs.map((r) => r.id),
        labeled,
      ),
      latencyMsPerItem: null,
    };
  });
}

/**
 * The training target train.ts would build with the same options, on a split.
 * Weighted aggregation and calibration fit on the train split's gold, so only
 * another split measures them honestly. Its cost is every chosen teacher's.
 */
export function evaluateTargets(store: Store, task: TaskRow, split: string, o: TargetsOptions): Evaluation {
  const t = buildTargets(store, task, o);
  const idx = goldItemsOf(task, t.items, split);
  const labeled = t.hard.filter((h) => h !== null).length;
  return {
    kind: 'targets',
    name: targetsName(
      o,
      t.teachers.map((s) => s.name),
    ),
    split,
    gold: idx.length,
    ...scored(task.labels, t.items, idx, t.hard, t.probs),
    cost: costOf(
      store,
      t.teachers.flatMap((s) => s.runs.map((r) => r.id)),
      labeled,
    ),
    latencyMsPerItem: null,
  };
}

function targetsName(o: TargetsOptions, teachers: string[]): string {
  return `${o.aggregate}${o.calibrate ? '+calibrated' : ''}(${teachers.join(',')})`;
}

/** One JSON object per evaluation, snake_case as the rest of the project's JSON; NaN becomes null. */
export function evaluationJson(e: Evaluation): Record<string, unknown> {
  const m = e.metrics;
  return {
    kind: e.kind,
    name: e.name,
    split: e.split,
    gold: e.gold,
    answered: e.answered,
    n: m.n,
    accuracy: finite(m.accuracy),
    macro_f1: finite(m.macroF1),
    ece: m.ece,
    nll: m.nll,
    prob_n: m.probN,
    ...(e.teacherAgreement !== undefined ? { teacher_agreement: e.teacherAgreement } : {}),
    cost_per_1000: e.cost.per1000,
    paid: e.cost.paid,
    labeled: e.cost.labeled,
    latency_ms_per_item: e.latencyMsPerItem,
    per_class: m.perClass,
    confusion: m.confusion,
    coverage: m.coverage?.map((p) => ({ ...p, accuracy: finite(p.accuracy) })) ?? null,
    reliability: m.reliability,
  };
}

function finite(x: number): number | null {
  return Number.isFinite(x) ? x : null;
}
