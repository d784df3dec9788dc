/**
 * Shapes shared by the training-target modules: several teachers' labels for
 * the same N items over C classes, held in memory as plain arrays.
 */
import { DistilleryError } from '../errors.ts';

/** One teacher's view of N items over C classes. */
export interface TeacherView {
  name: string;
  /** Per item: log-probabilities (length C; -Infinity allowed for zero mass), or null when this teacher did not label the item. */
  logprobs: (Float64Array | null)[];
  /** Per item: the teacher's hard label (class index), or null. Usually the argmax, but for LLM teachers the stated answer; may exist where logprobs is null (hard-label-only teachers). */
  hard: (number | null)[];
}

/** Per item: a class index, or null when unknown (no gold, no prediction). */
export type Labels = (number | null)[];

/** Inconsistent teacher data or options: the caller can fix these, so they are user errors. */
export class TargetsError extends DistilleryError {
  override name = 'TargetsError';
}
