/**
 * Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural
 * Networks"): one scalar T per teacher, fitted to minimise NLL of gold labels.
 * Dividing all logits by the same T never changes the argmax, so accuracy is
 * untouched and only the confidence moves: an over-confident teacher gets T > 1.
 */
import { accuracy, ece, nll, NLL_CLAMP } from '../eval/metrics.ts';
import { checkLogits, logSoftmaxTAt, softmaxT } from './softmax.ts';
import type { Labels, TeacherView } from './types.ts';
import { argmax, checkClass, checkSameLength } from './vector.ts';

export const T_MIN = 0.05;
export const T_MAX = 20;
/** Width of the final bracket in log T: 1e-5 in log T is a 1e-5 relative error in T, inside the 1e-4 asked for. */
const LOG_T_TOLERANCE = 1e-5;
const INV_PHI = (Math.sqrt(5) - 1) / 2;

interface Scored {
  z: Float64Array;
  gold: number;
}

/**
 * The temperature in [T_MIN, T_MAX] minimising mean NLL on the items that have
 * both log-probabilities and gold; 1 (leave as is) when there are none.
 */
export function fitTemperature(logprobs: (Float64Array | null)[], gold: Labels): number {
  const items = scoredItems(logprobs, gold);
  if (items.length === 0) return 1;
  const logT = goldenSectionMin((u) => meanNll(items, Math.exp(u)), Math.log(T_MIN), Math.log(T_MAX), LOG_T_TOLERANCE);
  return Math.exp(logT);
}

function scoredItems(logprobs: (Float64Array | null)[], gold: Labels): Scored[] {
  checkSameLength(logprobs, gold, 'log-probabilities and gold differ in length');
  const items: Scored[] = [];
  for (let i = 0; i < logprobs.length; i++) {
    const z = logprobs[i];
    const g = gold[i];
    if (z === null || g === null) continue;
    checkClass(g, z.length, `gold[${i}]`);
    checkLogits(z);
    items.push({ z, gold: g });
  }
  return items;
}

/** Same clamp as `nll`, so the fitted optimum is the optimum of the reported metric. */
function meanNll(items: Scored[], T: number): number {
  const floor = Math.log(NLL_CLAMP);
  let sum = 0;
  for (const { z, gold } of items) sum -= Math.max(logSoftmaxTAt(z, T, gold), floor);
  return sum / items.length;
}

/**
 * Golden-section search. NLL is convex in 1/T (log-sum-exp of a linear map),
 * hence unimodal in log T, so the bracket never loses the minimum; searching
 * log T spends as much effort on 0.05–1 as on 1–20. A minimum on the boundary
 * is approached as the bracket shrinks towards it.
 */
export function goldenSectionMin(f: (x: number) => number, lo: number, hi: number, tol: number): number {
  let a = lo;
  let b = hi;
  let x1 = b - INV_PHI * (b - a);
  let x2 = a + INV_PHI * (b - a);
  let f1 = f(x1);
  let f2 = f(x2);
  while (b - a > tol) {
    if (f1 <= f2) {
      b = x2;
      x2 = x1;
      f2 = f1;
      x1 = b - INV_PHI * (b - a);
      f1 = f(x1);
    } else {
      a = x1;
      x1 = x2;
      f1 = f2;
      x2 = a + INV_PHI * (b - a);
      f2 = f(x2);
    }
  }
  return (a + b) / 2;
}

export interface CalibrationStats {
  n: number;
  accuracy: number;
  nll: number;
  ece: number;
}

export interface CalibrationReport {
  teacher: string;
  temperature: number;
  before: CalibrationStats;
  after: CalibrationStats;
}

/**
 * A teacher's calibration at T = 1 and at T, over the items with both
 * log-probabilities and gold. Accuracy here is of the argmax of the
 * probabilities (not the stated hard label) so that it matches what ECE bins;
 * it is the same before and after, which is the point of temperature scaling.
 */
export function calibrationReport(view: TeacherView, gold: Labels, T: number): CalibrationReport {
  const items = scoredItems(view.logprobs, gold);
  const golds = items.map((it) => it.gold);
  return {
    teacher: view.name,
    temperature: T,
    before: stats(
      items.map((it) => softmaxT(it.z, 1)),
      golds,
    ),
    after: stats(
      items.map((it) => softmaxT(it.z, T)),
      golds,
    ),
  };
}

function stats(probs: Float64Array[], gold: number[]): CalibrationStats {
  return {
    n: probs.length,
    accuracy: accuracy(probs.map(argmax), gold).value,
    nll: nll(probs, gold).value,
    ece: ece(probs, gold).value,
  };
}
