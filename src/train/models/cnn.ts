/**
 * The usual small MNIST CNN (the local teacher), in the Keras-examples mould.
 * With three channel counts (the default, [32, 32, 64]):
 *   conv3×3(c1) → ReLU → conv3×3(c2) → ReLU → maxpool 2×2
 *   → conv3×3(c3) → ReLU → maxpool 2×2
 * With two ([c1, c2], e.g. [32, 64]; ~3× fewer multiply-adds on 28×28):
 *   conv3×3(c1) → ReLU → maxpool 2×2 → conv3×3(c2) → ReLU → maxpool 2×2
 * then → flatten → dense(fc) → ReLU → dropout → dense(C).
 * Defaults c = [32, 32, 64], fc = 128: ~0.4M parameters, ≥ 99% on MNIST with a
 * few epochs of Adam. Convolutions are 'same' so a 28×28 input ends at 7×7×c_last.
 * Built from ops.ts (conv with its own weight gradient, bias and ReLU fused;
 * custom max-pool gradient): tf.conv2d's weight gradient and tf.maxPool's
 * gradient do not work on wasm.
 */
import { DistilleryError } from '../../errors.ts';
import { tf } from '../backend.ts';
import { conv2d3x3, dense, maxPool2x2, relu } from '../ops.ts';
import type { Features, Forward } from './types.ts';
import { he, imageBatch, lecun, positiveInt, rate, shapeOf, zeros, type ParamFn } from './params.ts';

export interface CnnSpec {
  kind: 'cnn';
  numClasses: number;
  /** [H, W, C], e.g. [28, 28, 1]; H and W ≥ 4 (two 2×2 pools). */
  inputShape: [number, number, number];
  /**
   * Output channels of the convolutions: three (conv, conv, pool, conv, pool) or
   * two (conv, pool, conv, pool). Default [32, 32, 64].
   */
  channels?: [number, number, number] | [number, number];
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
  const channels = spec.channels ?? [32, 32, 64];
  if (!Array.isArray(channels) || (channels.length !== 2 && channels.length !== 3)) {
    throw new DistilleryError(`cnn channels must list 2 or 3 channel counts, got ${JSON.stringify(spec.channels)}`);
  }
  const chans = channels.map((n, i) => positiveInt(`cnn channels[${i}]`, n));
  const fc = positiveInt('cnn fc', spec.fc ?? 128);
  const dropout = rate('cnn dropout', spec.dropout);

  const conv = (name: string, cin: number, cout: number) => ({
    w: param(`${name}.w`, [3, 3, cin, cout], he(9 * cin)) as tf.Tensor4D,
    b: param(`${name}.b`, [cout], zeros) as tf.Tensor1D,
  });
  const convs = chans.map((cout, i) => conv(`conv${i + 1}`, i === 0 ? c : chans[i - 1], cout));
  // Max-pool after these convolutions (0-based): [1, 2] for three, [0, 1] for two.
  const poolAfter = new Set(chans.length === 3 ? [1, 2] : [0, 1]);
  const cLast = chans[chans.length - 1];
  // maxPool2x2 drops an odd last row/column, like a 'valid' pool.
  const flat = Math.floor(Math.floor(h / 2) / 2) * Math.floor(Math.floor(w / 2) / 2) * cLast;
  const fcW = param('fc.w', [flat, fc], he(flat)) as tf.Tensor2D;
  const fcB = param('fc.b', [fc], zeros) as tf.Tensor1D;
  const headW = param('head.w', [fc, spec.numClasses], lecun(fc)) as tf.Tensor2D;
  const headB = param('head.b', [spec.numClasses], zeros) as tf.Tensor1D;

  return (x, opts = {}) => {
    if (!(x instanceof tf.Tensor)) throw new DistilleryError('cnn: input must be a tensor [B, H, W, C]');
    let y = imageBatch('cnn', x, inputShape);
    const features: Features = {};
    convs.forEach((cv, i) => {
      // The first layer's input is data: no gradient is needed for it.
      y = conv2d3x3(y, cv.w, cv.b, { inputGrad: i > 0, activation: 'relu' });
      if (poolAfter.has(i)) y = maxPool2x2(y);
      features[`stage${i}`] = y;
    });
    let z: tf.Tensor = relu(dense(tf.reshape(y, [y.shape[0], flat]), fcW, fcB));
    if (opts.training && dropout > 0) z = tf.dropout(z, dropout);
    return { logits: dense(z, headW, headB) as tf.Tensor2D, ...(opts.collect ? { features } : {}) };
  };
}
