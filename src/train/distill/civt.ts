/**
 * Ren et al. 2022, "Co-advise: Cross Inductive Bias Distillation" (CivT): teachers with
 * different inductive biases (a convolution and an involution network) each advise the ViT
 * through their own distillation token and head:
 *
 *   civt = w_ce · CE(z_cls, y) + Σ_t w_t · T² · (1/B) Σ_b m_tb · KL(softmax(z_t,b/T) ‖ softmax(z_dist_t,b/T))
 *
 * z_t teacher t's stored distribution (the t-th of --teachers), z_dist_t the t-th distillation
 * head, m_tb = 1 when teacher t labeled item b (an item it did not label adds 0 to its term).
 * y is the hard target (the teachers' label; gold with --supervised, as in the paper).
 * The paper (and the official code) use T = 1 and weights 1 : 1 : 1. The terms are logged as
 * `civt.ce` and `civt.<teacher>`. The student predicts with the mean of all heads' softmax.
 */
import { DistilleryError, SettingError } from '../../errors.ts';
import { tf } from '../backend.ts';
import { crossEntropy, klRows } from '../losses.ts';
import { vitDistillTokens } from '../models/index.ts';
import { defineDistiller, numberFlag, type Flag } from './types.ts';

export interface CivtOptions {
  civtCeWeight: number;
  civtTeacherWeights: number[] | null;
  civtTemperature: number;
}

const weightsFlag: Flag<number[] | null> = {
  help: 'CivT: weight of each teacher head, in --teachers order',
  default: null,
  parse(text) {
    const ws = text.split(',').map((s) => s.trim());
    if (ws.some((w) => w === '' || !Number.isFinite(Number(w)) || Number(w) < 0))
      throw new Error(`expected comma-separated numbers ≥ 0, got ${JSON.stringify(text)}`);
    return ws.map(Number);
  },
  show: (w) => (w ? w.join(',') : '1 each'),
};

/** CivT's late fusion: the mean of the softmax of the class head and of every distillation head. */
export function civtPredict(logits: tf.Tensor2D, distLogitsAll: tf.Tensor2D[]): tf.Tensor2D {
  return tf.tidy(() => tf.div(tf.addN([logits, ...distLogitsAll].map((z) => tf.softmax(z))), distLogitsAll.length + 1) as tf.Tensor2D);
}

export const civt = defineDistiller<CivtOptions>({
  name: 'civt',
  summary:
    "civt = w_ce · CE(z_cls, y) + Σ_t w_t · T² · KL(z_t/T ‖ z_dist_t/T), one distillation token per teacher; predicts the mean of all heads' softmax",
  flags: {
    civtCeWeight: numberFlag("CivT: weight of the class head's cross-entropy", 1),
    civtTeacherWeights: weightsFlag,
    civtTemperature: numberFlag("CivT: temperature T of each teacher head's KL (the paper: 1)", 1, 0.01),
  },
  create({ civtCeWeight: wCe, civtTeacherWeights, civtTemperature: T }, { student, teachers }) {
    const tokens = student.kind === 'vit' ? vitDistillTokens(student) : 0;
    if (tokens === 0)
      throw new DistilleryError(`--distill civt: needs a ViT with one distillation token per teacher (--arch vit --distill-tokens N)`);
    if (teachers && teachers.length !== tokens)
      throw new SettingError(
        'distillTokens',
        tokens,
        `one distillation token per teacher for --distill civt: the ViT has ${tokens}, --teachers gives ${teachers.length} (${teachers.join(', ')})`,
      );
    if (civtTeacherWeights && civtTeacherWeights.length !== tokens)
      throw new SettingError('civtTeacherWeights', civtTeacherWeights.join(','), `give one weight per teacher (${tokens})`);
    const w = civtTeacherWeights ?? new Array<number>(tokens).fill(1);
    return {
      name: 'civt',
      needs: { hard: true, perTeacher: true },
      weights: {},
      key: () => ({ ceWeight: wCe, teacherWeights: w, temperature: T }),
      terms(out, batch) {
        const { names, logits, present } = batch.perTeacher!; // [T, B, C], [T, B]
        const heads = out.distLogitsAll;
        if (!heads || heads.length !== names.length)
          throw new DistilleryError(
            `civt: ${names.length} teachers (${names.join(', ')}) and ${heads?.length ?? 0} distillation heads; give one token per teacher`,
          );
        const terms: Record<string, tf.Scalar> = {};
        if (wCe > 0) terms['civt.ce'] = tf.tidy(() => tf.mul(crossEntropy(out.logits, batch.hard!), wCe));
        const [, B, C] = logits.shape;
        names.forEach((name, t) => {
          terms[`civt.${name}`] = tf.tidy(() => {
            const zt = tf.reshape(tf.slice(logits, [t, 0, 0], [1, B, C]), [B, C]);
            const mt = tf.reshape(tf.slice(present, [t, 0], [1, B]), [B]);
            const kl = tf.mul(klRows(tf.div(zt, T), tf.div(heads[t], T)), mt);
            return tf.mul(tf.mean(kl), w[t] * T * T) as tf.Scalar;
          });
        });
        return terms;
      },
      dispose() {},
    };
  },
  predict: (out) => (out.distLogitsAll ? civtPredict(out.logits, out.distLogitsAll) : (tf.softmax(out.logits) as tf.Tensor2D)),
});
