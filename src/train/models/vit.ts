/**
 * Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words"),
 * with DeiT's optional distillation token (Touvron et al. 2021), CivT's one
 * distillation token per teacher (Ren et al. 2022) and MiniViT's weight
 * multiplexing (Zhang et al. 2022).
 *
 *   x [B,H,W,C] → p×p patches → linear (a stride-p conv) → [B, N, D]
 *   prepend [cls] (and [dist₁..dist_N]) tokens, add learned position embeddings
 *   depth × pre-norm block:  x += MHSA(LN₁(x));  x += MLP(LN₂(x))     (MLP = fc → GELU → fc)
 *   final LN; logits = head(x[cls]); distLogitsAll[t] = head_dist_t(x[dist_t]), distLogits = the first
 * Without a class token the head reads the mean of the patch tokens.
 *
 * Weight multiplexing (MiniViT §3.2): blocks are grouped by `shareEvery` = k
 * consecutive blocks; the blocks of a group use the same attention and MLP
 * weights (named after the group's first block: blocks.2 and blocks.3 both use
 * 'blocks.2.attn.qkv.w' when k = 2), while each block keeps its own LayerNorms,
 * which MiniViT found necessary for training stability and diversity.
 * (MiniViT's per-layer weight transformations are not implemented.)
 *
 * DearKD's MHCA (Chen et al. 2022, after Cordonnier et al. 2020: attention with a relative-position
 * bias can act as a convolution): in the first `relPosBlocks` blocks each head adds a learned bias
 * for the patch-grid offset (Δrow, Δcol) of query and key, softmax(QKᵀ/√d + B_h); 0 for pairs with
 * a class/distillation token. Zero-initialised: such a block starts as plain attention.
 *
 * Speed on wasm: every projection is one plain 2-D product on [B·N, ·]; only
 * the two attention products (QKᵀ, AV) are batched matMuls, which are slow
 * there but have every kernel.
 */
import { DistilleryError } from '../../errors.ts';
import { tf } from '../backend.ts';
import { conv2dPatches, dense, gelu, layerNorm, matMul2d, splitHeads, tileBatch } from '../ops.ts';
import type { Features, Forward, ForwardOut } from './types.ts';
import { imageBatch, lecun, normal, ones, positiveInt, shapeOf, zeros, type ParamFn } from './params.ts';

export interface VitSpec {
  kind: 'vit';
  numClasses: number;
  /** [H, W, C]; H and W multiples of patchSize (a partial last patch would be dropped). */
  inputShape: [number, number, number];
  patchSize: number;
  /** Token width D. */
  width: number;
  depth: number;
  /** Attention heads; must divide width. */
  heads: number;
  /** MLP hidden width = mlpRatio · width (rounded). */
  mlpRatio: number;
  /** Prepend a learned class token and classify from it. Default true. */
  classToken?: boolean;
  /** DeiT: a second learned token with its own head (ForwardOut.distLogits). Default false. Means distillTokens 1. */
  distillToken?: boolean;
  /**
   * CivT: N learned distillation tokens after the class token, each with its own head
   * (ForwardOut.distLogitsAll, one per teacher). Default: 1 with distillToken, else 0. Models
   * with one token are saved as `distillToken: true`, as before, with the same weight names.
   */
  distillTokens?: number;
  /** MiniViT: share attention + MLP weights within groups of this many consecutive blocks. Default 1 (no sharing). */
  shareEvery?: number;
  /** DearKD's MHCA: a learned per-head relative-position bias in the first k blocks (`blocks.<i>.attn.rel_pos`). Default 0. */
  relPosBlocks?: number;
}

/** Tokens per image: the prefix (class/distillation) tokens, then the patches. */
export function vitTokenCounts(spec: VitSpec): { prefix: number; patches: number; total: number } {
  const [h, w] = spec.inputShape;
  const patches = Math.floor(h / spec.patchSize) * Math.floor(w / spec.patchSize);
  const prefix = ((spec.classToken ?? true) ? 1 : 0) + vitDistillTokens(spec);
  return { prefix, patches, total: prefix + patches };
}

/** How many distillation tokens (and heads) the ViT has: distillTokens, or 1 for DeiT's distillToken. */
export function vitDistillTokens(spec: Pick<VitSpec, 'distillToken' | 'distillTokens'>): number {
  return spec.distillTokens ?? (spec.distillToken ? 1 : 0);
}

// timm's ViT initialisation: truncated normal σ = 0.02 for linear layers and tokens.
const STD = 0.02;

