/**
 * The Poisson bootstrap (Hanley & MacGibbon 2006; Chamandy et al. 2012): each resample weighs every item by an
 * independent Poisson(1) count instead of drawing n items with replacement. For large n the two agree; the Poisson
 * form lets a scan over confidence thresholds grow every resample's accepted set one item at a time, so a lower bound
 * at each threshold costs O(resamples) instead of a fresh resample of the whole set.
 */
import { mulberry32 } from '../random.ts';

const E_INV = Math.exp(-1);

/** A Poisson(1) draw (Knuth's product of uniforms: about two uniforms per draw). */
export function poisson1(rand: () => number): number {
  let k = 0;
  let p = rand();
  while (p > E_INV) {
    k++;
    p *= rand();
  }
  return k;
}

/** The q-quantile of `xs` (sorted in place), the smallest value with at least q·n values at or below it. */
export function lowerQuantile(xs: Float64Array, q: number): number {
  xs.sort();
  return xs[Math.max(0, Math.ceil(q * xs.length) - 1)];
}

/**
 * Running bootstrap accuracy of a growing set: `add(correct)` puts one more item into every resample (with its own
 * Poisson weight in each); `lowerBound(confidence)` is the (1 − confidence) quantile of the resamples' accuracies.
 * A resample in which the set has no weight yet counts as accuracy 0 (it says nothing in favour of the set).
 */
export class BootstrapAccuracy {
  readonly #weight: Float64Array;
  readonly #right: Float64Array;
  readonly #rand: () => number;
  n = 0;
  correct = 0;

  constructor(resamples: number, seed: number) {
    this.#weight = new Float64Array(resamples);
    this.#right = new Float64Array(resamples);
    this.#rand = mulberry32(seed);
  }

  add(correct: boolean): void {
    this.n++;
    if (correct) this.correct++;
    for (let b = 0; b < this.#weight.length; b++) {
      const w = poisson1(this.#rand);
      this.#weight[b] += w;
      if (correct) this.#right[b] += w;
    }
  }

  /**
   * The bootstrap's (1 − confidence) quantile, floored by Wilson's score bound: a set without a single error has every
   * resample at 100%, and the bootstrap alone would call it certain at any size; Wilson's bound is not fooled there and
   * agrees with the bootstrap where both are reliable (many items, accuracy away from 0 and 1).
   */
  lowerBound(confidence: number): number {
    const acc = this.#weight.map((w, b) => (w > 0 ? this.#right[b] / w : 0));
    return Math.min(lowerQuantile(acc, 1 - confidence), wilsonLower(this.correct, this.n, normalQuantile(confidence)));
  }
}

/** Wilson's score interval's lower end for `k` successes in `n` at normal quantile `z`. */
export function wilsonLower(k: number, n: number, z: number): number {
  if (n === 0) return 0;
  const p = k / n;
  const z2 = z * z;
  return Math.max(0, (p + z2 / (2 * n) - z * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n))) / (1 + z2 / n));
}

/** The standard normal's quantile at p in (0, 1) (Acklam's rational approximation, relative error below 1.2e-9). */
export function normalQuantile(p: number): number {
  const a = [-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269, -30.66479806614716, 2.506628277459239];
  const b = [-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572];
  const c = [-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const tail = (q: number) =>
    (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  if (p < 0.02425) return tail(Math.sqrt(-2 * Math.log(p)));
  if (p > 1 - 0.02425) return -tail(Math.sqrt(-2 * Math.log(1 - p)));
  const q = p - 0.5;
  const r = q * q;
  return (
    ((((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q) /
    (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
  );
}
