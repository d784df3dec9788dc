/**
 * MiniViT's attention-relation distillation: w · mean over mapped blocks of the KL between the
 * teacher's and the student's softmax(M Mᵀ/√d) for M ∈ {Q, K, V} (see attentionRelationLoss).
 * Different head counts are regrouped into gcd(h_s, h_t) relation heads (MiniLMv2).
 */
import { tf } from '../backend.ts';
import { attentionRelationLoss, type Qkv } from '../losses.ts';
import { defineDistiller, numberFlag } from './types.ts';
import { hiddenLayersFlag, meanOf, tokenLayers, vitPair, type LayerMap } from './vit-features.ts';

export interface AttnOptions {
  attnWeight: number;
  hiddenLayers: LayerMap | null;
}

const qkvOf = (f: Record<string, tf.Tensor>, block: number): Qkv => ({
  q: f[`block${block}.q`],
  k: f[`block${block}.k`],
  v: f[`block${block}.v`],
});

export const attn = defineDistiller<AttnOptions>({
  name: 'attn',
  summary: 'attn = w_attn · mean over --hidden-layers of KL(softmax(M_t M_tᵀ/√d) ‖ softmax(M_s M_sᵀ/√d)), M ∈ {Q, K, V}',
  flags: { attnWeight: numberFlag("weight of MiniViT's Q/K/V attention-relation loss", 1), hiddenLayers: hiddenLayersFlag },
  create({ attnWeight, hiddenLayers }, ctx) {
    if (attnWeight === 0) return null;
    const { s, t, teacherDir } = vitPair(ctx, '--distill attn');
    const layers = tokenLayers(s, t, hiddenLayers, '--distill attn');
    const relationHeads = s.heads === t.heads ? undefined : gcd(s.heads, t.heads);
    return {
      name: 'attn',
      needs: { featureTeacher: true, studentFeatures: true },
      weights: {},
      key: () => ({ teacher: teacherDir, weight: attnWeight, layers }),
      prepare: (batch) => layers.map(([, lt]) => qkvOf(batch.featureTeacher!.features!, lt)),
      terms: (out, _batch, teacher: Qkv[]) => ({
        attn: tf.tidy(
          () =>
            tf.mul(
              meanOf(layers.map(([ls], i) => attentionRelationLoss(qkvOf(out.features!, ls), teacher[i], { relationHeads }))),
              attnWeight,
            ) as tf.Scalar,
        ),
      }),
      dispose() {},
    };
  },
});

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}
