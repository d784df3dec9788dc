/**
 * Differentiable building blocks for students that must train on every
 * backend, in particular wasm (tfjs-backend-wasm 4.22), the CPU path that
 * loads everywhere. wasm has forward kernels for almost everything, but some
 * kernels that tfjs's own gradients call are missing or wrong there:
 *
 * - `Conv2DBackpropFilter` (weight gradient of tf.conv2d) is missing →
 *   conv2d3x3's weight gradient and conv2dPatches are im2col + one 2-D matMul
 *   (conv2d3x3's patch matrix is written by a JS loop straight into the wasm
 *   heap); its forward and input gradient are wasm's own (XNNPACK) convolution.
 * - `DepthwiseConv2dNativeBackpropFilter` is missing → no depthwise conv here.
 * - `UnsortedSegmentSum` (gradient of tf.gather w.r.t. its table) is missing →
 *   embeddingBag has its own table gradient.
 * - `MaxPoolGrad` is registered but returns wrong gradients (drops the gradient
 *   of some windows) → maxPool2x2 has its own gradient (a JS loop on the heap).
 *
 * wasm is also slow off its fast path: only a plain 2-D matMul (no transpose
 * flags, no batch dimension) is fast; `tf.matMul(a, b, true, false)` measured
 * 5–25× slower than the plain product of the same size, and tf.matMul's own
 * gradient uses exactly those flags. So every product here is `matMul2d`,
 * whose gradient is two plain products.
 *
 * Checked against cpu on wasm and used as-is: MaxPool (forward), AvgPool and
 * AvgPoolGrad, Slice/PadV2, Concat/SplitV, Transpose, Reverse, GatherNd
 * (forward), ScatterNd, ResizeNearestNeighbor, Tanh, Softmax, Mean, Rsqrt.
 *
 * Also slow on wasm, and avoided where it matters: Slice and Concat are JS
 * loops copying one innermost row at a time (an im2col from 9 slices was ~80%
 * of a CNN step; see conv2d3x3), Transpose of a large 2-D matrix costs more
 * than multiplying it, and GatherV2 is ~40× slower than GatherNd (see
 * embeddingBag). And on this machine the first touch of fresh memory is slow
 * (~0.25 s per 58 MB): large per-step JS arrays handed to tf.tensor cost more
 * than the product they feed, while the wasm heap, once grown, is reused.
 *
 * On the native backend (tfjs-node, `tensorflow`) none of this applies: it
 * has every kernel, and its MatMul takes transpose flags and batch axes at
 * full speed. There the ops that exist only for wasm's sake (matMul2d, the
 * convolutions, embeddingBag) use tfjs's own ops and TensorFlow's kernels
 * (measured in scripts/bench-train.ts), and where tfjs builds a gradient from
 * several kernels that TensorFlow has as one (ReluGrad, BiasAddGrad) the
 * gradient calls TensorFlow's op directly (runRawOp). maxPool2x2 keeps its
 * gradient everywhere: it splits ties evenly, which TensorFlow's MaxPoolGrad
 * does not, and a student should not train differently by backend.
 *
 * Per-kernel overhead matters as much as the kernels on both backends (a
 * native ViT step was ~1900 kernel launches): fewer, larger kernels win.
 */
import { tf } from './backend.ts';

/** True on tfjs-node: TensorFlow's own kernels are there and fast, so the wasm workarounds are skipped. */
function onNative(): boolean {
  return tf.getBackend() === 'tensorflow';
}

type GradSave = (tensors: tf.Tensor[]) => void;

/** tfjs-node's backend, as far as runRawOp needs it: TensorFlow's eager op runner. */
interface NativeBackend {
  binding: { TF_ATTR_TYPE: number; TF_ATTR_STRING: number; TF_FLOAT: number };
  executeSingleOutput(name: string, attrs: { name: string; type: number; value: unknown }[], inputs: tf.Tensor[]): tf.Tensor;
}

/**
 * One TensorFlow op on float32 inputs, by its TensorFlow name, on the native
 * backend: for the gradient ops (ReluGrad, BiasAddGrad) that TensorFlow has
 * as single kernels while tfjs composes them from several (tfjs's ReLU
 * gradient is Step, itself IsNan, Greater, Fill, Select plus a JS-built ones
 * tensor, measured ~25% of a native CNN step). Only inside a customGrad: the
 * result is tracked for disposal but not recorded on the gradient tape.
 */
function runRawOp(name: string, inputs: tf.Tensor[], attrs: Record<string, string> = {}): tf.Tensor {
  const backend = tf.backend() as unknown as NativeBackend;
  const { binding } = backend;
  const list: { name: string; type: number; value: unknown }[] = [{ name: 'T', type: binding.TF_ATTR_TYPE, value: binding.TF_FLOAT }];
  for (const [k, v] of Object.entries(attrs)) list.push({ name: k, type: binding.TF_ATTR_STRING, value: v });
  return backend.executeSingleOutput(name, list, inputs);
}

// ---------------------------------------------------------------------------
// Products
// ---------------------------------------------------------------------------

/**
 * tf.matMul's gradient is `matMul(dy, b, false, true)` and `matMul(a, dy, true, false)`:
 * on wasm the transpose flags leave the fast path. Transposing explicitly (a 2-D
 * Transpose) and multiplying plainly is several times faster there.
 */
