/**
 * Cross-validated out-of-fold predictions (train.ts --folds K), the input of cleanlab's label-issue
 * ranking (Northcutt et al., Confident Learning, 2021): a label can only be doubted by a model that
 * did not learn it. The train split is shuffled (seeded) into K folds; K extra students of the same
 * spec and objective each train on the train split less one fold (a view of the dataset in which the
 * fold's items have no training target, so splitIndices leaves them out of both the training items
 * and the validation slice) and predict the fold. Items of other splits get the final student's
 * predictions: it never trained on them either. The fold students live in a temporary folder,
 * deleted once they have predicted (a fasttext student is 64 MB; only its predictions are kept).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DistilleryError, SettingError } from '../errors.ts';
import { loadModel } from '../infer/model.ts';
import { argmaxRow, predictAll, ruleOf } from '../infer/predict.ts';
import { mulberry32, shuffle } from '../random.ts';
import type { Store } from '../store/store.ts';
import type { Dataset } from './data.ts';
import { roundProbs, writeOutOfFold, type OutOfFoldFile } from './out-of-fold.ts';
import type { TrainResult } from './trainer.ts';

/** Which fold holds each item out: made before any training, so that a bad fold count stops the run first. */
export interface FoldPlan {
  k: number;
  /** Seeds the fold assignment (train.ts --seed). */
  seed: number;
  /** The database id of each dataset item, in dataset order. */
  itemIds: number[];
  /** Each item's fold (0..k−1) for train-split items, −1 for the others. */
  fold: Int32Array;
}

export interface FoldsOptions {
  /** The final student's folder (trained on everything): predicts the items outside the train split; gets out-of-fold.json. */
  finalDir: string;
  /** Trains one student of the run's spec and objective on `ds` into `dir` (the fast or the tfjs trainer). */
  trainOn: (ds: Dataset, dir: string) => Promise<TrainResult>;
  log?: (line: string) => void;
}

/** What metrics.json records of the cross-validation. */
export interface FoldsSummary {
  folds: number;
  seed: number;
  /** Train-split items, each predicted by the fold student that held it out. */
  train_items: number;
  /** Out of fold: the share of train-split items whose predicted class is their training target's (null: none has a target). */
  target_agreement: number | null;
  /** Out of fold, against gold where a train-split item has one (null: none has). */
  gold_accuracy: number | null;
  /** Each fold: held-out items, the items its student trained on, and its best epoch. */
  per_fold: Array<{ held_out: number; trained_on: number; best_epoch: number }>;
  file: string;
}

/**
 * Refuses a fold count the run cannot use, before any training. Not with --init-from: the starting weights may
 * have learned the held-out items' labels, and a fold student started from them would repeat what it should doubt.
 */
export function checkFolds(k: number, o: { resume?: boolean; initFrom?: string }): void {
  if (!Number.isInteger(k) || k < 2) throw new SettingError('folds', k, `${k}: expected a whole number ≥ 2`);
  if (o.resume) throw new SettingError('folds', k, 'not with --resume (the fold students train from scratch; resume without --folds)');
  if (o.initFrom)
    throw new SettingError(
      'folds',
      k,
      "not with --init-from (the starting weights may have learned the held-out items' labels: the predictions would not be out of fold)",
    );
}

/** Each item's fold (0..k−1) for train-split items, −1 for the others: a seeded shuffle dealt round-robin. */
export function assignFolds(ds: Pick<Dataset, 'n' | 'splits'>, k: number, seed: number): Int32Array {
  const train = Array.from({ length: ds.n }, (_, i) => i).filter((i) => ds.splits[i] === 'train');
  if (train.length < k) throw new SettingError('folds', k, `${k} folds of ${train.length} train-split items: at most one fold per item`);
  const fold = new Int32Array(ds.n).fill(-1);
  shuffle(train, mulberry32(seed ^ 0xf01d)).forEach((i, pos) => (fold[i] = pos % k));
  return fold;
}

/** The dataset as fold `f`'s student sees it: the fold's items have no training target (and no replayed one). */
export function holdOut(ds: Dataset, fold: Int32Array, f: number): Dataset {
  const targetHard = ds.targetHard.slice();
  for (let i = 0; i < ds.n; i++) if (fold[i] === f) targetHard[i] = -1;
  if (!ds.replay) return { ...ds, targetHard };
  const hard = ds.replay.hard.slice();
  for (let e = 0; e < ds.replay.epochs; e++) for (let i = 0; i < ds.n; i++) if (fold[i] === f) hard[e * ds.n + i] = -1;
  return { ...ds, targetHard, replay: { ...ds.replay, hard } };
}

