/**
 * Label Studio (labelstud.io), out: its tasks JSON with the teachers' answers
 * as predictions, and the labeling config that shows them. This module owns
 * Label Studio's formats: what is written here (`LsTaskOut`) and what its JSON
 * export holds when it comes back (`LsExport`, read by
 * src/review/import-labelstudio.ts).
 *
 * Formats as Label Studio documents them: tasks are `{ data, predictions }`
 * (docs: "Import pre-annotated data"); a prediction is `{ model_version,
 * score, result }` and a classification result is `{ from_name, to_name,
 * type: 'choices', value: { choices: [label] } }`; the JSON export is an
 * array of tasks `{ id, data, annotations: [{ id, completed_by, was_cancelled,
 * result, created_at, updated_at, ... }], ... }` (docs: "Label Studio JSON
 * format of annotated tasks"), where `completed_by` is a user id, or
 * `{ id, email, first_name, last_name }` when expanded (and in older versions).
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { SettingError } from '../errors.ts';
import { isHumanRun } from '../store/reviews.ts';
import type { Store, TaskRow } from '../store/store.ts';
import { taskItems, type TargetsOptions } from '../targets/from-store.ts';
import { collectAsOf, collectRows } from './export.ts';
import { PendingFile, removeStaleTemps } from './files.ts';
import type { ExportRow } from './rows.ts';

export const TASKS_FILE = 'tasks.json';
export const CONFIG_FILE = 'labeling-config.xml';

/** The names the labeling config gives its tags: the Choices control and the object it labels. */
export const CONTROL = 'label';
export const objectName = (task: Pick<TaskRow, 'input_kind'>): 'text' | 'image' => (task.input_kind === 'image' ? 'image' : 'text');

/** The keys distillery adds to a task's data (every other key is an input field of the item). */
export const DATA = {
  id: 'distillery_id',
  task: 'distillery_task',
  split: 'distillery_split',
  teachers: 'distillery_teachers',
  target: 'distillery_target',
  review: 'distillery_review',
} as const;

// ---- what Label Studio reads and writes (lenient: it adds fields across versions) ----

/** One region of a result; a classification is `type: 'choices'` with `value.choices`. */
export const LsResult = z.looseObject({
  id: z.string().optional(),
  from_name: z.string(),
  to_name: z.string(),
  type: z.string(),
  value: z.record(z.string(), z.unknown()),
});
export type LsResult = z.infer<typeof LsResult>;

export const LsPrediction = z.looseObject({
  model_version: z.string().optional(),
  score: z.number().nullable().optional(),
  result: z.array(LsResult),
});

/** `completed_by`: a user id, an email, or the expanded user. */
export const LsUser = z.union([
  z.number().int(),
  z.string().min(1),
  z.looseObject({ id: z.number().int().optional(), email: z.string().nullable().optional() }),
]);
export type LsUser = z.infer<typeof LsUser>;

export const LsAnnotation = z.looseObject({
  id: z.union([z.number().int(), z.string().min(1)]),
  completed_by: LsUser.nullable().optional(),
  /** Skipped (or cancelled) in Label Studio: not a label. */
  was_cancelled: z.boolean().optional(),
  result: z.array(LsResult).nullable().optional(),
  created_at: z.string().nullable().optional(),
  updated_at: z.string().nullable().optional(),
});
export type LsAnnotation = z.infer<typeof LsAnnotation>;

export const LsTask = z.looseObject({
  /** Label Studio's task id (every task of its export has one; the tasks JSON written here has none). */
  id: z.number().int().optional(),
  data: z.record(z.string(), z.unknown()),
  annotations: z.array(LsAnnotation).optional(),
  /** Predictions, or (newer exports) their ids. */
  predictions: z.array(z.union([LsPrediction, z.number()])).optional(),
});
export type LsTask = z.infer<typeof LsTask>;

/** Label Studio's JSON export (and its tasks JSON): an array of tasks. */
export const LsExport = z.array(LsTask);

// ---- what distillery writes (strict: the tasks JSON's definition) ----

/** A distribution over the task's labels, in label order, keyed by label. */
const Distribution = z.record(z.string(), z.number().min(0).max(1));

export const ChoicesResultOut = z
  .object({
    from_name: z.literal(CONTROL),
    to_name: z.enum(['text', 'image']),
    type: z.literal('choices'),
    value: z.object({ choices: z.array(z.string()).length(1) }).strict(),
  })
  .strict();

export const PredictionOut = z
  .object({
    /** The teacher's name (or the aggregate's, `mean(a,b)`). */
    model_version: z.string(),
    /** The distribution's top probability; absent for a teacher that gave a hard label only. */
    score: z.number().min(0).max(1).optional(),
    result: z.array(ChoicesResultOut).length(1),
  })
  .strict();

