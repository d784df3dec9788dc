/** Cross-entropy to the hard target (the teachers' label; gold with --supervised): w · CE(z_s, y). */
import { tf } from '../backend.ts';
import { crossEntropy } from '../losses.ts';
import { defineDistiller, numberFlag } from './types.ts';

export interface CeOptions {
  ceWeight: number;
}

export const ce = defineDistiller<CeOptions>({
  name: 'ce',
  summary: "ce = w_ce · CE(z_s, y), y the hard target (the teachers' label; gold with --supervised)",
  flags: {
    ceWeight: numberFlag('weight of cross-entropy to the hard target (default 0.1; 1 with --supervised or --distill ce alone)', 0.1),
  },
  create({ ceWeight }) {
    if (ceWeight === 0) return null;
    return {
      name: 'ce',
      needs: { hard: true },
      weights: {},
      key: () => ({ weight: ceWeight }),
      terms: (out, batch) => ({ ce: tf.tidy(() => tf.mul(crossEntropy(out.logits, batch.hard!), ceWeight)) }),
      dispose() {},
    };
  },
});