const matMul2dWithGrad = tf.customGrad((a, b, save) => {
  const A = a as tf.Tensor2D;
  const B = b as tf.Tensor2D;
  (save as GradSave)([A, B]);
  return {
    value: tf.matMul(A, B),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [sa, sb] = saved as [tf.Tensor2D, tf.Tensor2D];
      const dY = dy as tf.Tensor2D;
      return [tf.matMul(dY, tf.transpose(sb)), tf.matMul(tf.transpose(sa), dY)];
    },
  };
});

/** [m,k] × [k,n] → [m,n]; forward and backward are plain 2-D products only. */
export function matMul2d(a: tf.Tensor2D, b: tf.Tensor2D): tf.Tensor2D {
  if (a.rank !== 2 || b.rank !== 2) throw new Error(`matMul2d: expected two rank-2 tensors, got ranks ${a.rank} and ${b.rank}`);
  if (a.shape[1] !== b.shape[0]) throw new Error(`matMul2d: inner dimensions differ: [${a.shape}] × [${b.shape}]`);
  return onNative() ? tf.matMul(a, b) : (matMul2dWithGrad(a, b) as tf.Tensor2D);
}

/**
 * Fully connected layer over the last axis of x (rank ≥ 2), w [k, n], b [n].
 * Leading axes are folded into the rows so that the product stays 2-D: a
 * rank-3 × rank-2 tf.matMul is a batched product (~10× slower per flop on
 * wasm), and in tfjs 4.22 its gradient for w comes back with x's batch axis
 * and throws.
 */
export function dense(x: tf.Tensor, w: tf.Tensor2D, b?: tf.Tensor1D): tf.Tensor {
  if (x.rank < 2) throw new Error(`dense: x must have rank ≥ 2, got [${x.shape}]`);
  const k = x.shape[x.rank - 1];
  if (w.rank !== 2 || w.shape[0] !== k) throw new Error(`dense: w must be [${k}, n], got [${w.shape}]`);
  const y2 = matMul2d(tf.reshape(x, [-1, k]) as tf.Tensor2D, w);
  const y = b ? tf.add(y2, b) : y2;
  return tf.reshape(y, [...x.shape.slice(0, -1), w.shape[1]]);
}

// ---------------------------------------------------------------------------
// Convolutions (no Conv2DBackpropFilter)
// ---------------------------------------------------------------------------

export interface Conv3x3Options {
  /** Only 1: a strided im2col would need StridedSlice, which has no gradient in tfjs. */
  stride?: 1;
  /** 'same' (default) keeps H×W; 'valid' drops the border (H−2)×(W−2). */
  padding?: 'same' | 'valid';
  /**
   * false: x's gradient is returned as zeros instead of computed. For a first
   * layer whose input is data: a custom gradient computes every input's
   * gradient whether or not anything needs it, and dx costs as much as the
   * forward product. Default true.
   */
  inputGrad?: boolean;
  /**
   * 'relu': max(0, conv + b), in the same op as tf.fused.conv2d: one fused
   * kernel forward on wasm, and the ReLU's gradient is taken from the output
   * inside the conv's own. Default 'linear'.
   */
  activation?: 'linear' | 'relu';
}

/**
 * 3×3 convolution, NHWC x [B,H,W,Cin], w [3,3,Cin,Cout], optional bias [Cout]
 * and ReLU: the same result as tf.conv2d(x, w, 1, padding) (+ b, then relu),
 * with a custom gradient: tf.conv2d's weight gradient needs
 * Conv2DBackpropFilter, which wasm lacks.
 */
export function conv2d3x3(x: tf.Tensor4D, w: tf.Tensor4D, b?: tf.Tensor1D, opts: Conv3x3Options = {}): tf.Tensor4D {
  const pad = (opts.padding ?? 'same') === 'same' ? 1 : 0;
  if ((opts.stride ?? 1) !== 1) throw new Error('conv2d3x3: only stride 1 is supported');
  if (x.rank !== 4) throw new Error(`conv2d3x3: x must be [B,H,W,C], got [${x.shape}]`);
  const cin = x.shape[3];
  if (w.rank !== 4 || w.shape[0] !== 3 || w.shape[1] !== 3 || w.shape[2] !== cin) {
    throw new Error(`conv2d3x3: w must be [3,3,${cin},Cout], got [${w.shape}]`);
  }
  if (x.shape[1] + 2 * pad < 3 || x.shape[2] + 2 * pad < 3)
    throw new Error(`conv2d3x3: input [${x.shape}] is too small for a 3×3 'valid' conv`);
  const inputGrad = opts.inputGrad !== false;
  const relu = opts.activation === 'relu';
  if (onNative()) return nativeConv(x, w, b, 1, pad ? 'same' : 'valid', inputGrad, relu);
  const f = conv3x3WithGrad(pad, inputGrad, relu, b !== undefined);
  return (b ? f(x, w, b) : f(x, w)) as tf.Tensor4D;
}

/**
 * wasm (and cpu): the forward is the FusedConv2D kernel (XNNPACK's
 * convolution with the bias and ReLU fused, on wasm), dx a Conv2D, and only
 * dw an im2col:
 * - dx is the 'valid' 3×3 conv of dz padded by 2 − pad, with w flipped
 *   spatially and its channel axes swapped (dz = dy·[y > 0] with the ReLU).
 *   Both convolutions measured 2–2.5× faster than the im2col + product that
 *   did them before, with the same numbers.
 * - dw = patchesᵀ·dz, with patchesᵀ [9·Cin, N] written by a JS loop
 *   (im2col3x3T) straight from x: wasm's 2-D product is fast with many rows on
 *   the left and slow with few, and [9·Cin, N]·[N, Cout] measured ~2× faster
 *   than (dzᵀ·patches)ᵀ, whose left side has Cout rows.
 * - db = 1ᵀ·dz, a [1, N]·[N, Cout] product: wasm's Sum over the rows of
 *   [N, Cout] measured ~15× slower.
 */
