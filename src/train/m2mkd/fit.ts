/**
 * The loop of the module phases (Deep Incubation's module training, m2mKD's module distillation): only
 * some variables train, the rest of the hybrid model is frozen. The same schedule as the trainer (AdamW,
 * warm-up then cosine decay, global-norm clipping, seeded shuffling), without its checkpoints: a module
 * phase is short, and the driver (run.ts) resumes by phase.
 */
import { mulberry32, shuffle } from '../../random.ts';
import { testReport } from '../../infer/evaluate.ts';
import { predictAll } from '../../infer/predict.ts';
import { tf } from '../backend.ts';
import { batchInput, disposeInput, type Dataset } from '../data.ts';
import type { LossTerms } from '../losses.ts';
import type { Forward, Student, VitSpec } from '../models/index.ts';
import { AdamW, clipByGlobalNorm, cosineLr } from '../optim.ts';

export interface FitConfig {
  epochs: number;
  batchSize: number;
  lr: number;
  weightDecay: number;
  /** Warm-up in optimizer steps; undefined: 5% of all steps. */
  warmup?: number;
  clip: number;
  seed: number;
}

export interface ModuleEpoch {
  epoch: number;
  /** Mean over the epoch's items of the summed loss, and of each term. */
  loss: number;
  terms: Record<string, number>;
  /** The hybrid model's accuracy against gold on the test split. */
  test_accuracy: number | null;
  seconds: number;
}

export interface FitJob<P> {
  /** What trains. */
  vars: Record<string, tf.Variable>;
  /** Frozen work for a batch, outside the gradient tape (the teacher's logits, the frozen prefix's tokens). */
  prepare(x: tf.Tensor): P;
  /** Named loss terms, inside the tape. */
  terms(x: tf.Tensor, hard: tf.Tensor1D, prepared: P): LossTerms;
  /** The model whose test accuracy each epoch reports. */
  forward: Forward;
}

/** A forward pass as a Student, for predictAll (which reads the spec for the input shape and class count). */
export function asStudent(spec: VitSpec, forward: Forward): Student {
  return { spec, weights: {}, forward, dispose() {} };
}

/** Test accuracy against gold of a forward pass (null without test items). */
export async function testAccuracy(ds: Dataset, test: number[], spec: VitSpec, forward: Forward): Promise<number | null> {
  if (test.length === 0) return null;
  return testReport(await predictAll(asStudent(spec, forward), ds, test), ds, test).accuracy;
}

export async function fit<P extends tf.TensorContainer>(
  ds: Dataset,
  idx: { train: number[]; test: number[] },
  spec: VitSpec,
  job: FitJob<P>,
  c: FitConfig,
  onEpoch?: (r: ModuleEpoch) => void,
): Promise<ModuleEpoch[]> {
  const opt = new AdamW(job.vars, { weightDecay: c.weightDecay });
  const names = Object.keys(job.vars);
  const total = Math.ceil(idx.train.length / c.batchSize) * c.epochs;
  const history: ModuleEpoch[] = [];
  try {
    for (let epoch = 0; epoch < c.epochs; epoch++) {
      const t0 = performance.now();
      const order = shuffle(idx.train, mulberry32(c.seed * 1000 + epoch));
      const sums: Record<string, number> = {};
      let lossSum = 0;
      for (let s = 0; s < order.length; s += c.batchSize) {
        const part = order.slice(s, s + c.batchSize);
        const x = batchInput(ds, spec, part) as tf.Tensor;
        const hard = tf.tensor1d(
          Int32Array.from(part, (i) => ds.targetHard[i]),
          'int32',
        );
        const prepared = tf.tidy(() => job.prepare(x));
        let terms: LossTerms = {};
        const { value, grads } = tf.variableGrads(() => {
          terms = job.terms(x, hard, prepared);
          for (const t of Object.values(terms)) tf.keep(t);
          return tf.addN(Object.values(terms)) as tf.Scalar;
        }, Object.values(job.vars));
        const named: Record<string, tf.Tensor> = {};
        for (const name of names) named[name] = grads[job.vars[name].name];
        const clipped = clipByGlobalNorm(named, c.clip);
        opt.apply(clipped.grads, cosineLr(opt.step, { lr: c.lr, warmup: c.warmup ?? Math.round(0.05 * total), total }));
        // One read per batch: these phases are short, and the loop stays simple.
        lossSum += (await value.data())[0] * part.length;
        for (const [k, t] of Object.entries(terms)) sums[k] = (sums[k] ?? 0) + (await t.data())[0] * part.length;
        tf.dispose([value, ...Object.values(terms), ...Object.values(grads), ...Object.values(clipped.grads), hard, prepared]);
        disposeInput(x);
      }
      const record: ModuleEpoch = {
        epoch,
        loss: lossSum / order.length,
        terms: Object.fromEntries(Object.entries(sums).map(([k, v]) => [k, v / order.length])),
        test_accuracy: await testAccuracy(ds, idx.test, spec, job.forward),
        seconds: (performance.now() - t0) / 1000,
      };
      history.push(record);
      onEpoch?.(record);
    }
  } finally {
    opt.dispose();
  }
  return history;
}
