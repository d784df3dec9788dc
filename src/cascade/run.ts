/**
 * Predicting with a cascade: the student answers the items it is confident about (its top probability at or above
 * its predicted class's threshold); the teacher is asked for the rest through the labeler itself (the same client,
 * cost cap, rate limits and request keys as label.ts, so an answer is never paid twice), and its answers are stored
 * as labels, where the next train and relabel find them. The report says how much the student answered, how
 * accurate the answers were against whatever gold the input has, and what the calls it avoided would have cost.
 */
import { costOf } from '../label/cost.ts';
import { configHash, planLabeling } from '../label/plan.ts';
import type { LabelOptions, LabelResult } from '../label/types.ts';
import type { Store } from '../store/store.ts';
import type { CascadeFile } from './schema.ts';

/** Who answered an input row: the student, the teacher, or nobody yet (the teacher failed, or a budget stopped the pass). */
export type AnsweredBy = 'student' | 'teacher' | 'none';

export interface CascadeRow {
  id: string;
  label: string | null;
  by: AnsweredBy;
  student_label: string;
  student_confidence: number;
}

/** The student's answer per input row and whether it stands: the cascade's rule, in one place. */
export function route(probs: Float32Array, c: CascadeFile): Array<{ pred: number; confidence: number; student: boolean }> {
  const k = c.labels.length;
  const out: Array<{ pred: number; confidence: number; student: boolean }> = [];
  for (let i = 0; i * k < probs.length; i++) {
    let pred = 0;
    for (let j = 1; j < k; j++) if (probs[i * k + j] > probs[i * k + pred]) pred = j;
    const confidence = probs[i * k + pred];
    const t = c.thresholds[pred].threshold;
    out.push({ pred, confidence, student: t !== null && confidence >= t });
  }
  return out;
}

export interface Accuracy {
  /** Rows with gold that got an answer. */
  n: number;
  accuracy: number | null;
}

export interface CascadeReport {
  items: number;
  answered: { student: number; teacher: number; none: number };
  /** Share of the rows the student answered alone. */
  coverage: number;
  /** Against the input's gold labels, where it has them: every answered row, the student's, the teacher's. */
  accuracy: { all: Accuracy; student: Accuracy; teacher: Accuracy };
  teacher: {
    /** HTTP requests this invocation sent (retries included), what they cost, and rows answered from stored labels. */
    requests: number;
    cost: number;
    already_labeled: number;
    /** The labeler's status: completed, nothing-to-do, stopped (a budget), interrupted, failed. */
    status: LabelResult['status'] | 'not-asked';
    message?: string;
  };
  calls_avoided: number;
  calls_avoided_per_1000: number;
  /**
   * The teacher's mean cost per paid answer under these settings: measured over every answer this configuration has
   * paid for in the database, else estimated from the token counts of the rows the student answered; null if neither.
   */
  cost_per_call: number | null;
  cost_per_call_from: 'measured' | 'estimated' | null;
  money_saved: number | null;
  money_saved_per_1000: number | null;
}

export interface CascadeRunOptions {
  cascade: CascadeFile;
  /** The student's class probabilities per input row (rows × labels, in the task's label order). */
  probs: Float32Array;
  /** Per input row: its id, its item in the store, and its gold label if the input has one. */
  rows: Array<{ id: string; itemId: number; gold?: string }>;
  /** The labeling pass's options (teacher, budgets, store); itemIds are set here. */
  label: LabelOptions;
  /** Live (runLabeling) or the Batch API: the labeler's own entry points. */
  run: (o: LabelOptions) => Promise<LabelResult>;
}

