import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { DistilleryError } from '../errors.ts';
import { canonicalJson } from '../input/canonical.ts';
import { mulberry32 } from '../random.ts';
import { ece } from '../targets/metrics.ts';
import { tf } from './backend.ts';
import type { Dataset, Preprocess } from './data.ts';
import { augmentImages, type AugmentConfig } from './augment.ts';
import { disposeTeacherFeatures, FeatureKd, PROJ_PREFIX, type FeatureKdConfig } from './feature-kd.ts';
import { loadWeights, saveWeights } from './io.ts';
import { crossEntropy, deitHardDistill, deitPredict, deitSoftDistill, kdLoss, weightedSum, type LossTerms } from './losses.ts';
import { createStudent, studentFromWeights, textBatch, type ForwardOut, type Student, type StudentInput, type StudentSpec, type TextBatch } from './models/index.ts';
import { AdamW, clipByGlobalNorm, cosineLr } from './optim.ts';

/** What a saved model holds besides its weights: enough for eval and predict to rebuild its inputs. */
export interface SavedModelSpec {
  student: StudentSpec;
  task: string;
  labels: string[];
  preprocess: Preprocess;
}

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
  /** Hard target: the teacher's label (gold with --supervised). */
  ceWeight: number;
  /** Hinton's KD on the teachers' distribution at temperature T. */
  kdWeight: number;
  temperature: number;
  /** DeiT's distillation head (a ViT with a distillation token). */
  distill: 'hard' | 'soft';
  distillWeight: number;
  /** Feature-level KD from a local ViT teacher (--teacher-model): see feature-kd.ts. */
  featureKd?: FeatureKdConfig;
  /** Light augmentation of the training batches (images only), drawn from the seed: see augment.ts. */
  augment?: AugmentConfig;
  /** Evaluate the test split after every epoch (history's test_accuracy); false: only the final report. Default true. */
  testEachEpoch?: boolean;
}

export interface EpochRecord {
  epoch: number;
  loss: number;
  terms: Record<string, number>;
  /** Agreement with the training target's hard label on the train split. */
  train_accuracy: number;
  /** On the validation slice (10% of train, targets as in training): what early stopping watches. */
  val_accuracy: number | null;
  /** Against gold on the test split. */
  test_accuracy: number | null;
  lr: number;
  seconds: number;
}

