/**
 * What the report shows, gathered from the store and the model folders. Kept
 * apart from the HTML so that a test can check the figures and the page.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { DistilleryError } from '../errors.ts';
import { storeStatus, type StoreStatus } from '../store/status.ts';
import type { Store, TaskRow } from '../store/store.ts';
import { loadView, resolveTeachers, taskItems } from '../targets/from-store.ts';
import {
  accuracy,
  classificationMetrics,
  eceOfBins,
  nll,
  reliabilityBins,
  type Labels,
  type Metric,
  type ReliabilityBin,
} from '../eval/metrics.ts';
import { argmax } from '../targets/vector.ts';
import { teachersReport, type TeachersReport } from '../targets/teachers-report.ts';
import { reviewerAgreement, type ReviewerAgreement } from '../review/agreement.ts';
import type { CascadeView } from './cascade.ts';

export interface Reliability {
  n: number;
  ece: number | null;
  bins: ReliabilityBin[];
}

/** The split every model of the report is compared on: teachers and students alike. */
export const REPORT_SPLIT = 'test';

/**
 * One model's evaluation against gold on one split, from its answers and probabilities (the
 * figures of src/eval/metrics.ts): what the evaluation section shows for teachers and students alike.
 */
export interface Evaluation {
  split: string;
  n: number;
  accuracy: number | null;
  macroF1: number | null;
  ece: number | null;
  /** Accuracy when only the most confident share of items is kept, share rising to 1 (null without probabilities). */
  coverage: { coverage: number; accuracy: number }[] | null;
}

/** A teacher of the store measured on the report's split. */
export interface TeacherOnSplit {
  teacher: string;
  split: string;
  /** Its hard labels against gold on the split. */
  accuracy: Metric;
  /** Of its probabilities at T = 1 on the split (items with a soft label and gold). */
  nll: Metric;
  reliability: Reliability;
  evaluation: Evaluation | null;
}

export interface TaskReport {
  task: string;
  labels: string[];
  teachers: TeachersReport | null;
  /** Items of the task in the report's split, and how many have gold. */
  splitItems: number;
  splitGold: number;
  /** Per teacher: its labels and probabilities against gold on the report's split. */
  teacherOnSplit: TeacherOnSplit[];
  /** The runs a pilot (pilot.ts) began, each measured on the pilot's sample. */
  pilots: PilotRun[];
  /** The reviewers (review.ts, Label Studio) and their agreement; null when nobody reviewed the task. */
  reviewers: ReviewerAgreement | null;
}

/** A teacher run a pilot began: its configuration and how it did on the pilot's sample against gold. */
export interface PilotRun {
  run: number;
  teacher: string;
  promptVersion: string | null;
  sample: number;
  seed: number | null;
  stratified: boolean;
  /** Items this run holds a label for: more than the sample when label.ts continued it. */
  labeled: number;
  /** On the sampled items with gold and a label of this run; null when the run does not record its sample's items. */
  onSample: { n: number; accuracy: number; macroF1: number } | null;
}

/** What train.ts writes to DIR/metrics.json (the fields the report reads). */
export interface StudentMetrics {
  command?: string;
  backend?: string;
  trainer?: string;
  seed?: number;
  student?: { kind?: string; [k: string]: unknown };
  params?: number;
  config?: {
    seed?: number;
    distill?: string[];
    settings?: Record<string, unknown>;
    featureTeacher?: string;
    initFrom?: string;
    [k: string]: unknown;
  };
  targets?: unknown;
  history?: {
    epoch: number;
    loss: number;
    terms: Record<string, number>;
    train_accuracy: number | null;
    val_accuracy: number | null;
    test_accuracy: number | null;
  }[];
  best_epoch?: number;
  test?: { n: number; accuracy: number | null; teacher_agreement: number | null; ece: number | null; confusion: number[][] };
  samples_per_second?: number;
}

export interface StudentReport {
  /** The folder's name: how the report calls the model. */
  name: string;
  task: string;
  labels: string[];
  kind: string;
  weightsBytes: number;
  metrics: StudentMetrics;
  /** From the model's own predictions on the test split (null when not computed). */
  reliability: Reliability | null;
  /** From the same predictions (null when not computed). */
  evaluation?: Evaluation | null;
  /** The cascade fitted for this student (DIR/cascade.json), when there is one. */
  cascade?: CascadeView | null;
}

export interface ReportData {
  db: string;
  status: StoreStatus;
  tasks: TaskReport[];
  students: StudentReport[];
}

export function reliabilityOf(probs: (Float64Array | null)[], gold: (number | null)[]): Reliability {
  const r = reliabilityBins(probs, gold, 15);
  return { n: r.n, ece: r.n ? eceOfBins(r) : null, bins: r.bins };
}

/**
 * A model's evaluation on a split: its answers (`pred`; a student's are the argmax of its
 * probabilities, a teacher's the labels it gave) against gold, over the items that have both.
 */
export function evaluationOf(
  labels: readonly string[],
  pred: Labels,
  probs: (ArrayLike<number> | null)[],
  gold: Labels,
  split: string,
): Evaluation | null {
  const keep = gold.flatMap((g, i) => (g !== null && pred[i] !== null ? [i] : []));
  if (keep.length === 0) return null;
  const m = classificationMetrics(
    labels,
    keep.map((i) => gold[i]!),
    keep.map((i) => pred[i]!),
    keep.map((i) => probs[i]),
  );
  return {
    split,
    n: m.n,
    accuracy: m.accuracy,
    macroF1: m.macroF1,
    ece: m.ece,
    coverage: m.coverage?.map((p) => ({ coverage: p.coverage, accuracy: p.accuracy })) ?? null,
  };
}

