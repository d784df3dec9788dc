import { z } from 'zod';

/**
 * One exported row: an item with one teacher's latest valid label, or (with
 * --aggregate) with the target built from several teachers. The schema is
 * the format's definition.
 */
export const ExportRow = z
  .object({
    id: z.string(),
    text: z.string().optional(),
    /** Image items: the sha256 of the image bytes (the content address). */
    image: z.string().optional(),
    gold: z.string().nullable(),
    split: z.string(),
    /** The teacher's name; for aggregated rows `method(teacher,teacher,...)`. */
    teacher: z.string(),
    /** The task file's sha256 the label was asked with (null for logits runs and aggregated rows). */
    prompt_version: z.string().nullable(),
    label: z.string(),
    /** One probability per task label, in the task's label order; null when the run kept hard labels only. */
    probs: z.array(z.number()).nullable(),
    /** logprobs | samples:N | none | logits | aggregate:METHOD */
    soft_method: z.string(),
    /** With --logits: the stored logits (dense; a top-K store is reconstructed), when the teacher gave logits. */
    logits: z.array(z.number()).nullable().optional(),
  })
  .strict();
export type ExportRow = z.infer<typeof ExportRow>;