export const TeacherAnswer = z.object({ label: z.string(), probs: Distribution.nullable() }).strict();

export const DataOut = z.looseObject({
  [DATA.id]: z.string(),
  [DATA.task]: z.string(),
  [DATA.split]: z.string(),
  /** Per teacher its label and full distribution (null: a hard label only). */
  [DATA.teachers]: z.record(z.string(), TeacherAnswer),
  /** With --aggregate: the aggregated target. */
  [DATA.target]: z.object({ method: z.string(), label: z.string(), probs: Distribution }).strict().optional(),
  /** With --policy: why the review queue chose the item, its rank (1: most doubtful) and the policy's score. */
  [DATA.review]: z
    .object({ policy: z.string(), rank: z.number().int().positive(), score: z.number(), reason: z.string() })
    .strict()
    .optional(),
});

export const LsTaskOut = z.object({ data: DataOut, predictions: z.array(PredictionOut) }).strict();
export type LsTaskOut = z.infer<typeof LsTaskOut>;

// ---- the writer ----

export interface LabelStudioOptions {
  /** Comma list of teacher names or run ids (default: every teacher of the task; reviewers' runs only when named). */
  teachers?: string;
  /** Present: the aggregated target as one more prediction and in `data.distillery_target`. */
  targets?: Omit<TargetsOptions, 'teachers'>;
  /** The state after this run (see as-of.ts). */
  asOf?: number;
  /** Only the items of this split. */
  split?: string;
  /**
   * The review queue (src/review/queue.ts), most doubtful first: only its items, in its order (Label Studio shows
   * tasks in import order), each with why it was chosen. Not with `asOf` (the queue is of the database as it is).
   */
  queue?: readonly ReviewEntry[];
  /** With `queue`: only its first N items. */
  limit?: number;
}

/** One entry of the review queue, as the export needs it (src/review/queue.ts's QueueEntry). */
export interface ReviewEntry {
  itemId: number;
  policy: string;
  reason: string;
  score: number;
}

export interface LabelStudioResult {
  dir: string;
  tasks: number;
  predictions: number;
  files: string[];
}

function distribution(labels: readonly string[], probs: readonly number[]): Record<string, number> {
  return Object.fromEntries(labels.map((l, k) => [l, probs[k]]));
}

function prediction(task: TaskRow, modelVersion: string, label: string, probs: readonly number[] | null): z.infer<typeof PredictionOut> {
  return {
    model_version: modelVersion,
    ...(probs ? { score: Math.max(...probs) } : {}),
    result: [{ from_name: CONTROL, to_name: objectName(task), type: 'choices', value: { choices: [label] } }],
  };
}

/** The item's input fields as Label Studio data: scalars only, an image as a data: URL. */
function itemData(store: Store, task: TaskRow, input: string, image: string | null): Record<string, unknown> {
  const fields = JSON.parse(input) as Record<string, unknown>;
  const data: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(fields)) {
    if (k.startsWith('distillery_')) continue;
    if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') data[k] = v;
  }
  if (task.input_kind === 'image') {
    // A data: URL makes the file self-contained: Label Studio shows it with no storage to connect and nothing to serve.
    const blob = store.blob(image!);
    data.image = `data:${blob.mime};base64,${blob.bytes.toString('base64')}`;
  }
  return data;
}

/**
 * One Label Studio task per item (the database's item order), each teacher's
 * latest valid label a prediction (teacher order), the aggregated target one
 * more with `targets`. Same database state, same tasks.
 */
export function labelStudioTasks(store: Store, task: TaskRow, o: LabelStudioOptions = {}): LsTaskOut[] {
  if (o.queue && o.asOf !== undefined)
    throw new SettingError('asOf', o.asOf, 'goes without a review policy (the queue is of the database as it is)');
  return collectAsOf(store, task, o.asOf, (source) => {
    const items = taskItems(source, task).items;
    if (o.split !== undefined && !items.some((it) => it.split === o.split)) {
      const splits = [...new Set(items.map((it) => it.split))].sort();
      throw new SettingError(
        'split',
        o.split,
        `no item of task "${task.name}" is in split "${o.split}" (splits: ${splits.join(', ') || 'none'})`,
      );
    }
    const byItem = (rows: ExportRow[]) => {
      const m = new Map<string, ExportRow[]>();
      for (const r of rows) m.set(r.id, [...(m.get(r.id) ?? []), r]);
      return m;
    };
    // Reviewers are not predictions unless named: a second annotator shown the first one's answer is not independent.
    const humans = new Set(
      o.teachers === undefined
        ? source
            .runs(task.id)
            .filter(isHumanRun)
            .map((r) => r.teacher)
        : [],
    );
    const perTeacher = byItem(collectRows(source, task, { teachers: o.teachers }).rows.filter((r) => !humans.has(r.teacher)));
    const aggregated = o.targets ? byItem(collectRows(source, task, { teachers: o.teachers, targets: o.targets }).rows) : undefined;
    const tasks: LsTaskOut[] = [];
    for (const [it, review] of chosenItems(items, o)) {
      const rows = perTeacher.get(it.ext_id) ?? [];
      const target = aggregated?.get(it.ext_id)?.[0];
      const predictions = rows.map((r) => prediction(task, r.teacher, r.label, r.probs));
      if (target) predictions.push(prediction(task, target.teacher, target.label, target.probs));
      const out: LsTaskOut = {
        data: {
          ...itemData(store, task, it.input, it.image),
          [DATA.id]: it.ext_id,
          [DATA.task]: task.name,
          [DATA.split]: it.split,
          [DATA.teachers]: Object.fromEntries(
            rows.map((r) => [r.teacher, { label: r.label, probs: r.probs ? distribution(task.labels, r.probs) : null }]),
          ),
          ...(target
            ? { [DATA.target]: { method: target.teacher, label: target.label, probs: distribution(task.labels, target.probs!) } }
            : {}),
        },
        predictions,
      };
      if (review) out.data[DATA.review] = review;
      // Checked, but written as built: the item's own fields first (zod would put its declared keys first).
      LsTaskOut.parse(out);
      tasks.push(out);
    }
    return tasks;
  });
}

