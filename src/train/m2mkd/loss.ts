/**
 * The m2mKD objective of one student module (Lo et al. 2024, eq. 2; the official m2mKDLoss):
 *   L = (1 − α)·CE(z_s, y) + α·τ²·KL(softmax(z_t/τ) ‖ softmax(z_s/τ)),   α = 0.5, τ = 1 in the paper,
 * where z_s is the hybrid student's logits (the meta model with the student module in its slot) and z_t the
 * hybrid teacher's (the same meta model with the teacher module there).
 * The KL is the batch mean (kdLoss, Hinton's formula); the official code divides the summed KL by B·C
 * (DeiT's "legacy" reduction), which is C times smaller.
 */
import { tf } from '../backend.ts';
import { crossEntropy, kdLoss, type LossTerms } from '../losses.ts';

export interface M2mkdLossOptions {
  /** α: the KL term's share (the CE term gets 1 − α). */
  alpha: number;
  /** τ: the KL temperature. */
  tau: number;
}

export const M2MKD_LOSS_DEFAULTS: M2mkdLossOptions = { alpha: 0.5, tau: 1 };

/** The two weighted terms, ce and kd; their sum is the loss. */
export function m2mkdTerms(
  studentLogits: tf.Tensor,
  hybridTeacherLogits: tf.Tensor,
  labels: tf.Tensor1D,
  o: M2mkdLossOptions = M2MKD_LOSS_DEFAULTS,
): LossTerms {
  return {
    ce: tf.tidy(() => tf.mul(crossEntropy(studentLogits, labels), 1 - o.alpha)),
    kd: tf.tidy(() => tf.mul(kdLoss(studentLogits, hybridTeacherLogits, o.tau), o.alpha)),
  };
}

/** L = Σ m2mkdTerms. */
export function m2mkdLoss(
  studentLogits: tf.Tensor,
  hybridTeacherLogits: tf.Tensor,
  labels: tf.Tensor1D,
  o: M2mkdLossOptions = M2MKD_LOSS_DEFAULTS,
): tf.Scalar {
  return tf.tidy(() => {
    const t = m2mkdTerms(studentLogits, hybridTeacherLogits, labels, o);
    return tf.add(t.ce, t.kd) as tf.Scalar;
  });
}
