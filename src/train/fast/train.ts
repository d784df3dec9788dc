/**
 * The fast fasttext trainer (fast/fasttext.ts) on a Dataset, with the tfjs trainer's
 * contract: the same split (splitIndices), the same per-epoch records and test report
 * (TrainResult), the best epoch on the validation slice saved to `outDir` in the same
 * format (model.json + weights.bin, loadable by studentFromWeights), early stopping.
 *
 * What it does not do, and the tfjs trainer does: an MLP head (--hidden), feature KD,
 * augmentation, --resume (no checkpoint is written), weight decay, clipping, warm-up;
 * the batch size is 1 (fastText's). fastPathUnsupported says which applies.
 */
import { mkdirSync } from 'node:fs';
import { DistilleryError, SettingError } from '../../errors.ts';
import { tf } from '../backend.ts';
import type { Dataset } from '../data.ts';
import { saveWeights } from '../io.ts';
import { textBatch, type FasttextSpec, type StudentSpec } from '../models/index.ts';
import { accuracy } from '../../eval/metrics.ts';
import { testReport } from '../../infer/evaluate.ts';
import { argmaxRow } from '../../infer/predict.ts';
import { distillDefaults } from '../distill/index.ts';
import { splitIndices, type EpochRecord, type SavedModelSpec, type TrainConfig, type TrainHooks, type TrainResult } from '../trainer.ts';
import { fit, LinearFasttext, packBags, temperTeacher, type FitOptions, type Objective, type PackedBags } from './fasttext.ts';
import { Hogwild } from './hogwild.ts';

/** fastText's supervised default is 0.1; 0.5 (its tutorial's) trains SST-2 and Banking77 as well, see notes/fasttext.md. */
export const FAST_DEFAULT_LR = 0.5;

/** What the fast trainer reads (lr is SGD's initial rate, not AdamW's); the objective is ce + kd only. */
export interface FastTrainConfig {
  epochs: number;
  lr: number;
  seed: number;
  patience: number;
  ceWeight: number;
  kdWeight: number;
  kdTemperature: number;
  testEachEpoch?: boolean;
  /**
   * Threads used for training (train.ts --workers; default 1). 1: the reproducible path, the same seed gives the same weights byte
   * for byte. More: Hogwild (hogwild.ts), as fastText's -thread, not reproducible.
   */
  workers?: number;
}

/** The distillers the fast trainer implements (in plain TypeScript, the same formulas as ce.ts and kd.ts). */
const FAST_DISTILLERS = ['ce', 'kd'];

/** Why the fast trainer cannot train this (spec, config, resume), or null when it can. */
export function fastPathUnsupported(
  spec: StudentSpec,
  c: Pick<TrainConfig, 'distill'> & Partial<TrainConfig>,
  resume = false,
): string | null {
  if (spec.kind !== 'fasttext') return `it trains the fasttext student only (got ${spec.kind})`;
  if ((spec.hidden ?? []).length > 0) return 'it trains a linear head only (--hidden given)';
  const other = c.distill.filter((d) => !FAST_DISTILLERS.includes(d));
  if (other.length > 0) return `it implements the ce and kd distillers only (--distill has ${other.join(', ')})`;
  if (c.featureTeacher) return 'no feature teacher';
  if (c.initFrom) return 'no --init-from';
  if (c.augment) return 'no augmentation';
  if (resume) return 'no --resume (it writes no checkpoint)';
  return null;
}

/** The fast trainer's settings from the trainer's config: the ce and kd distillers' weights (0 when not chosen). */
export function fastConfig(c: TrainConfig): FastTrainConfig {
  const s = distillDefaults(c.settings);
  return {
    epochs: c.epochs,
    lr: c.lr,
    seed: c.seed,
    patience: c.patience,
    ceWeight: c.distill.includes('ce') ? s.ceWeight : 0,
    kdWeight: c.distill.includes('kd') ? s.kdWeight : 0,
    kdTemperature: s.kdTemperature,
    ...(c.testEachEpoch !== undefined ? { testEachEpoch: c.testEachEpoch } : {}),
  };
}