function conv3x3WithGrad(pad: 0 | 1, inputGrad: boolean, relu: boolean, hasBias: boolean) {
  const key = `${pad}${+inputGrad}${+relu}${+hasBias}`;
  let f = conv3x3ByKind.get(key);
  if (f) return f;
  const forward = (X: tf.Tensor4D, W: tf.Tensor4D, bias: tf.Tensor1D | undefined, save: GradSave) => {
    const [batch, h, wd, cin] = X.shape;
    const cout = W.shape[3];
    const rows = batch * (h + 2 * pad - 2) * (wd + 2 * pad - 2);
    // The kernel itself: tf.fused.conv2d does not fuse while a gradient is being taken (it would need its own gradient).
    const attrs = { strides: 1, pad: pad ? 'same' : 'valid', dataFormat: 'NHWC', dilations: 1, activation: relu ? 'relu' : 'linear' };
    const inputs: tf.NamedTensorMap = bias ? { x: X, filter: W, bias } : { x: X, filter: W };
    const y = tf.engine().runKernel(tf.FusedConv2D, inputs, attrs as unknown as tf.NamedAttrMap) as tf.Tensor4D;
    save(relu ? [X, W, y] : [X, W]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sx, sw, sy] = saved as [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D?];
        const dz = sy ? (tf.mul(dy, tf.step(sy)) as tf.Tensor4D) : (dy as tf.Tensor4D);
        const dZ = tf.reshape(dz, [rows, cout]) as tf.Tensor2D;
        const dw = tf.reshape(tf.matMul(im2col3x3T(sx, pad), dZ), [3, 3, cin, cout]); // [9·Cin, N]·[N, Cout]
        // 'valid' conv of dz padded by 2 − pad gives back H×W: (ho + 2(2 − pad) − 2) = h.
        const flipped = tf.transpose(tf.reverse(sw, [0, 1]), [0, 1, 3, 2]) as tf.Tensor4D;
        const dx = !inputGrad
          ? tf.zeros([batch, h, wd, cin])
          : pad
            ? tf.conv2d(dz, flipped, 1, 'same')
            : tf.conv2d(
                tf.pad(dz, [
                  [0, 0],
                  [2, 2],
                  [2, 2],
                  [0, 0],
                ]),
                flipped,
                1,
                'valid',
              );
        if (!bias) return [dx, dw];
        return [dx, dw, tf.reshape(tf.matMul(tf.fill([1, rows], 1) as tf.Tensor2D, dZ), [cout])];
      },
    };
  };
  f = hasBias
    ? tf.customGrad((x, w, b, save) => forward(x as tf.Tensor4D, w as tf.Tensor4D, b as tf.Tensor1D, save as GradSave))
    : tf.customGrad((x, w, save) => forward(x as tf.Tensor4D, w as tf.Tensor4D, undefined, save as GradSave));
  conv3x3ByKind.set(key, f);
  return f;
}
const conv3x3ByKind = new Map<string, ReturnType<typeof tf.customGrad>>();

/**
 * A convolution, its bias and ReLU on TensorFlow's kernels: Conv2D + BiasAdd
 * (+ Relu) forward; ReluGrad, Conv2DBackpropInput, Conv2DBackpropFilter and
 * BiasAddGrad backward, one kernel per gradient (tfjs's gradient of a
 * broadcast add is a Sum and a Reshape, and of a ReLU five kernels).
 * inputGrad false keeps the wasm path's contract: x's gradient is zeros, not
 * computed.
 */
function nativeConv(
  x: tf.Tensor4D,
  w: tf.Tensor4D,
  b: tf.Tensor1D | undefined,
  stride: number,
  padding: 'same' | 'valid',
  inputGrad: boolean,
  relu: boolean,
): tf.Tensor4D {
  const attrs = { strides: stride, pad: padding, dataFormat: 'NHWC' } as const;
  const forward = (xi: tf.Tensor4D, wi: tf.Tensor4D, bi: tf.Tensor1D | undefined, save: GradSave) => {
    const conv = tf.conv2d(xi, wi, stride, padding);
    const biased = bi ? (runRawOp('BiasAdd', [conv, bi], { data_format: 'NHWC' }) as tf.Tensor4D) : conv;
    const y = relu ? tf.relu(biased) : biased;
    save(relu ? [xi, wi, y] : [xi, wi]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sx, sw, sy] = saved as [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D?];
        const dz = sy ? runRawOp('ReluGrad', [dy, sy]) : dy;
        const kernel = (name: string, inputs: tf.NamedTensorMap, extra: object) =>
          tf.engine().runKernel(name, inputs, { ...attrs, ...extra } as unknown as tf.NamedAttrMap) as tf.Tensor;
        const dx = inputGrad ? kernel(tf.Conv2DBackpropInput, { dy: dz, filter: sw }, { inputShape: sx.shape }) : tf.zerosLike(sx);
        const dw = kernel(tf.Conv2DBackpropFilter, { x: sx, dy: dz }, { filterShape: sw.shape });
        return bi ? [dx, dw, runRawOp('BiasAddGrad', [dz], { data_format: 'NHWC' })] : [dx, dw];
      },
    };
  };
  const f = b
    ? tf.customGrad((xi, wi, bi, save) => forward(xi as tf.Tensor4D, wi as tf.Tensor4D, bi as tf.Tensor1D, save as GradSave))
    : tf.customGrad((xi, wi, save) => forward(xi as tf.Tensor4D, wi as tf.Tensor4D, undefined, save as GradSave));
  return (b ? f(x, w, b) : f(x, w)) as tf.Tensor4D;
}

