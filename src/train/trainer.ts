/**
 * The training loop, in the manner of nanoGPT's train.py: where the weights come from
 * (scratch, --resume, --init-from), then one loop that builds each batch, runs the student
 * once, sums the distillers' named terms (see ./distill: the loop knows no method by name),
 * steps AdamW, and reads the loss back every `logEvery` steps rather than every batch (a read
 * per term per batch stalls an asynchronous backend). Each epoch estimates train accuracy on
 * a fixed sample, scores the validation slice, and saves the best model and a checkpoint.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DistilleryError, SettingError } from '../errors.ts';
import { canonicalJson } from '../input/canonical.ts';
import { mulberry32, shuffle } from '../random.ts';
import { loadModel, type SavedModelSpec } from '../infer/model.ts';
import { accuracy } from '../eval/metrics.ts';
import { predictAll, softmaxRule, argmaxRow, type PredictRule } from '../infer/predict.ts';
import { testReport, type TestReport } from '../infer/evaluate.ts';
import { tf } from './backend.ts';
import { batchInput, checkReplayAugment, disposeInput, replayAugment, targetsForEpoch, type Dataset } from './data.ts';
import type { AugmentConfig } from './augment.ts';
import {
  createDistillers,
  findDistiller,
  loadFeatureTeacher,
  objectiveKey,
  PROJ_PREFIX,
  type Batch,
  type Distiller,
  type DistillSettings,
  type Needs,
  unionNeeds,
} from './distill/index.ts';
import { loadWeights, saveWeights } from './io.ts';
import { countParams, createStudent, studentFromWeights, type Student, type StudentSpec } from './models/index.ts';
import { AdamW, clipByGlobalNorm, cosineLr } from './optim.ts';
import { batchGrads } from './parallel/grads.ts';
import { checkParallel, startParallelGrads } from './parallel/index.ts';

export type { SavedModelSpec, TestReport };

export interface TrainConfig {
  epochs: number;
  batchSize: number;
  lr: number;
  weightDecay: number;
  /** Warm-up, in optimizer steps; undefined: 5% of all steps. */
  warmup?: number;
  seed: number;
  clip: number;
  /** Stop after this many epochs without a better validation score (0: never). */
  patience: number;
  /** The distillers whose terms make the loss (names from ./distill/index.ts), and their settings (unset: defaults). */
  distill: string[];
  settings?: Partial<DistillSettings>;
  /** A model trained by this project, run frozen on each batch for the feature distillers (hidden, attn, manifold). */
  featureTeacher?: string;
  /** Start from this trained student's weights, with a fresh optimizer (nanoGPT's init_from). */
  initFrom?: string;
  /** Light augmentation of the training batches (images only), drawn from the seed: see augment.ts. */
  augment?: AugmentConfig;
  /** Evaluate the test split after every epoch (history's test_accuracy); false: only the final report. Default true. */
  testEachEpoch?: boolean;
  /** Read the loss back every this many steps (and at the end of each epoch). Default 50. */
  logEvery?: number;
  /** Train accuracy is estimated on a fixed sample of this many train items. Default 1000. */
  trainAccuracySample?: number;
  /** Data-parallel: each batch's gradients computed in shares on this many threads (wasm or cpu backend). Default 1. */
  workers?: number;
}

export interface EpochRecord {
  epoch: number;
  /** Mean over the epoch's items of the summed loss. */
  loss: number;
  /** Mean of each named term, as weighted in the loss (they sum to `loss`). */
  terms: Record<string, number>;
  /** Agreement with the training target's hard label on a fixed sample of the train split. */
  train_accuracy: number;
  /** On the validation slice (10% of train, targets as in training): what early stopping watches. */
  val_accuracy: number | null;
  /** Against gold on the test split. */
  test_accuracy: number | null;
  lr: number;
  seconds: number;
}

export interface TrainResult {
  history: EpochRecord[];
  test: TestReport;
  samples_per_second: number;
  best_epoch: number;
  params: number;
}

export interface TrainHooks {
  /** Called after each batch (progress bars) and each epoch (log lines). */
  onBatch?: (done: number, total: number) => void;
  onEpoch?: (r: EpochRecord) => void;
}

