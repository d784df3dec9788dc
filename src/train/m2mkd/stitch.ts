/**
 * Stitch layers (m2mKD §3.2, after the official V-MoE code's pre_stitch / post_stitch): a student module
 * narrower or wider than the meta model is plugged in through LayerNorm + linear maps,
 *   pre-stitch  (every module but the first):  tokens of width D_meta → LN → linear → width D_student
 *   post-stitch (every module but the last):   tokens of width D_student → LN → linear → width D_meta.
 * They exist only while a module is trained alone: the assembled student's modules have one width, and the
 * stitches are dropped (as the official code does unless asked to keep them), so it stays a plain ViT.
 */
import { tf } from '../backend.ts';
import { dense, layerNorm } from '../ops.ts';
import { normal, ones, seededParams, zeros } from '../models/params.ts';
import { tokensOf, type ModuleFn } from './modules.ts';

/** LN over `from`, then a linear map `from` → `to`: [B, N, from] → [B, N, to]. */
export interface Stitch {
  apply(x: tf.Tensor3D): tf.Tensor3D;
}

/** timm's initialisation of linear layers, as in vit.ts. */
const STD = 0.02;

/** A fresh stitch whose weights (`<name>.norm.g|b`, `<name>.fc.w|b`) are added to `weights`. */
export function createStitch(name: string, from: number, to: number, seed: number, weights: Record<string, tf.Variable>): Stitch {
  const param = seededParams(seed, weights);
  const g = param(`${name}.norm.g`, [from], ones) as tf.Tensor1D;
  const b = param(`${name}.norm.b`, [from], zeros) as tf.Tensor1D;
  const w = param(`${name}.fc.w`, [from, to], normal(STD)) as tf.Tensor2D;
  const bias = param(`${name}.fc.b`, [to], zeros) as tf.Tensor1D;
  return { apply: (x) => dense(layerNorm(x, g, b), w, bias) as tf.Tensor3D };
}

/**
 * Student module `slot` made to fit the meta model's slot: stitched on the way in (unless it reads images)
 * and on the way out (unless it ends in the head) when the widths differ; unchanged when they agree.
 * The stitches' weights go into `weights`, named `stitch.pre` / `stitch.post`.
 */
export function stitched(
  module: ModuleFn,
  o: { slot: number; last: number; studentWidth: number; metaWidth: number; seed: number; weights: Record<string, tf.Variable> },
): ModuleFn {
  if (o.studentWidth === o.metaWidth) return module;
  const pre = o.slot > 0 ? createStitch('stitch.pre', o.metaWidth, o.studentWidth, o.seed, o.weights) : undefined;
  const post = o.slot < o.last ? createStitch('stitch.post', o.studentWidth, o.metaWidth, o.seed, o.weights) : undefined;
  return (x) => {
    const y = module(pre ? pre.apply(tokensOf(x)) : x);
    return post ? post.apply(tokensOf(y)) : y;
  };
}
