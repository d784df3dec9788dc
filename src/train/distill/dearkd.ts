/**
 * DearKD (Chen et al., CVPR 2022, "DearKD: Data-Efficient Early Knowledge Distillation for Vision
 * Transformers"): a ViT learns from a CNN early in training, then on its own.
 *
 *   stage 1 (the first r of the epochs):
 *     dearkd-kd      = w_kd · T² · KL(softmax(z_t/T) ‖ softmax(z_s/T))       (the stored teachers' logits)
 *     dearkd-feature = β · MSE(LN(H_s W + b), pool(F_t))
 *       H_s: student block s's patch tokens [B, h·w, D] (prefix tokens dropped), W [D, C], b and the
 *       LayerNorm's gain/bias learned (the aligner, `proj.dearkd.*`: checkpointed, not saved);
 *       F_t: the frozen CNN's feature map `stage<i>` [B, H', W', C], averaged over (H'/h)×(W'/w) cells
 *       when the factors are whole, else bilinearly resized to h×w, then read row by row like the patches.
 *   stage 2: nothing (the `ce` distiller's term alone); the teacher and the aligner are no longer run.
 * The learning-rate schedule is the trainer's one schedule across both stages.
 *
 * Not taken from an official implementation (none found): β, r, the block and the map are flags.
 * MHCA, the paper's convolution-like early attention, is the ViT's `relPosBlocks` (models/vit.ts).
 */
import { DistilleryError, SettingError } from '../../errors.ts';
import { tf } from '../backend.ts';
import { hiddenMse, kdLoss } from '../losses.ts';
import { vitTokenCounts, type VitSpec } from '../models/index.ts';
import { lecun, ones, seededParams, zeros } from '../models/params.ts';
import { dense, layerNorm } from '../ops.ts';
import { PROJ_PREFIX } from './hidden.ts';
import { kdTemperatureFlag } from './kd.ts';
import { defineDistiller, numberFlag, type Batch, type DistillerContext, type Flag, type Progress } from './types.ts';

export interface DearkdOptions {
  dearkdStage1: number;
  dearkdWeight: number;
  dearkdKdWeight: number;
  kdTemperature: number;
  dearkdBlock: number | null;
  dearkdTeacherStage: number | null;
}

function fractionFlag(help: string, def: number): Flag<number> {
  return {
    help,
    default: def,
    parse(text) {
      const x = Number(text);
      if (text.trim() === '' || !(x >= 0 && x <= 1)) throw new Error(`expected a fraction from 0 to 1, got ${JSON.stringify(text)}`);
      return x;
    },
  };
}

function indexFlag(help: string, show: string): Flag<number | null> {
  return {
    help,
    default: null,
    parse(text) {
      if (!/^\d+$/.test(text.trim())) throw new Error(`expected a block index (0, 1, ...), got ${JSON.stringify(text)}`);
      return Number(text);
    },
    show: (v) => (v === null ? show : String(v)),
  };
}

/** Stage 1 lasts round(r · epochs) epochs, at least one when r > 0. */
export function stage1Epochs(r: number, epochs: number): number {
  return r > 0 ? Math.max(1, Math.round(r * epochs)) : 0;
}

/** A teacher feature map: `stage<index>`, [1, h, w, c] on one image. */
interface FeatureMap {
  index: number;
  h: number;
  w: number;
  c: number;
}

/** The teacher's convolutional feature maps (`stage<i>`, rank 4), found by running it once on a blank image. */
function featureMaps(ctx: DistillerContext, s: VitSpec): FeatureMap[] {
  const t = ctx.featureTeacher!;
  return tf.tidy(() => {
    const out = t.model.forward(tf.zeros([1, ...s.inputShape]), { collect: true });
    return Object.entries(out.features ?? {})
      .filter(([name, f]) => /^stage\d+$/.test(name) && f.rank === 4)
      .map(([name, f]) => ({ index: Number(name.slice(5)), h: f.shape[1]!, w: f.shape[2]!, c: f.shape[3]! }))
      .sort((a, b) => a.index - b.index);
  });
}