/** The split of the dataset the trainer uses: train (less a validation slice), val, test. */
export function splitIndices(ds: Dataset, seed: number): { train: number[]; val: number[]; test: number[] } {
  const train: number[] = [];
  const test: number[] = [];
  for (let i = 0; i < ds.n; i++) {
    if (ds.splits[i] === 'train') {
      if (ds.targetHard[i] >= 0) train.push(i);
    } else if (ds.gold[i] >= 0) test.push(i);
  }
  if (train.length === 0) throw new DistilleryError(`task "${ds.task.name}": no train-split item has a training target`);
  // Early stopping needs data the model does not train on; the test split stays untouched for the final report.
  const shuffled = shuffle(train, mulberry32(seed ^ 0x5eed));
  const nVal = train.length >= 50 ? Math.round(train.length * 0.1) : 0;
  return { train: shuffled.slice(nVal).sort((a, b) => a - b), val: shuffled.slice(0, nVal).sort((a, b) => a - b), test };
}

/** The validation slice by its items' ids (metrics.json records it): cascade.ts fit checks that it rebuilds the same slice. */
export function validationFingerprint(ds: Dataset, seed: number): { n: number; ids_sha256: string } {
  const val = splitIndices(ds, seed).val;
  const ids = JSON.stringify(val.map((i) => ds.ids[i]));
  return { n: val.length, ids_sha256: createHash('sha256').update(ids).digest('hex') };
}

function targetAccuracy(probs: Float32Array, ds: Dataset, idx: number[]): number | null {
  if (idx.length === 0) return null;
  const c = ds.task.labels.length;
  return accuracy(
    idx.map((_, k) => argmaxRow(probs, k, c)),
    idx.map((item) => ds.targetHard[item]),
  ).value;
}

const CHECKPOINT = 'checkpoint';

interface Checkpoint extends SavedModelSpec {
  epoch: number;
  history: EpochRecord[];
  best: { score: number; epoch: number };
  /** The distillers' keys; absent in checkpoints from before distillers. */
  objective?: Array<{ name: string; key: unknown }>;
}

/**
 * Train a student on a dataset: AdamW, warm-up then cosine decay, gradient clipping, seeded
 * shuffling, evaluation every epoch, early stopping on the validation slice, a checkpoint every
 * epoch (for --resume), and the best model saved to `outDir`.
 */
