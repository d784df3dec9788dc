import { z } from 'zod';

/**
 * One exported row: an item with one teacher's latest valid label, or (with
 * --aggregate) with the target built from several teachers. The schema is
 * the format's definition: the JSONL rows are parsed through it and the
 * Parquet columns are derived from it (src/export/parquet.ts), field order
 * included.
 */
export const ExportRow = z
  .object({
    id: z.string(),
    text: z.string().optional(),
    /** Image items: the sha256 of the image bytes (the content address; with --with-images, `images/<sha256>.<ext>`). */
    image: z.string().optional(),
    gold: z.string().nullable(),
    split: z.string(),
    /** The teacher's name; for aggregated rows `method(teacher,teacher,...)`. */
    teacher: z.string(),
    /** The task file's sha256 the label was asked with (null for logits runs and aggregated rows). */
    prompt_version: z.string().nullable(),
    label: z.string(),
    /** One probability per task label, in the task's label order, 6 decimals; null when the run kept hard labels only. */
    probs: z.array(z.number()).nullable(),
    /** logprobs | samples:N | none | logits | human (a reviewer's decision) | aggregate:METHOD */
    soft_method: z.string(),
    /** With --logits: the stored logits (dense, 6 decimals; a top-K store is reconstructed), when the teacher gave logits. */
    logits: z.array(z.number()).nullable().optional(),
    /** Per-teacher rows: the run the label came from (its id in the database; the manifest describes it). */
    run: z.int32().positive().optional(),
    /** Per-teacher rows: what this label cost, US$. */
    cost: z.number().nonnegative().optional(),
    /** Per-teacher rows: the label's request key, so a database loaded from the export never pays for it again. */
    request_key: z.string().optional(),
    /** Per-teacher rows: the soft label exactly as stored (base64 of the soft-label codec, src/soft/codec.ts); null for hard labels only. */
    soft: z.string().nullable().optional(),
  })
  .strict();
export type ExportRow = z.infer<typeof ExportRow>;

/** The row fields in schema order: the JSONL key order and the Parquet column order. */
export const EXPORT_FIELDS = Object.keys(ExportRow.shape) as (keyof ExportRow)[];
