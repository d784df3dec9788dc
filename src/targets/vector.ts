/** Small helpers on per-class vectors shared by metrics, calibration and aggregation. */
import { TargetsError } from './types.ts';

/** Index of the largest value; ties go to the lowest index so results never depend on iteration quirks. */
export function argmax(xs: ArrayLike<number>): number {
  let best = 0;
  for (let k = 1; k < xs.length; k++) if (xs[k] > xs[best]) best = k;
  return best;
}

export function oneHot(k: number, c: number): Float64Array {
  const v = new Float64Array(c);
  v[k] = 1;
  return v;
}

/** log Σ exp(x), shifted by the max so that large logits do not overflow. */
export function logSumExp(xs: ArrayLike<number>): number {
  let m = -Infinity;
  for (let k = 0; k < xs.length; k++) if (xs[k] > m) m = xs[k];
  if (m === -Infinity) return -Infinity;
  let s = 0;
  for (let k = 0; k < xs.length; k++) s += Math.exp(xs[k] - m);
  return m + Math.log(s);
}

/** A silently out-of-range class would index past a vector and read `undefined` as NaN, so reject it loudly. */
export function checkClass(k: number, c: number, what: string): void {
  if (!Number.isInteger(k) || k < 0 || k >= c) {
    throw new TargetsError(`${what} is ${k}, expected a class index in [0, ${c})`);
  }
}

export function checkSameLength(a: { length: number }, b: { length: number }, what: string): void {
  if (a.length !== b.length) throw new TargetsError(`${what}: ${a.length} vs ${b.length} items`);
}