export async function trainFasttextFast(
  ds: Dataset,
  spec: FasttextSpec,
  c: FastTrainConfig,
  outDir: string,
  o: { hooks?: TrainHooks } = {},
): Promise<TrainResult> {
  if ((spec.hidden ?? []).length > 0) throw new DistilleryError('fast fasttext trainer: it trains a linear head only (--hidden given)');
  if (!ds.texts) throw new DistilleryError(`task "${ds.task.name}": the fasttext student trains on text tasks only`);
  if (c.ceWeight <= 0 && c.kdWeight <= 0)
    throw new DistilleryError('fast fasttext trainer: ce and kd weights are both 0: nothing to train on');
  const threads = c.workers ?? 1;
  if (!Number.isInteger(threads) || threads < 1) throw new SettingError('workers', threads, 'must be a whole number ≥ 1');
  // Started first: the workers load their modules while the texts are hashed.
  const pool = threads > 1 ? Hogwild.start(threads) : null;
  try {
    return await trainWith(pool, ds, spec, c, outDir, o);
  } finally {
    await pool?.close();
  }
}

async function trainWith(
  pool: Hogwild | null,
  ds: Dataset,
  spec: FasttextSpec,
  c: FastTrainConfig,
  outDir: string,
  o: { hooks?: TrainHooks },
): Promise<TrainResult> {
  const { train, val, test } = splitIndices(ds, c.seed);
  const nc = ds.task.labels.length;
  // Hashed once per dataset; the epochs reuse the packed ids.
  const bags = packBags(textBatch(ds.texts!, spec).bags, spec.buckets);
  const objective: Objective = {
    ceWeight: c.ceWeight,
    kdWeight: c.kdWeight,
    hard: ds.targetHard,
    ...(c.kdWeight > 0 ? { teacher: temperTeacher(ds.targetProbs, nc, c.kdTemperature) } : {}),
  };
  const model = LinearFasttext.init(spec, c.seed, { shared: pool !== null });
  const history: EpochRecord[] = [];
  let best = { score: -Infinity, epoch: -1, weights: model };
  let seconds = 0;
  let t0 = performance.now();
  const fitOptions: FitOptions = {
    epochs: c.epochs,
    lr: c.lr,
    seed: c.seed,
    onStep: o.hooks?.onBatch,
    onEpoch: (epoch, mean, lr) => {
      const took = (performance.now() - t0) / 1000;
      seconds += took;
      const record: EpochRecord = {
        epoch,
        loss: mean.loss,
        // Weighted, as the distillers' terms are: they sum to the loss.
        terms: { ...(c.ceWeight > 0 ? { ce: c.ceWeight * mean.ce } : {}), ...(c.kdWeight > 0 ? { kd: c.kdWeight * mean.kd } : {}) },
        train_accuracy: targetAccuracy(model, bags, ds, train) ?? 0,
        val_accuracy: targetAccuracy(model, bags, ds, val),
        test_accuracy: test.length && c.testEachEpoch !== false ? testReport(model.predict(bags, test), ds, test).accuracy : null,
        lr,
        seconds: took,
      };
      history.push(record);
      o.hooks?.onEpoch?.(record);
      // As the tfjs trainer: without a validation slice the latest epoch counts as the best.
      const score = record.val_accuracy ?? epoch;
      if (score > best.score) best = { score, epoch, weights: model.clone() };
      t0 = performance.now();
      return c.patience > 0 && record.val_accuracy !== null && epoch - best.epoch >= c.patience;
    },
  };
  if (pool) await pool.fit(model, bags, Int32Array.from(train), objective, fitOptions);
  else fit(model, bags, Int32Array.from(train), objective, fitOptions);
  mkdirSync(outDir, { recursive: true });
  const saved: SavedModelSpec = { student: spec, task: ds.task.name, labels: ds.task.labels, preprocess: ds.preprocess };
  await saveFast(outDir, saved, best.weights);
  return {
    history,
    test: testReport(best.weights.predict(bags, test), ds, test),
    samples_per_second: seconds > 0 ? (history.length * train.length) / seconds : 0,
    best_epoch: best.epoch,
    params: spec.buckets * spec.dim + spec.dim * nc + nc,
  };
}

/** saveWeights with the tfjs student's names, shapes and order. */
export async function saveFast(dir: string, saved: SavedModelSpec, model: LinearFasttext): Promise<void> {
  const tensors = Object.fromEntries(
    Object.entries(model.named()).map(([name, { values, shape }]) => [name, tf.tensor(values, shape, 'float32')]),
  );
  try {
    await saveWeights(dir, saved, tensors);
  } finally {
    tf.dispose(Object.values(tensors));
  }
}

function targetAccuracy(model: LinearFasttext, bags: PackedBags, ds: Dataset, idx: number[]): number | null {
  if (idx.length === 0) return null;
  const c = ds.task.labels.length;
  const probs = model.predict(bags, idx);
  return accuracy(
    idx.map((_, k) => argmaxRow(probs, k, c)),
    idx.map((item) => ds.targetHard[item]),
  ).value;
}
