/**
 * Distillation losses, one small function per formula, each named after its paper.
 *
 * Conventions shared by every function here:
 * - Logits are [B, C] (or [..., C]): the distribution is always over the LAST axis.
 * - The teacher is the first argument of every KL (KL(teacher ‖ student)), as in the papers;
 *   nothing here stops gradients into the teacher, because the trainer only asks for the
 *   student's gradients (tf.grad / tf.variableGrads see only what they are given).
 * - Every loss returns a scalar averaged over the batch, so that its size does not depend
 *   on the batch size and weights stay meaningful when the batch size changes.
 * - Callers own the inputs; intermediates are freed by tf.tidy.
 *
 * Performance note: relation matrices use batched matMul, which is slow on the wasm backend
 * (only plain 2-D matMul is fast there). Correct first; reshape to 2-D later if it matters.
 */
import { DistilleryError } from '../errors.ts';
import { tf } from './backend.ts';

/** Named loss terms, as in mdistiller's `Distiller.forward_train` returning `losses_dict`. */
export type LossTerms = Record<string, tf.Scalar>;

/**
 * Log-probabilities below this (relative to the row's maximum) count as probability 0.
 * e^-1e4 underflows to exactly 0 in float32, so clamping changes no finite value that
 * matters, and it turns log 0 = −∞ into a finite number so that 0·log 0 gives 0, not NaN.
 */
const LOG_FLOOR = -1e4;

/** F.normalize's epsilon (on the norm), squared because we clamp the squared norm. */
const NORM_EPS_SQ = 1e-24;

// ---------------------------------------------------------------------------------------
// Building blocks

/**
 * Teacher logits made safe to temper: −∞ entries (log 0 in stored log-probabilities) are
 * clamped at LOG_FLOOR below the row max. Shifting by the max first keeps the clamp
 * meaningful whatever the logits' offset (log-probs are ≤ 0, raw logits can be anything).
 */
function finiteTeacherLogits(logits: tf.Tensor): tf.Tensor {
  return tf.tidy(() => tf.maximum(tf.sub(logits, tf.max(logits, -1, true)), LOG_FLOOR));
}

/**
 * Row-wise KL(softmax(teacher) ‖ softmax(student)) over the last axis: Σ_c p_c (log p_c − log q_c).
 * Shape: the inputs' shape without the last axis.
 */
export function klRows(teacherLogits: tf.Tensor, studentLogits: tf.Tensor): tf.Tensor {
  assertSameShape('klRows', teacherLogits, studentLogits);
  return tf.tidy(() => {
    const logP = tf.logSoftmax(finiteTeacherLogits(teacherLogits));
    const logQ = tf.logSoftmax(studentLogits);
    return tf.sum(tf.mul(tf.exp(logP), tf.sub(logP, logQ)), -1);
  });
}

// ---------------------------------------------------------------------------------------
// Classification

/** CE = −(1/B) Σ_b log softmax(z_b)[y_b]. `targets` are int32 class indices [B]. */
export function crossEntropy(logits: tf.Tensor, targets: tf.Tensor): tf.Scalar {
  if (targets.rank !== 1 || targets.shape[0] !== logits.shape[0]) {
    throw new DistilleryError(`crossEntropy: targets must be [${logits.shape[0]}], got [${targets.shape}]`);
  }
  return tf.tidy(() => {
    const oneHot = tf.oneHot(targets, logits.shape[logits.rank - 1]);
    return tf.neg(tf.mean(tf.sum(tf.mul(oneHot, tf.logSoftmax(logits)), -1))) as tf.Scalar;
  });
}

/** Soft-target CE = −(1/B) Σ_b Σ_c p_bc log softmax(z_b)_c, for target distributions p (rows sum to 1). */
export function softCrossEntropy(logits: tf.Tensor, targetProbs: tf.Tensor): tf.Scalar {
  assertSameShape('softCrossEntropy', logits, targetProbs);
  return tf.tidy(() => tf.neg(tf.mean(tf.sum(tf.mul(targetProbs, tf.logSoftmax(logits)), -1))) as tf.Scalar);
}

// ---------------------------------------------------------------------------------------
// Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network"

/**
 * KD = T² · (1/B) Σ_b KL(softmax(z_t/T) ‖ softmax(z_s/T)).
 *
 * The T² keeps the gradient's magnitude independent of T (the soft-target gradients scale as
 * 1/T², §2 of the paper), so the KD weight need not be retuned when T changes.
 * Temperature divides LOGITS: tempering probabilities would be a different (wrong) thing.
 * Stored log-probabilities are valid teacher logits (softmax ignores the constant log Z);
 * their −∞ entries are handled (see LOG_FLOOR).
 *
 * Note: DeiT's official code divides the summed KL by B·C ("legacy PyTorch behaviour"); this
 * is the batch mean (÷B), i.e. C times larger, which is Hinton's formula.
 */
