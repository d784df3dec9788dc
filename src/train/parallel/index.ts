/**
 * Data-parallel gradients over worker_threads (train.ts --workers N), for backends that run one
 * thread: tfjs turns threaded wasm off under Node, and Node's workers refuse the blob: URL its
 * pthreads would start from, so the wasm backend computes on one core.
 *
 * Each step, the trainer's batch (its shuffle, augmentation and targets, built once on main) is
 * cut into N shares of items; main computes the gradients of share 0 and each of N − 1 workers
 * those of its share on a replica of the student, loaded with main's current weights from a
 * SharedArrayBuffer. Every distiller's loss is a mean over the batch's items, so with n_k items
 * in share k of n,
 *   ∇ L(batch) = Σ_k (n_k / n) ∇ L(share k),
 * the all-reduce below; it equals the single-thread gradient up to float rounding. The trainer then
 * clips and takes its one AdamW step on main, as without workers; the new weights reach the
 * replicas at the next step.
 *
 * Dropout draws its mask from each thread's own unseeded generator, as tf.dropout does on one
 * thread: the masks differ from a single-thread run's, their distribution does not.
 */
import { SettingError } from '../../errors.ts';
import { tf, type BackendChoice } from '../backend.ts';
import type { Batch, Distiller, DistillSettings } from '../distill/index.ts';
import { textFeaturesOf, type Student, type StudentSpec } from '../models/index.ts';
import { batchGrads, type StepGrads } from './grads.ts';
import { Replica } from './pool.ts';
import { disposeShareBatch, layoutOf, shareBatch, shareSizes, splitBatch, writeFlat } from './shares.ts';

export interface ParallelGrads {
  /** The batch's loss, terms and gradients, as batchGrads computes them on one thread. */
  grads(batch: Batch): Promise<StepGrads>;
  close(): Promise<void>;
}

export interface ParallelSetup {
  /** Threads in all, main included. */
  workers: number;
  spec: StudentSpec;
  /** The trainer's: the replicas create the same distillers. */
  c: { seed: number; distill: string[]; settings?: Partial<DistillSettings> };
  student: Student;
  distillers: Distiller[];
  trained: Record<string, tf.Variable>;
}

/** Why --workers > 1 cannot train this, or null when it can. */
export function parallelUnsupported(backend: string, spec: StudentSpec, distillers: Distiller[]): string | null {
  if (backend === 'tensorflow')
    return 'the tensorflow backend already spreads each step over every core (TensorFlow’s own thread pool); workers are for wasm and cpu';
  if (backend !== 'wasm' && backend !== 'cpu') return `the ${backend} backend is not supported (workers are for wasm and cpu)`;
  if (textFeaturesOf(spec))
    return `the general trainer shares no text student's batch (its embedding gradient is the whole table); the fast trainer (fasttext --trainer auto|fast, linear head, ce and kd) runs --workers N as Hogwild threads`;
  for (const d of distillers) {
    if (d.needs.featureTeacher || d.needs.studentFeatures || d.prepare || Object.keys(d.weights).length > 0)
      return `the ${d.name} distiller uses feature maps or weights of its own; with more than one worker, only distillers on labels and teacher distributions (ce, kd, multi-kd, deit, civt) are supported`;
  }
  return null;
}

/** Refuse, naming the setting, what --workers N > 1 cannot train (on the current backend). */
export function checkParallel(workers: number, spec: StudentSpec, distillers: Distiller[]): void {
  const why = parallelUnsupported(tf.getBackend(), spec, distillers);
  if (why) throw new SettingError('workers', workers, why);
}

/** Start N − 1 worker threads with replicas of the student; main is the N-th. */
export async function startParallelGrads(o: ParallelSetup): Promise<ParallelGrads> {
  const backend = tf.getBackend();
  checkParallel(o.workers, o.spec, o.distillers);
  const { slots, total } = layoutOf(o.trained);
  const weights = new SharedArrayBuffer(total * 4);
  const weightsView = new Float32Array(weights);
  const gradBuffers = Array.from({ length: o.workers - 1 }, () => new SharedArrayBuffer(total * 4));
  const started = await Promise.allSettled(
    gradBuffers.map((grads) =>
      Replica.start({
        backend: backend as BackendChoice,
        spec: o.spec,
        seed: o.c.seed,
        distill: o.c.distill,
        settings: o.c.settings ?? {},
        slots,
        weights,
        grads,
      }),
    ),
  );
  const replicas = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  const failed = started.find((s) => s.status === 'rejected');
  if (failed) {
    await Promise.all(replicas.map((r) => r.close()));
    throw failed.reason;
  }
  const gradViews = gradBuffers.map((b) => new Float32Array(b));

  return {
    async grads(batch: Batch): Promise<StepGrads> {
      const n = batch.idx.length;
      const sizes = shareSizes(n, o.workers);
      const shares = splitBatch(batch, sizes);
      writeFlat(weightsView, slots, o.trained);
      const pending = shares.slice(1).map((s, k) => replicas[k].step(s));
      let mine: StepGrads;
      try {
        const own = shareBatch(shares[0]);
        try {
          mine = batchGrads(o.student, o.distillers, o.trained, own);
        } finally {
          disposeShareBatch(own);
        }
      } catch (e) {
        await Promise.allSettled(pending);
        throw e;
      }
      const theirs = await Promise.all(pending).catch((e) => {
        tf.dispose([mine.value, ...Object.values(mine.terms), ...Object.values(mine.grads)]);
        throw e;
      });
      // The all-reduce: share k weighs n_k / n.
      const w = sizes.map((s) => s / n);
      const grads: Record<string, tf.Tensor> = {};
      for (const s of slots) {
        grads[s.name] = tf.tidy(() =>
          theirs.reduce(
            (g, _, k) => tf.add(g, tf.mul(tf.tensor(gradViews[k].subarray(s.offset, s.offset + s.size), s.shape), w[k + 1])),
            tf.mul(mine.grads[s.name], w[0]),
          ),
        );
      }
      const mean = (own: tf.Scalar, of: (r: (typeof theirs)[number]) => number) =>
        tf.tidy(
          () =>
            tf.add(
              tf.mul(own, w[0]),
              theirs.reduce((sum, r, k) => sum + of(r) * w[k + 1], 0),
            ) as tf.Scalar,
        );
      const value = mean(mine.value, (r) => r.value);
      const terms = Object.fromEntries(Object.entries(mine.terms).map(([name, t]) => [name, mean(t, (r) => r.terms[name])]));
      tf.dispose([mine.value, ...Object.values(mine.terms), ...Object.values(mine.grads)]);
      return { value, terms, grads };
    },
    async close() {
      await Promise.all(replicas.map((r) => r.close()));
    },
  };
}
