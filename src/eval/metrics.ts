/**
 * The one home of evaluation metrics against gold: for teachers, aggregated
 * targets and students alike (eval.ts, teachers.ts, the trainer's test report,
 * the report page, the pilot). Conventions follow scikit-learn so figures can be
 * checked against it (test/fixtures/sklearn-metrics.py):
 * - precision, recall and F1 per class with zero_division=0;
 * - macro-F1 is the unweighted mean of per-class F1 over the task's whole label
 *   list (`f1_score(labels=range(K), average='macro', zero_division=0)`), so a
 *   class absent from gold and never predicted counts as F1 = 0;
 * - NLL is mean -log p(gold) with p clipped below at 1e-15 (sklearn's log_loss
 *   before 1.5; from 1.5 on it clips at the float64 machine epsilon, 2.2e-16,
 *   which differs only when the gold class gets less than 1e-15).
 * ECE (no sklearn counterpart) is Guo et al.'s, 15 equal-width bins on the top
 * probability. The Labels-based functions skip items without a prediction or
 * gold and report how many they used (`n`); with n = 0 a value is NaN: there
 * is nothing to measure, and 0 would lie.
 */
import { DistilleryError } from '../errors.ts';
import { argmax, checkClass, checkSameLength } from '../targets/vector.ts';

/** Per item: a class index, or null when unknown (no gold, no prediction). */
export type Labels = (number | null)[];

export interface Metric {
  n: number;
  value: number;
}

/** Probabilities below this count as this (sklearn's log_loss eps before 1.5): one confident mistake costs ~34.5 nats, not Infinity. */
export const NLL_CLAMP = 1e-15;
/** The project's ECE bin count everywhere (teachers, students, the report). */
export const ECE_BINS = 15;
/** The accuracy–coverage curve's default points: keep the top 10%, 20%, …, 100% most confident items. */
export const COVERAGE_PERCENTS: readonly number[] = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100];

export interface ClassMetrics {
  label: string;
  precision: number;
  recall: number;
  f1: number;
  /** Gold items of this class. */
  support: number;
}

export interface CoveragePoint {
  /** Share of items kept (0.1 = the 10% most confident). */
  coverage: number;
  /** Items kept: ceil(coverage · N). */
  n: number;
  accuracy: number;
}

export interface ClassificationMetrics {
  n: number;
  /** NaN when n = 0. */
  accuracy: number;
  macroF1: number;
  perClass: ClassMetrics[];
  /** confusion[gold][pred]. */
  confusion: number[][];
  /** Null when no probabilities were given (or none for any item). */
  ece: number | null;
  nll: number | null;
  coverage: CoveragePoint[] | null;
  /** Items with a probability row (the probability metrics rest on these). */
  probN: number;
  /** The reliability diagram behind `ece`. */
  reliability: ReliabilityBin[] | null;
}

/**
 * Every classification metric of one labeler against gold. gold[i], pred[i] are
 * class indices into labels; probs[i] (optional; null for an item without one)
 * a distribution over labels. ECE uses the top probability and its argmax (the
 * calibration of the distribution); the accuracy–coverage curve ranks items by
 * the probability of the answer given, p[pred[i]], and scores that answer
 * (they agree whenever pred is the argmax, as for students).
 */
export function classificationMetrics(
  labels: readonly string[],
  gold: readonly number[],
  pred: readonly number[],
  probs?: readonly (ArrayLike<number> | null)[],
): ClassificationMetrics {
  const c = labels.length;
  checkSameLength(gold, pred, 'gold and predictions differ in length');
  if (probs) checkSameLength(gold, probs, 'gold and probabilities differ in length');
  const n = gold.length;
  const confusion = Array.from({ length: c }, () => new Array<number>(c).fill(0));
  for (let i = 0; i < n; i++) {
    checkClass(gold[i], c, `gold[${i}]`);
    checkClass(pred[i], c, `pred[${i}]`);
    confusion[gold[i]][pred[i]]++;
  }
  const perClass = perClassMetrics(labels, confusion);
  let correct = 0;
  for (let k = 0; k < c; k++) correct += confusion[k][k];
  const out: ClassificationMetrics = {
    n,
    accuracy: n ? correct / n : NaN,
    macroF1: c ? perClass.reduce((s, m) => s + m.f1, 0) / c : NaN,
    perClass,
    confusion,
    ece: null,
    nll: null,
    coverage: null,
    probN: 0,
    reliability: null,
  };
  if (!probs) return out;
  const rows: (ArrayLike<number> | null)[] = [];
  const golds: Labels = [];
  const conf: number[] = [];
  const right: boolean[] = [];
  for (let i = 0; i < n; i++) {
    const p = probs[i];
    if (p === null) continue;
    if (p.length !== c) throw new DistilleryError(`probabilities[${i}] has ${p.length} classes, expected ${c}`);
    rows.push(p);
    golds.push(gold[i]);
    conf.push(p[pred[i]]);
    right.push(pred[i] === gold[i]);
  }
  if (rows.length === 0) return out;
  const r = reliabilityBins(rows, golds, ECE_BINS);
  return {
    ...out,
    probN: rows.length,
    ece: eceOfBins(r),
    nll: nll(rows, golds).value,
    coverage: coverageCurve(conf, right),
    reliability: r.bins,
  };
}