export function kdLoss(studentLogits: tf.Tensor, teacherLogits: tf.Tensor, T: number): tf.Scalar {
  if (!(T > 0) || !Number.isFinite(T)) throw new DistilleryError(`kdLoss: temperature must be a positive number, got ${T}`);
  return tf.tidy(() => {
    // Divide first, clamp after (inside klRows): −∞/T stays −∞ (probability 0 at every T),
    // whereas a clamped −1e4 divided by a large T would come back to life.
    const kl = klRows(tf.div(teacherLogits, T), tf.div(studentLogits, T));
    return tf.mul(tf.mean(kl), T * T);
  });
}

/**
 * The same loss when the teacher's outputs were stored as log-probabilities (e.g. an LLM's
 * top-k logprobs, or log of stored probabilities with log 0 = −∞): log p = z − log Z, and the
 * constant drops out of softmax(·/T), so they ARE the teacher's logits for this purpose.
 * A separate name so that call sites say which kind of number they hold.
 */
export function kdLossFromLogprobs(studentLogits: tf.Tensor, teacherLogprobs: tf.Tensor, T: number): tf.Scalar {
  return kdLoss(studentLogits, teacherLogprobs, T);
}

// ---------------------------------------------------------------------------------------
// Touvron et al. 2021, "Training data-efficient image transformers & distillation through attention"

/** Hard-label distillation: CE(Z_dist, argmax_c Z_t), the teacher's decision as a true label. */
export function deitHardDistill(distLogits: tf.Tensor, teacherLogits: tf.Tensor): tf.Scalar {
  assertSameShape('deitHardDistill', distLogits, teacherLogits);
  return tf.tidy(() => crossEntropy(distLogits, tf.argMax(teacherLogits, -1)));
}

/** Soft distillation on the distillation token's head: τ² KL(ψ(Z_t/τ) ‖ ψ(Z_dist/τ)). */
export function deitSoftDistill(distLogits: tf.Tensor, teacherLogits: tf.Tensor, T: number): tf.Scalar {
  return kdLoss(distLogits, teacherLogits, T);
}

/**
 * Test-time prediction of a distilled DeiT: (softmax(Z_cls) + softmax(Z_dist)) / 2, returned as
 * PROBABILITIES [B, C]. The paper's late fusion adds the two heads' softmax outputs;
 * probabilities are on a common scale, whereas the heads' logits need not be (they are trained
 * against different targets), so averaging logits would let the more confident head dominate.
 * (The official code averages logits; the argmax usually agrees.)
 */
export function deitPredict(clsLogits: tf.Tensor, distLogits: tf.Tensor): tf.Tensor {
  assertSameShape('deitPredict', clsLogits, distLogits);
  return tf.tidy(() => tf.mul(tf.add(tf.softmax(clsLogits), tf.softmax(distLogits)), 0.5));
}

// ---------------------------------------------------------------------------------------
// Zhang et al. 2022, "MiniViT: Compressing Vision Transformers with Weight Multiplexing"

/**
 * Hidden-state distillation: MSE(H_s, H_t) = mean over all entries of (H_s − H_t)².
 * Shapes must match: when the student is narrower, project it first (MiniViT / TinyBERT use a
 * learnable linear map W_h; that map belongs to the student, not to the loss).
 */
export function hiddenMse(studentH: tf.Tensor, teacherH: tf.Tensor): tf.Scalar {
  assertSameShape('hiddenMse', studentH, teacherH);
  return tf.tidy(() => tf.mean(tf.squaredDifference(studentH, teacherH)));
}

/** Q, K and V of one attention layer, each [B, heads, N, d]. */
export interface Qkv {
  q: tf.Tensor;
  k: tf.Tensor;
  v: tf.Tensor;
}

export interface RelationOptions {
  /**
   * 'self' (default): the 3 relations Q·Qᵀ, K·Kᵀ, V·Vᵀ (MiniLMv2).
   * 'all': MiniViT's 9 relations M_i·M_jᵀ for M_i, M_j ∈ {Q, K, V} (official Mini-Swin code).
   */
  pairs?: 'self' | 'all';
  /**
   * Re-split both sides into this many "relation heads" (MiniLMv2: concatenate the heads,
   * split again), which is what lets a student with fewer heads learn from a teacher with more.
   * Without it, head counts must be equal (head h of the student learns head h of the teacher).
   */
  relationHeads?: number;
}