interface BlockWeights {
  norm1: { g: tf.Tensor1D; b: tf.Tensor1D };
  qkv: { w: tf.Tensor2D; b: tf.Tensor1D };
  proj: { w: tf.Tensor2D; b: tf.Tensor1D };
  norm2: { g: tf.Tensor1D; b: tf.Tensor1D };
  fc1: { w: tf.Tensor2D; b: tf.Tensor1D };
  fc2: { w: tf.Tensor2D; b: tf.Tensor1D };
  /** [heads, (2h−1)(2w−1)]: the relative-position bias table, in the first relPosBlocks blocks. */
  relPos?: tf.Tensor2D;
}

interface BlockRecord {
  q: tf.Tensor4D;
  k: tf.Tensor4D;
  v: tf.Tensor4D;
}

/**
 * The ViT in its three parts, forward = head ∘ block(depth−1) ∘ … ∘ block(0) ∘ embed, for models built
 * out of modules (m2mKD, src/train/m2mkd/): they run a slice of one ViT's blocks on another's tokens.
 */
export interface VitParts {
  /** Images [B, H, W, C] → tokens [B, N, D]: patch embedding, class/distillation tokens, position embeddings. */
  embed(images: tf.Tensor): tf.Tensor3D;
  /** Block i on tokens [B, N, D]. */
  block(i: number, x: tf.Tensor3D): tf.Tensor3D;
  /** The last block's tokens → final norm, pooling and head(s). */
  head(x: tf.Tensor3D): ForwardOut;
}

function checkSpec(spec: VitSpec): void {
  const inputShape = shapeOf('vit inputShape', spec.inputShape);
  if (inputShape.length !== 3) throw new DistilleryError(`vit inputShape must be [H, W, C], got ${JSON.stringify(spec.inputShape)}`);
  const p = positiveInt('vit patchSize', spec.patchSize);
  if (inputShape[0] % p !== 0 || inputShape[1] % p !== 0) {
    throw new DistilleryError(`vit input ${inputShape[0]}×${inputShape[1]} is not a whole number of ${p}×${p} patches`);
  }
  positiveInt('vit width', spec.width);
  positiveInt('vit depth', spec.depth);
  positiveInt('vit heads', spec.heads);
  positiveInt('vit shareEvery', spec.shareEvery ?? 1);
  if (spec.width % spec.heads !== 0) throw new DistilleryError(`vit width ${spec.width} is not divisible by heads ${spec.heads}`);
  if (!(spec.mlpRatio > 0)) throw new DistilleryError(`vit mlpRatio must be positive, got ${JSON.stringify(spec.mlpRatio)}`);
  if (spec.distillTokens !== undefined) {
    if (!Number.isInteger(spec.distillTokens) || spec.distillTokens < 0)
      throw new DistilleryError(`vit distillTokens must be a whole number ≥ 0, got ${JSON.stringify(spec.distillTokens)}`);
    if (spec.distillToken === true && spec.distillTokens === 0)
      throw new DistilleryError('vit: distillToken true and distillTokens 0 contradict each other');
  }
  if (spec.classToken === false && vitDistillTokens(spec) > 0) {
    throw new DistilleryError('vit: a distillation token needs the class token (DeiT classifies from both)');
  }
  const k = spec.relPosBlocks ?? 0;
  if (!Number.isInteger(k) || k < 0 || k > spec.depth)
    throw new DistilleryError(
      `vit relPosBlocks must be a whole number from 0 to depth ${spec.depth}, got ${JSON.stringify(spec.relPosBlocks)}`,
    );
}

/** [2n−1, n·n]: column a·n + b holds a 1 in row a − b + n − 1, the offset of a from b along one axis of the grid. */
const oneHots = new Map<number, Float32Array>();
function offsetOneHot(n: number): Float32Array {
  let m = oneHots.get(n);
  if (!m) {
    m = new Float32Array((2 * n - 1) * n * n);
    for (let a = 0; a < n; a++) for (let b = 0; b < n; b++) m[(a - b + n - 1) * n * n + a * n + b] = 1;
    oneHots.set(n, m);
  }
  return m;
}

/**
 * B [heads, N, N] from a bias table [heads, (2h−1)(2w−1)] (row offsets major) on an h×w patch grid after
 * `prefix` tokens: B[(yᵢ, xᵢ), (yⱼ, xⱼ)] = T[yᵢ − yⱼ, xᵢ − xⱼ] = Σ_a,b E_y[a, (yᵢ, yⱼ)] T[a, b] E_x[b, (xᵢ, xⱼ)], two
 * 2-D products with the per-axis one-hots (a gather's gradient needs UnsortedSegmentSum, which wasm lacks),
 * then zero rows and columns for the prefix tokens.
 */
