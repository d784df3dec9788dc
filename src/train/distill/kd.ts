/**
 * Hinton, Vinyals & Dean 2015: KD on the aggregated teachers' distribution,
 * w · T² · KL(softmax(z_t/T) ‖ softmax(z_s/T)) (see kdLoss in ../losses.ts).
 */
import { tf } from '../backend.ts';
import { kdLoss } from '../losses.ts';
import { defineDistiller, numberFlag, type Flag } from './types.ts';

export interface KdOptions {
  kdWeight: number;
  kdTemperature: number;
}

/** Shared with DeiT's soft mode, which tempers the distillation head the same way. */
export const kdTemperatureFlag: Flag<number> = numberFlag(
  'KD temperature T, applied to logits (stored probabilities are logged first); 4 was best in bench-kd',
  4,
  0.01,
);

export const kd = defineDistiller<KdOptions>({
  name: 'kd',
  summary: "kd = w_kd · T² · KL(softmax(z_t/T) ‖ softmax(z_s/T)), z_t the aggregated teachers' log-probabilities",
  flags: { kdWeight: numberFlag('weight of the KD term (default 0.9; 0 with --supervised)', 0.9), kdTemperature: kdTemperatureFlag },
  create({ kdWeight, kdTemperature }) {
    if (kdWeight === 0) return null;
    return {
      name: 'kd',
      needs: { teacherLogits: true },
      weights: {},
      key: () => ({ weight: kdWeight, temperature: kdTemperature }),
      terms: (out, batch) => ({ kd: tf.tidy(() => tf.mul(kdLoss(out.logits, batch.teacherLogits!, kdTemperature), kdWeight)) }),
      dispose() {},
    };
  },
});
