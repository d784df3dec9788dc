/**
 * One replica of the student on its own thread and its own backend instance (started by ./pool.ts).
 * Per step: load the weights main wrote into the shared buffer, compute the gradients of the
 * distillers' summed terms on this thread's share of the batch (the trainer's own batchGrads),
 * write them into this worker's shared gradient buffer, and answer with the loss and its terms.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { selectBackend, tf, type BackendChoice } from '../backend.ts';
import { createDistillers, type DistillSettings } from '../distill/index.ts';
import { createStudent, type StudentSpec } from '../models/index.ts';
import { batchGrads } from './grads.ts';
import { disposeShareBatch, shareBatch, type Share, type Slot } from './shares.ts';

export interface WorkerInit {
  backend: BackendChoice;
  spec: StudentSpec;
  seed: number;
  distill: string[];
  settings: Partial<DistillSettings>;
  slots: Slot[];
  /** Main's current weights (read here), and this worker's gradients (written here): Float32 each, laid out by `slots`. */
  weights: SharedArrayBuffer;
  grads: SharedArrayBuffer;
}

/** A worker's answer to a share: the share's mean loss and terms (its gradients are in the shared buffer), or what went wrong. */
export type Reply = { value: number; terms: Record<string, number> } | { error: string };

const port = parentPort!;
const init = workerData as WorkerInit;

try {
  await selectBackend(init.backend);
  const student = createStudent(init.spec, init.seed);
  const distillers = createDistillers(init.distill, init.settings, { student: init.spec, seed: init.seed });
  const trained = student.weights; // pool.ts refuses distillers with weights of their own
  const weights = new Float32Array(init.weights);
  const grads = new Float32Array(init.grads);
  port.on('message', (share: Share) => port.postMessage(step(share)));
  port.postMessage({ ready: true });

  function step(share: Share): Reply {
    try {
      for (const s of init.slots) {
        // slice(): a copy of the shared data, so that no backend keeps a view of memory main rewrites.
        const w = tf.tensor(weights.slice(s.offset, s.offset + s.size), s.shape);
        trained[s.name].assign(w);
        w.dispose();
      }
      const batch = shareBatch(share);
      const r = batchGrads(student, distillers, trained, batch);
      disposeShareBatch(batch);
      for (const s of init.slots) grads.set(r.grads[s.name].dataSync() as Float32Array, s.offset);
      const terms = Object.fromEntries(Object.entries(r.terms).map(([k, t]) => [k, t.dataSync()[0]]));
      const value = r.value.dataSync()[0];
      tf.dispose([r.value, ...Object.values(r.terms), ...Object.values(r.grads)]);
      return { value, terms };
    } catch (e) {
      return { error: (e as Error).message };
    }
  }
} catch (e) {
  port.postMessage({ error: (e as Error).message });
}