/** The map closest in resolution to the token grid (the deeper one on a tie). */
function closestMap(maps: FeatureMap[], h: number, w: number): FeatureMap {
  const off = (m: FeatureMap) => Math.abs(Math.log(m.h / h)) + Math.abs(Math.log(m.w / w));
  return maps.reduce((best, m) => (off(m) <= off(best) ? m : best));
}

/** F [B, H', W', C] → [B, h·w, C]: the mean over whole cells, or a bilinear resize. */
export function mapToGrid(f: tf.Tensor4D, h: number, w: number): tf.Tensor3D {
  return tf.tidy(() => {
    const [b, fh, fw, c] = f.shape;
    const grid =
      fh % h === 0 && fw % w === 0
        ? tf.mean(tf.reshape(f, [b, h, fh / h, w, fw / w, c]), [2, 4])
        : tf.image.resizeBilinear(f, [h, w], false, true);
    return tf.reshape(grid, [b, h * w, c]) as tf.Tensor3D;
  });
}

export const dearkd = defineDistiller<DearkdOptions>({
  name: 'dearkd',
  summary:
    'first r of the epochs: dearkd-kd = w_kd · T² · KL(z_t/T ‖ z_s/T) and dearkd-feature = β · MSE(LN(H_s W + b), pool(F_cnn)); then nothing (ce alone)',
  flags: {
    dearkdStage1: fractionFlag('DearKD: fraction of the epochs in stage 1 (KD + CNN features); the rest is CE alone', 0.5),
    dearkdWeight: numberFlag("DearKD: β, weight of the MSE between the aligned ViT block's patch tokens and the CNN's feature map", 1),
    dearkdKdWeight: numberFlag("DearKD: weight of stage 1's KD to the stored teachers' logits", 1),
    kdTemperature: kdTemperatureFlag,
    dearkdBlock: indexFlag('DearKD: the ViT block (0-based) whose patch tokens learn the CNN map', 'the middle, ⌊(depth−1)/2⌋'),
    dearkdTeacherStage: indexFlag(
      'DearKD: the CNN feature map stage<i> (cnn: 0, 1, 2 with three convolutions)',
      'the one closest to the token grid',
    ),
  },
  create(o, ctx) {
    if (o.dearkdStage1 === 0 || (o.dearkdWeight === 0 && o.dearkdKdWeight === 0)) return null;
    const s = ctx.student;
    if (s.kind !== 'vit') throw new DistilleryError(`--distill dearkd: needs a ViT student, not ${s.kind}`);
    if (ctx.distill && !ctx.distill.includes('ce'))
      throw new SettingError(
        'distill',
        ctx.distill.join(','),
        'dearkd: stage 2 trains on CE alone; add ce (e.g. --distill ce,dearkd --ce-weight 1)',
      );
    if (ctx.distill?.includes('kd'))
      throw new SettingError(
        'distill',
        ctx.distill.join(','),
        'dearkd has its own KD (--dearkd-kd-weight), which stops with stage 1; kd would go on in stage 2',
      );

    const useFeatures = o.dearkdWeight > 0;
    const useKd = o.dearkdKdWeight > 0;
    const tokens = vitTokenCounts(s);
    const [h, w] = [s.inputShape[0] / s.patchSize, s.inputShape[1] / s.patchSize];
    const block = o.dearkdBlock ?? Math.floor((s.depth - 1) / 2);
    if (block >= s.depth) throw new SettingError('dearkdBlock', block, `the student has blocks 0..${s.depth - 1}`);

    const weights: Record<string, tf.Variable> = {};
    let map: FeatureMap | undefined;
    let aligner: { w: tf.Tensor2D; b: tf.Tensor1D; g: tf.Tensor1D; beta: tf.Tensor1D } | undefined;
    if (useFeatures) {
      const teacher = ctx.featureTeacher;
      if (!teacher)
        throw new DistilleryError(
          '--distill dearkd: needs --feature-teacher DIR, a CNN trained by this project (train.ts --arch cnn --supervised)',
        );
      const t = teacher.model.spec;
      if (!('inputShape' in t) || t.inputShape?.join('x') !== s.inputShape.join('x'))
        throw new DistilleryError(
          `--feature-teacher ${teacher.dir}: dearkd needs a CNN on the student's ${s.inputShape.join('×')} images (the teacher is ${t.kind})`,
        );
      const maps = featureMaps(ctx, s);
      if (maps.length === 0)
        throw new DistilleryError(`--feature-teacher ${teacher.dir}: dearkd needs a CNN's feature maps, and this ${t.kind} has none`);
      map = o.dearkdTeacherStage === null ? closestMap(maps, h, w) : maps.find((m) => m.index === o.dearkdTeacherStage);
      if (!map)
        throw new SettingError(
          'dearkdTeacherStage',
          o.dearkdTeacherStage,
          `the teacher's maps are stage${maps.map((m) => m.index).join(', stage')}`,
        );
      const param = seededParams(ctx.seed, weights);
      aligner = {
        w: param(`${PROJ_PREFIX}dearkd.w`, [s.width, map.c], lecun(s.width)) as tf.Tensor2D,
        b: param(`${PROJ_PREFIX}dearkd.b`, [map.c], zeros) as tf.Tensor1D,
        g: param(`${PROJ_PREFIX}dearkd.ln.g`, [map.c], ones) as tf.Tensor1D,
        beta: param(`${PROJ_PREFIX}dearkd.ln.b`, [map.c], zeros) as tf.Tensor1D,
      };
    }

    const inStage1 = (p: Partial<Progress>): boolean => {
      if (p.epoch === undefined || p.epochs === undefined)
        throw new Error('dearkd: the batch carries no training progress (batch.epoch, batch.epochs)');
      return p.epoch < stage1Epochs(o.dearkdStage1, p.epochs);
    };
    const needs = { teacherLogits: useKd, featureTeacher: useFeatures, studentFeatures: useFeatures };
    return {
      name: 'dearkd',
      needs,
      needsAt: (p) => (inStage1(p) ? needs : {}),
      weights,
      key: () => ({
        stage1: o.dearkdStage1,
        ...(useKd ? { kdWeight: o.dearkdKdWeight, temperature: o.kdTemperature } : {}),
        ...(useFeatures ? { teacher: ctx.featureTeacher!.dir, weight: o.dearkdWeight, block, teacherStage: map!.index } : {}),
      }),
      prepare: (batch: Batch) =>
        useFeatures && inStage1(batch) ? mapToGrid(batch.featureTeacher!.features![`stage${map!.index}`] as tf.Tensor4D, h, w) : undefined,
      terms(out, batch, teacherGrid: tf.Tensor3D | undefined) {
        if (!inStage1(batch)) return {};
        const terms: Record<string, tf.Scalar> = {};
        if (useKd) terms['dearkd-kd'] = tf.tidy(() => tf.mul(kdLoss(out.logits, batch.teacherLogits!, o.kdTemperature), o.dearkdKdWeight));
        if (aligner)
          terms['dearkd-feature'] = tf.tidy(() => {
            const hs = out.features![`block${block}.hidden`];
            const patches = tf.slice(hs, [0, tokens.prefix, 0], [hs.shape[0], tokens.patches, s.width]);
            const aligned = layerNorm(dense(patches, aligner.w, aligner.b), aligner.g, aligner.beta);
            return tf.mul(hiddenMse(aligned, teacherGrid!), o.dearkdWeight) as tf.Scalar;
          });
        return terms;
      },
      dispose: () => tf.dispose(Object.values(weights)),
    };
  },
});