export function relativePositionBias(table: tf.Tensor2D, h: number, w: number, prefix: number): tf.Tensor3D {
  const heads = table.shape[0];
  const [rh, rw] = [2 * h - 1, 2 * w - 1];
  return tf.tidy(() => {
    const eyT = tf.transpose(tf.tensor2d(offsetOneHot(h), [rh, h * h])) as tf.Tensor2D;
    const ex = tf.tensor2d(offsetOneHot(w), [rw, w * w]);
    const byCol = tf.reshape(tf.transpose(tf.reshape(table, [heads, rh, rw]), [1, 0, 2]), [rh, heads * rw]) as tf.Tensor2D;
    const rows = matMul2d(eyT, byCol); // [(yᵢ, yⱼ), (head, b)]
    const perHead = tf.reshape(tf.transpose(tf.reshape(rows, [h * h, heads, rw]), [1, 0, 2]), [heads * h * h, rw]) as tf.Tensor2D;
    const both = tf.reshape(matMul2d(perHead, ex), [heads * h, h, w, w]); // [(head, yᵢ), yⱼ, xᵢ, xⱼ]
    const patches = tf.reshape(tf.transpose(both, [0, 2, 1, 3]), [heads, h * w, h * w]);
    return tf.pad(patches, [
      [0, 0],
      [prefix, 0],
      [prefix, 0],
    ]) as tf.Tensor3D;
  });
}

