/**
 * The first linear layer of logreg and mlp, x·W + b, on either kind of input:
 *
 *   images  x = the flattened pixels: a dense product, W: [H·W·C, width];
 *   texts   x = the text's counts of hashed words and bigrams (text-features.ts) divided by their
 *           total, so x·W = mean_{i ∈ bag} W[i], W: [buckets, width]: an embedding bag.
 *
 * Why the mean (L1-normalised term counts) for texts: it is exactly what fastText feeds its
 * classifier (the mean of the bag's embeddings), so logreg is fastText with a full-rank
 * [buckets, classes] table in place of its [buckets, dim]·[dim, classes] factorisation, and
 * mlp is fastText with a bias and a non-linearity after the bag; the three differ only in the
 * model. Computed sparsely (embeddingBag gathers only the bag's rows and has its own gradient),
 * never as the [batch, buckets] matrix; the general trainer's AdamW still updates the whole table
 * each step (see embeddingBag in ops.ts), which is why train.ts gives these tables 2^16 rows.
 */
import { DistilleryError } from '../../errors.ts';
import { tf } from '../backend.ts';
import { dense, embeddingBag } from '../ops.ts';
import { flattenBatch, positiveInt, shapeOf, zeros, type Init, type ParamFn } from './params.ts';
import { isTextBatch, textFeaturesOf, type TextFeatures } from './text-features.ts';
import type { StudentInput } from './types.ts';

/** What logreg and mlp read: images of `inputShape`, or texts hashed as `buckets`/`bigrams` say (exactly one of the two). */
export interface DenseInput extends Partial<TextFeatures> {
  /** Images: one item's shape, e.g. [28, 28, 1] or [784]; inputs are flattened. */
  inputShape?: number[];
}

/**
 * `${name}.w` and `${name}.b` for a layer of `width` outputs on the spec's input; `init(fanIn)` initialises
 * an image layer's W, `textInit` a text table.
 */
export function inputLinear(
  spec: DenseInput & { kind: string },
  param: ParamFn,
  name: string,
  width: number,
  init: (fanIn: number) => Init,
  textInit: Init,
): (x: StudentInput) => tf.Tensor2D {
  const what = spec.kind;
  const text = textFeaturesOf(spec);
  if (text && spec.inputShape !== undefined) throw new DistilleryError(`${what}: give inputShape (images) or buckets (texts), not both`);
  if (text) {
    const buckets = positiveInt(`${what} buckets`, text.buckets);
    const w = param(`${name}.w`, [buckets, width], textInit) as tf.Tensor2D;
    const b = param(`${name}.b`, [width], zeros) as tf.Tensor1D;
    return (x) => {
      if (!isTextBatch(x)) throw new DistilleryError(`${what}: a text student's input must be { bags: number[][] } (see textBatch)`);
      return tf.add(embeddingBag(w, x.bags), b) as tf.Tensor2D; // an empty text: the bias alone
    };
  }
  const inputShape = shapeOf(`${what} inputShape`, spec.inputShape);
  const d = inputShape.reduce((a, c) => a * c, 1);
  const w = param(`${name}.w`, [d, width], init(d)) as tf.Tensor2D;
  const b = param(`${name}.b`, [width], zeros) as tf.Tensor1D;
  return (x) => {
    if (!(x instanceof tf.Tensor)) throw new DistilleryError(`${what}: input must be a tensor [B, ...inputShape]`);
    return dense(flattenBatch(what, x, inputShape), w, b) as tf.Tensor2D;
  };
}