/**
 * Self-attention relation distillation:
 *   R_ij = softmax(M_i M_jᵀ / √d) over tokens (N×N per head, so the head dims d may differ),
 *   loss = mean over pairs (i, j), batch, heads and query tokens of KL(R^t_ij ‖ R^s_ij).
 * KL rather than the official code's soft cross-entropy: same gradient (they differ by the
 * teacher's entropy, a constant), but KL is 0 when the student matches, which is testable.
 */
export function attentionRelationLoss(student: Qkv, teacher: Qkv, opts: RelationOptions = {}): tf.Scalar {
  const names = ['q', 'k', 'v'] as const;
  const pairs: Array<[keyof Qkv, keyof Qkv]> =
    opts.pairs === 'all' ? names.flatMap((i) => names.map((j): [keyof Qkv, keyof Qkv] => [i, j])) : names.map((n) => [n, n]);
  return tf.tidy(() => {
    const s = regroupQkv(student, opts.relationHeads, 'student');
    const t = regroupQkv(teacher, opts.relationHeads, 'teacher');
    checkRelationShapes(s.q, t.q);
    const losses = pairs.map(([i, j]) => tf.mean(klRows(relationLogits(t[i], t[j]), relationLogits(s[i], s[j]))));
    return tf.div(tf.addN(losses), losses.length) as tf.Scalar;
  });
}

/** A_i A_jᵀ / √d: [B, h, N, d] × [B, h, N, d] → [B, h, N, N]. */
function relationLogits(a: tf.Tensor, b: tf.Tensor): tf.Tensor {
  const d = a.shape[a.rank - 1];
  return tf.div(tf.matMul(a, b, false, true), Math.sqrt(d));
}

function regroupQkv(x: Qkv, heads: number | undefined, who: string): Qkv {
  for (const key of ['q', 'k', 'v'] as const) {
    if (x[key].rank !== 4)
      throw new DistilleryError(`attentionRelationLoss: ${who} ${key} must be [B, heads, N, d], got [${x[key].shape}]`);
  }
  if (heads === undefined) return x;
  return { q: regroupHeads(x.q, heads, who), k: regroupHeads(x.k, heads, who), v: regroupHeads(x.v, heads, who) };
}

/** [B, h, N, d] → [B, r, N, h·d/r]: concatenate the heads along features, then split into r. */
export function regroupHeads(x: tf.Tensor, relationHeads: number, who = 'input'): tf.Tensor {
  const [b, h, n, d] = x.shape;
  if (!Number.isInteger(relationHeads) || relationHeads < 1 || (h * d) % relationHeads !== 0) {
    throw new DistilleryError(`attentionRelationLoss: ${who} width ${h}×${d} is not divisible into ${relationHeads} relation heads`);
  }
  return tf.tidy(() => {
    const tokensMajor = tf.reshape(tf.transpose(x, [0, 2, 1, 3]), [b, n, relationHeads, (h * d) / relationHeads]);
    return tf.transpose(tokensMajor, [0, 2, 1, 3]);
  });
}

function checkRelationShapes(s: tf.Tensor, t: tf.Tensor): void {
  const [bs, hs, ns] = s.shape;
  const [bt, ht, nt] = t.shape;
  if (bs !== bt || ns !== nt) {
    throw new DistilleryError(`attentionRelationLoss: batch and token counts must match, student [${s.shape}] vs teacher [${t.shape}]`);
  }
  if (hs !== ht) {
    throw new DistilleryError(`attentionRelationLoss: student has ${hs} heads, teacher ${ht}: pass relationHeads to compare them`);
  }
}

// ---------------------------------------------------------------------------------------
// Hao et al. 2022, "Learning Efficient Vision Transformers via Fine-Grained Manifold Distillation"

export interface ManifoldOptions {
  /** Term weights; default 1 each. The paper tunes them per model pair. */
  weights?: Partial<Record<'intra' | 'inter' | 'random', number>>;
  /**
   * Also compute the paper's third term on K patches sampled from the whole batch (pairs across
   * both images and positions). Off by default: it is random, and intra + inter already cover
   * the structure; set it to add the term.
   */
  randomK?: number;
  /** Source of randomness for the sampled term, in [0, 1); Math.random when absent. */
  rand?: () => number;
}

/**
 * The manifold terms, each ‖M_s − M_t‖²_F / (number of entries), i.e. the mean squared
 * difference of the relation matrices (as in the official code):
 *   intra:  M = F Fᵀ within each image, [B, N, N] (patches of one image vs each other);
 *   inter:  M over the batch at each patch position, [N, B, B];
 *   random: M over K patches sampled from all B·N (only with opts.randomK).
 * F is each patch feature L2-normalised, so the student and teacher widths may differ and only
 * directions (relations) are matched, never scales.
 */
