/**
 * A student's cascade in the report: the cascade file train's folder holds (cascade.json, written by
 * `cascade.ts fit`), what it promised on the data it was fitted on, and what its rule does on the
 * report's split, which the fit never sees.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { route } from '../cascade/run.ts';
import { CASCADE_FILE, readCascade, weightsHash, type CascadeFile } from '../cascade/schema.ts';

export interface CascadeView {
  /** The cascade file, as found in the student folder. */
  file: string;
  target: number;
  fit: { split: string; n: number; reference: 'gold' | 'teacher'; coverage: number; accuracy: number | null };
  thresholds: { label: string; threshold: number | null }[];
  /** The student's weights changed since the fit: the thresholds no longer describe it. */
  stale: boolean;
  /** The cascade's rule on the student's own predictions on the report's split (null when not predicted). */
  onSplit: CascadeOnSplit | null;
}

export interface CascadeOnSplit {
  split: string;
  /** Items of the split with gold. */
  n: number;
  /** Items the student answers alone, their share, and its accuracy on them against gold. */
  student: number;
  coverage: number;
  accuracy: number | null;
}

/** DIR/cascade.json when the student folder has one. */
export function readStudentCascade(dir: string): { file: string; cascade: CascadeFile } | null {
  const file = join(dir, CASCADE_FILE);
  return existsSync(file) ? { file, cascade: readCascade(file) } : null;
}

/**
 * The view of a student's cascade; with the student's probabilities on the split (flattened, one
 * row of the task's classes per item) and their gold labels, its coverage and accuracy there.
 */
export function cascadeView(
  dir: string,
  found: { file: string; cascade: CascadeFile },
  split?: { name: string; probs: Float32Array; gold: number[] },
): CascadeView {
  const c = found.cascade;
  let onSplit: CascadeOnSplit | null = null;
  if (split && split.gold.length) {
    const routed = route(split.probs, c);
    const mine = routed.flatMap((r, i) => (r.student ? [r.pred === split.gold[i]] : []));
    onSplit = {
      split: split.name,
      n: routed.length,
      student: mine.length,
      coverage: mine.length / routed.length,
      accuracy: mine.length ? mine.filter(Boolean).length / mine.length : null,
    };
  }
  return {
    file: found.file,
    target: c.target,
    fit: { split: c.data.split, n: c.data.n, reference: c.data.reference, coverage: c.expected.coverage, accuracy: c.expected.accuracy },
    thresholds: c.thresholds.map((t) => ({ label: t.label, threshold: t.threshold })),
    stale: existsSync(join(dir, 'weights.bin')) && weightsHash(dir) !== c.student.weights_sha256,
    onSplit,
  };
}
