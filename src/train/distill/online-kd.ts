/**
 * Online KD: Hinton's KD with the teacher run live instead of read from the store,
 * w · T² · KL(softmax(z_t/T) ‖ softmax(z_s/T)), z_t the frozen --feature-teacher's logits on this very batch,
 * i.e. on the augmented view the student sees. It is what augmentation replay (TinyViT, src/whitebox/replay.ts)
 * reproduces from stored outputs without running the teacher every epoch: the reference row for replay.
 */
import { SettingError } from '../../errors.ts';
import { tf } from '../backend.ts';
import { kdLoss } from '../losses.ts';
import { kdTemperatureFlag } from './kd.ts';
import { defineDistiller, numberFlag } from './types.ts';

export interface OnlineKdOptions {
  onlineKdWeight: number;
  kdTemperature: number;
}

export const onlineKd = defineDistiller<OnlineKdOptions>({
  name: 'online-kd',
  summary: "online-kd = w · T² · KL(softmax(z_ft/T) ‖ softmax(z_s/T)), z_ft the frozen --feature-teacher's logits on the same batch",
  flags: {
    onlineKdWeight: numberFlag("weight of the online KD term (the --feature-teacher's logits on each augmented batch)", 0.9),
    kdTemperature: kdTemperatureFlag,
  },
  create({ onlineKdWeight, kdTemperature }, ctx) {
    if (onlineKdWeight === 0) return null;
    const teacher = ctx.featureTeacher;
    if (!teacher) throw new SettingError('distill', 'online-kd', 'needs --feature-teacher DIR (the frozen model run on each batch)');
    if (teacher.model.spec.numClasses !== ctx.student.numClasses)
      throw new SettingError(
        'featureTeacher',
        teacher.dir,
        `online-kd: the teacher has ${teacher.model.spec.numClasses} classes, the student ${ctx.student.numClasses}`,
      );
    return {
      name: 'online-kd',
      needs: { featureTeacher: true },
      weights: {},
      key: () => ({ teacher: teacher.dir, weight: onlineKdWeight, temperature: kdTemperature }),
      terms: (out, batch) => ({
        'online-kd': tf.tidy(() => tf.mul(kdLoss(out.logits, batch.featureTeacher!.logits, kdTemperature), onlineKdWeight)),
      }),
      dispose() {},
    };
  },
});
