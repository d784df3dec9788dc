/**
 * manifest.json: what an export holds and how it was made, and the sha256 and
 * size of every file. It is deterministic like the data files: no times, no
 * absolute paths, keys in a fixed order, so the same database state gives the
 * same bytes.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import type { ExportRow } from './rows.ts';

export const MANIFEST = 'manifest.json';
export const FORMATS = ['jsonl', 'parquet'] as const;
export type Format = (typeof FORMATS)[number];
export const DATA_FILES: Record<Format, string> = { jsonl: 'labels.jsonl', parquet: 'labels.parquet' };

const count = z.number().int().nonnegative();

export const ManifestRun = z
  .object({
    id: z.number().int().positive(),
    kind: z.string(),
    teacher: z.string(),
    base_url: z.string().nullable(),
    prompt_version: z.string().nullable(),
    source: z.string().nullable(),
    source_hash: z.string().nullable(),
    config_hash: z.string(),
    params: z.record(z.string(), z.unknown()),
    status: z.string(),
    items_total: count,
    /** Labels of this run in the export (per-teacher rows), or behind its targets (aggregated). */
    labels: count,
  })
  .strict();
export type ManifestRun = z.infer<typeof ManifestRun>;

export const Counts = z
  .object({
    rows: count,
    items: count,
    by_split: z.record(z.string(), count),
    by_class: z.record(z.string(), count),
    by_teacher: z.record(z.string(), count),
  })
  .strict();
export type Counts = z.infer<typeof Counts>;

export const ManifestFile = z
  .object({
    path: z.string(),
    bytes: count,
    sha256: z.string().regex(/^[0-9a-f]{64}$/),
    /** Data files: how many rows. */
    rows: count.optional(),
  })
  .strict();
export type ManifestFile = z.infer<typeof ManifestFile>;

export const Manifest = z
  .object({
    format: z.literal('distillery-export'),
    format_version: z.literal(1),
    tool: z.object({ name: z.literal('distillery'), version: z.string() }).strict(),
    task: z
      .object({
        name: z.string(),
        input: z.enum(['text', 'image']),
        labels: z.array(z.string()).min(1),
        /** The prompt version of the latest LLM run in the export (each run has its own below); null with logits runs only. */
        prompt_version: z.string().nullable(),
      })
      .strict(),
    /** `--as-of RUN_ID`, or null for the database as it is. */
    as_of: z.number().int().positive().nullable(),
    rows: z.enum(['per-teacher', 'aggregate']),
    options: z
      .object({
        teachers: z.string().nullable(),
        logits: z.boolean(),
        with_images: z.boolean(),
        formats: z.array(z.enum(FORMATS)).min(1),
      })
      .strict(),
    /** null for per-teacher rows. */
    aggregation: z
      .object({
        method: z.string(),
        teachers: z.array(z.string()),
        calibrate: z.boolean(),
        weights: z.array(z.number()).nullable(),
        temperatures: z.array(z.number()).nullable(),
      })
      .strict()
      .nullable(),
    teachers: z.array(z.object({ name: z.string(), runs: z.array(z.number().int().positive()), labels: count }).strict()),
    runs: z.array(ManifestRun),
    counts: Counts,
    /** What the labels in (or behind) the export cost, US$ (answers since superseded, failures and other tasks not counted). */
    cost_usd: z.number().nonnegative(),
    files: z.array(ManifestFile),
  })
  .strict();
export type Manifest = z.infer<typeof Manifest>;

/** package.json's version: the tool version every manifest names. */
export function toolVersion(): string {
  return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

/** Rounded so that a sum printed twice reads the same (and never as 0.30000000000000004). */
export function roundUsd(x: number): number {
  return Math.round(x * 1e9) / 1e9 + 0;
}

/** Counts of a set of rows, every class of the task listed (zeros too), splits in sorted order. */
export function countRows(rows: readonly Pick<ExportRow, 'id' | 'split' | 'label' | 'teacher'>[], labels: readonly string[]): Counts {
  const splits = new Map<string, number>();
  const classes = new Map<string, number>(labels.map((l) => [l, 0]));
  const teachers = new Map<string, number>();
  const items = new Set<string>();
  for (const r of rows) {
    items.add(r.id);
    splits.set(r.split, (splits.get(r.split) ?? 0) + 1);
    classes.set(r.label, (classes.get(r.label) ?? 0) + 1);
    teachers.set(r.teacher, (teachers.get(r.teacher) ?? 0) + 1);
  }
  return {
    rows: rows.length,
    items: items.size,
    by_split: Object.fromEntries([...splits].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))),
    by_class: Object.fromEntries(classes),
    by_teacher: Object.fromEntries(teachers),
  };
}

/** The per-teacher rows' cost, summed in row order. */
export function rowsCost(rows: readonly Pick<ExportRow, 'cost'>[]): number {
  let s = 0;
  for (const r of rows) s += r.cost ?? 0;
  return roundUsd(s);
}

export function manifestText(m: Manifest): string {
  return `${JSON.stringify(m, null, 2)}\n`;
}
