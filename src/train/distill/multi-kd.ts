/**
 * KD from each teacher separately rather than from their aggregate: the mean over the teachers
 * that labeled an item of Hinton's KD to that teacher,
 *   multi-kd = w · T² · (1/B) Σ_b (1/|T_b|) Σ_{t ∈ T_b} KL(softmax(z_t,b/T) ‖ softmax(z_s,b/T)),
 * T_b the teachers with a soft label for item b (items no teacher labeled add 0).
 * Unlike kd on a mean of distributions, a confident teacher is not blurred by a hesitant one.
 */
import { tf } from '../backend.ts';
import { klRows } from '../losses.ts';
import { kdTemperatureFlag } from './kd.ts';
import { defineDistiller, numberFlag } from './types.ts';

export interface MultiKdOptions {
  multiKdWeight: number;
  kdTemperature: number;
}

export const multiKd = defineDistiller<MultiKdOptions>({
  name: 'multi-kd',
  summary: 'multi-kd = w · T² · mean over items of the mean over the teachers that labeled it of KL(softmax(z_t/T) ‖ softmax(z_s/T))',
  flags: { multiKdWeight: numberFlag('weight of KD to each teacher separately', 1), kdTemperature: kdTemperatureFlag },
  create({ multiKdWeight: w, kdTemperature: T }) {
    if (w === 0) return null;
    return {
      name: 'multi-kd',
      needs: { perTeacher: true },
      weights: {},
      key: () => ({ weight: w, temperature: T }),
      terms(out, batch) {
        const { logits, present } = batch.perTeacher!; // [T, B, C], [T, B]
        const term = tf.tidy(() => {
          const student = tf.broadcastTo(tf.expandDims(out.logits, 0), logits.shape);
          const kl = tf.mul(klRows(tf.div(logits, T), tf.div(student, T)), present); // [T, B]
          const perItem = tf.div(tf.sum(kl, 0), tf.maximum(tf.sum(present, 0), 1)); // [B]
          return tf.mul(tf.mean(perItem), w * T * T) as tf.Scalar;
        });
        return { 'multi-kd': term };
      },
      dispose() {},
    };
  },
});
