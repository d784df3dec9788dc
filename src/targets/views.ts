/**
 * Reading one teacher's answer for one item, after the whole set of views has
 * been checked once, so the aggregation loops can index without re-checking.
 */
import { checkLogits, checkTemperature, softmaxT } from './softmax.ts';
import { TargetsError, type TeacherView } from './types.ts';
import { argmax, checkClass, oneHot } from './vector.ts';

/** Checks shapes, class indices and log-probabilities of every view; returns the item count N. */
export function checkViews(views: TeacherView[], numClasses: number): number {
  if (!Number.isInteger(numClasses) || numClasses < 1)
    throw new TargetsError(`numClasses must be a positive whole number, got ${numClasses}`);
  if (views.length === 0) throw new TargetsError('no teachers to aggregate');
  const n = views[0].logprobs.length;
  for (const v of views) {
    if (v.logprobs.length !== n || v.hard.length !== n) {
      throw new TargetsError(
        `teacher ${v.name} has ${v.logprobs.length} log-probability rows and ${v.hard.length} hard labels, expected ${n} of each`,
      );
    }
    for (let i = 0; i < n; i++) checkItem(v, i, numClasses);
  }
  return n;
}

function checkItem(v: TeacherView, i: number, c: number): void {
  const z = v.logprobs[i];
  const h = v.hard[i];
  if (z !== null) {
    if (z.length !== c) throw new TargetsError(`teacher ${v.name}, item ${i}: ${z.length} log-probabilities, expected ${c}`);
    try {
      checkLogits(z);
    } catch (e) {
      throw new TargetsError(`teacher ${v.name}, item ${i}: ${(e as Error).message}`);
    }
  }
  if (h !== null) checkClass(h, c, `teacher ${v.name}, item ${i}: hard label`);
}

/** One temperature per teacher; absent means 1 (the teacher's own probabilities). */
export function resolveTemperatures(temperatures: number[] | undefined, teachers: number): number[] {
  if (temperatures === undefined) return new Array<number>(teachers).fill(1);
  if (temperatures.length !== teachers) throw new TargetsError(`${temperatures.length} temperatures for ${teachers} teachers`);
  temperatures.forEach(checkTemperature);
  return temperatures;
}

/**
 * The teacher's distribution for item i: its tempered probabilities, or a
 * one-hot vector when it only gave a hard label (a hard label is a claim of
 * certainty), or null when it did not label the item.
 */
export function teacherProbs(v: TeacherView, i: number, T: number, c: number): Float64Array | null {
  const z = v.logprobs[i];
  if (z !== null) return softmaxT(z, T);
  const h = v.hard[i];
  return h === null ? null : oneHot(h, c);
}

/** The teacher's answer: its stated label when there is one (LLM answers can differ from the argmax), else the argmax. */
export function teacherLabel(v: TeacherView, i: number): number | null {
  const h = v.hard[i];
  if (h !== null) return h;
  const z = v.logprobs[i];
  return z === null ? null : argmax(z);
}

/** Per teacher, per item: its label, or -1. Dense integer arrays keep the EM loops tight. */
export function labelMatrix(views: TeacherView[], n: number): Int32Array[] {
  return views.map((v) => {
    const out = new Int32Array(n).fill(-1);
    for (let i = 0; i < n; i++) out[i] = teacherLabel(v, i) ?? -1;
    return out;
  });
}
