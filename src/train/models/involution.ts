/**
 * A small involution network (Li et al. 2021, "Involution: Inverting the Inherence of
 * Convolution for Visual Recognition"; RedNet), the teacher with the other inductive bias in
 * CivT (Ren et al. 2022): a convolution's kernel is shared across space and differs per
 * channel; an involution's kernel differs per pixel, is generated from that pixel, and is
 * shared by the channels of a group.
 *
 *   H_{i,j} = φ(X_{i,j}) = W₁ · ReLU(LN(W₀ · X_{i,j}))        (1×1 convs: C → C/r → K²·G)
 *   Y_{i,j,c} = Σ_{(u,v) ∈ K×K} H_{i,j, g(c), (u,v)} · X_{i+u−⌊K/2⌋, j+v−⌊K/2⌋, c},   g(c) = ⌊c / (C/G)⌋
 *
 * The reduction's norm is LayerNorm over channels (RedNet uses BatchNorm; nothing here keeps
 * running statistics). The network, in the mould of the CNN teacher:
 *   stem: conv3×3(c₀) → ReLU → maxpool 2×2
 *   per stage s: involution K×K on c_{s−1} channels → ReLU → 1×1 conv (c_{s−1} → c_s) → ReLU → maxpool 2×2
 *   flatten → dense(fc) → ReLU → dense(C)
 * The involution mixes space within a channel group, the 1×1 conv mixes channels (as a
 * depthwise-separable pair does). Defaults: c₀ = 16, stages [32, 64], K = 3, 8 channels per group,
 * fc = 128.
 *
 * Two choices made by measurement (3,000 MNIST images, 2 epochs, --supervised, lr 1e-3; the CNN
 * teacher had 94.6%): the head flattens, as the CNN's does (a global average pool, RedNet's, was
 * at 14.6%: at this depth it learns next to nothing); and W₁ starts small with a random bias, so
 * that the generated kernels start nearly the same at every pixel and grow their pixel-dependent
 * part (75.6% with LeCun W₁ and a zero bias, whose kernels start as noise that differs per pixel;
 * 82.1% with this start, 89.6% at lr 3e-3). With the first start, a residual or a LayerNorm after the
 * involution did not help (77.6%, 75.6%).
 *
 * The involution itself is a sum of K² shifted slices of the zero-padded input, each times one
 * column of the kernel: Pad, Slice, Mul, Sum, AddN and their gradients (Pad ↔ Slice), all of
 * which wasm has.
 */
import { DistilleryError } from '../../errors.ts';
import { tf } from '../backend.ts';
import { conv2d3x3, dense, layerNorm, maxPool2x2 } from '../ops.ts';
import type { Features, Forward } from './types.ts';
import { he, imageBatch, lecun, normal, ones, positiveInt, shapeOf, zeros, type ParamFn } from './params.ts';

export interface InvolutionSpec {
  kind: 'involution';
  numClasses: number;
  /** [H, W, C]; H and W ≥ 2^(1 + stages). */
  inputShape: [number, number, number];
  /** Channels of the stem conv. Default 16. */
  stem?: number;
  /** Output channels of each involution stage (after its 1×1 conv). Default [32, 64]. */
  channels?: number[];
  /** Involution kernel size K (odd). Default 3. */
  kernel?: number;
  /** Channels per group sharing one generated kernel (must divide every stage's input width). Default 8. */
  groupChannels?: number;
  /** Kernel generation's reduction ratio r (C → C/r). Default 4. */
  reduction?: number;
  /** Width of the hidden dense layer of the head. Default 128. */
  fc?: number;
}

/**
 * Y = involution of x [B,H,W,C] with per-pixel kernels [B,H,W,G·K²] (channel g·K² + u·K + v
 * is group g's weight at offset (u, v), the order of the official code's `view`), stride 1,
 * zero padding ⌊K/2⌋. Exposed for tests.
 */
export function involution2d(x: tf.Tensor4D, kernels: tf.Tensor4D, k: number, groups: number): tf.Tensor4D {
  if (x.rank !== 4 || kernels.rank !== 4)
    throw new Error(`involution2d: x and kernels must be rank 4, got [${x.shape}], [${kernels.shape}]`);
  const [b, h, w, c] = x.shape;
  if (!Number.isInteger(k) || k < 1 || k % 2 !== 1) throw new Error(`involution2d: kernel size must be odd, got ${k}`);
  if (c % groups !== 0) throw new Error(`involution2d: ${c} channels do not split into ${groups} groups`);
  if (kernels.shape[0] !== b || kernels.shape[1] !== h || kernels.shape[2] !== w || kernels.shape[3] !== groups * k * k) {
    throw new Error(`involution2d: kernels must be [${b},${h},${w},${groups * k * k}], got [${kernels.shape}]`);
  }
  return tf.tidy(() => {
    const p = (k - 1) / 2;
    const n = b * h * w;
    const padded =
      p > 0
        ? tf.pad(x, [
            [0, 0],
            [p, p],
            [p, p],
            [0, 0],
          ])
        : x;
    const weights = tf.reshape(kernels, [n, groups, k * k]);
    const taps = tf.split(weights, k * k, 2); // K² × [n, G, 1]
    const terms: tf.Tensor[] = [];
    for (let u = 0; u < k; u++) {
      for (let v = 0; v < k; v++) {
        const shifted = tf.reshape(tf.slice(padded, [0, u, v, 0], [b, h, w, c]), [n, groups, c / groups]);
        terms.push(tf.mul(shifted, taps[u * k + v]));
      }
    }
    return tf.reshape(terms.length === 1 ? terms[0] : tf.addN(terms), [b, h, w, c]) as tf.Tensor4D;
  });
}

