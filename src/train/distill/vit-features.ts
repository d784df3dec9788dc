/**
 * What the ViT feature distillers (hidden, attn, manifold) share: the checks that the
 * student and the frozen --feature-teacher are ViTs that can be compared, and the layer map
 * `--hidden-layers s:t,...` (student block s learns teacher block t, 0-based; default last to last).
 *
 * hidden and attn compare whole token sequences, so the student's and teacher's token counts
 * (image size, patch size, class/distillation tokens) must match; manifold compares patches
 * only, so only the patch counts must match.
 */
import { DistilleryError, SettingError } from '../../errors.ts';
import { tf } from '../backend.ts';
import { vitTokenCounts, type VitSpec } from '../models/index.ts';
import type { DistillerContext, Flag } from './types.ts';

export type LayerMap = Array<[number, number]>;

/** Parse `--hidden-layers 3:11,1:5`. */
export function parseLayerMap(text: string): LayerMap {
  const pairs = text
    .split(',')
    .filter(Boolean)
    .map((p) => p.trim().split(':'));
  if (pairs.length === 0 || pairs.some((p) => p.length !== 2 || p.some((n) => !/^\d+$/.test(n)))) {
    throw new SettingError('hiddenLayers', text, 'expected student:teacher block pairs such as 3:11,1:5');
  }
  return pairs.map(([s, t]) => [Number(s), Number(t)]);
}

/** null: last block to last block. */
export const hiddenLayersFlag: Flag<LayerMap | null> = {
  help: 'student:teacher block pairs for hidden and attn (0-based; default: last to last)',
  default: null,
  parse: parseLayerMap,
  show: (m) => (m ? m.map(([s, t]) => `${s}:${t}`).join(',') : 'last:last'),
};

/** The student and teacher ViT specs, after checking that they can be compared at all. */
export function vitPair(ctx: DistillerContext, flag: string): { s: VitSpec; t: VitSpec; teacherDir: string } {
  const teacher = ctx.featureTeacher;
  if (!teacher) throw new DistilleryError(`${flag}: needs --feature-teacher DIR (a ViT trained by this project)`);
  const t = teacher.model.spec;
  if (ctx.student.kind !== 'vit' || t.kind !== 'vit') {
    throw new DistilleryError(
      `${flag}: needs a ViT student and a ViT teacher (student: ${ctx.student.kind}, teacher in ${teacher.dir}: ${t.kind})`,
    );
  }
  const s = ctx.student;
  if (s.inputShape.join('x') !== t.inputShape.join('x')) {
    throw new DistilleryError(
      `--feature-teacher ${teacher.dir}: the teacher takes ${t.inputShape.join('×')} inputs, the student ${s.inputShape.join('×')}`,
    );
  }
  return { s, t, teacherDir: teacher.dir };
}

/** hidden and attn: equal token counts, and a layer map inside both models. */
export function tokenLayers(s: VitSpec, t: VitSpec, layers: LayerMap | null, flag: string): LayerMap {
  const ns = vitTokenCounts(s);
  const nt = vitTokenCounts(t);
  if (ns.total !== nt.total) {
    throw new DistilleryError(
      `${flag}: token counts differ, student ${ns.total} (patch ${s.patchSize}, ${ns.prefix} prefix) vs teacher ${nt.total} (patch ${t.patchSize}, ${nt.prefix} prefix); use the teacher's patch size and tokens`,
    );
  }
  const map = layers ?? [[s.depth - 1, t.depth - 1]];
  for (const [ls, lt] of map) {
    if (ls >= s.depth || lt >= t.depth)
      throw new DistilleryError(`--hidden-layers ${ls}:${lt}: the student has blocks 0..${s.depth - 1}, the teacher 0..${t.depth - 1}`);
  }
  return map;
}

/** The mean of per-layer losses. */
export function meanOf(parts: tf.Scalar[]): tf.Scalar {
  return tf.div(tf.addN(parts), parts.length) as tf.Scalar;
}
