/**
 * Softmax at a temperature over log-probabilities, and the checks on them: the
 * transforms the targets modules share. The metrics on their outputs live in
 * src/eval/metrics.ts.
 */
import { TargetsError } from './types.ts';
import { logSumExp } from './vector.ts';

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
