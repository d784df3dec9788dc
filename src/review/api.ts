/**
 * The review page's HTTP contract: the one definition the server validates against and the page is written
 * for. Every body the server reads is parsed with these schemas; every state it sends is typed by them.
 *
 * Routes: GET / (the page), GET /api/state, POST /api/decide, POST /api/undo, GET /api/image/:itemId.
 * With an access token, every request carries it (header X-Review-Token, or ?token= for the page and images);
 * every POST carries X-CSRF-Token (the page's <meta name="csrf-token">) and the server's own Origin.
 */
import { z } from 'zod';

export const TOKEN_HEADER = 'x-review-token';
export const CSRF_HEADER = 'x-csrf-token';
/** Bodies are a label and an id: anything larger is not the page talking. */
export const MAX_BODY_BYTES = 16 * 1024;

/** A probability distribution over the task's labels, in the task's label order. */
const Probs = z.array(z.number().min(0).max(1));

export const TeacherBars = z.object({
  /** The teacher's name as in --teachers. */
  name: z.string(),
  /** Its answer (the stated label), null when it did not label the item. */
  label: z.string().nullable(),
  /** Its distribution (one-hot for a hard-label-only teacher), null when it did not label the item. */
  probs: Probs.nullable(),
});
export type TeacherBars = z.infer<typeof TeacherBars>;

export const ItemView = z.object({
  /** The store's item id: what /api/decide names. */
  id: z.number().int(),
  /** The user's id of the item. */
  extId: z.string(),
  split: z.string(),
  /** The item's input fields as text (a text task), in the task file's order; the page renders them as text, never as HTML. */
  fields: z.array(z.object({ name: z.string(), value: z.string() })),
  /** An image task: the URL of the item's image (/api/image/<id>). */
  image: z.string().nullable(),
  teachers: z.array(TeacherBars),
  /** The aggregated training target. */
  target: z.object({ label: z.string(), probs: Probs }).nullable(),
  /** The student's prediction (--student), and whether it comes from a fold model that never trained on the item. */
  student: z.object({ label: z.string(), probs: Probs, outOfFold: z.boolean() }).nullable(),
  /** Why the item is in the queue: the policy, a sentence for the reviewer, its score (lower = more doubtful). */
  reason: z.object({ policy: z.string(), text: z.string(), score: z.number() }),
  /** What Enter accepts: the target's label. */
  suggestion: z.string().nullable(),
});
export type ItemView = z.infer<typeof ItemView>;

export const Progress = z.object({
  /** Items this reviewer has labeled in this queue. */
  done: z.number().int(),
  /** Items skipped for now (they come again at the end). */
  skipped: z.number().int(),
  /** Items in the queue. */
  queue: z.number().int(),
  /** Share of this reviewer's labels equal to the target's label shown; null before the first. */
  agreement: z.number().nullable(),
});
export type Progress = z.infer<typeof Progress>;

export const ReviewState = z.object({
  task: z.string(),
  labels: z.array(z.string()),
  reviewer: z.string(),
  policy: z.string(),
  progress: Progress,
  /** The item to review now; null when the queue is done. */
  item: ItemView.nullable(),
  /** What `u` would take back: the reviewer's latest live decision, or null. */
  undo: z.object({ decisionId: z.number().int(), itemId: z.number().int(), label: z.string().nullable() }).nullable(),
  /** The task's instructions (its file's system line and body: what the teacher was told), shown as text; null without a task file. */
  guidelines: z.string().nullable(),
  /** A line for the reviewer about the last request (e.g. "undone: item 12"), or null. */
  message: z.string().nullable(),
});
export type ReviewState = z.infer<typeof ReviewState>;

/** POST /api/decide: a label, or null to skip. No length limit: a task's labels have none (the body limit bounds it; decide takes only the task's). */
export const DecideBody = z.strictObject({ itemId: z.number().int().positive(), label: z.string().nullable() });
export type DecideBody = z.infer<typeof DecideBody>;

/** POST /api/undo: the decision to take back, or (absent) the latest. */
export const UndoBody = z.strictObject({ decisionId: z.number().int().positive().optional() });
export type UndoBody = z.infer<typeof UndoBody>;

/** Every error response: one line. A 409 also carries the fresh state. */
export const ErrorBody = z.object({ error: z.string(), state: ReviewState.optional() });
export type ErrorBody = z.infer<typeof ErrorBody>;
