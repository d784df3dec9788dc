/**
 * Dawid & Skene (1979), "Maximum Likelihood Estimation of Observer Error-Rates
 * Using the EM Algorithm". Each teacher t has a confusion matrix π_t[k][l] =
 * P(teacher says l | truth is k) and the classes have priors p_k; EM
 * alternates the posterior over each item's true class (E) with the
 * maximum-likelihood confusions and priors given those posteriors (M). Unlike a
 * vote, it learns that a teacher which systematically swaps two classes is
 * informative rather than wrong.
 */
import { logSumExp } from './vector.ts';

export interface DawidSkeneOptions {
  /** Pseudo-count added to every confusion cell and prior, so no log-probability is ever -Infinity. */
  smoothing?: number;
  /** Stop when no posterior moves by this much in one iteration. */
  tolerance?: number;
  maxIterations?: number;
}

export interface DawidSkeneResult {
  posteriors: (Float64Array | null)[];
  /** Per teacher C×C, rows = true class, columns = the teacher's label; rows sum to 1. */
  confusions: number[][][];
  priors: number[];
  iterations: number;
}

interface Params {
  logPrior: Float64Array;
  /** Per teacher, row-major C×C log π_t[k][l]. */
  logConf: Float64Array[];
}

/** `labels[t][i]` is teacher t's label for item i, or -1 when it did not label it. */
export function dawidSkene(labels: Int32Array[], c: number, opts: DawidSkeneOptions = {}): DawidSkeneResult {
  const smoothing = opts.smoothing ?? 0.01;
  const tolerance = opts.tolerance ?? 1e-6;
  const maxIterations = opts.maxIterations ?? 100;
  const n = labels[0]?.length ?? 0;
  const items = labeledItems(labels, n);
  let post = voteShares(labels, items, c, n);
  let params = mStep(labels, items, post, c, smoothing);
  let iterations = 0;
  while (iterations < maxIterations) {
    iterations++;
    const next = eStep(labels, items, params, c, n);
    const delta = maxAbsDiff(post, next);
    post = next;
    params = mStep(labels, items, post, c, smoothing);
    if (delta < tolerance) break;
  }
  return {
    posteriors: toRows(post, items, c, n),
    confusions: params.logConf.map((lc) => matrix(lc, c)),
    priors: Array.from(params.logPrior, Math.exp),
    iterations,
  };
}

function labeledItems(labels: Int32Array[], n: number): number[] {
  const items: number[] = [];
  for (let i = 0; i < n; i++) if (labels.some((l) => l[i] >= 0)) items.push(i);
  return items;
}

/** Majority vote as soft counts: starting from hard votes would throw away the split on contested items. */
function voteShares(labels: Int32Array[], items: number[], c: number, n: number): Float64Array {
  const post = new Float64Array(n * c);
  for (const i of items) {
    let voters = 0;
    for (const l of labels) {
      if (l[i] < 0) continue;
      post[i * c + l[i]]++;
      voters++;
    }
    for (let k = 0; k < c; k++) post[i * c + k] /= voters;
  }
  return post;
}

function mStep(labels: Int32Array[], items: number[], post: Float64Array, c: number, smoothing: number): Params {
  const prior = new Float64Array(c).fill(smoothing);
  for (const i of items) for (let k = 0; k < c; k++) prior[k] += post[i * c + k];
  const logConf = labels.map((l) => {
    const counts = new Float64Array(c * c).fill(smoothing);
    for (const i of items) {
      if (l[i] < 0) continue;
      for (let k = 0; k < c; k++) counts[k * c + l[i]] += post[i * c + k];
    }
    return logNormaliseRows(counts, c);
  });
  return { logPrior: logNormaliseRows(prior, c), logConf };
}

function logNormaliseRows(counts: Float64Array, c: number): Float64Array {
  const out = new Float64Array(counts.length);
  for (let r = 0; r < counts.length; r += c) {
    let sum = 0;
    for (let k = 0; k < c; k++) sum += counts[r + k];
    for (let k = 0; k < c; k++) out[r + k] = Math.log(counts[r + k] / sum);
  }
  return out;
}

/** Posteriors in log space: a product of many teachers' small probabilities would underflow. */
function eStep(labels: Int32Array[], items: number[], params: Params, c: number, n: number): Float64Array {
  const post = new Float64Array(n * c);
  const score = new Float64Array(c);
  for (const i of items) {
    for (let k = 0; k < c; k++) {
      let s = params.logPrior[k];
      for (let t = 0; t < labels.length; t++) {
        const l = labels[t][i];
        if (l >= 0) s += params.logConf[t][k * c + l];
      }
      score[k] = s;
    }
    const lse = logSumExp(score);
    for (let k = 0; k < c; k++) post[i * c + k] = Math.exp(score[k] - lse);
  }
  return post;
}

function maxAbsDiff(a: Float64Array, b: Float64Array): number {
  let m = 0;
  for (let j = 0; j < a.length; j++) m = Math.max(m, Math.abs(a[j] - b[j]));
  return m;
}

function toRows(post: Float64Array, items: number[], c: number, n: number): (Float64Array | null)[] {
  const rows: (Float64Array | null)[] = new Array(n).fill(null);
  for (const i of items) rows[i] = post.slice(i * c, (i + 1) * c);
  return rows;
}

function matrix(flat: Float64Array, c: number): number[][] {
  const rows: number[][] = [];
  for (let k = 0; k < c; k++) rows.push(Array.from(flat.subarray(k * c, (k + 1) * c), Math.exp));
  return rows;
}