/** A student's answers: the most probable class. */
export const argmaxLabels = (probs: (ArrayLike<number> | null)[]): Labels => probs.map((p) => (p ? argmax(p) : null));

export function taskReport(store: Store, task: TaskRow): TaskReport {
  const items = taskItems(store, task);
  const inSplit = items.items.map((it) => it.split === REPORT_SPLIT);
  const gold = items.gold.map((g, i) => (inSplit[i] ? g : null));
  const base = {
    task: task.name,
    labels: task.labels,
    splitItems: inSplit.filter(Boolean).length,
    splitGold: gold.filter((g) => g !== null).length,
  };
  if (store.runs(task.id).length === 0) return { ...base, teachers: null, teacherOnSplit: [], pilots: [], reviewers: null };
  const agreement = reviewerAgreement(store, task);
  const reviewers = agreement.reviewers.length ? agreement : null;
  // The reviewers' runs are measured like any teacher's.
  const teacherOnSplit = resolveTeachers(store, task, undefined, { humans: true }).map((source): TeacherOnSplit => {
    const view = loadView(store, task, items, source);
    const probs = view.logprobs.map((lp, i) => (lp && inSplit[i] ? lp.map(Math.exp) : null));
    return {
      teacher: source.name,
      split: REPORT_SPLIT,
      accuracy: accuracy(view.hard, gold),
      nll: nll(probs, gold),
      reliability: reliabilityOf(probs, gold),
      evaluation: evaluationOf(task.labels, view.hard, probs, gold, REPORT_SPLIT),
    };
  });
  return {
    ...base,
    teachers: teachersReport(store, task),
    teacherOnSplit,
    pilots: pilotRuns(store, task, items.items, items.gold),
    reviewers,
  };
}

/** The task's runs whose params say a pilot began them (pilot.ts), measured on the sample's items against gold. */
function pilotRuns(store: Store, task: TaskRow, items: readonly { id: number }[], gold: readonly (number | null)[]): PilotRun[] {
  const goldOf = new Map(items.map((it, i) => [it.id, gold[i]]));
  const out: PilotRun[] = [];
  for (const run of store.runs(task.id)) {
    const pilot = (JSON.parse(run.params) as { pilot?: { sample: number; seed?: number; stratified?: boolean; items?: number[] } }).pilot;
    if (!pilot) continue;
    const labelOf = new Map<number, string>();
    for (const l of store.latestLabels([run.id])) labelOf.set(l.item_id, l.label);
    let onSample: PilotRun['onSample'] = null;
    if (pilot.items) {
      const g: number[] = [];
      const pred: number[] = [];
      for (const id of pilot.items) {
        const gi = goldOf.get(id);
        const label = labelOf.get(id);
        if (gi === null || gi === undefined || label === undefined || !task.labels.includes(label)) continue;
        g.push(gi);
        pred.push(task.labels.indexOf(label));
      }
      if (g.length) {
        const m = classificationMetrics(task.labels, g, pred);
        onSample = { n: g.length, accuracy: m.accuracy, macroF1: m.macroF1 };
      }
    }
    out.push({
      run: run.id,
      teacher: run.teacher,
      promptVersion: run.prompt_version,
      sample: pilot.sample,
      seed: pilot.seed ?? null,
      stratified: pilot.stratified ?? false,
      labeled: labelOf.size,
      onSample,
    });
  }
  return out;
}

/** A model folder's metrics and size; predictions (for the reliability diagram) are added by the caller. */
export function readStudent(dir: string): Omit<StudentReport, 'reliability'> {
  const modelFile = join(dir, 'model.json');
  if (!existsSync(modelFile)) throw new DistilleryError(`${modelFile}: no such file (give a folder written by train.ts)`);
  let spec: { spec?: { student?: { kind?: string }; task?: string; labels?: string[] } };
  try {
    spec = JSON.parse(readFileSync(modelFile, 'utf8'));
  } catch (e) {
    throw new DistilleryError(`${modelFile}: not JSON (${(e as Error).message})`);
  }
  const s = spec.spec;
  if (!s?.student || !s.task || !Array.isArray(s.labels))
    throw new DistilleryError(`${modelFile}: not a distillery student (no student spec, task or labels)`);
  const metricsFile = join(dir, 'metrics.json');
  let metrics: StudentMetrics = {};
  if (existsSync(metricsFile)) {
    try {
      metrics = JSON.parse(readFileSync(metricsFile, 'utf8')) as StudentMetrics;
    } catch (e) {
      throw new DistilleryError(`${metricsFile}: not JSON (${(e as Error).message})`);
    }
  }
  const weights = join(dir, 'weights.bin');
  return {
    name: basename(dir.replace(/\/+$/, '')),
    task: s.task,
    labels: s.labels,
    kind: s.student.kind ?? 'unknown',
    weightsBytes: existsSync(weights) ? statSync(weights).size : 0,
    metrics,
  };
}

export function gatherReport(store: Store, students: StudentReport[]): ReportData {
  const status = storeStatus(store);
  return { db: basename(store.path), status, tasks: store.listTasks().map((t) => taskReport(store, t)), students };
}