/**
 * The patch matrix of a 3×3 'valid' conv of x zero-padded by `pad` on each
 * side: [B·Ho·Wo, 9·C], rows (b, i, j), columns (dy, dx, c) — the row-major
 * order of w [3,3,C,Cout] — with Ho = H + 2·pad − 2. Exposed for tests.
 */
export function im2col3x3(x: tf.Tensor4D, pad: number): tf.Tensor2D {
  const [batch, h, wd, c] = x.shape;
  const [ho, wo] = [h + 2 * pad - 2, wd + 2 * pad - 2];
  const k = 9 * c;
  const { out, src, finish } = zeroOutput([batch * ho * wo, k], x);
  for (let b = 0; b < batch; b++) {
    for (let i = 0; i < ho; i++) {
      for (let ty = 0; ty < 3; ty++) {
        const r = i + ty - pad; // input row
        if (r < 0 || r >= h) continue; // zero padding: left as 0
        const rowBase = (b * h + r) * wd * c;
        for (let tx = 0; tx < 3; tx++) {
          // output column j reads input column j + tx − pad
          const j0 = Math.max(0, pad - tx);
          const j1 = Math.min(wo, wd + pad - tx);
          let o = ((b * ho + i) * wo + j0) * k + (ty * 3 + tx) * c;
          let s = rowBase + (j0 + tx - pad) * c;
          if (c === 1) {
            for (let j = j0; j < j1; j++, o += k, s++) out[o] = src[s];
          } else {
            for (let j = j0; j < j1; j++, o += k, s += c) for (let ch = 0; ch < c; ch++) out[o + ch] = src[s + ch];
          }
        }
      }
    }
  }
  return finish() as tf.Tensor2D;
}

/**
 * The transpose of im2col3x3(x, pad), [9·C, B·Ho·Wo], written directly: rows
 * (dy, dx, c), columns (b, i, j). x is read in order, each pixel's C values
 * going to C rows (C write streams): reading x with a stride of C instead,
 * one output row at a time, measured ~1.7× slower at C = 32. Exposed for tests.
 */
export function im2col3x3T(x: tf.Tensor4D, pad: number): tf.Tensor2D {
  const [batch, h, wd, c] = x.shape;
  const [ho, wo] = [h + 2 * pad - 2, wd + 2 * pad - 2];
  const npix = batch * ho * wo;
  const { out, src, finish } = zeroOutput([9 * c, npix], x);
  for (let ty = 0; ty < 3; ty++) {
    for (let tx = 0; tx < 3; tx++) {
      const j0 = Math.max(0, pad - tx);
      const j1 = Math.min(wo, wd + pad - tx);
      const tapBase = (ty * 3 + tx) * c * npix; // row (ty, tx, 0)
      for (let b = 0; b < batch; b++) {
        for (let i = 0; i < ho; i++) {
          const r = i + ty - pad; // input row
          if (r < 0 || r >= h) continue; // zero padding: left as 0
          let o = tapBase + (b * ho + i) * wo + j0;
          let s = ((b * h + r) * wd + (j0 + tx - pad)) * c;
          for (let j = j0; j < j1; j++, o++) for (let ch = 0, oc = o; ch < c; ch++, oc += npix) out[oc] = src[s++];
        }
      }
    }
  }
  return finish() as tf.Tensor2D;
}

/**
 * A zero tensor of `shape` to be written from JS, and a readable copy or view
 * of `input`'s values. On wasm both are views of the wasm heap: building a JS
 * array and handing it to tf.tensor measured ~0.25 s per 58 MB patch matrix
 * here, nearly all of it first-touch page faults on the fresh JS buffer (the
 * wasm heap, once grown, is reused), most of a CNN step. Views are taken after
 * the allocation, which may grow (and so detach) the heap; `view` gives the
 * same of any other float32 input, under the same rule.
 */
function zeroOutput(
  shape: number[],
  input: tf.Tensor,
): { out: Float32Array; src: Float32Array; finish: () => tf.Tensor; view: (t: tf.Tensor) => Float32Array } {
  const backend = tf.backend() as unknown as { typedArrayFromHeap?: (t: tf.Tensor) => Float32Array };
  if (tf.getBackend() === 'wasm' && typeof backend.typedArrayFromHeap === 'function' && input.dtype === 'float32') {
    const tensor = tf.fill(shape, 0); // the Fill kernel allocates on the wasm heap (tf.zeros would build a JS array first)
    const view = (t: tf.Tensor) => backend.typedArrayFromHeap!(t);
    return { out: view(tensor), src: view(input), finish: () => tensor, view };
  }
  const out = new Float32Array(shape.reduce((a, b) => a * b, 1));
  const view = (t: tf.Tensor) => t.dataSync() as Float32Array;
  return { out, src: view(input), finish: () => tf.tensor(out, shape), view };
}