export async function runCascade(o: CascadeRunOptions): Promise<{ rows: CascadeRow[]; report: CascadeReport; result?: LabelResult }> {
  const { cascade, label } = o;
  const routed = route(o.probs, cascade);
  if (routed.length !== o.rows.length) throw new Error(`cascade: ${routed.length} predictions for ${o.rows.length} rows`);
  const deferred = [...new Set(o.rows.filter((_, i) => !routed[i].student).map((r) => r.itemId))];
  const result = deferred.length > 0 ? await o.run({ ...label, itemIds: deferred }) : undefined;

  const hash = configHash(label.task, label.settings);
  const answers = teacherAnswers(label.store, label.taskRow.id, hash, deferred);
  const rows: CascadeRow[] = o.rows.map((r, i) => {
    const s = routed[i];
    const student_label = cascade.labels[s.pred];
    const teacher = s.student ? undefined : answers.get(r.itemId);
    const by: AnsweredBy = s.student ? 'student' : teacher !== undefined ? 'teacher' : 'none';
    const answer = s.student ? student_label : (teacher ?? null);
    return { id: r.id, label: answer, by, student_label, student_confidence: Math.round(s.confidence * 1e6) / 1e6 };
  });

  const count = (by: AnsweredBy) => rows.filter((r) => r.by === by).length;
  const student = count('student');
  const n = rows.length;
  const perCall = await costPerCall(
    label,
    hash,
    o.rows.filter((_, i) => routed[i].student).map((r) => r.itemId),
  );
  const report: CascadeReport = {
    items: n,
    answered: { student, teacher: count('teacher'), none: count('none') },
    coverage: n ? student / n : 0,
    accuracy: {
      all: accuracyOf(rows, o.rows, () => true),
      student: accuracyOf(rows, o.rows, (r) => r.by === 'student'),
      teacher: accuracyOf(rows, o.rows, (r) => r.by === 'teacher'),
    },
    teacher: {
      requests: result?.stats.requests ?? 0,
      cost: result?.stats.cost ?? 0,
      already_labeled: result?.plan.cached ?? 0,
      status: result?.status ?? 'not-asked',
      ...(result?.message ? { message: result.message } : {}),
    },
    calls_avoided: student,
    calls_avoided_per_1000: n ? (1000 * student) / n : 0,
    cost_per_call: perCall?.cost ?? null,
    cost_per_call_from: perCall?.from ?? null,
    money_saved: perCall ? perCall.cost * student : null,
    money_saved_per_1000: perCall && n ? (perCall.cost * student * 1000) / n : null,
  };
  return { rows, report, ...(result ? { result } : {}) };
}

function accuracyOf(rows: CascadeRow[], input: CascadeRunOptions['rows'], pick: (r: CascadeRow) => boolean): Accuracy {
  let n = 0;
  let right = 0;
  rows.forEach((r, i) => {
    const gold = input[i].gold;
    if (gold === undefined || r.label === null || !pick(r)) return;
    n++;
    if (r.label === gold) right++;
  });
  return { n, accuracy: n ? right / n : null };
}

/** The teacher's latest valid label per item under one configuration (every run of it: this pass's and earlier ones). */
function teacherAnswers(store: Store, taskId: number, hash: string, itemIds: number[]): Map<number, string> {
  const out = new Map<number, string>();
  const runs = store.runs(taskId).filter((r) => r.config_hash === hash);
  if (runs.length === 0 || itemIds.length === 0) return out;
  const wanted = new Set(itemIds);
  for (const l of store.latestLabels(runs.map((r) => r.id))) if (wanted.has(l.item_id)) out.set(l.item_id, l.label);
  return out;
}

/** Measured: what this configuration's paid answers cost on average. Estimated: the plan's tokens for the avoided rows. */
async function costPerCall(
  o: LabelOptions,
  hash: string,
  avoided: number[],
): Promise<{ cost: number; from: 'measured' | 'estimated' } | undefined> {
  const runs = o.store.runs(o.taskRow.id).filter((r) => r.config_hash === hash);
  const paid = runs.reduce((a, r) => a + r.requests - r.errors, 0);
  if (paid > 0) return { cost: runs.reduce((a, r) => a + o.store.runCost(r.id), 0) / paid, from: 'measured' };
  if (avoided.length === 0) return undefined;
  const plan = await planLabeling({ ...o, itemIds: [...new Set(avoided)], limit: undefined, retryFailed: true });
  if (plan.todo.length === 0) return undefined;
  return { cost: costOf(o.price, plan.promptTokens, plan.expectedCompletionTokens) / plan.todo.length, from: 'estimated' };
}
