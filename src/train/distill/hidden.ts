/**
 * Hidden-state distillation (MiniViT / TinyBERT): w · mean over mapped blocks (s, t) of
 * MSE(H_s W_h, H_t). W_h (student width → teacher width) is learned, one per student block,
 * named `proj.hidden.<s>.w`, only when the widths differ; it trains with the student and the
 * checkpoint keeps it, the saved student does not.
 */
import { tf } from '../backend.ts';
import { hiddenMse } from '../losses.ts';
import { lecun, seededParams } from '../models/params.ts';
import { dense } from '../ops.ts';
import { defineDistiller, numberFlag } from './types.ts';
import { hiddenLayersFlag, meanOf, tokenLayers, vitPair, type LayerMap } from './vit-features.ts';

export interface HiddenOptions {
  hiddenWeight: number;
  hiddenLayers: LayerMap | null;
}

/** Prefix of learned projections: kept in checkpoints, never in the saved student. */
export const PROJ_PREFIX = 'proj.';

export const hidden = defineDistiller<HiddenOptions>({
  name: 'hidden',
  summary: 'hidden = w_hidden · mean over --hidden-layers (s, t) of MSE(H_s W_h, H_t), W_h learned when the widths differ',
  flags: {
    hiddenWeight: numberFlag('weight of the hidden-state MSE (learned projection when widths differ)', 1),
    hiddenLayers: hiddenLayersFlag,
  },
  create({ hiddenWeight, hiddenLayers }, ctx) {
    if (hiddenWeight === 0) return null;
    const { s, t, teacherDir } = vitPair(ctx, '--distill hidden');
    const layers = tokenLayers(s, t, hiddenLayers, '--distill hidden');
    const weights: Record<string, tf.Variable> = {};
    const proj = new Map<number, tf.Variable>();
    if (s.width !== t.width) {
      const param = seededParams(ctx.seed, weights);
      for (const [ls] of layers)
        if (!proj.has(ls)) proj.set(ls, param(`${PROJ_PREFIX}hidden.${ls}.w`, [s.width, t.width], lecun(s.width)) as tf.Variable);
    }
    return {
      name: 'hidden',
      needs: { featureTeacher: true, studentFeatures: true },
      weights,
      key: () => ({ teacher: teacherDir, weight: hiddenWeight, layers }),
      prepare: (batch) => layers.map(([, lt]) => batch.featureTeacher!.features![`block${lt}.hidden`]),
      terms(out, _batch, teacherH: tf.Tensor[]) {
        const f = out.features!;
        const term = tf.tidy(() => {
          const parts = layers.map(([ls], i) => {
            const w = proj.get(ls);
            const h = f[`block${ls}.hidden`];
            return hiddenMse(w ? dense(h, w as unknown as tf.Tensor2D) : h, teacherH[i]);
          });
          return tf.mul(meanOf(parts), hiddenWeight) as tf.Scalar;
        });
        return { hidden: term };
      },
      dispose: () => tf.dispose(Object.values(weights)),
    };
  },
});
