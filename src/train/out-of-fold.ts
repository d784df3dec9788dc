/**
 * DIR/out-of-fold.json: each item's class probabilities from a student that never trained on it
 * (train.ts --folds K, see folds.ts), the input of cleanlab's label-issue ranking. Train-split items
 * are predicted by the fold model that held them out; items of other splits by the final student.
 * This module owns the file's format: the schema, the writer and the one reader.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { DistilleryError, InputError } from '../errors.ts';

export const OUT_OF_FOLD_FILE = 'out-of-fold.json';

export const OutOfFoldItem = z.object({
  /** The item's id in the database (items.id). */
  id: z.number().int(),
  /** Class probabilities, in `labels` order. */
  probs: z.array(z.number().min(0).max(1)),
  /** The fold that held the item out (0-based); null: not a train-split item, predicted by the final student. */
  fold: z.number().int().min(0).nullable().optional(),
});

export const OutOfFoldFile = z
  .object({
    task: z.string(),
    labels: z.array(z.string()).min(2),
    folds: z.number().int().min(2),
    /** The seed of the fold assignment (train.ts --seed). */
    seed: z.number().int(),
    items: z.array(OutOfFoldItem),
  })
  .superRefine((f, ctx) => {
    const seen = new Set<number>();
    f.items.forEach((it, i) => {
      if (it.probs.length !== f.labels.length)
        ctx.addIssue({ code: 'custom', path: ['items', i, 'probs'], message: `${it.probs.length} numbers for ${f.labels.length} labels` });
      if (it.fold != null && it.fold >= f.folds)
        ctx.addIssue({ code: 'custom', path: ['items', i, 'fold'], message: `fold ${it.fold} of ${f.folds}` });
      if (seen.has(it.id)) ctx.addIssue({ code: 'custom', path: ['items', i, 'id'], message: `item ${it.id} appears twice` });
      seen.add(it.id);
    });
  });
export type OutOfFoldFile = z.infer<typeof OutOfFoldFile>;

export interface OutOfFold {
  task: string;
  folds: number;
  seed: number;
  labels: string[];
  /** Item id → class probabilities (labels order). */
  probs: Map<number, Float64Array>;
  /** Item id → the fold that held it out; items of other splits (final student) are absent. */
  fold: Map<number, number>;
}

/** DIR/out-of-fold.json, checked; null when the student has none (trained without --folds). */
export function readOutOfFold(dir: string): OutOfFold | null {
  const file = join(dir, OUT_OF_FOLD_FILE);
  if (!existsSync(file)) return null;
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new InputError(file, undefined, `not JSON (${(e as Error).message})`);
  }
  const parsed = OutOfFoldFile.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new InputError(file, undefined, `not an out-of-fold file: ${issue.path.join('.') || '(top)'}: ${issue.message}`);
  }
  const f = parsed.data;
  const probs = new Map<number, Float64Array>();
  const fold = new Map<number, number>();
  for (const it of f.items) {
    probs.set(it.id, Float64Array.from(it.probs));
    if (it.fold != null) fold.set(it.id, it.fold);
  }
  return { task: f.task, folds: f.folds, seed: f.seed, labels: f.labels, probs, fold };
}

/** Checked against the schema, then written whole: a temporary file renamed over the name. */
export function writeOutOfFold(dir: string, f: OutOfFoldFile): string {
  const checked = OutOfFoldFile.safeParse(f);
  if (!checked.success) {
    const issue = checked.error.issues[0];
    throw new DistilleryError(`out-of-fold predictions: ${issue.path.join('.') || '(top)'}: ${issue.message}`);
  }
  mkdirSync(dir, { recursive: true });
  const file = join(dir, OUT_OF_FOLD_FILE);
  const tmp = `${file}.tmp-${process.pid}`;
  // One item per line: a file of 100,000 items stays readable with head and grep.
  const lines = checked.data.items.map((it) => JSON.stringify(it));
  const { items: _items, ...head } = checked.data;
  const text = `${JSON.stringify(head).slice(0, -1)},"items":[\n${lines.join(',\n')}\n]}\n`;
  writeFileSync(tmp, text);
  renameSync(tmp, file);
  return file;
}

/** Probabilities as stored: 6 significant digits (a float32 softmax carries about 7). */
export function roundProbs(p: ArrayLike<number>): number[] {
  return Array.from(p, (v) => Number(Math.min(1, Math.max(0, v)).toPrecision(6)));
}
