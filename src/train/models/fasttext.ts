/**
 * fastText classifier (Joulin et al. 2017, "Bag of Tricks for Efficient Text
 * Classification"): text → hashed word and word-bigram ids → mean of their
 * embeddings (an embedding bag) → linear classifier, or an MLP head here.
 *
 *   logits = head(mean_{i ∈ bag} E[i])        E: [buckets, dim]
 *
 * The hashing trick puts words and bigrams in one table of `buckets` rows, so
 * there is no vocabulary to build or store (text-features.ts: the one hashing
 * every text student shares; `buckets` and `bigrams` are in this spec).
 *
 * Input: a TextBatch `{ bags }`, one array of bucket ids per item (textBatch
 * builds it from strings). embeddingBag (ops.ts) supplies the table gradient,
 * which tf.gather cannot on wasm (no UnsortedSegmentSum).
 */
import { DistilleryError } from '../../errors.ts';
import { tf } from '../backend.ts';
import { dense, embeddingBag } from '../ops.ts';
import type { Forward } from './types.ts';
import { activationFn } from './mlp.ts';
import { he, lecun, positiveInt, rate, type ParamFn } from './params.ts';
import { isTextBatch, type TextFeatures } from './text-features.ts';

export interface FasttextSpec extends TextFeatures {
  kind: 'fasttext';
  numClasses: number;
  /** Embedding width. */
  dim: number;
  /** Hidden widths of an MLP head; absent or [] is fastText's linear head. */
  hidden?: number[];
  activation?: 'gelu' | 'relu';
  /** Dropout after each hidden activation, when training. Default 0. */
  dropout?: number;
}

export function buildFasttext(spec: FasttextSpec, param: ParamFn): Forward {
  const buckets = positiveInt('fasttext buckets', spec.buckets);
  const dim = positiveInt('fasttext dim', spec.dim);
  const hiddenSizes = spec.hidden ?? [];
  if (!Array.isArray(hiddenSizes))
    throw new DistilleryError(`fasttext hidden must be an array of layer widths, got ${JSON.stringify(spec.hidden)}`);
  const act = activationFn('fasttext', spec.activation);
  const dropout = rate('fasttext dropout', spec.dropout);

  // fastText's own initialisation of the input matrix: uniform in ±1/dim.
  const table = param('embed.w', [buckets, dim], { kind: 'uniform', limit: 1 / dim }) as tf.Tensor2D;
  let width = dim;
  const layers = hiddenSizes.map((h, i) => {
    positiveInt(`fasttext hidden[${i}]`, h);
    const layer = {
      w: param(`fc.${i}.w`, [width, h], he(width)) as tf.Tensor2D,
      b: param(`fc.${i}.b`, [h], { kind: 'zeros' }) as tf.Tensor1D,
    };
    width = h;
    return layer;
  });
  const headW = param('head.w', [width, spec.numClasses], lecun(width)) as tf.Tensor2D;
  const headB = param('head.b', [spec.numClasses], { kind: 'zeros' }) as tf.Tensor1D;

  return (x, opts = {}) => {
    if (!isTextBatch(x)) throw new DistilleryError('fasttext: input must be { bags: number[][] } (see textBatch / hashTokens)');
    let h: tf.Tensor = embeddingBag(table, x.bags); // [B, dim]; an empty text gives a zero row
    for (const { w, b } of layers) {
      h = act(dense(h, w, b));
      if (opts.training && dropout > 0) h = tf.dropout(h, dropout);
    }
    return { logits: dense(h, headW, headB) as tf.Tensor2D };
  };
}