export interface TestReport {
  n: number;
  accuracy: number | null;
  teacher_agreement: number | null;
  ece: number | null;
  confusion: number[][];
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

function shuffle<T>(xs: T[], rand: () => number): T[] {
  const a = [...xs];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

const hashedBags = new WeakMap<Dataset, TextBatch['bags']>();

/** The student's input for a batch of item indices; `augment` (training batches only) transforms the images. */
export function batchInput(ds: Dataset, spec: StudentSpec, idx: number[], augment?: { config: AugmentConfig; rand: () => number }): StudentInput {
  if (ds.texts) {
    if (spec.kind !== 'fasttext') throw new DistilleryError(`a text task needs the fasttext student (got ${spec.kind})`);
    // Texts are hashed once per dataset, not once per batch and epoch.
    let bags = hashedBags.get(ds);
    if (!bags) hashedBags.set(ds, (bags = textBatch(ds.texts, spec).bags));
    return { bags: idx.map((i) => bags![i]) };
  }
  const im = ds.preprocess.image!;
  const per = im.height * im.width * im.channels;
  const buf = new Float32Array(idx.length * per);
  idx.forEach((i, k) => buf.set(ds.pixels!.subarray(i * per, (i + 1) * per), k * per));
  if (augment) augmentImages(buf, idx.length, im.height, im.width, im.channels, augment.config, augment.rand);
  return tf.tensor4d(buf, [idx.length, im.height, im.width, im.channels]);
}

function disposeInput(x: StudentInput): void {
  if (x instanceof tf.Tensor) x.dispose();
}

/**
 * One distillation step's loss terms, in the manner of mdistiller's Distiller:
 * the student's output and a dict of named terms, summed with explicit weights.
 */
export function lossTerms(out: ForwardOut, hard: tf.Tensor1D, teacherLogits: tf.Tensor2D, c: TrainConfig): LossTerms {
  const terms: LossTerms = {};
  if (c.ceWeight > 0) terms.ce = crossEntropy(out.logits, hard);
  if (c.kdWeight > 0) terms.kd = kdLoss(out.logits, teacherLogits, c.temperature);
  if (out.distLogits && c.distillWeight > 0) {
    terms.distill = c.distill === 'hard' ? deitHardDistill(out.distLogits, teacherLogits) : deitSoftDistill(out.distLogits, teacherLogits, c.temperature);
  }
  return terms;
}

/** Class probabilities: a DeiT student averages its two heads. */
export function predictProbs(out: ForwardOut): tf.Tensor2D {
  return (out.distLogits ? deitPredict(out.logits, out.distLogits) : tf.softmax(out.logits)) as tf.Tensor2D;
}

export async function predictAll(student: Student, ds: Dataset, idx: number[], batchSize = 256): Promise<Float32Array> {
  const c = student.spec.numClasses;
  const out = new Float32Array(idx.length * c);
  for (let s = 0; s < idx.length; s += batchSize) {
    const part = idx.slice(s, s + batchSize);
    const x = batchInput(ds, student.spec, part);
    const probs = tf.tidy(() => predictProbs(student.forward(x, { training: false })));
    out.set(await probs.data(), s * c);
    probs.dispose();
    disposeInput(x);
  }
  return out;
}

function argmaxRow(p: Float32Array, i: number, c: number): number {
  let best = 0;
  for (let k = 1; k < c; k++) if (p[i * c + k] > p[i * c + best]) best = k;
  return best;
}

/** Accuracy against gold, agreement with the teachers' label, ECE (15 bins) and the confusion matrix (rows: gold). */
export function testReport(probs: Float32Array, ds: Dataset, idx: number[]): TestReport {
  const c = ds.task.labels.length;
  const confusion = Array.from({ length: c }, () => new Array<number>(c).fill(0));
  let right = 0;
  let agree = 0;
  let withTeacher = 0;
  const rows: Float64Array[] = [];
  const gold: number[] = [];
  idx.forEach((item, k) => {
    const pred = argmaxRow(probs, k, c);
    const g = ds.gold[item];
    confusion[g][pred]++;
    if (pred === g) right++;
    if (ds.teacherHard[item] >= 0) {
      withTeacher++;
      if (ds.teacherHard[item] === pred) agree++;
    }
    rows.push(Float64Array.from(probs.subarray(k * c, (k + 1) * c)));
    gold.push(g);
  });
  const n = idx.length;
  return {
    n,
    accuracy: n ? right / n : null,
    teacher_agreement: withTeacher ? agree / withTeacher : null,
    ece: n ? ece(rows, gold).value : null,
    confusion,
  };
}

function targetAccuracy(probs: Float32Array, ds: Dataset, idx: number[]): number | null {
  if (idx.length === 0) return null;
  const c = ds.task.labels.length;
  let right = 0;
  idx.forEach((item, k) => {
    if (argmaxRow(probs, k, c) === ds.targetHard[item]) right++;
  });
  return right / idx.length;
}

const CHECKPOINT = 'checkpoint';

/**
 * Train a student on a dataset: AdamW, warm-up then cosine decay, gradient
 * clipping, seeded shuffling, evaluation every epoch, early stopping on the
 * validation slice, a checkpoint every epoch (for --resume), and the best
 * model saved to `outDir`.
 */
export async function train(ds: Dataset, spec: StudentSpec, c: TrainConfig, outDir: string, o: { resume?: boolean; hooks?: TrainHooks } = {}): Promise<TrainResult> {
  if (c.augment && !ds.pixels) throw new DistilleryError('--augment: only image tasks can be augmented');
  const { train: trainIdx, val, test } = splitIndices(ds, c.seed);
  const nc = ds.task.labels.length;
  const history: EpochRecord[] = [];
  let startEpoch = 0;
  let best = { score: -Infinity, epoch: -1 };
  const ckptDir = join(outDir, CHECKPOINT);
  let student: Student;
  let optState: Record<string, tf.Tensor> | undefined;
  if (o.resume) {
    if (!existsSync(join(ckptDir, 'model.json'))) throw new DistilleryError(`${ckptDir}: no checkpoint to resume from`);
    const ck = await loadWeights<SavedModelSpec & { epoch: number; history: EpochRecord[]; best: typeof best; featureKd?: FeatureKdConfig | null }>(ckptDir);
    // The saved model's spec is `spec`: a checkpoint of another student would be trained on, then saved under the wrong spec.
    if (canonicalJson(ck.spec.student) !== canonicalJson(spec)) {
      tf.dispose(Object.values(ck.tensors));
      throw new DistilleryError(`${ckptDir}: the checkpoint is of another student (${canonicalJson(ck.spec.student)}); resume with the same student options, or train into a new folder`);
    }
    // Likewise the feature-KD setup: another teacher or other weights/layers would continue the
    // projections (and the loss) of a different objective. Checkpoints from before this check hold none.
    if (ck.spec.featureKd !== undefined && canonicalJson(featureKdKey(ck.spec.featureKd)) !== canonicalJson(featureKdKey(c.featureKd))) {
      tf.dispose(Object.values(ck.tensors));
      throw new DistilleryError(
        `${ckptDir}: the checkpoint was trained with other feature-KD settings (${describeFeatureKd(ck.spec.featureKd)}; now ${describeFeatureKd(c.featureKd)}); resume with the same --teacher-model and feature weights/layers, or train into a new folder`,
      );
    }
    student = studentFromWeights(ck.spec.student, Object.fromEntries(Object.entries(ck.tensors).filter(([k]) => !k.startsWith('adam.') && !k.startsWith(PROJ_PREFIX))));
    optState = ck.tensors;
    history.push(...ck.spec.history);
    startEpoch = ck.spec.epoch + 1;
    best = ck.spec.best;
  } else {
    student = createStudent(spec, c.seed);
  }
  let fkd: FeatureKd | undefined;
  try {
    fkd = c.featureKd ? await FeatureKd.load(c.featureKd, spec, c.seed) : undefined;
  } catch (e) {
    student.dispose();
    tf.dispose(Object.values(optState ?? {}));
    throw e;
  }
  // The projections train with the student, and only the checkpoint keeps them (the saved model is the student alone).
  const trained = { ...student.weights, ...(fkd?.weights ?? {}) };
  const opt = new AdamW(trained, { weightDecay: c.weightDecay });
  if (optState) {
    for (const [k, v] of Object.entries(fkd?.weights ?? {})) if (optState[k]) v.assign(optState[k]);
    opt.load(optState);
    tf.dispose(Object.values(optState));
  }
  mkdirSync(outDir, { recursive: true });
  const stepsPerEpoch = Math.ceil(trainIdx.length / c.batchSize);
  const totalSteps = stepsPerEpoch * c.epochs;
  let trainSamples = 0;
  let trainSeconds = 0;
  const saved: SavedModelSpec = { student: spec, task: ds.task.name, labels: ds.task.labels, preprocess: ds.preprocess };

  for (let epoch = startEpoch; epoch < c.epochs; epoch++) {
    const t0 = performance.now();
    const order = shuffle(trainIdx, mulberry32(c.seed * 1000 + epoch));
    // Its own stream per epoch (not the shuffle's): a resumed run augments as an uninterrupted one.
    const augment = c.augment ? { config: c.augment, rand: mulberry32((c.seed * 1000 + epoch) ^ 0xa06e) } : undefined;
    const sums: Record<string, number> = {};
    let lossSum = 0;
    let lr = c.lr;
    for (let s = 0; s < order.length; s += c.batchSize) {
      const idx = order.slice(s, s + c.batchSize);
      lr = cosineLr(opt.step, { lr: c.lr, warmup: c.warmup ?? Math.round(0.05 * totalSteps), total: totalSteps });
      const x = batchInput(ds, spec, idx, augment);
      const hard = tf.tensor1d(Int32Array.from(idx, (i) => ds.targetHard[i]), 'int32');
      const teacher = tf.tidy(() => tf.log(tf.tensor2d(gatherRows(ds.targetProbs, idx, nc), [idx.length, nc])) as tf.Tensor2D);
      const features = fkd?.teacherFeatures(x);
      let values: Record<string, number> = {};
      const { value, grads } = tf.variableGrads(() => {
        const out = student.forward(x, { training: true, collect: fkd !== undefined });
        const terms = lossTerms(out, hard, teacher, c);
        if (fkd) fkd.addTerms(terms, out, features!);
        values = Object.fromEntries(Object.entries(terms).map(([k, t]) => [k, t.dataSync()[0]]));
        return weightedSum(terms, { ...(terms.ce ? { ce: c.ceWeight } : {}), ...(terms.kd ? { kd: c.kdWeight } : {}), ...(terms.distill ? { distill: c.distillWeight } : {}), ...(fkd?.termWeights() ?? {}) });
      }, Object.values(trained));
      if (features) disposeTeacherFeatures(features);
      const named: Record<string, tf.Tensor> = {};
      for (const [name, v] of Object.entries(trained)) named[name] = grads[v.name];
      const clipped = clipByGlobalNorm(named, c.clip);
      opt.apply(clipped.grads, lr);
      lossSum += value.dataSync()[0] * idx.length;
      for (const [k, v] of Object.entries(values)) sums[k] = (sums[k] ?? 0) + v * idx.length;
      tf.dispose([value, hard, teacher, ...Object.values(clipped.grads), ...Object.values(grads)]);
      disposeInput(x);
      o.hooks?.onBatch?.(Math.min(s + c.batchSize, order.length), order.length);
    }
    const seconds = (performance.now() - t0) / 1000;
    trainSamples += order.length;
    trainSeconds += seconds;
    const trainAcc = targetAccuracy(await predictAll(student, ds, trainIdx), ds, trainIdx) ?? 0;
    const valAcc = targetAccuracy(await predictAll(student, ds, val), ds, val);
    const testAcc = test.length && c.testEachEpoch !== false ? testReport(await predictAll(student, ds, test), ds, test).accuracy : null;
    const record: EpochRecord = {
      epoch,
      loss: lossSum / order.length,
      terms: Object.fromEntries(Object.entries(sums).map(([k, v]) => [k, v / order.length])),
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
    await saveWeights(ckptDir, { ...saved, epoch, history, best, featureKd: featureKdKey(c.featureKd) }, { ...trained, ...moments });
    moments['adam.step'].dispose();
    if (c.patience > 0 && valAcc !== null && epoch - best.epoch >= c.patience) break;
  }

  opt.dispose();
  fkd?.dispose();
  const finalModel = await loadWeights<SavedModelSpec>(outDir);
  student.dispose();
  student = studentFromWeights(finalModel.spec.student, finalModel.tensors);
  tf.dispose(Object.values(finalModel.tensors));
  const report = testReport(await predictAll(student, ds, test), ds, test);
  const params = Object.values(student.weights).reduce((n, v) => n + v.size, 0);
  student.dispose();
  return { history, test: report, samples_per_second: trainSeconds > 0 ? trainSamples / trainSeconds : 0, best_epoch: best.epoch, params };
}

/** The feature-KD settings a checkpoint is bound to: the teacher folder (resolved), the weights and the layer map; null when off. */
function featureKdKey(f: FeatureKdConfig | null | undefined): FeatureKdConfig | null {
  if (!f) return null;
  return { teacherModel: resolve(f.teacherModel), hiddenWeight: f.hiddenWeight, attnWeight: f.attnWeight, manifoldWeight: f.manifoldWeight, ...(f.layers ? { layers: f.layers } : {}) };
}

function describeFeatureKd(f: FeatureKdConfig | null | undefined): string {
  if (!f) return 'none';
  return `teacher ${f.teacherModel}, hidden ${f.hiddenWeight}, attn ${f.attnWeight}, manifold ${f.manifoldWeight}, layers ${f.layers ? f.layers.map(([a, b]) => `${a}:${b}`).join(',') : 'last:last'}`;
}

function gatherRows(src: Float32Array, idx: number[], c: number): Float32Array {
  const out = new Float32Array(idx.length * c);
  idx.forEach((i, k) => out.set(src.subarray(i * c, (i + 1) * c), k * c));
  return out;
}

export function writeMetrics(outDir: string, metrics: object): void {
  writeFileSync(join(outDir, 'metrics.json'), `${JSON.stringify(metrics, null, 2)}\n`);
}