/**
 * Convolution with non-overlapping p×p patches (kernel = stride = p, 'valid'),
 * e.g. a ViT patch embedding: x [B,H,W,C], w [p,p,C,Cout] → [B,H/p,W/p,Cout].
 * Same result as tf.conv2d(x, w, p, 'valid') without Conv2DBackpropFilter. The
 * patches are gathered with one rank-4 transpose (batch folded into the patch
 * rows) rather than the textbook rank-6 one, so its gradient is rank-4 too.
 * Rows and columns that do not fill a whole patch are dropped, as 'valid' does.
 */
export function conv2dPatches(x: tf.Tensor4D, w: tf.Tensor4D, kernel: number, stride: number, b?: tf.Tensor1D): tf.Tensor4D {
  if (kernel !== stride)
    throw new Error(`conv2dPatches: only non-overlapping patches (kernel = stride), got kernel ${kernel}, stride ${stride}`);
  if (!Number.isInteger(kernel) || kernel < 1) throw new Error(`conv2dPatches: kernel must be a positive integer, got ${kernel}`);
  if (x.rank !== 4) throw new Error(`conv2dPatches: x must be [B,H,W,C], got [${x.shape}]`);
  const p = kernel;
  const [batch, h, wd, c] = x.shape;
  if (w.rank !== 4 || w.shape[0] !== p || w.shape[1] !== p || w.shape[2] !== c) {
    throw new Error(`conv2dPatches: w must be [${p},${p},${c},Cout], got [${w.shape}]`);
  }
  const ho = Math.floor(h / p);
  const wo = Math.floor(wd / p);
  if (ho < 1 || wo < 1) throw new Error(`conv2dPatches: input [${x.shape}] is smaller than one ${p}×${p} patch`);
  if (onNative()) {
    const y = tf.conv2d(x, w, p, 'valid');
    return b ? tf.add(y, b) : y;
  }
  const cropped = ho * p === h && wo * p === wd ? x : tf.slice(x, [0, 0, 0, 0], [batch, ho * p, wo * p, c]);
  // [B·Ho, p(row in patch), Wo, p·C] → [B·Ho, Wo, p, p·C]: columns become (pi, pj, c).
  const rows = tf.transpose(tf.reshape(cropped, [batch * ho, p, wo, p * c]), [0, 2, 1, 3]);
  const cols = tf.reshape(rows, [batch * ho * wo, p * p * c]) as tf.Tensor2D;
  const y2 = matMul2d(cols, tf.reshape(w, [p * p * c, w.shape[3]]) as tf.Tensor2D);
  const y = b ? tf.add(y2, b) : y2;
  return tf.reshape(y, [batch, ho, wo, w.shape[3]]) as tf.Tensor4D;
}

// ---------------------------------------------------------------------------
// Activations
// ---------------------------------------------------------------------------

/**
 * max(x, 0), with its gradient dy·[y > 0] from the output y: on the native
 * backend TensorFlow's single ReluGrad kernel, elsewhere dy·step(y) (tfjs's
 * own gradient adds a Cast, a full copy on wasm).
 */
export function relu<T extends tf.Tensor>(x: T): T {
  return reluWithGrad(x) as T;
}

const reluWithGrad = tf.customGrad((xi, save) => {
  const y = tf.relu(xi as tf.Tensor);
  (save as GradSave)([y]);
  return {
    value: y,
    gradFunc: (dy: tf.Tensor, [sy]: tf.Tensor[]) => (onNative() ? runRawOp('ReluGrad', [dy, sy]) : tf.mul(dy, tf.step(sy))),
  };
});

// ---------------------------------------------------------------------------
// Pooling
// ---------------------------------------------------------------------------

/**
 * 2×2 max pool, stride 2, 'valid' (an odd trailing row/column is dropped).
 * wasm registers MaxPoolGrad, but in tfjs-backend-wasm 4.22 it returns wrong
 * gradients (it loses the gradient of some windows; MaxPoolWithArgmax is wrong
 * there too), so tf.maxPool cannot train on wasm. Its forward is right and
 * fast, so it is kept, with a gradient built from kernels wasm does right:
 * dy is sent to the input positions equal to their window's max
 * (ResizeNearestNeighbor + Equal), split evenly when a window holds tied
 * maxima (cpu's MaxPoolGrad gives a tie's whole gradient to one of them;
 * both are valid subgradients and the sum over the window is the same).
 */
export function maxPool2x2(x: tf.Tensor4D): tf.Tensor4D {
  if (x.rank !== 4) throw new Error(`maxPool2x2: x must be [B,H,W,C], got [${x.shape}]`);
  const [batch, h, w, c] = x.shape;
  const [ho, wo] = [Math.floor(h / 2), Math.floor(w / 2)];
  if (ho < 1 || wo < 1) throw new Error(`maxPool2x2: input [${x.shape}] is smaller than one 2×2 window`);
  const even = ho * 2 === h && wo * 2 === w ? x : tf.slice(x, [0, 0, 0, 0], [batch, ho * 2, wo * 2, c]);
  return maxPool2x2Even(even) as tf.Tensor4D;
}