/** The folds of a dataset read from `store` (its items' database ids come from there: loadDataset reads them in id order). */
export function planFolds(store: Store, ds: Dataset, k: number, seed: number): FoldPlan {
  checkFolds(k, {});
  const fold = assignFolds(ds, k, seed);
  const rows = store.taskItemRows(ds.task.id);
  if (rows.length !== ds.n || rows.some((r, i) => r.ext_id !== ds.ids[i]))
    throw new DistilleryError(`${store.path}: the items of task "${ds.task.name}" changed while the dataset was read`);
  return { k, seed, itemIds: rows.map((r) => r.id), fold };
}

/**
 * Trains the K fold students, predicts each held-out fold, and writes finalDir/out-of-fold.json
 * (every item of the dataset: train-split items out of fold, the others by the final student).
 */
export async function crossValidate(ds: Dataset, plan: FoldPlan, o: FoldsOptions): Promise<FoldsSummary> {
  const { k, fold } = plan;
  if (fold.length !== ds.n || plan.itemIds.length !== ds.n) throw new DistilleryError(`crossValidate: a fold plan of another dataset`);
  const c = ds.task.labels.length;
  const probs = new Float32Array(ds.n * c);
  const perFold: FoldsSummary['per_fold'] = [];
  const scratch = mkdtempSync(join(tmpdir(), 'distillery-folds-'));
  o.log?.(`folds: ${k} students, each on the train split less one fold (in ${scratch}, deleted afterwards)`);
  try {
    for (let f = 0; f < k; f++) {
      const idx = indicesWhere(fold, (x) => x === f);
      const view = holdOut(ds, fold, f);
      const dir = join(scratch, String(f));
      const r = await o.trainOn(view, dir);
      place(probs, idx, await predictWith(dir, ds, idx), c);
      rmSync(dir, { recursive: true, force: true });
      const trainedOn = indicesWhere(fold, (x) => x >= 0 && x !== f).filter((i) => ds.targetHard[i] >= 0).length;
      perFold.push({ held_out: idx.length, trained_on: trainedOn, best_epoch: r.best_epoch });
      o.log?.(`fold ${f + 1}/${k}: held out ${idx.length} items, trained on the other ${trainedOn} with a target`);
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  const others = indicesWhere(fold, (x) => x < 0);
  if (others.length) {
    place(probs, others, await predictWith(o.finalDir, ds, others), c);
  }
  const train = indicesWhere(fold, (x) => x >= 0);
  const items: OutOfFoldFile['items'] = plan.itemIds.map((id, i) => ({
    id,
    probs: roundProbs(probs.subarray(i * c, (i + 1) * c)),
    fold: fold[i] >= 0 ? fold[i] : null,
  }));
  const file = writeOutOfFold(o.finalDir, { task: ds.task.name, labels: ds.task.labels, folds: k, seed: plan.seed, items });
  return {
    folds: k,
    seed: plan.seed,
    train_items: train.length,
    target_agreement: agreement(probs, c, train, ds.targetHard),
    gold_accuracy: agreement(probs, c, train, ds.gold),
    per_fold: perFold,
    file,
  };
}

/** Class probabilities of items `idx` by the student saved in `dir`, with its own prediction rule (idx.length × C). */
async function predictWith(dir: string, ds: Dataset, idx: number[]): Promise<Float32Array> {
  const m = await loadModel(dir);
  try {
    return await predictAll(m.student, ds, idx, ruleOf(m.spec));
  } finally {
    m.student.dispose();
  }
}

/** Row k of `rows` is item idx[k]'s. */
function place(probs: Float32Array, idx: number[], rows: Float32Array, c: number): void {
  idx.forEach((i, k) => probs.set(rows.subarray(k * c, (k + 1) * c), i * c));
}

function indicesWhere(fold: Int32Array, keep: (f: number) => boolean): number[] {
  const out: number[] = [];
  fold.forEach((f, i) => keep(f) && out.push(i));
  return out;
}

/** The share of `idx` items with a class in `truth` (≥ 0) whose argmax is that class; null when none has one. */
function agreement(probs: Float32Array, c: number, idx: number[], truth: Int32Array): number | null {
  let n = 0;
  let hit = 0;
  for (const i of idx) {
    if (truth[i] < 0) continue;
    n++;
    if (argmaxRow(probs, i, c) === truth[i]) hit++;
  }
  return n ? hit / n : null;
}