/** Precision, recall and F1 per class from a confusion matrix (rows gold), zero_division = 0 as in sklearn. */
export function perClassMetrics(labels: readonly string[], confusion: readonly (readonly number[])[]): ClassMetrics[] {
  return labels.map((label, k) => {
    let support = 0;
    let predicted = 0;
    for (let j = 0; j < labels.length; j++) {
      support += confusion[k][j];
      predicted += confusion[j][k];
    }
    const tp = confusion[k][k];
    // sklearn's F-score: (1+β²)·tp / ((1+β²)·tp + β²·fn + fp) with β = 1, 0 when the denominator is.
    const denom = support + predicted;
    return {
      label,
      precision: predicted ? tp / predicted : 0,
      recall: support ? tp / support : 0,
      f1: denom ? (2 * tp) / denom : 0,
      support,
    };
  });
}

/**
 * Accuracy when only the most confident items are kept: for each percentage x,
 * the ceil(x·N/100) items of highest confidence. Items tied at the cut are
 * taken at their group's accuracy (the expected accuracy when ties are broken
 * at random), so a labeler that gives every item the same confidence shows a
 * flat curve rather than one that depends on item order. A labeler whose
 * confidence means something has a curve that falls from left to right.
 */
export function coverageCurve(
  confidence: readonly number[],
  correct: readonly boolean[],
  percents: readonly number[] = COVERAGE_PERCENTS,
): CoveragePoint[] {
  checkSameLength(confidence, correct, 'confidences and correctness differ in length');
  const n = confidence.length;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => confidence[b] - confidence[a]);
  // Groups of equal confidence, highest first: where each starts in `order`, and its right answers.
  const start: number[] = [];
  const right: number[] = [];
  order.forEach((i, k) => {
    if (k === 0 || confidence[i] !== confidence[order[k - 1]]) {
      start.push(k);
      right.push(0);
    }
    if (correct[i]) right[right.length - 1]++;
  });
  return percents.map((x) => {
    if (!(x > 0 && x <= 100)) throw new DistilleryError(`a coverage must be a percentage in (0, 100], got ${x}`);
    const kept = Math.ceil((x * n) / 100 - 1e-9);
    let sum = 0;
    for (let g = 0; g < start.length && start[g] < kept; g++) {
      const size = (g + 1 < start.length ? start[g + 1] : n) - start[g];
      const taken = Math.min(size, kept - start[g]);
      sum += taken === size ? right[g] : (taken * right[g]) / size;
    }
    return { coverage: x / 100, n: kept, accuracy: kept ? sum / kept : NaN };
  });
}

/** Fraction of items whose prediction equals gold. */
export function accuracy(pred: Labels, gold: Labels): Metric {
  checkSameLength(pred, gold, 'predictions and gold differ in length');
  let n = 0;
  let correct = 0;
  for (let i = 0; i < pred.length; i++) {
    const p = pred[i];
    const g = gold[i];
    if (p === null || g === null) continue;
    n++;
    if (p === g) correct++;
  }
  return { n, value: n ? correct / n : NaN };
}

/** Mean negative log-likelihood of the gold class, in nats, with p clipped at NLL_CLAMP. */
export function nll(probs: readonly (ArrayLike<number> | null)[], gold: Labels): Metric {
  checkSameLength(probs, gold, 'probabilities and gold differ in length');
  let n = 0;
  let sum = 0;
  for (let i = 0; i < probs.length; i++) {
    const p = probs[i];
    const g = gold[i];
    if (p === null || g === null) continue;
    checkClass(g, p.length, `gold[${i}]`);
    n++;
    sum -= Math.log(Math.max(p[g], NLL_CLAMP));
  }
  return { n, value: n ? sum / n : NaN };
}