type Item = ReturnType<typeof taskItems>['items'][number];
type Review = NonNullable<LsTaskOut['data'][typeof DATA.review]>;

/** The items to write, in order: every item (of the split), or the review queue's (its first `limit`). */
function chosenItems(items: readonly Item[], o: LabelStudioOptions): Array<[Item, Review | undefined]> {
  if (o.queue === undefined) return items.filter((it) => o.split === undefined || it.split === o.split).map((it) => [it, undefined]);
  const byId = new Map(items.map((it) => [it.id, it]));
  const entries = o.queue.filter((e) => o.split === undefined || byId.get(e.itemId)?.split === o.split).slice(0, o.limit);
  return entries.map((e, k) => [byId.get(e.itemId)!, { policy: e.policy, rank: k + 1, score: round6(e.score), reason: e.reason }]);
}

function round6(x: number): number {
  return Math.round(x * 1e6) / 1e6 + 0;
}

function xmlAttr(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

/**
 * The labeling config: the item's text (or image) and one single-choice
 * group of the task's labels, in label order (Label Studio numbers them 1-9
 * as hotkeys). Predictions and the import both use these tag names.
 */
export function labelingConfig(task: TaskRow): string {
  const obj = objectName(task);
  const object = obj === 'image' ? `  <Image name="image" value="$image"/>` : `  <Text name="text" value="$text"/>`;
  return [
    '<View>',
    `  <Header value="${xmlAttr(`distillery task: ${task.name}`)}"/>`,
    object,
    `  <Choices name="${CONTROL}" toName="${obj}" choice="single" showInline="true" required="true">`,
    ...task.labels.map((l) => `    <Choice value="${xmlAttr(l)}"/>`),
    '  </Choices>',
    '</View>',
    '',
  ].join('\n');
}

/** The tasks JSON: an array, one task per line (diffable, and streamable by line). */
function* tasksJson(tasks: readonly LsTaskOut[]): Generator<string> {
  if (tasks.length === 0) {
    yield '[]\n';
    return;
  }
  yield '[\n';
  for (let i = 0; i < tasks.length; i++) yield `${JSON.stringify(tasks[i])}${i + 1 < tasks.length ? ',' : ''}\n`;
  yield ']\n';
}

/**
 * Write DIR/tasks.json and DIR/labeling-config.xml, each under a temporary
 * name and renamed when whole (both, or neither on a failure). No times and
 * no paths in either: the same database state gives the same bytes.
 */
export function writeLabelStudio(store: Store, task: TaskRow, dir: string, o: LabelStudioOptions = {}): LabelStudioResult {
  const tasks = labelStudioTasks(store, task, o);
  mkdirSync(dir, { recursive: true });
  removeStaleTemps(dir);
  const files = [new PendingFile(join(dir, TASKS_FILE)), new PendingFile(join(dir, CONFIG_FILE))];
  try {
    let buf = '';
    for (const chunk of tasksJson(tasks)) {
      buf += chunk;
      if (buf.length > 1 << 20) {
        files[0].write(buf);
        buf = '';
      }
    }
    files[0].write(buf);
    files[1].write(labelingConfig(task));
    for (const f of files) f.finish();
    for (const f of files) f.commit();
  } catch (e) {
    for (const f of files) f.abort();
    throw e;
  }
  return {
    dir,
    tasks: tasks.length,
    predictions: tasks.reduce((s, t) => s + t.predictions.length, 0),
    files: files.map((f) => f.path),
  };
}