export async function train(
  ds: Dataset,
  spec: StudentSpec,
  c: TrainConfig,
  outDir: string,
  o: { resume?: boolean; hooks?: TrainHooks } = {},
): Promise<TrainResult> {
  if (c.augment && !ds.pixels) throw new DistilleryError('--augment: only image tasks can be augmented');
  checkReplayAugment(ds, c.augment);
  if (o.resume && c.initFrom)
    throw new SettingError(
      'initFrom',
      undefined,
      'choose --resume or --init-from, not both (resume continues a checkpoint of the same objective; init-from starts a new objective from a model)',
    );
  const { train: trainIdx, val, test } = splitIndices(ds, c.seed);
  const nc = ds.task.labels.length;
  const history: EpochRecord[] = [];
  let startEpoch = 0;
  let best = { score: -Infinity, epoch: -1 };
  const ckptDir = join(outDir, CHECKPOINT);

  // ---- where the weights come from ------------------------------------------------------
  const toFree: Array<{ dispose(): void }> = [];
  let student: Student;
  let distillers: Distiller[];
  let optState: Record<string, tf.Tensor> | undefined;
  let ck: Checkpoint | undefined;
  let featureTeacher: { dir: string; model: Student } | undefined;
  try {
    featureTeacher = c.featureTeacher ? await loadFeatureTeacher(c.featureTeacher) : undefined;
    if (featureTeacher) toFree.push(featureTeacher.model);
    distillers = createDistillers(c.distill, c.settings ?? {}, {
      student: spec,
      seed: c.seed,
      ...(ds.perTeacher ? { teachers: ds.perTeacher.names } : {}),
      ...(featureTeacher ? { featureTeacher } : {}),
    });
    toFree.push(...distillers);
    const needs = unionNeeds(distillers);
    if (featureTeacher && !needs.featureTeacher) {
      throw new SettingError(
        'featureTeacher',
        c.featureTeacher,
        'no chosen distiller uses it (add hidden, attn, manifold or dearkd or online-kd to --distill, with a weight above 0; all are 0 or absent)',
      );
    }
    if ((c.workers ?? 1) > 1) checkParallel(c.workers!, spec, distillers);
    if (o.resume) {
      if (!existsSync(join(ckptDir, 'model.json'))) throw new DistilleryError(`${ckptDir}: no checkpoint to resume from`);
      const loaded = await loadWeights<Checkpoint>(ckptDir);
      optState = loaded.tensors;
      ck = loaded.spec;
      // The saved model's spec is `spec`: a checkpoint of another student would be trained on, then saved under the wrong spec.
      if (canonicalJson(ck.student) !== canonicalJson(spec)) {
        throw new DistilleryError(
          `${ckptDir}: the checkpoint is of another student (${canonicalJson(ck.student)}); resume with the same student options, or train into a new folder`,
        );
      }
      // Likewise the objective: other distillers or settings would continue a different training.
      const now = objectiveKey(distillers);
      if (ck.objective !== undefined && canonicalJson(ck.objective) !== canonicalJson(now)) {
        throw new DistilleryError(
          `${ckptDir}: the checkpoint was trained with another objective (${describeObjective(ck.objective)}; now ${describeObjective(now)}); resume with the same --distill and settings, or start the new objective from the model with --init-from`,
        );
      }
      const own = (k: string) => !k.startsWith('adam.') && !k.startsWith(PROJ_PREFIX);
      student = studentFromWeights(ck.student, Object.fromEntries(Object.entries(optState).filter(([k]) => own(k))));
    } else if (c.initFrom) {
      const init = await loadModel(c.initFrom);
      if (canonicalJson(init.spec.student) !== canonicalJson(spec)) {
        init.student.dispose();
        throw new SettingError(
          'initFrom',
          c.initFrom,
          `the model is another student (${canonicalJson(init.spec.student)}); use its architecture options, or leave --arch out`,
        );
      }
      if (JSON.stringify(init.spec.labels) !== JSON.stringify(ds.task.labels)) {
        init.student.dispose();
        throw new SettingError('initFrom', c.initFrom, `the model's labels differ from task "${ds.task.name}"'s`);
      }
      student = init.student;
    } else {
      student = createStudent(spec, c.seed);
    }
  } catch (e) {
    for (const f of toFree) f.dispose();
    tf.dispose(Object.values(optState ?? {}));
    throw e;
  }
  toFree.push(student);
  const extras = Object.assign({}, ...distillers.map((d) => d.weights)) as Record<string, tf.Variable>;
  // The distillers' extras train with the student, and only the checkpoint keeps them (the saved model is the student alone).
  const trained = { ...student.weights, ...extras };
  const opt = new AdamW(trained, { weightDecay: c.weightDecay });
  if (optState && ck) {
    for (const [k, v] of Object.entries(extras)) if (optState[k]) v.assign(optState[k]);
    opt.load(optState);
    tf.dispose(Object.values(optState));
    history.push(...ck.history);
    startEpoch = ck.epoch + 1;
    best = ck.best;
  }
  const predictWith = distillers.map((d) => findDistiller(d.name)).find((d) => d.predict);
  const predict: PredictRule = predictWith?.predict ?? softmaxRule;

  mkdirSync(outDir, { recursive: true });
  const stepsPerEpoch = Math.ceil(trainIdx.length / c.batchSize);
  const totalSteps = stepsPerEpoch * c.epochs;
  const logEvery = c.logEvery ?? 50;
  const trainSample = shuffle(trainIdx, mulberry32(c.seed ^ 0x7a1))
    .slice(0, c.trainAccuracySample ?? 1000)
    .sort((a, b) => a - b);
  let trainSamples = 0;
  let trainSeconds = 0;
  const saved: SavedModelSpec = {
    student: spec,
    task: ds.task.name,
    labels: ds.task.labels,
    preprocess: ds.preprocess,
    predict: predictWith?.name ?? null,
  };
  const objective = objectiveKey(distillers);
  // --workers N: the same steps, each batch's gradients computed in shares on N threads (./parallel).
  const parallel =
    (c.workers ?? 1) > 1 ? await startParallelGrads({ workers: c.workers!, spec, c, student, distillers, trained }) : undefined;

  // ---- the loop -------------------------------------------------------------------------
  for (let epoch = startEpoch; epoch < c.epochs; epoch++) {
    const t0 = performance.now();
    const order = shuffle(trainIdx, mulberry32(c.seed * 1000 + epoch));
    // Its own stream per epoch (not the shuffle's): a resumed run augments as an uninterrupted one.
    const augment =
      replayAugment(ds, epoch) ?? (c.augment ? { config: c.augment, rand: mulberry32((c.seed * 1000 + epoch) ^ 0xa06e) } : undefined);
    // A replay teacher's epoch: each item's stored view and the teacher's target on it (else ds itself).
    const epochDs = targetsForEpoch(ds, epoch);
    const log = new LossLog();
    let lr = c.lr;
    // A staged method (DearKD) may need less in later epochs: no feature teacher run when no term uses it.
    const needsNow = unionNeeds(distillers, { epoch, epochs: c.epochs });
    for (let s = 0; s < order.length; s += c.batchSize) {
      const idx = order.slice(s, s + c.batchSize);
      lr = cosineLr(opt.step, { lr: c.lr, warmup: c.warmup ?? Math.round(0.05 * totalSteps), total: totalSteps });
      const batch: Batch = { ...makeBatch(epochDs, spec, idx, needsNow, nc, augment, featureTeacher?.model), epoch, epochs: c.epochs };
      const { value, terms, grads } = parallel ? await parallel.grads(batch) : batchGrads(student, distillers, trained, batch);
      const clipped = clipByGlobalNorm(grads, c.clip);
      opt.apply(clipped.grads, lr);
      log.push(value, terms, idx.length);
      tf.dispose([...Object.values(clipped.grads), ...Object.values(grads)]);
      disposeBatch(batch);
      if (log.pending >= logEvery) await log.read();
      o.hooks?.onBatch?.(Math.min(s + c.batchSize, order.length), order.length);
    }
    await log.read();
    const seconds = (performance.now() - t0) / 1000;
    trainSamples += order.length;
    trainSeconds += seconds;
    const trainAcc = targetAccuracy(await predictAll(student, ds, trainSample, predict), ds, trainSample) ?? 0;
    const valAcc = targetAccuracy(await predictAll(student, ds, val, predict), ds, val);
    const testAcc =
      test.length && c.testEachEpoch !== false ? testReport(await predictAll(student, ds, test, predict), ds, test).accuracy : null;
    const record: EpochRecord = {
      epoch,
      ...log.means(order.length),
      train_accuracy: trainAcc,
      val_accuracy: valAcc,
      test_accuracy: testAcc,
      lr,
      seconds,
    };
    history.push(record);
    o.hooks?.onEpoch?.(record);
    // Without a validation slice the latest epoch counts as the best.
    const score = valAcc ?? epoch;
    if (score > best.score) {
      best = { score, epoch };
      await saveWeights(outDir, saved, student.weights);
    }
    const moments = opt.state();
    const checkpoint: Checkpoint = { ...saved, epoch, history, best, objective };
    await saveWeights(ckptDir, checkpoint, { ...trained, ...moments });
    moments['adam.step'].dispose();
    if (c.patience > 0 && valAcc !== null && epoch - best.epoch >= c.patience) break;
  }

  await parallel?.close();
  opt.dispose();
  for (const f of toFree) f.dispose();
  const finalModel = await loadModel(outDir);
  const report = testReport(await predictAll(finalModel.student, ds, test, predict), ds, test);
  const params = countParams(finalModel.student);
  finalModel.student.dispose();
  return { history, test: report, samples_per_second: trainSeconds > 0 ? trainSamples / trainSeconds : 0, best_epoch: best.epoch, params };
}

