/**
 * Hao et al. 2022, manifold distillation: w · (intra + inter), the mean squared differences of
 * the student's and teacher's patch-relation matrices on the last block's L2-normalised patch
 * features (see manifoldLoss). Only the patch counts must match.
 */
import { DistilleryError } from '../../errors.ts';
import { tf } from '../backend.ts';
import { manifoldLoss } from '../losses.ts';
import { vitTokenCounts } from '../models/index.ts';
import { defineDistiller, numberFlag } from './types.ts';
import { vitPair } from './vit-features.ts';

export interface ManifoldOptions {
  manifoldWeight: number;
}

export const manifold = defineDistiller<ManifoldOptions>({
  name: 'manifold',
  summary:
    'manifold = w_manifold · (intra + inter): MSE of the patch-relation matrices F Fᵀ within each image and across the batch (last block, F L2-normalised)',
  flags: { manifoldWeight: numberFlag("weight of the manifold (patch-relation) loss on the last block's patches", 1) },
  create({ manifoldWeight }, ctx) {
    if (manifoldWeight === 0) return null;
    const { s, t, teacherDir } = vitPair(ctx, '--distill manifold');
    const [ps, pt] = [vitTokenCounts(s).patches, vitTokenCounts(t).patches];
    if (ps !== pt)
      throw new DistilleryError(
        `--distill manifold: patch counts differ, student ${ps} (patch ${s.patchSize}) vs teacher ${pt} (patch ${t.patchSize}); use the teacher's patch size`,
      );
    return {
      name: 'manifold',
      needs: { featureTeacher: true, studentFeatures: true },
      weights: {},
      key: () => ({ teacher: teacherDir, weight: manifoldWeight }),
      prepare: (batch) => batch.featureTeacher!.features!.patches,
      terms: (out, _batch, teacherPatches: tf.Tensor) => ({
        manifold: tf.tidy(() => tf.mul(manifoldLoss(out.features!.patches, teacherPatches), manifoldWeight) as tf.Scalar),
      }),
      dispose() {},
    };
  },
});