const maxPool2x2Even = tf.customGrad((x, save) => {
  const X = x as tf.Tensor4D;
  const y = tf.maxPool(X, 2, 2, 'valid');
  (save as GradSave)([X, y]);
  return {
    value: y,
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [sx, sy] = saved as [tf.Tensor4D, tf.Tensor4D];
      return onNative() ? maxPoolGradByWindows(dy as tf.Tensor4D, sx, sy) : maxPoolGradJs(dy as tf.Tensor4D, sx, sy);
    },
  };
});

/**
 * The same gradient with the windows as axes, [B, Ho, 2, Wo, 2, C] against
 * [B, Ho, 1, Wo, 1, C] by broadcasting instead of two ResizeNearestNeighbor,
 * the same numbers bit for bit. The tie count stays an AvgPool times 4: a Sum
 * over axes 2 and 4 measured ~5× slower than the AvgPool in TensorFlow. Native
 * only: wasm's broadcasting binary ops are slow at rank 6.
 */
function maxPoolGradByWindows(dy: tf.Tensor4D, x: tf.Tensor4D, y: tf.Tensor4D): tf.Tensor4D {
  const [batch, ho, wo, c] = y.shape;
  const windows = (t: tf.Tensor) => tf.reshape(t, [batch, ho, 1, wo, 1, c]);
  const isMax = tf.cast(tf.equal(tf.reshape(x, [batch, ho, 2, wo, 2, c]), windows(y)), 'float32');
  const maxima = tf.mul(tf.avgPool(tf.reshape(isMax, x.shape) as tf.Tensor4D, 2, 2, 'valid'), 4);
  return tf.reshape(tf.mul(isMax, windows(tf.div(dy, maxima))), x.shape);
}

/**
 * The same gradient on wasm (and cpu) as one JS loop over the windows on the
 * wasm heap: the kernels (two ResizeNearestNeighbor, Equal, Cast, AvgPool and
 * three products) measured ~10× slower there. dy/count is a float32 division
 * as the kernels' was (fround of the double quotient of two float32s is exact).
 */
function maxPoolGradJs(dy: tf.Tensor4D, x: tf.Tensor4D, y: tf.Tensor4D): tf.Tensor4D {
  const [batch, ho, wo, c] = y.shape;
  const { out, src: xs, finish, view } = zeroOutput(x.shape, x);
  const [ys, dys] = [view(y), view(dy)];
  const rowStride = 2 * wo * c; // one input row
  for (let b = 0; b < batch; b++) {
    for (let i = 0; i < ho; i++) {
      const top = (b * 2 * ho + 2 * i) * rowStride;
      for (let j = 0; j < wo; j++) {
        const o = ((b * ho + i) * wo + j) * c;
        const p00 = top + 2 * j * c;
        for (let ch = 0; ch < c; ch++) {
          const m = ys[o + ch];
          const [a0, a1, a2, a3] = [p00 + ch, p00 + c + ch, p00 + rowStride + ch, p00 + rowStride + c + ch];
          const count = +(xs[a0] === m) + +(xs[a1] === m) + +(xs[a2] === m) + +(xs[a3] === m);
          const g = Math.fround(dys[o + ch] / count);
          if (xs[a0] === m) out[a0] = g;
          if (xs[a1] === m) out[a1] = g;
          if (xs[a2] === m) out[a2] = g;
          if (xs[a3] === m) out[a3] = g;
        }
      }
    }
  }
  return finish() as tf.Tensor4D;
}

/** 2×2 average pool, stride 2, 'valid'. wasm's AvgPoolGrad agrees with cpu's (tested), so tfjs's op is used. */
export function avgPool2x2(x: tf.Tensor4D): tf.Tensor4D {
  return tf.avgPool(x, 2, 2, 'valid');
}

/** [B,H,W,C] → [B,C]: mean over the spatial axes (a CNN's head). */
export function globalAvgPool(x: tf.Tensor4D): tf.Tensor2D {
  return tf.mean(x, [1, 2]) as tf.Tensor2D;
}

/**
 * [1, ...] → [batch, ...]: the same rows for every item (a ViT's class token).
 * tf.broadcastTo runs as a Tile, and tfjs's Tile gradient is one Slice and one
 * Add per copy (~130 kernels per step at batch 64); here it is one Sum.
 */
export function tileBatch<T extends tf.Tensor>(t: T, batch: number): T {
  if (t.rank < 1 || t.shape[0] !== 1) throw new Error(`tileBatch: expected a leading axis of 1, got [${t.shape}]`);
  return tileBatchWithGrad(batch)(t) as T;
}

const tileBatchBySize = new Map<number, ReturnType<typeof tf.customGrad>>();
function tileBatchWithGrad(batch: number) {
  let f = tileBatchBySize.get(batch);
  if (!f) {
    f = tf.customGrad((ti) => {
      const t = ti as tf.Tensor;
      return { value: tf.broadcastTo(t, [batch, ...t.shape.slice(1)]), gradFunc: (dy: tf.Tensor) => tf.sum(dy, 0, true) };
    });
    tileBatchBySize.set(batch, f);
  }
  return f;
}

/**
 * The fused projection of attention, [B·N, parts·D] with columns (part, head, dh),
 * as `parts` tensors [B, heads, N, dh] (q, k, v). Native: one transpose to
 * [parts, B, heads, N, dh] and an unstack, in which each part is one contiguous
 * block (its gradient: a stack and one transpose). wasm: a split by columns and
 * one rank-4 transpose per part, because wasm's rank-5 Transpose measured
 * ~20× slower than its rank-4 one on these shapes.
 */