export function buildVit(spec: VitSpec, param: ParamFn): Forward & { parts: VitParts } {
  checkSpec(spec);
  const [, , channels] = spec.inputShape;
  const { patchSize: p, width: D, depth, heads } = spec;
  const dh = D / heads;
  const mlp = Math.max(1, Math.round(spec.mlpRatio * D));
  const shareEvery = spec.shareEvery ?? 1;
  const hasCls = spec.classToken ?? true;
  const nDist = vitDistillTokens(spec);
  const tokens = vitTokenCounts(spec);
  const grid = [spec.inputShape[0] / p, spec.inputShape[1] / p];
  const relPosBlocks = spec.relPosBlocks ?? 0;

  // --- weights -----------------------------------------------------------------------
  const lin = (name: string, nin: number, nout: number) => ({
    w: param(`${name}.w`, [nin, nout], normal(STD)) as tf.Tensor2D,
    b: param(`${name}.b`, [nout], zeros) as tf.Tensor1D,
  });
  const norm = (name: string) => ({ g: param(`${name}.g`, [D], ones) as tf.Tensor1D, b: param(`${name}.b`, [D], zeros) as tf.Tensor1D });

  // The patch embedding is a linear map of p·p·C pixels: LeCun init, as the original JAX ViT.
  const patchW = param('patch.w', [p, p, channels, D], lecun(p * p * channels)) as tf.Tensor4D;
  const patchB = param('patch.b', [D], zeros) as tf.Tensor1D;
  const clsToken = hasCls ? param('cls_token', [1, 1, D], normal(STD)) : undefined;
  const distTokens = nDist > 0 ? param('dist_token', [1, nDist, D], normal(STD)) : undefined;
  const pos = param('pos_embed', [1, tokens.total, D], normal(STD));

  const blocks: BlockWeights[] = [];
  for (let i = 0; i < depth; i++) {
    const owner = `blocks.${Math.floor(i / shareEvery) * shareEvery}`; // MiniViT: the group's first block holds the shared weights
    blocks.push({
      norm1: norm(`blocks.${i}.norm1`),
      qkv: lin(`${owner}.attn.qkv`, D, 3 * D),
      proj: lin(`${owner}.attn.proj`, D, D),
      norm2: norm(`blocks.${i}.norm2`),
      fc1: lin(`${owner}.mlp.fc1`, D, mlp),
      fc2: lin(`${owner}.mlp.fc2`, mlp, D),
      ...(i < relPosBlocks
        ? { relPos: param(`blocks.${i}.attn.rel_pos`, [heads, (2 * grid[0] - 1) * (2 * grid[1] - 1)], zeros) as tf.Tensor2D }
        : {}),
    });
  }
  const finalNorm = norm('norm');
  const head = lin('head', D, spec.numClasses);
  // One token keeps DeiT's name, so that models saved before CivT load unchanged.
  const headsDist = Array.from({ length: nDist }, (_, t) => lin(nDist === 1 ? 'head_dist' : `head_dist.${t}`, D, spec.numClasses));

  // --- forward -----------------------------------------------------------------------

  /** One pre-norm block on x [B, N, D]. */
  function block(x: tf.Tensor3D, w: BlockWeights, record?: BlockRecord[]): tf.Tensor3D {
    const [B, N] = x.shape;
    // Attention(Q, K, V) = softmax(Q Kᵀ / √d) V per head (Vaswani et al. 2017).
    const h = tf.reshape(layerNorm(x, w.norm1.g, w.norm1.b), [B * N, D]);
    const [q, k, v] = splitHeads(dense(h, w.qkv.w, w.qkv.b) as tf.Tensor2D, B, 3, heads); // one [B·N, 3D] product
    record?.push({ q, k, v });
    const logits = tf.matMul(tf.mul(q, 1 / Math.sqrt(dh)), k, false, true); // [B, heads, N, N]
    const attn = tf.softmax(w.relPos ? tf.add(logits, relativePositionBias(w.relPos, grid[0], grid[1], tokens.prefix)) : logits);
    const merged = tf.reshape(tf.transpose(tf.matMul(attn, v), [0, 2, 1, 3]), [B * N, D]);
    let y = tf.add(x, tf.reshape(dense(merged, w.proj.w, w.proj.b), [B, N, D])) as tf.Tensor3D;

    const m = dense(gelu(dense(tf.reshape(layerNorm(y, w.norm2.g, w.norm2.b), [B * N, D]), w.fc1.w, w.fc1.b)), w.fc2.w, w.fc2.b);
    y = tf.add(y, tf.reshape(m, [B, N, D])) as tf.Tensor3D;
    return y;
  }

  /** Row `index` of every item's token sequence, [B, D]. */
  const token = (x: tf.Tensor3D, index: number) =>
    tf.reshape(tf.slice(x, [0, index, 0], [x.shape[0], 1, D]), [x.shape[0], D]) as tf.Tensor2D;

  /** Images → tokens [B, N, D]: patches, the prefix tokens, position embeddings. */
  function embed(images: tf.Tensor4D): tf.Tensor3D {
    const B = images.shape[0];
    const patches = tf.reshape(conv2dPatches(images, patchW, p, p, patchB), [B, tokens.patches, D]);
    const prefix = [clsToken, distTokens].filter((t): t is tf.Variable => t !== undefined).map((t) => tileBatch(t, B));
    return tf.add(prefix.length > 0 ? tf.concat([...prefix, patches], 1) : patches, pos) as tf.Tensor3D;
  }

  /** The last block's tokens → final LN, pooling, head(s). */
  function classify(x: tf.Tensor3D): ForwardOut {
    const out = layerNorm(x, finalNorm.g, finalNorm.b) as tf.Tensor3D;
    const pooled = hasCls ? token(out, 0) : (tf.mean(out, 1) as tf.Tensor2D);
    const result: ForwardOut = { logits: dense(pooled, head.w, head.b) as tf.Tensor2D };
    if (nDist > 0) {
      result.distLogitsAll = headsDist.map((hd, t) => dense(token(out, 1 + t), hd.w, hd.b) as tf.Tensor2D);
      result.distLogits = result.distLogitsAll[0];
    }
    return result;
  }

  const forward = (input: Parameters<Forward>[0], opts: Parameters<Forward>[1] = {}): ForwardOut => {
    if (!(input instanceof tf.Tensor)) throw new DistilleryError('vit: input must be a tensor [B, H, W, C]');
    const images = imageBatch('vit', input, spec.inputShape);
    const B = images.shape[0];
    let x = embed(images);

    const features: Features = {};
    blocks.forEach((w, i) => {
      const qkv: BlockRecord[] = [];
      x = block(x, w, opts.collect ? qkv : undefined);
      if (opts.collect)
        Object.assign(features, {
          [`block${i}.hidden`]: x,
          [`block${i}.q`]: qkv[0].q,
          [`block${i}.k`]: qkv[0].k,
          [`block${i}.v`]: qkv[0].v,
        });
    });

    const result = classify(x);
    if (opts.collect) {
      // Manifold distillation (Hao et al. 2022) matches patch features only, so the prefix tokens are cut off.
      features.patches = tf.slice(x, [0, tokens.prefix, 0], [B, tokens.patches, D]);
      result.features = features;
    }
    return result;
  };
  const parts: VitParts = {
    embed: (images) => embed(imageBatch('vit', images, spec.inputShape)),
    block: (i, x) => block(x, blocks[i]),
    head: classify,
  };
  return Object.assign(forward, { parts });
}