/** The batch the distillers asked for, built outside the gradient tape. */
function makeBatch(
  ds: Dataset,
  spec: StudentSpec,
  idx: number[],
  needs: Needs,
  nc: number,
  augment: Parameters<typeof batchInput>[3],
  featureTeacher: Student | undefined,
): Batch {
  const x = batchInput(ds, spec, idx, augment);
  const batch: Batch = { idx, x };
  if (needs.hard)
    batch.hard = tf.tensor1d(
      Int32Array.from(idx, (i) => ds.targetHard[i]),
      'int32',
    );
  if (needs.teacherLogits)
    batch.teacherLogits = tf.tidy(() => tf.log(tf.tensor2d(gatherRows(ds.targetProbs, idx, nc), [idx.length, nc])) as tf.Tensor2D);
  if (needs.perTeacher) {
    const p = ds.perTeacher;
    if (!p)
      throw new DistilleryError(`task "${ds.task.name}": a distiller needs each teacher's distribution, and the task has no teacher runs`);
    const t = p.names.length;
    const logits = tf.tidy(
      () => tf.transpose(tf.tensor3d(gatherRows(p.logprobs, idx, t * nc), [idx.length, t, nc]), [1, 0, 2]) as tf.Tensor3D,
    );
    const present = tf.tidy(() => tf.transpose(tf.tensor2d(gatherRows(p.present, idx, t), [idx.length, t])) as tf.Tensor2D);
    batch.perTeacher = { names: p.names, logits, present };
  }
  if (needs.featureTeacher && featureTeacher) {
    // A text teacher reads its own hashing (another bucket count is another table); an image teacher the same pixels.
    const tx = ds.texts ? batchInput(ds, featureTeacher.spec, idx) : x;
    batch.featureTeacher = tf.tidy(() => featureTeacher.forward(tx, { training: false, collect: true }));
  }
  return batch;
}