export function splitHeads(x: tf.Tensor2D, batch: number, parts: number, heads: number): tf.Tensor4D[] {
  const [rows, cols] = x.shape;
  const n = rows / batch;
  const dh = cols / (parts * heads);
  if (!Number.isInteger(n) || !Number.isInteger(dh))
    throw new Error(`splitHeads: [${x.shape}] is not [B·N, ${parts}·heads·dh] for B = ${batch}`);
  if (onNative()) return tf.unstack(tf.transpose(tf.reshape(x, [batch, n, parts, heads, dh]), [2, 0, 3, 1, 4])) as tf.Tensor4D[];
  return tf.split(x, parts, 1).map((t) => tf.transpose(tf.reshape(t, [batch, n, heads, dh]), [0, 2, 1, 3]) as tf.Tensor4D);
}

// ---------------------------------------------------------------------------
// Transformer pieces
// ---------------------------------------------------------------------------

const GELU_C = Math.sqrt(2 / Math.PI);
const GELU_A = 0.044715;

/**
 * Why the transformer pieces have hand-written gradients: autodiff through a
 * chain of elementwise ops launches ~3 kernels per op in the backward pass
 * (tfjs's Multiply gradient also casts both inputs to float32, a full copy on
 * wasm even when they already are), and a ViT step is mostly such launches on
 * the native backend. The closed-form derivatives below need about a third of
 * the kernels of the autodiff graph and give the same values up to rounding.
 */

/**
 * GELU, tanh approximation: 0.5·x·(1 + tanh(u)), u = √(2/π)·(x + 0.044715·x³).
 * tfjs has no gelu op. x³ is x·x·x rather than tf.pow. Its derivative:
 *   0.5·(1 + t) + 0.5·x·(1 − t²)·√(2/π)·(1 + 3·0.044715·x²),  t = tanh(u).
 */
export function gelu(x: tf.Tensor): tf.Tensor {
  return geluWithGrad(x) as tf.Tensor;
}

const geluWithGrad = tf.customGrad((xi, save) => {
  const x = xi as tf.Tensor;
  const x2 = tf.mul(x, x);
  const t = tf.tanh(tf.mul(GELU_C, tf.add(x, tf.mul(GELU_A, tf.mul(x2, x)))));
  (save as GradSave)([x, x2, t]);
  return {
    value: tf.mul(tf.mul(0.5, x), tf.add(1, t)),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [sx, sx2, st] = saved;
      const du = tf.add(GELU_C, tf.mul(3 * GELU_A * GELU_C, sx2)); // du/dx
      const sech2 = tf.sub(1, tf.mul(st, st));
      const slope = tf.add(tf.mul(0.5, tf.add(1, st)), tf.mul(tf.mul(tf.mul(0.5, sx), sech2), du));
      return tf.mul(dy, slope);
    },
  };
});

/**
 * Layer normalisation over the last axis, gamma/beta of that axis' size:
 *   x̂ = (x − μ)/√(σ² + ε),  y = γ·x̂ + β.
 * Its gradient in closed form (dx for one row of D values, g = γ·dy):
 *   dx = (g − mean(g) − x̂·mean(g·x̂)) / √(σ² + ε),   dγ = Σ dy·x̂,   dβ = Σ dy
 * (sums over every leading axis).
 */
export function layerNorm(x: tf.Tensor, gamma: tf.Tensor1D, beta: tf.Tensor1D, eps = 1e-5): tf.Tensor {
  return layerNormWithGrad(eps)(x, gamma, beta) as tf.Tensor;
}

const layerNormByEps = new Map<number, ReturnType<typeof tf.customGrad>>();
function layerNormWithGrad(eps: number) {
  let f = layerNormByEps.get(eps);
  if (f) return f;
  f = tf.customGrad((xi, gi, bi, save) => {
    const [x, gamma, beta] = [xi as tf.Tensor, gi as tf.Tensor1D, bi as tf.Tensor1D];
    const axis = x.rank - 1;
    const centred = tf.sub(x, tf.mean(x, axis, true));
    const rstd = tf.rsqrt(tf.add(tf.mean(tf.square(centred), axis, true), eps));
    const xhat = tf.mul(centred, rstd);
    (save as GradSave)([xhat, rstd, gamma]);
    return {
      value: tf.add(tf.mul(xhat, gamma), beta),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sxhat, srstd, sgamma] = saved;
        const d = sgamma.shape[0];
        const dy2 = tf.reshape(dy, [-1, d]);
        const dgamma = tf.sum(tf.mul(dy2, tf.reshape(sxhat, [-1, d])), 0);
        const dbeta = tf.sum(dy2, 0);
        const g = tf.mul(dy, sgamma);
        const inner = tf.sub(tf.sub(g, tf.mean(g, axis, true)), tf.mul(sxhat, tf.mean(tf.mul(g, sxhat), axis, true)));
        return [tf.mul(inner, srstd), dgamma, dbeta];
      },
    };
  });
  layerNormByEps.set(eps, f);
  return f;
}

// ---------------------------------------------------------------------------
// Embedding bag (no UnsortedSegmentSum)
// ---------------------------------------------------------------------------

/** A bag: the integer ids of the table rows to average (may be empty). */
export type Bag = ArrayLike<number>;

interface BagPlan {
  /** [B·Lmax] row ids, padded with 0 (a valid row, weighted 0). */
  ids: Int32Array;
  /** [B·Lmax] 1/len for real entries, 0 for padding. */
  weights: Float32Array;
  lmax: number;
}