export function manifoldTerms(studentPatches: tf.Tensor, teacherPatches: tf.Tensor, opts: ManifoldOptions = {}): LossTerms {
  checkPatchShapes(studentPatches, teacherPatches);
  return tf.tidy(() => {
    const fs = l2Normalize(studentPatches);
    const ft = l2Normalize(teacherPatches);
    const terms: LossTerms = {
      intra: gramMse(fs, ft),
      inter: gramMse(tf.transpose(fs, [1, 0, 2]), tf.transpose(ft, [1, 0, 2])),
    };
    if (opts.randomK !== undefined) terms.random = randomPatchTerm(fs, ft, opts.randomK, opts.rand ?? Math.random);
    return terms;
  });
}

/** L_mf = w_intra·intra + w_inter·inter (+ w_random·random): see manifoldTerms. */
export function manifoldLoss(studentPatches: tf.Tensor, teacherPatches: tf.Tensor, opts: ManifoldOptions = {}): tf.Scalar {
  return tf.tidy(() => weightedSum(manifoldTerms(studentPatches, teacherPatches, opts), opts.weights ?? {}));
}

function checkPatchShapes(s: tf.Tensor, t: tf.Tensor): void {
  if (s.rank !== 3 || t.rank !== 3 || s.shape[0] !== t.shape[0] || s.shape[1] !== t.shape[1]) {
    throw new DistilleryError(
      `manifoldLoss: patches must be [B, N, D] with the same B and N, student [${s.shape}] vs teacher [${t.shape}]`,
    );
  }
}

/** x / max(‖x‖, ε) over the last axis, like torch's F.normalize (finite gradient at 0). */
function l2Normalize(x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => tf.mul(x, tf.rsqrt(tf.maximum(tf.sum(tf.square(x), -1, true), NORM_EPS_SQ))));
}

/** mean((A_s A_sᵀ − A_t A_tᵀ)²) for [..., M, D] inputs (batched Gram matrices). */
function gramMse(as: tf.Tensor, at: tf.Tensor): tf.Scalar {
  return tf.tidy(() => tf.mean(tf.squaredDifference(tf.matMul(as, as, false, true), tf.matMul(at, at, false, true))));
}

function randomPatchTerm(fs: tf.Tensor, ft: tf.Tensor, k: number, rand: () => number): tf.Scalar {
  const [b, n] = fs.shape;
  const picked = tf.tensor1d(samplePatches(b * n, k, rand), 'int32');
  const rows = (f: tf.Tensor) => tf.gather(tf.reshape(f, [b * n, -1]), picked);
  return gramMse(rows(fs), rows(ft));
}

/** K distinct indices of 0..total−1 (partial Fisher–Yates), all of them when K ≥ total. */
function samplePatches(total: number, k: number, rand: () => number): number[] {
  const idx = Array.from({ length: total }, (_, i) => i);
  const take = Math.min(Math.max(1, Math.floor(k)), total);
  for (let i = 0; i < take; i++) {
    const j = i + Math.floor(rand() * (total - i));
    [idx[i], idx[j]] = [idx[j], idx[i]];
  }
  return idx.slice(0, take);
}

// ---------------------------------------------------------------------------------------
// Combining terms

/**
 * total = Σ_name w_name · term_name, every term included (weight 1 when not named).
 * The terms are left untouched so the caller can log them; inside tf.variableGrads /
 * optimizer.minimize they are intermediates and get disposed, so `tf.keep` them (or read
 * them with termValues inside the closure) when they are needed afterwards.
 * A weight naming no term is an error: a typo there would silently disable a loss.
 */
export function weightedSum(terms: LossTerms, weights: Readonly<Record<string, number | undefined>> = {}): tf.Scalar {
  const unknown = Object.keys(weights).filter((name) => !(name in terms));
  if (unknown.length > 0) {
    throw new DistilleryError(
      `weightedSum: weights for unknown loss terms: ${unknown.join(', ')} (terms: ${Object.keys(terms).join(', ') || 'none'})`,
    );
  }
  const names = Object.keys(terms);
  if (names.length === 0) return tf.scalar(0);
  return tf.tidy(() => tf.addN(names.map((name) => tf.mul(terms[name], weights[name] ?? 1))) as tf.Scalar);
}

/** The terms as numbers, for logging (synchronous read: call once per logged step, not per batch). */
export function termValues(terms: LossTerms): Record<string, number> {
  return Object.fromEntries(Object.entries(terms).map(([name, t]) => [name, t.dataSync()[0]]));
}

function assertSameShape(what: string, a: tf.Tensor, b: tf.Tensor): void {
  if (a.rank !== b.rank || a.shape.some((d, i) => d !== b.shape[i])) {
    throw new DistilleryError(`${what}: shapes differ, [${a.shape}] vs [${b.shape}]`);
  }
}
