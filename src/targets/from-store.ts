import { DistilleryError, SettingError } from '../errors.ts';
import { decodeSoft, type SoftVector } from '../soft/codec.ts';
import type { ItemRow, RunRow, Store, TaskRow } from '../store/store.ts';
import { aggregate, type AggregateMethod, type AggregateResult } from './aggregate.ts';
import { calibrationReport, fitTemperature, type CalibrationReport } from './calibrate.ts';
import { fittingGold, humanGold, type HumanGold } from './human.ts';
import { isHumanRun } from '../store/reviews.ts';
import type { Labels, TeacherView } from './types.ts';

/** A teacher as chosen on the command line: every run of a name, or one run by id. */
export interface TeacherSource {
  name: string;
  runs: RunRow[];
}

export interface TaskItems {
  items: Pick<ItemRow, 'id' | 'ext_id' | 'gold' | 'split' | 'input' | 'image'>[];
  /** Gold class index per item, null where there is none. */
  gold: Labels;
}

export const AGGREGATES: AggregateMethod[] = ['mean', 'weighted', 'vote', 'dawid-skene'];

/**
 * Resolve `--teachers a,b,3`: a name stands for every run of that teacher on
 * the task (its latest label per item wins), a number for that one run. No
 * list: every teacher of the task, except the reviewers' human runs
 * (`human:<reviewer>`) unless `humans` (what shows the teachers: the teachers
 * report, eval, export's per-teacher rows, the report): a person's decisions
 * are gold for the targets (src/targets/human.ts), not one more teacher to
 * average. Naming one (`--teachers human:alice`) always works.
 */
export function resolveTeachers(store: Store, task: TaskRow, spec?: string, o: { humans?: boolean } = {}): TeacherSource[] {
  const runs = store.runs(task.id);
  if (runs.length === 0) throw new DistilleryError(`${store.path}: task "${task.name}" has no teacher runs yet`);
  const byName = (name: string) => runs.filter((r) => r.teacher === name);
  if (!spec) {
    const chosen = o.humans ? runs : runs.filter((r) => !isHumanRun(r));
    if (chosen.length === 0) throw onlyHumanRuns(store, task, runs);
    const names = [...new Set(chosen.map((r) => r.teacher))];
    return names.map((name) => ({ name, runs: byName(name) }));
  }
  return spec.split(',').map((raw) => {
    const s = raw.trim();
    if (/^\d+$/.test(s)) {
      const run = runs.find((r) => r.id === Number(s));
      if (!run) throw new SettingError('teachers', s, `run ${s} is not a run of task "${task.name}"`);
      return { name: `${run.teacher}#${run.id}`, runs: [run] };
    }
    const named = byName(s);
    if (named.length === 0) {
      throw new SettingError(
        'teachers',
        s,
        `no teacher "${s}" on task "${task.name}" (teachers: ${[...new Set(runs.map((r) => r.teacher))].join(', ')})`,
      );
    }
    return { name: s, runs: named };
  });
}

/** Whether a target can be built without naming teachers: the task has a run that is not a reviewer's. */
export function hasTeacherRuns(store: Store, task: TaskRow): boolean {
  return store.runs(task.id).some((r) => !isHumanRun(r));
}

function onlyHumanRuns(store: Store, task: TaskRow, runs: RunRow[]): DistilleryError {
  const names = [...new Set(runs.map((r) => r.teacher))].join(', ');
  return new DistilleryError(
    `${store.path}: task "${task.name}" has only reviewers' runs (${names}), no teacher: label or ingest logits first, ` +
      `name a reviewer as the teacher (--teachers ${runs[0].teacher}), or train on gold and the reviewers' labels with --supervised`,
  );
}

export function taskItems(store: Store, task: TaskRow): TaskItems {
  const items = store.taskItemRows(task.id);
  return { items, gold: items.map((it) => (it.gold === null ? null : task.labels.indexOf(it.gold))) };
}

/** One teacher's latest valid label per item, as log-probabilities and a hard label. */
export interface StoredView extends TeacherView {
  /** The stored soft label as it was stored (its kind: logits, logprobs or probs), per item. */
  soft: (SoftVector | null)[];
  /** The run each item's label came from. */
  runIds: (number | null)[];
}