function disposeBatch(b: Batch): void {
  disposeInput(b.x);
  tf.dispose(
    [b.hard, b.teacherLogits, b.perTeacher?.logits, b.perTeacher?.present, b.featureTeacher].filter(
      (t) => t !== undefined,
    ) as tf.TensorContainer[],
  );
}

/**
 * Per-step loss and terms, kept on the device and read back in one go every few steps;
 * summed in float64, weighted by batch size, as a per-batch read would.
 */
class LossLog {
  private steps: Array<{ packed: tf.Tensor1D; names: string[]; n: number }> = [];
  private lossSum = 0;
  private sums: Record<string, number> = {};

  get pending(): number {
    return this.steps.length;
  }

  push(value: tf.Scalar, terms: Record<string, tf.Scalar>, n: number): void {
    const names = Object.keys(terms);
    const packed = tf.stack([value, ...names.map((k) => terms[k])]) as tf.Tensor1D;
    tf.dispose([value, ...Object.values(terms)]);
    this.steps.push({ packed, names, n });
  }

  async read(): Promise<void> {
    if (this.steps.length === 0) return;
    const all = tf.concat(this.steps.map((s) => s.packed));
    const values = await all.data();
    all.dispose();
    let o = 0;
    for (const s of this.steps) {
      this.lossSum += values[o++] * s.n;
      for (const k of s.names) this.sums[k] = (this.sums[k] ?? 0) + values[o++] * s.n;
      s.packed.dispose();
    }
    this.steps = [];
  }

  means(n: number): { loss: number; terms: Record<string, number> } {
    return { loss: this.lossSum / n, terms: Object.fromEntries(Object.entries(this.sums).map(([k, v]) => [k, v / n])) };
  }
}

function describeObjective(o: Array<{ name: string; key: unknown }>): string {
  return o.map((d) => `${d.name} ${JSON.stringify(d.key)}`).join(', ') || 'none';
}

function gatherRows(src: Float32Array, idx: number[], c: number): Float32Array {
  const out = new Float32Array(idx.length * c);
  idx.forEach((i, k) => out.set(src.subarray(i * c, (i + 1) * c), k * c));
  return out;
}

export function writeMetrics(outDir: string, metrics: object): void {
  writeFileSync(join(outDir, 'metrics.json'), `${JSON.stringify(metrics, null, 2)}\n`);
}
