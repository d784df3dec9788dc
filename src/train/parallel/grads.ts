/**
 * The gradients of one batch on this thread: what the trainer computes each step without
 * workers, and what main and each worker compute on their share of the batch with them.
 */
import { tf } from '../backend.ts';
import { unionNeeds, type Batch, type Distiller } from '../distill/index.ts';
import type { Student } from '../models/index.ts';

/** What one optimizer step needs of a batch, before clipping: the loss, its named terms, and each trained weight's gradient. */
export interface StepGrads {
  value: tf.Scalar;
  terms: Record<string, tf.Scalar>;
  grads: Record<string, tf.Tensor>;
}

/** The student once under the gradient tape: the distillers' terms summed, differentiated w.r.t. `trained` (by name). */
export function batchGrads(student: Student, distillers: Distiller[], trained: Record<string, tf.Variable>, batch: Batch): StepGrads {
  const progress = batch.epoch !== undefined && batch.epochs !== undefined ? { epoch: batch.epoch, epochs: batch.epochs } : undefined;
  const collect = unionNeeds(distillers, progress).studentFeatures === true;
  const prepared = distillers.map((d) => (d.prepare ? d.prepare(batch) : undefined));
  let terms: Record<string, tf.Scalar> = {};
  const { value, grads } = tf.variableGrads(() => {
    const out = student.forward(batch.x, { training: true, collect });
    terms = Object.assign({}, ...distillers.map((d, i) => d.terms(out, batch, prepared[i])));
    for (const t of Object.values(terms)) tf.keep(t);
    return sumTerms(terms);
  }, Object.values(trained));
  tf.dispose(prepared as tf.TensorContainer);
  const named: Record<string, tf.Tensor> = {};
  // A weight no term reaches in this step (DearKD's aligner in stage 2) has no gradient: it is left as it is.
  for (const [name, v] of Object.entries(trained)) if (grads[v.name]) named[name] = grads[v.name];
  return { value, terms, grads: named };
}

/** total = Σ terms (each already weighted by its distiller). */
function sumTerms(terms: Record<string, tf.Scalar>): tf.Scalar {
  const ts = Object.values(terms);
  return ts.length === 0 ? tf.scalar(0) : (tf.addN(ts) as tf.Scalar);
}
