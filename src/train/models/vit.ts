/**
 * Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words"),
 * with DeiT's optional distillation token (Touvron et al. 2021) and MiniViT's
 * weight multiplexing (Zhang et al. 2022).
 *
 *   x [B,H,W,C] → p×p patches → linear (a stride-p conv) → [B, N, D]
 *   prepend [cls] (and [dist]) tokens, add learned position embeddings
 *   depth × pre-norm block:  x += MHSA(LN₁(x));  x += MLP(LN₂(x))     (MLP = fc → GELU → fc)
 *   final LN; logits = head(x[cls]); distLogits = head_dist(x[dist])
 * Without a class token the head reads the mean of the patch tokens.
 *
 * Weight multiplexing (MiniViT §3.2): blocks are grouped by `shareEvery` = k
 * consecutive blocks; the blocks of a group use the same attention and MLP
 * weights (named after the group's first block: blocks.2 and blocks.3 both use
 * 'blocks.2.attn.qkv.w' when k = 2), while each block keeps its own LayerNorms,
 * which MiniViT found necessary for training stability and diversity.
 * (MiniViT's per-layer weight transformations are not implemented.)
 *
 * Speed on wasm: every projection is one plain 2-D product on [B·N, ·]; only
 * the two attention products (QKᵀ, AV) are batched matMuls, which are slow
 * there but have every kernel.
 */
import { DistilleryError } from '../../errors.ts';
import { tf } from '../backend.ts';
import { conv2dPatches, dense, gelu, layerNorm, splitHeads, tileBatch } from '../ops.ts';
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
  /** DeiT: a second learned token with its own head (ForwardOut.distLogits). Default false. */
  distillToken?: boolean;
  /** MiniViT: share attention + MLP weights within groups of this many consecutive blocks. Default 1 (no sharing). */
  shareEvery?: number;
}

/** Tokens per image: the prefix (class/distillation) tokens, then the patches. */
export function vitTokenCounts(spec: VitSpec): { prefix: number; patches: number; total: number } {
  const [h, w] = spec.inputShape;
  const patches = Math.floor(h / spec.patchSize) * Math.floor(w / spec.patchSize);
  const prefix = ((spec.classToken ?? true) ? 1 : 0) + (spec.distillToken ? 1 : 0);
  return { prefix, patches, total: prefix + patches };
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
}

interface BlockRecord {
  q: tf.Tensor4D;
  k: tf.Tensor4D;
  v: tf.Tensor4D;
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
  if (spec.classToken === false && spec.distillToken) {
    throw new DistilleryError('vit: a distillation token needs the class token (DeiT classifies from both)');
  }
}

export function buildVit(spec: VitSpec, param: ParamFn): Forward {
  checkSpec(spec);
  const [, , channels] = spec.inputShape;
  const { patchSize: p, width: D, depth, heads } = spec;
  const dh = D / heads;
  const mlp = Math.max(1, Math.round(spec.mlpRatio * D));
  const shareEvery = spec.shareEvery ?? 1;
  const hasCls = spec.classToken ?? true;
  const hasDist = spec.distillToken ?? false;
  const tokens = vitTokenCounts(spec);

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
  const distToken = hasDist ? param('dist_token', [1, 1, D], normal(STD)) : undefined;
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
    });
  }
  const finalNorm = norm('norm');
  const head = lin('head', D, spec.numClasses);
  const headDist = hasDist ? lin('head_dist', D, spec.numClasses) : undefined;

  // --- forward -----------------------------------------------------------------------

  /** One pre-norm block on x [B, N, D]. */
  function block(x: tf.Tensor3D, w: BlockWeights, record?: BlockRecord[]): tf.Tensor3D {
    const [B, N] = x.shape;
    // Attention(Q, K, V) = softmax(Q Kᵀ / √d) V per head (Vaswani et al. 2017).
    const h = tf.reshape(layerNorm(x, w.norm1.g, w.norm1.b), [B * N, D]);
    const [q, k, v] = splitHeads(dense(h, w.qkv.w, w.qkv.b) as tf.Tensor2D, B, 3, heads); // one [B·N, 3D] product
    record?.push({ q, k, v });
    const attn = tf.softmax(tf.matMul(tf.mul(q, 1 / Math.sqrt(dh)), k, false, true)); // [B, heads, N, N]
    const merged = tf.reshape(tf.transpose(tf.matMul(attn, v), [0, 2, 1, 3]), [B * N, D]);
    let y = tf.add(x, tf.reshape(dense(merged, w.proj.w, w.proj.b), [B, N, D])) as tf.Tensor3D;

    const m = dense(gelu(dense(tf.reshape(layerNorm(y, w.norm2.g, w.norm2.b), [B * N, D]), w.fc1.w, w.fc1.b)), w.fc2.w, w.fc2.b);
    y = tf.add(y, tf.reshape(m, [B, N, D])) as tf.Tensor3D;
    return y;
  }

  /** Row `index` of every item's token sequence, [B, D]. */
  const token = (x: tf.Tensor3D, index: number) =>
    tf.reshape(tf.slice(x, [0, index, 0], [x.shape[0], 1, D]), [x.shape[0], D]) as tf.Tensor2D;

  return (input, opts = {}): ForwardOut => {
    if (!(input instanceof tf.Tensor)) throw new DistilleryError('vit: input must be a tensor [B, H, W, C]');
    const images = imageBatch('vit', input, spec.inputShape);
    const B = images.shape[0];

    const patches = tf.reshape(conv2dPatches(images, patchW, p, p, patchB), [B, tokens.patches, D]);
    const prefix = [clsToken, distToken].filter((t): t is tf.Variable => t !== undefined).map((t) => tileBatch(t, B));
    let x = tf.add(prefix.length > 0 ? tf.concat([...prefix, patches], 1) : patches, pos) as tf.Tensor3D;

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

    const out = layerNorm(x, finalNorm.g, finalNorm.b) as tf.Tensor3D;
    const pooled = hasCls ? token(out, 0) : (tf.mean(out, 1) as tf.Tensor2D);
    const result: ForwardOut = { logits: dense(pooled, head.w, head.b) as tf.Tensor2D };
    if (headDist) result.distLogits = dense(token(out, 1), headDist.w, headDist.b) as tf.Tensor2D;
    if (opts.collect) {
      // Manifold distillation (Hao et al. 2022) matches patch features only, so the prefix tokens are cut off.
      features.patches = tf.slice(x, [0, tokens.prefix, 0], [B, tokens.patches, D]);
      result.features = features;
    }
    return result;
  };
}