function planBags(bags: readonly Bag[], vocab: number): BagPlan {
  let lmax = 0;
  for (const bag of bags) lmax = Math.max(lmax, bag.length);
  const ids = new Int32Array(bags.length * lmax);
  const weights = new Float32Array(bags.length * lmax);
  bags.forEach((bag, b) => {
    for (let i = 0; i < bag.length; i++) {
      const id = bag[i];
      // wasm's GatherNd does not bounds-check: a bad id would read another row silently.
      if (!Number.isInteger(id) || id < 0 || id >= vocab)
        throw new RangeError(`embeddingBag: bag ${b} holds id ${id}, outside [0, ${vocab})`);
      ids[b * lmax + i] = id;
      weights[b * lmax + i] = 1 / bag.length;
    }
  });
  return { ids, weights, lmax };
}

/**
 * Forward: gather [B·Lmax] rows, weight by the mask of 1/len, sum over Lmax.
 * Padding to the longest bag wastes (Lmax − mean length)·B·D work but needs
 * no segment kernel; sort or bucket bags by length if they vary a lot.
 */
function bagMean(table: tf.Tensor2D, plan: BagPlan, nBags: number): tf.Tensor2D {
  const dim = table.shape[1];
  if (plan.lmax === 0) return tf.zeros([nBags, dim]);
  // GatherNd, not tf.gather: wasm's GatherV2 measured ~40× slower on 10K rows of 64. Native: GatherV2, the
  // op whose tfjs gradient (UnsortedSegmentSum) is the one wasm lacks.
  const gathered = onNative()
    ? tf.gather(table, tf.tensor1d(plan.ids, 'int32'))
    : tf.gatherND(table, tf.tensor2d(plan.ids, [plan.ids.length, 1], 'int32'));
  const rows = tf.reshape(gathered, [nBags, plan.lmax, dim]);
  const w = tf.tensor3d(plan.weights, [nBags, plan.lmax, 1]);
  return tf.sum(tf.mul(rows, w), 1) as tf.Tensor2D;
}

/**
 * Table gradient Mᵀ·dY, M[b,v] = count of v in bag b / len(bag), computed
 * sparsely in JS over the touched rows only, then placed with ScatterNd (which
 * wasm has; each row appears once, so duplicate-index semantics do not matter).
 * Reads dY synchronously: [B,D] floats, small next to the table.
 */
function bagTableGrad(dy: tf.Tensor2D, plan: BagPlan, nBags: number, vocab: number): tf.Tensor2D {
  const dim = dy.shape[1];
  const dyData = dy.dataSync();
  const slotOf = new Map<number, number>();
  const touched: number[] = [];
  for (let k = 0; k < nBags * plan.lmax; k++) {
    if (plan.weights[k] !== 0 && !slotOf.has(plan.ids[k])) {
      slotOf.set(plan.ids[k], touched.length);
      touched.push(plan.ids[k]);
    }
  }
  if (touched.length === 0) return tf.zeros([vocab, dim]);
  const acc = new Float32Array(touched.length * dim);
  for (let k = 0; k < nBags * plan.lmax; k++) {
    const wt = plan.weights[k];
    if (wt === 0) continue;
    const dst = slotOf.get(plan.ids[k])! * dim;
    const src = Math.floor(k / plan.lmax) * dim;
    for (let d = 0; d < dim; d++) acc[dst + d] += wt * dyData[src + d];
  }
  return tf.tidy(() => {
    const indices = tf.tensor2d(Int32Array.from(touched), [touched.length, 1], 'int32');
    return tf.scatterND(indices, tf.tensor2d(acc, [touched.length, dim]), [vocab, dim]) as tf.Tensor2D;
  });
}

/**
 * Mean of the rows of `table` [V,D] named by each bag → [B,D]; an empty bag
 * gives a zero row. Equivalent to M·table with M the [B,V] bag matrix, which is
 * never built (V can be 2^18 hashed buckets).
 *
 * Why a custom gradient: tf.gather's gradient is UnsortedSegmentSum, missing on
 * wasm. Memory trade-off: tfjs wants a gradient of the variable's own shape, and
 * its optimizers update densely, so the table gradient is a dense [V,D] tensor
 * (V·D·4 bytes per step: 64 MiB for 2^18 × 64; Adam keeps two more of that
 * size). Only the touched rows are computed, in a [U,D] JS buffer. Fine up to a
 * few million table entries; beyond that a sparse row-wise optimizer is needed.
 */
export function embeddingBag(table: tf.Tensor2D, bags: readonly Bag[]): tf.Tensor2D {
  if (table.rank !== 2) throw new Error(`embeddingBag: table must be [V,D], got [${table.shape}]`);
  const [vocab] = table.shape;
  const plan = planBags(bags, vocab);
  const nBags = bags.length;
  // Native: tfjs's own gradient (UnsortedSegmentSum, a TensorFlow kernel) instead of the JS one.
  if (onNative() && plan.lmax > 0) return bagMean(table, plan, nBags);
  const f = tf.customGrad((t) => ({
    value: bagMean(t as tf.Tensor2D, plan, nBags),
    gradFunc: (dy: tf.Tensor) => bagTableGrad(dy as tf.Tensor2D, plan, nBags, vocab),
  }));
  return f(table) as tf.Tensor2D;
}
