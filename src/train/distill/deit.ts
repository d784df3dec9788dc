/**
 * Touvron et al. 2021 (DeiT): a ViT with a distillation token learns the teacher on that
 * token's head, and predicts with the mean of both heads' softmax.
 *   hard: w · CE(z_dist, argmax z_t)      soft: w · T² · KL(softmax(z_t/T) ‖ softmax(z_dist/T))
 * The term is named `distill`.
 */
import { DistilleryError } from '../../errors.ts';
import { tf } from '../backend.ts';
import { deitHardDistill, deitPredict, deitSoftDistill } from '../losses.ts';
import { vitDistillTokens } from '../models/index.ts';
import { kdTemperatureFlag } from './kd.ts';
import { choiceFlag, defineDistiller, numberFlag } from './types.ts';

export interface DeitOptions {
  deitMode: 'hard' | 'soft';
  deitWeight: number;
  kdTemperature: number;
}

export const deit = defineDistiller<DeitOptions>({
  name: 'deit',
  summary:
    'distill = w_deit · CE(z_dist, argmax z_t) (hard) or w_deit · T² · KL(z_t/T ‖ z_dist/T) (soft); predicts (softmax z_cls + softmax z_dist)/2',
  flags: {
    deitMode: choiceFlag('DeiT: loss of the distillation head', 'hard', ['hard', 'soft'] as const),
    deitWeight: numberFlag('weight of the DeiT distillation-head loss', 1),
    kdTemperature: kdTemperatureFlag,
  },
  create({ deitMode, deitWeight, kdTemperature }, { student }) {
    if (student.kind !== 'vit' || !vitDistillTokens(student))
      throw new DistilleryError(`--distill deit: needs a ViT with a distillation token (--arch vit --distill-token), not ${student.kind}`);
    if (vitDistillTokens(student) > 1)
      throw new DistilleryError(
        `--distill deit: trains one distillation token; this ViT has ${vitDistillTokens(student)} (use --distill civt)`,
      );
    if (deitWeight === 0) return null;
    return {
      name: 'deit',
      needs: { teacherLogits: true },
      weights: {},
      key: () => ({ mode: deitMode, weight: deitWeight, ...(deitMode === 'soft' ? { temperature: kdTemperature } : {}) }),
      terms(out, batch) {
        if (!out.distLogits) throw new DistilleryError('deit: the student has no distillation head');
        const t = batch.teacherLogits!;
        const loss = deitMode === 'hard' ? deitHardDistill(out.distLogits, t) : deitSoftDistill(out.distLogits, t, kdTemperature);
        return { distill: tf.tidy(() => tf.mul(loss, deitWeight)) };
      },
      dispose() {},
    };
  },
  predict: (out) => deitPredict(out.logits, out.distLogits!) as tf.Tensor2D,
});
