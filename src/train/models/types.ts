/** The shapes every student shares: its input, its forward pass and what that returns. */
import type { tf } from '../backend.ts';
import type { Bag } from '../ops.ts';

/**
 * Text input for `fasttext`: per item, the hashed feature ids in [0, buckets)
 * (see hashTokens / textBatch). A plain array rather than an int tensor plus
 * offsets because embeddingBag plans its gather and its gradient in JS anyway.
 */
export interface TextBatch {
  bags: readonly Bag[];
}

/** Image models take a float tensor [B, H, W, C] (or [B, D] for logreg/mlp); fasttext takes a TextBatch. */
export type StudentInput = tf.Tensor | TextBatch;

/**
 * A type alias, not an interface, so that it counts as a tf.TensorContainer:
 * `tf.tidy(() => student.forward(x))` then type-checks and keeps every output.
 */
export type ForwardOut = {
  logits: tf.Tensor2D;
  /** ViT with a distillation token (DeiT): the (first) distillation head's logits. */
  distLogits?: tf.Tensor2D;
  /** ViT with distillation tokens (CivT: one per teacher): every distillation head's logits, in token order. */
  distLogitsAll?: tf.Tensor2D[];
  /**
   * collect: named intermediate tensors, for feature losses:
   *   vit  `block<i>.hidden` [B, N, D] (N counts the class/distillation tokens), `block<i>.q|k|v`
   *        [B, heads, N, d], `patches` (the last block's output at the patch positions) [B, P, D];
   *   cnn  `stage<i>` after each conv (and its pool) [B, H, W, C]; mlp `layer<i>` after each hidden layer.
   */
  features?: Features;
};

/** Named intermediate tensors of a forward pass (ForwardOut.features). */
export type Features = { [name: string]: tf.Tensor };

export interface ForwardOptions {
  /** Turns dropout on (mlp, cnn, fasttext MLP head). Default false. */
  training?: boolean;
  /** Return the intermediate tensors (ForwardOut.features) the feature losses need. Default false. */
  collect?: boolean;
}

export type Forward = (x: StudentInput, opts?: ForwardOptions) => ForwardOut;
