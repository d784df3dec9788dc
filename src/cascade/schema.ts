/**
 * The cascade file (`cascade.json`): which student, checked by the sha256 of its weights; per class, the threshold at
 * or above which the student answers alone; what it was fitted for (target, confidence, resamples) and on (split, n,
 * gold or teacher labels); and what it achieved on that data. The zod schema is the format's one definition.
 */
import { createHash } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { z } from 'zod';
import { DistilleryError, InputError } from '../errors.ts';

export const CASCADE_FILE = 'cascade.json';
export const CASCADE_FORMAT = 'distillery-cascade';

const unit = z.number().min(0).max(1);

export const ClassThreshold = z.object({
  label: z.string(),
  /** The student answers an item it predicts as this class when its confidence is at least this; null: never. */
  threshold: unit.nullable(),
  /** Fit items the student predicted as this class. */
  predicted: z.number().int().nonnegative(),
  /** Of those, the ones at or above the threshold, their accuracy and its lower bound at the per-test level (null: no threshold). */
  accepted: z.number().int().nonnegative(),
  accuracy: unit.nullable(),
  lower_bound: unit.nullable(),
  /** Candidate thresholds tested (K): each at confidence 1 − (1 − confidence)/K, so that the choice among them is covered. */
  candidates: z.number().int().nonnegative(),
});
export type ClassThreshold = z.infer<typeof ClassThreshold>;

export const CascadeData = z.object({
  /** The split fitted on (never test). */
  split: z.string(),
  /** Items scored: those of the split with a reference label. */
  n: z.number().int().positive(),
  /** What "correct" meant: gold labels, or the teachers' aggregated target where the split has no gold. */
  reference: z.enum(['gold', 'teacher']),
  /** Items in the split, labeled or not. */
  of: z.number().int().positive(),
});
export type CascadeData = z.infer<typeof CascadeData>;

export const CascadeFile = z
  .object({
    format: z.literal(CASCADE_FORMAT),
    version: z.literal(1),
    /** The student folder, relative to the cascade file's folder (or absolute), and the sha256 of its weights.bin. */
    student: z.object({ dir: z.string().min(1), weights_sha256: z.string().regex(/^[0-9a-f]{64}$/) }),
    task: z.string(),
    labels: z.array(z.string()).min(2),
    target: unit,
    bootstrap: z.object({
      confidence: unit,
      resamples: z.number().int().positive(),
      seed: z.number().int(),
      min_items: z.number().int().positive(),
    }),
    data: CascadeData,
    thresholds: z.array(ClassThreshold),
    /** On the fit data: the share the student answers alone and its accuracy there (null: it answers none). */
    expected: z.object({ coverage: unit, accuracy: unit.nullable() }),
  })
  .strict()
  .refine((f) => f.thresholds.length === f.labels.length && f.thresholds.every((t, k) => t.label === f.labels[k]), {
    message: 'thresholds must list the labels, in order',
    path: ['thresholds'],
  });
export type CascadeFile = z.infer<typeof CascadeFile>;

/** sha256 of a student's weights.bin: the cascade refuses a student retrained since the fit. */
export function weightsHash(studentDir: string): string {
  return createHash('sha256')
    .update(readFileSync(join(studentDir, 'weights.bin')))
    .digest('hex');
}

/** The student folder a cascade file names, as a path usable from here. */
export function studentDirOf(file: string, c: CascadeFile): string {
  return isAbsolute(c.student.dir) ? c.student.dir : join(dirname(resolve(file)), c.student.dir);
}

/** The folder as the file records it: relative to the file's folder, so the two move together. */
export function recordedDir(file: string, studentDir: string): string {
  return relative(dirname(resolve(file)), resolve(studentDir)) || '.';
}

export function readCascade(file: string): CascadeFile {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new DistilleryError(`${file}: cannot read the cascade file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new InputError(file, undefined, `not JSON (${(e as Error).message})`);
  }
  const parsed = CascadeFile.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new InputError(file, undefined, `not a cascade file: ${issue.path.join('.') || '(top)'}: ${issue.message}`);
  }
  return parsed.data;
}

/** Checked against the schema, then written whole: a temporary file renamed over the name. */
export function writeCascade(file: string, c: CascadeFile): void {
  const checked = CascadeFile.parse(c);
  mkdirSync(dirname(resolve(file)), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, `${JSON.stringify(checked, null, 2)}\n`);
  renameSync(tmp, file);
}