/**
 * Expected calibration error (Guo et al. 2017, "On Calibration of Modern
 * Neural Networks"): confidence = top probability, prediction = its argmax;
 * items fall into `bins` equal-width bins ((m-1)/M, m/M], and ECE is
 * Σ_m |B_m|/n · |acc(B_m) − conf(B_m)|.
 */
export function ece(probs: readonly (ArrayLike<number> | null)[], gold: Labels, bins = ECE_BINS): Metric {
  const r = reliabilityBins(probs, gold, bins);
  return { n: r.n, value: eceOfBins(r) };
}

/** Σ_m |B_m|/n · |acc(B_m) − conf(B_m)| over a reliability diagram's bins (NaN when no item). */
export function eceOfBins(r: { n: number; bins: ReliabilityBin[] }): number {
  let sum = 0;
  for (const b of r.bins) if (b.count) sum += b.count * Math.abs(b.accuracy - b.confidence);
  return r.n ? sum / r.n : NaN;
}

export interface ReliabilityBin {
  /** The bin's range of confidence: (lo, hi]. */
  lo: number;
  hi: number;
  count: number;
  /** Accuracy and mean confidence of the bin's items (0 when empty). */
  accuracy: number;
  confidence: number;
}

/** The reliability diagram behind ECE: per confidence bin, how often the top class was right. */
export function reliabilityBins(
  probs: readonly (ArrayLike<number> | null)[],
  gold: Labels,
  bins = ECE_BINS,
): { n: number; bins: ReliabilityBin[] } {
  checkSameLength(probs, gold, 'probabilities and gold differ in length');
  if (!Number.isInteger(bins) || bins < 1) throw new DistilleryError(`ece needs a positive whole number of bins, got ${bins}`);
  const count = new Float64Array(bins);
  const correct = new Float64Array(bins);
  const confSum = new Float64Array(bins);
  let n = 0;
  for (let i = 0; i < probs.length; i++) {
    const p = probs[i];
    const g = gold[i];
    if (p === null || g === null) continue;
    checkClass(g, p.length, `gold[${i}]`);
    const top = argmax(p);
    const b = binOf(p[top], bins);
    n++;
    count[b]++;
    confSum[b] += p[top];
    if (top === g) correct[b]++;
  }
  return {
    n,
    bins: Array.from({ length: bins }, (_, b) => ({
      lo: b / bins,
      hi: (b + 1) / bins,
      count: count[b],
      accuracy: count[b] ? correct[b] / count[b] : 0,
      confidence: count[b] ? confSum[b] / count[b] : 0,
    })),
  };
}

/** Bins are closed on the right, as in Guo et al.: confidence 1 goes to the last bin, 1/M to the first. */
function binOf(conf: number, bins: number): number {
  return Math.min(bins - 1, Math.max(0, Math.ceil(conf * bins) - 1));
}

/** How often two labelers give the same label, over the items both labeled. */
export function agreement(hardA: Labels, hardB: Labels): { n: number; rate: number } {
  const { n, value } = accuracy(hardA, hardB);
  return { n, rate: value };
}

/**
 * Cohen's κ (Cohen 1960) of two labelers over the items both labeled:
 * κ = (p_o − p_e) / (1 − p_e), p_o their agreement, p_e the agreement expected by
 * chance from each labeler's own class shares (Σ_k a_k · b_k). As scikit-learn's
 * `cohen_kappa_score` (unweighted): NaN when p_e = 1 (both always gave the same one
 * class: chance explains everything, so κ is undefined) or when no item was labeled by both.
 */
export function cohenKappa(hardA: Labels, hardB: Labels): Metric {
  checkSameLength(hardA, hardB, 'the two labelers differ in length');
  const a = new Map<number, number>();
  const b = new Map<number, number>();
  let n = 0;
  let same = 0;
  for (let i = 0; i < hardA.length; i++) {
    const x = hardA[i];
    const y = hardB[i];
    if (x === null || y === null) continue;
    n++;
    if (x === y) same++;
    a.set(x, (a.get(x) ?? 0) + 1);
    b.set(y, (b.get(y) ?? 0) + 1);
  }
  if (n === 0) return { n, value: NaN };
  let expected = 0;
  for (const [k, ca] of a) expected += (ca / n) * ((b.get(k) ?? 0) / n);
  const observed = same / n;
  return { n, value: expected === 1 ? NaN : (observed - expected) / (1 - expected) };
}