export function loadView(store: Store, task: TaskRow, items: TaskItems, teacher: TeacherSource): StoredView {
  const index = new Map(items.items.map((it, i) => [it.id, i]));
  const n = items.items.length;
  const view: StoredView = {
    name: teacher.name,
    logprobs: new Array<Float64Array | null>(n).fill(null),
    hard: new Array<number | null>(n).fill(null),
    soft: new Array<SoftVector | null>(n).fill(null),
    runIds: new Array<number | null>(n).fill(null),
  };
  const rows = store.latestLabels(teacher.runs.map((r) => r.id));
  for (const r of rows) {
    const i = index.get(r.item_id);
    if (i === undefined) continue;
    view.runIds[i] = r.run_id;
    const hard = task.labels.indexOf(r.label);
    view.hard[i] = hard >= 0 ? hard : null;
    if (r.soft) {
      const soft = decodeSoft(r.soft);
      view.soft[i] = soft;
      view.logprobs[i] = toLogprobs(soft);
    }
  }
  return view;
}

/**
 * Normalised log-probabilities whatever was stored: logits and log-probabilities
 * go through log-softmax (fp16 storage leaves log-probabilities a little off
 * normalised), probabilities are normalised and logged.
 */
export function toLogprobs(v: SoftVector): Float64Array {
  const out = Float64Array.from(v.values);
  if (v.kind === 'probs') {
    const total = out.reduce((a, b) => a + b, 0);
    return out.map((p) => Math.log(p / total));
  }
  let m = -Infinity;
  for (const x of out) m = Math.max(m, x);
  let s = 0;
  for (const x of out) s += Math.exp(x - m);
  const lse = m + Math.log(s);
  return out.map((x) => x - lse);
}

export interface TargetsOptions {
  teachers?: string;
  aggregate: AggregateMethod;
  weights?: number[];
  calibrate: boolean;
  /**
   * Reviewers' decisions as gold (src/targets/human.ts) where an item has no imported gold, for --calibrate and
   * --aggregate weighted (train split). Default on; train.ts --no-human-labels turns it off, and with it the
   * training targets' human labels (src/train/data.ts).
   */
  humanLabels?: boolean;
}

export interface Targets extends AggregateResult {
  items: TaskItems;
  teachers: TeacherSource[];
  views: StoredView[];
  temperatures?: number[];
  calibration?: CalibrationReport[];
  /** The reviewers' gold (null with humanLabels false), and how many train-split items it gave calibration or weights. */
  human: HumanGold | null;
  humanFitted: number;
}

/**
 * One training target per item from the chosen teachers: the one module the
 * trainer and the export call. Calibration fits a temperature per teacher on
 * the gold labels of the train split only, so test-split metrics stay honest.
 */
export function buildTargets(store: Store, task: TaskRow, o: TargetsOptions): Targets {
  const teachers = resolveTeachers(store, task, o.teachers);
  const items = taskItems(store, task);
  const views = teachers.map((t) => loadView(store, task, items, t));
  const human = o.humanLabels === false ? null : humanGold(store, task, items);
  const fit = fittingGold(items, human);
  const fitsWeights = o.aggregate === 'weighted' && !o.weights;
  let temperatures: number[] | undefined;
  let calibration: CalibrationReport[] | undefined;
  if (o.calibrate) {
    const testGold = items.gold.map((g, i) => (items.items[i].split === 'train' ? null : g));
    temperatures = views.map((v) => fitTemperature(v.logprobs, fit.gold));
    const reportOn = testGold.some((g) => g !== null) ? testGold : fit.gold;
    calibration = views.map((v, k) => calibrationReport(v, reportOn, temperatures![k]));
  }
  const result = aggregate(views, {
    method: o.aggregate,
    weights: o.weights,
    gold: fit.gold,
    temperatures,
    numClasses: task.labels.length,
  });
  return { ...result, items, teachers, views, temperatures, calibration, human, humanFitted: o.calibrate || fitsWeights ? fit.human : 0 };
}
