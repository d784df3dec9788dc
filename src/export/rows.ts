import { z } from 'zod';

/** One exported row: an item with one teacher's latest valid label. The schema is the format's definition. */
export const ExportRow = z
  .object({
    id: z.string(),
    text: z.string().optional(),
    /** Image items: the sha256 of the image bytes (the content address). */
    image: z.string().optional(),
    gold: z.string().nullable(),
    split: z.string(),
    teacher: z.string(),
    prompt_version: z.string().nullable(),
    label: z.string(),
    /** One probability per task label, in the task's label order; null when the run kept hard labels only. */
    probs: z.array(z.number()).nullable(),
    soft_method: z.string(),
  })
  .strict();
export type ExportRow = z.infer<typeof ExportRow>;
