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
import { eceOfBins, reliabilityBins, type ReliabilityBin } from '../eval/metrics.ts';
import { teachersReport, type TeachersReport } from '../targets/teachers-report.ts';

export interface Reliability {
  n: number;
  ece: number | null;
  bins: ReliabilityBin[];
}

export interface TaskReport {
  task: string;
  labels: string[];
  teachers: TeachersReport | null;
  /** Per teacher: its probabilities at T = 1 against gold, every split. */
  teacherReliability: { teacher: string; reliability: Reliability }[];
}

/** What train.ts writes to DIR/metrics.json (the fields the report reads). */
export interface StudentMetrics {
  command?: string;
  backend?: string;
  seed?: number;
  student?: { kind?: string; [k: string]: unknown };
  params?: number;
  config?: Record<string, unknown>;
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

export function taskReport(store: Store, task: TaskRow): TaskReport {
  if (store.runs(task.id).length === 0) return { task: task.name, labels: task.labels, teachers: null, teacherReliability: [] };
  const items = taskItems(store, task);
  const teacherReliability = resolveTeachers(store, task).map((source) => {
    const view = loadView(store, task, items, source);
    const probs = view.logprobs.map((lp) => (lp ? lp.map(Math.exp) : null));
    return { teacher: source.name, reliability: reliabilityOf(probs, items.gold) };
  });
  return { task: task.name, labels: task.labels, teachers: teachersReport(store, task), teacherReliability };
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
