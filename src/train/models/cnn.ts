/**
 * The usual small MNIST CNN (the local teacher), in the Keras-examples mould:
 *   conv3×3(c1) → ReLU → conv3×3(c2) → ReLU → maxpool 2×2
 *   → conv3×3(c3) → ReLU → maxpool 2×2
 *   → flatten → dense(fc) → ReLU → dropout → dense(C)
 * Defaults c = [32, 32, 64], fc = 128: ~0.4M parameters, ≥ 99% on MNIST with a
 * few epochs of Adam. Convolutions are 'same' so a 28×28 input ends at 7×7×64.
 * Built from ops.ts (im2col conv, custom max-pool gradient): tf.conv2d's weight
 * gradient and tf.maxPool's gradient do not work on wasm.
 */
import { DistilleryError } from '../../errors.ts';
import { tf } from '../backend.ts';
import { conv2d3x3, dense, maxPool2x2 } from '../ops.ts';
import type { Forward } from './index.ts';
import { he, imageBatch, lecun, positiveInt, rate, shapeOf, zeros, type ParamFn } from './params.ts';

export interface CnnSpec {
  kind: 'cnn';
  numClasses: number;
  /** [H, W, C], e.g. [28, 28, 1]; H and W ≥ 4 (two 2×2 pools). */
  inputShape: [number, number, number];
  /** Output channels of the three convolutions. Default [32, 32, 64]. */
  channels?: [number, number, number];
  /** Width of the hidden dense layer. Default 128. */
  fc?: number;
  /** Dropout before the classifier, when training. Default 0 (0.5 is the classic choice for MNIST). */
  dropout?: number;
}

export function buildCnn(spec: CnnSpec, param: ParamFn): Forward {
  const inputShape = shapeOf('cnn inputShape', spec.inputShape);
  if (inputShape.length !== 3) throw new DistilleryError(`cnn inputShape must be [H, W, C], got ${JSON.stringify(spec.inputShape)}`);
  const [h, w, c] = inputShape;
  if (h < 4 || w < 4) throw new DistilleryError(`cnn input ${h}×${w} is too small for two 2×2 max-pools`);
  const [c1, c2, c3] = (spec.channels ?? [32, 32, 64]).map((n, i) => positiveInt(`cnn channels[${i}]`, n));
  const fc = positiveInt('cnn fc', spec.fc ?? 128);
  const dropout = rate('cnn dropout', spec.dropout);

  const conv = (name: string, cin: number, cout: number) => ({
    w: param(`${name}.w`, [3, 3, cin, cout], he(9 * cin)) as tf.Tensor4D,
    b: param(`${name}.b`, [cout], zeros) as tf.Tensor1D,
  });
  const conv1 = conv('conv1', c, c1);
  const conv2 = conv('conv2', c1, c2);
  const conv3 = conv('conv3', c2, c3);
  // maxPool2x2 drops an odd last row/column, like a 'valid' pool.
  const flat = Math.floor(Math.floor(h / 2) / 2) * Math.floor(Math.floor(w / 2) / 2) * c3;
  const fcW = param('fc.w', [flat, fc], he(flat)) as tf.Tensor2D;
  const fcB = param('fc.b', [fc], zeros) as tf.Tensor1D;
  const headW = param('head.w', [fc, spec.numClasses], lecun(fc)) as tf.Tensor2D;
  const headB = param('head.b', [spec.numClasses], zeros) as tf.Tensor1D;

  return (x, opts = {}) => {
    if (!(x instanceof tf.Tensor)) throw new DistilleryError('cnn: input must be a tensor [B, H, W, C]');
    let y = imageBatch('cnn', x, inputShape);
    y = tf.relu(conv2d3x3(y, conv1.w, conv1.b));
    y = tf.relu(conv2d3x3(y, conv2.w, conv2.b));
    y = maxPool2x2(y);
    y = tf.relu(conv2d3x3(y, conv3.w, conv3.b));
    y = maxPool2x2(y);
    let z: tf.Tensor = tf.relu(dense(tf.reshape(y, [y.shape[0], flat]), fcW, fcB));
    if (opts.training && dropout > 0) z = tf.dropout(z, dropout);
    return { logits: dense(z, headW, headB) as tf.Tensor2D };
  };
}
