/**
 * Evaluation metrics for teachers and aggregated targets. Items without a
 * prediction or without gold are skipped, and every metric reports how many
 * items it used (`n`) so a table can show when a number rests on few items.
 * With n = 0 the value is NaN: there is nothing to measure, and 0 would lie.
 */
import { TargetsError, type Labels } from './types.ts';
import { argmax, checkClass, checkSameLength, logSumExp } from './vector.ts';

export interface Metric {
  n: number;
  value: number;
}

/** Probabilities below this count as this, so one confident mistake costs ~27.6 nats instead of Infinity. */
export const NLL_CLAMP = 1e-12;

/**
 * Temperature scaling: softmax(z / T). Works on logits or log-probabilities
 * alike (softmax ignores a shift), and for log-probabilities it is p^(1/T)
 * renormalised. -Infinity (zero mass) stays exactly 0 at any temperature.
 */
export function softmaxT(logprobs: ArrayLike<number>, T: number): Float64Array {
  checkTemperature(T);
  checkLogits(logprobs);
  const c = logprobs.length;
  const out = new Float64Array(c);
  const scaled = new Float64Array(c);
  for (let k = 0; k < c; k++) scaled[k] = logprobs[k] / T;
  const lse = logSumExp(scaled);
  for (let k = 0; k < c; k++) out[k] = Math.exp(scaled[k] - lse);
  return out;
}

/** log softmax(z / T)[k], computed without forming the probabilities so tiny ones keep their precision. */
export function logSoftmaxTAt(logprobs: ArrayLike<number>, T: number, k: number): number {
  const c = logprobs.length;
  const scaled = new Float64Array(c);
  for (let j = 0; j < c; j++) scaled[j] = logprobs[j] / T;
  return scaled[k] - logSumExp(scaled);
}

export function checkTemperature(T: number): void {
  if (!(T > 0) || !Number.isFinite(T)) throw new TargetsError(`temperature must be a positive finite number, got ${T}`);
}

/** NaN or +Infinity would turn into NaN probabilities downstream; all -Infinity is no distribution at all. */
export function checkLogits(z: ArrayLike<number>): void {
  let anyFinite = false;
  for (let k = 0; k < z.length; k++) {
    if (Number.isNaN(z[k]) || z[k] === Infinity) throw new TargetsError(`log-probability ${k} is ${z[k]}`);
    if (z[k] !== -Infinity) anyFinite = true;
  }
  if (!anyFinite) throw new TargetsError('every log-probability is -Infinity: no class has any mass');
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

/** Mean negative log-likelihood of the gold class, in nats. */
export function nll(probs: (Float64Array | null)[], gold: Labels): Metric {
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
export function ece(probs: (Float64Array | null)[], gold: Labels, bins = 15): Metric {
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
export function reliabilityBins(probs: (Float64Array | null)[], gold: Labels, bins = 15): { n: number; bins: ReliabilityBin[] } {
  checkSameLength(probs, gold, 'probabilities and gold differ in length');
  if (!Number.isInteger(bins) || bins < 1) throw new TargetsError(`ece needs a positive whole number of bins, got ${bins}`);
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