interface Stage {
  reduce: { w: tf.Tensor2D; g: tf.Tensor1D; b: tf.Tensor1D };
  span: { w: tf.Tensor2D; b: tf.Tensor1D };
  mix: { w: tf.Tensor2D; b: tf.Tensor1D };
  groups: number;
}

export function buildInvolution(spec: InvolutionSpec, param: ParamFn): Forward {
  const inputShape = shapeOf('involution inputShape', spec.inputShape);
  if (inputShape.length !== 3) throw new DistilleryError(`involution inputShape must be [H, W, C], got ${JSON.stringify(spec.inputShape)}`);
  const [h, w, cin] = inputShape;
  const stem = positiveInt('involution stem', spec.stem ?? 16);
  const channels = spec.channels ?? [32, 64];
  if (!Array.isArray(channels) || channels.length === 0)
    throw new DistilleryError(`involution channels must list one or more channel counts, got ${JSON.stringify(spec.channels)}`);
  const chans = channels.map((n, i) => positiveInt(`involution channels[${i}]`, n));
  const k = positiveInt('involution kernel', spec.kernel ?? 3);
  if (k % 2 !== 1) throw new DistilleryError(`involution kernel must be odd, got ${k}`);
  const gc = positiveInt('involution groupChannels', spec.groupChannels ?? 8);
  const r = positiveInt('involution reduction', spec.reduction ?? 4);
  const pools = 1 + chans.length;
  if (h >> pools < 1 || w >> pools < 1) throw new DistilleryError(`involution input ${h}×${w} is too small for ${pools} 2×2 max-pools`);

  const stemW = param('stem.w', [3, 3, cin, stem], he(9 * cin)) as tf.Tensor4D;
  const stemB = param('stem.b', [stem], zeros) as tf.Tensor1D;
  const stages: Stage[] = chans.map((cout, s) => {
    const c = s === 0 ? stem : chans[s - 1];
    if (c % gc !== 0) throw new DistilleryError(`involution: stage ${s} has ${c} channels, not a multiple of groupChannels ${gc}`);
    const groups = c / gc;
    const mid = Math.max(1, Math.floor(c / r));
    const name = `stages.${s}`;
    return {
      groups,
      // W₀ has no bias: the LayerNorm after it would cancel one.
      reduce: {
        w: param(`${name}.reduce.w`, [c, mid], lecun(c)) as tf.Tensor2D,
        g: param(`${name}.reduce.norm.g`, [mid], ones) as tf.Tensor1D,
        b: param(`${name}.reduce.norm.b`, [mid], zeros) as tf.Tensor1D,
      },
      span: {
        // The kernel starts as its pixel-independent part (W₁'s bias: a K×K kernel per group, He-initialised)
        // plus a small pixel-dependent part, which training grows (see the header).
        w: param(`${name}.span.w`, [mid, groups * k * k], normal(0.1 / Math.sqrt(mid))) as tf.Tensor2D,
        b: param(`${name}.span.b`, [groups * k * k], he(k * k)) as tf.Tensor1D,
      },
      mix: { w: param(`${name}.mix.w`, [c, cout], he(c)) as tf.Tensor2D, b: param(`${name}.mix.b`, [cout], zeros) as tf.Tensor1D },
    };
  });
  const fc = positiveInt('involution fc', spec.fc ?? 128);
  const flat = (h >> pools) * (w >> pools) * chans[chans.length - 1];
  const fcW = param('fc.w', [flat, fc], he(flat)) as tf.Tensor2D;
  const fcB = param('fc.b', [fc], zeros) as tf.Tensor1D;
  const headW = param('head.w', [fc, spec.numClasses], lecun(fc)) as tf.Tensor2D;
  const headB = param('head.b', [spec.numClasses], zeros) as tf.Tensor1D;

  /** φ(X): per-pixel kernels from the pixel itself, [B,H,W,G·K²]. */
  const kernelsOf = (x: tf.Tensor4D, st: Stage) =>
    dense(tf.relu(layerNorm(dense(x, st.reduce.w), st.reduce.g, st.reduce.b)), st.span.w, st.span.b) as tf.Tensor4D;

  return (input, opts = {}) => {
    if (!(input instanceof tf.Tensor)) throw new DistilleryError('involution: input must be a tensor [B, H, W, C]');
    const x = imageBatch('involution', input, inputShape);
    const features: Features = {};
    // The first layer's input is data: no gradient is needed for it.
    let y = maxPool2x2(tf.relu(conv2d3x3(x, stemW, stemB, { inputGrad: false })));
    features.stem = y;
    stages.forEach((st, s) => {
      const inv = tf.relu(involution2d(y, kernelsOf(y, st), k, st.groups));
      y = maxPool2x2(tf.relu(dense(inv, st.mix.w, st.mix.b)) as tf.Tensor4D);
      features[`stage${s}`] = y;
    });
    const z = tf.relu(dense(tf.reshape(y, [y.shape[0], flat]), fcW, fcB));
    return { logits: dense(z, headW, headB) as tf.Tensor2D, ...(opts.collect ? { features } : {}) };
  };
}
