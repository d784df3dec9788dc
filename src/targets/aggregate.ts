/**
 * One training target per item from several teachers. Temperatures (from
 * `fitTemperature`) are applied to each teacher before anything is combined,
 * so a confident-but-wrong teacher does not dominate an average.
 */
import { dawidSkene } from './dawid-skene.ts';
import { TargetsError, type Labels, type TeacherView } from './types.ts';
import { accuracy } from '../eval/metrics.ts';
import { argmax, checkClass } from './vector.ts';
import { checkViews, labelMatrix, resolveTemperatures, teacherLabel, teacherProbs } from './views.ts';

export type AggregateMethod = 'mean' | 'weighted' | 'vote' | 'dawid-skene';

export interface AggregateOptions {
  method: AggregateMethod;
  /** Per teacher, for 'weighted'; fitted from `gold` when absent. */
  weights?: number[];
  /** For fitting weights. */
  gold?: Labels;
  /** Per teacher, applied before aggregation (calibration). */
  temperatures?: number[];
  numClasses: number;
}

export interface AggregateResult {
  /** Per item, null when no teacher labeled it. */
  probs: (Float64Array | null)[];
  hard: (number | null)[];
  weights?: number[];
  /** dawid-skene: per teacher C×C, rows = true class. */
  confusions?: number[][][];
  priors?: number[];
  iterations?: number;
}

export function aggregate(views: TeacherView[], opts: AggregateOptions): AggregateResult {
  const c = opts.numClasses;
  const n = checkViews(views, c);
  const temps = resolveTemperatures(opts.temperatures, views.length);
  switch (opts.method) {
    case 'mean':
      return withHard(
        average(
          views,
          views.map(() => 1),
          temps,
          c,
          n,
        ),
      );
    case 'weighted': {
      const weights = opts.weights ? checkWeights(opts.weights, views.length) : fitWeights(views, opts.gold, n, c);
      return { ...withHard(average(views, weights, temps, c, n)), weights };
    }
    case 'vote':
      return vote(views, temps, c, n);
    case 'dawid-skene': {
      // EM over hard labels only (as in the paper), so temperatures do not apply.
      const ds = dawidSkene(labelMatrix(views, n), c);
      return { ...withHard(ds.posteriors), confusions: ds.confusions, priors: ds.priors, iterations: ds.iterations };
    }
    default:
      throw new TargetsError(`unknown aggregation method: ${String(opts.method)}`);
  }
}

function withHard(probs: (Float64Array | null)[]): AggregateResult {
  return { probs, hard: probs.map((p) => (p === null ? null : argmax(p))) };
}

/**
 * 'mean' (every teacher weight 1) and 'weighted': a mixture of the teachers'
 * distributions, renormalised over the teachers that labeled the item, so a
 * missing teacher is left out rather than counted as uniform. An item only
 * zero-weight teachers labeled gets null: weight 0 means "do not trust".
 */
function average(views: TeacherView[], weights: number[], temps: number[], c: number, n: number): (Float64Array | null)[] {
  const out: (Float64Array | null)[] = [];
  for (let i = 0; i < n; i++) {
    const acc = new Float64Array(c);
    let total = 0;
    views.forEach((v, t) => {
      const p = weights[t] > 0 ? teacherProbs(v, i, temps[t], c) : null;
      if (p === null) return;
      for (let k = 0; k < c; k++) acc[k] += weights[t] * p[k];
      total += weights[t];
    });
    if (total === 0) {
      out.push(null);
      continue;
    }
    for (let k = 0; k < c; k++) acc[k] /= total;
    out.push(acc);
  }
  return out;
}

export function checkWeights(weights: number[], teachers: number): number[] {
  if (weights.length !== teachers) throw new TargetsError(`${weights.length} weights for ${teachers} teachers`);
  weights.forEach((w, t) => {
    if (!(w >= 0) || !Number.isFinite(w)) throw new TargetsError(`weight ${t} is ${w}, expected a non-negative finite number`);
  });
  if (!weights.some((w) => w > 0)) throw new TargetsError('all teacher weights are 0: nothing to average');
  return weights;
}

/**
 * Accuracy-weighted averaging: each teacher's weight is its accuracy on the
 * gold items. A teacher never checked against gold gets the mean weight of
 * those that were (no evidence either way), or 1 when none were.
 */
export function fitWeights(views: TeacherView[], gold: Labels | undefined, n: number, c: number): number[] {
  if (gold !== undefined && gold.length !== n) throw new TargetsError(`gold has ${gold.length} items, the teachers ${n}`);
  gold?.forEach((g, i) => {
    if (g !== null) checkClass(g, c, `gold[${i}]`);
  });
  const acc = views.map((v) => goldAccuracy(v, gold, n));
  const known = acc.filter((a): a is number => a !== null);
  const fallback = known.length ? known.reduce((s, a) => s + a, 0) / known.length : 1;
  const weights = acc.map((a) => a ?? fallback);
  if (!weights.some((w) => w > 0)) {
    throw new TargetsError('every teacher is wrong on every gold item, so fitted weights are all 0; check the gold labels or pass weights');
  }
  return weights;
}

function goldAccuracy(v: TeacherView, gold: Labels | undefined, n: number): number | null {
  if (gold === undefined) return null;
  const { n: seen, value } = accuracy(
    Array.from({ length: n }, (_, i) => teacherLabel(v, i)),
    gold,
  );
  return seen ? value : null;
}

/**
 * Plurality vote of the teachers' hard labels. A tie goes to the class whose
 * voters were surest (summed probability they gave their own label; 1 for a
 * hard-only teacher), then to the lowest index. probs is the vote share, and
 * `hard` is the tie-broken winner: one of the argmaxes of probs, not
 * necessarily the lowest-index one.
 */
function vote(views: TeacherView[], temps: number[], c: number, n: number): AggregateResult {
  const probs: (Float64Array | null)[] = [];
  const hard: (number | null)[] = [];
  for (let i = 0; i < n; i++) {
    const counts = new Float64Array(c);
    const confidence = new Float64Array(c);
    let voters = 0;
    views.forEach((v, t) => {
      const l = teacherLabel(v, i);
      if (l === null) return;
      counts[l]++;
      confidence[l] += teacherProbs(v, i, temps[t], c)![l];
      voters++;
    });
    if (voters === 0) {
      probs.push(null);
      hard.push(null);
      continue;
    }
    hard.push(voteWinner(counts, confidence));
    probs.push(counts.map((x) => x / voters));
  }
  return { probs, hard };
}

function voteWinner(counts: Float64Array, confidence: Float64Array): number {
  let best = 0;
  for (let k = 1; k < counts.length; k++) {
    if (counts[k] > counts[best] || (counts[k] === counts[best] && confidence[k] > confidence[best])) best = k;
  }
  return best;
}
