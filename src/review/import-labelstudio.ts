/**
 * Label Studio, in: the completed annotations of its JSON export stored as
 * human labels, through `decide` like the review page's answers (source
 * 'labelstudio', one decision per annotation).
 *
 * The whole file is read and checked first (its shape, every item found,
 * every choice a label of the task, every reviewer name valid): a bad file is
 * one error naming the file and the task's index in it, and nothing is
 * stored. Then every decision is written in one transaction.
 *
 * - Items are matched by `data.distillery_id` (tasks written by export.ts
 *   --format labelstudio carry it). A task without it (created in Label
 *   Studio from the same data) is matched by its exact text when exactly one
 *   item has that text; otherwise the file is refused.
 * - An annotation is a label when it is not cancelled (Label Studio's "skip"
 *   cancels) and holds one choice. Cancelled and empty annotations, and tasks
 *   without annotations, are counted as skipped, never stored as skips: they
 *   say nothing about the label.
 * - The reviewer is --reviewer, else the annotation's `completed_by` (an
 *   email as it is; a user id as `labelstudio-<id>`; see `reviewerOf`).
 * - The decision's key is `<task id>:<annotation id>`: importing the same
 *   file twice stores nothing new. An annotation changed in Label Studio
 *   after it was imported (another choice) replaces its earlier decision: the
 *   earlier one is undone (the log keeps it) and the new choice is stored
 *   under `<task id>:<annotation id>@<updated_at>`. When the reviewer's live
 *   decision on the item came from elsewhere (the review page, another
 *   annotation) and differs, nothing is written and a conflict is reported
 *   (with `replace`, that decision is undone and the file's stored).
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { DistilleryError, InputError, SettingError } from '../errors.ts';
import { DATA, LsExport, CONTROL, type LsAnnotation, type LsTask, type LsUser } from '../export/labelstudio.ts';
import { checkReviewer, decide, liveDecisions, REVIEWER_RE, undo, type DecideInput, type Decision } from '../store/reviews.ts';
import type { Store, TaskRow } from '../store/store.ts';

export const SOURCE = 'labelstudio';

export interface ImportReviewOptions {
  /** Every annotation is this reviewer's (default: its `completed_by`). */
  reviewer?: string;
  /** Check and count, store nothing. */
  dryRun?: boolean;
  /** On a conflict, undo the reviewer's other live decision on the item and store the file's (default: keep it, report). */
  replace?: boolean;
}

/** An annotation the reviewer answered differently elsewhere: not stored. */
export interface ImportConflict {
  /** The task's index in the file. */
  index: number;
  sourceKey: string;
  reviewer: string;
  itemId: string;
  label: string;
  /** The reviewer's live decision on the item. */
  live: { label: string | null; source: string; sourceKey: string | null };
}

export interface ImportReviewResult {
  task: string;
  /** Annotations stored as new decisions. */
  stored: number;
  /** Annotations changed in Label Studio since imported: the earlier decision undone, the new one stored. */
  updated: number;
  /** With `replace`: annotations stored over the reviewer's other live decision on the item (undone). */
  replaced: number;
  /** Annotations already stored (imported before, the same choice). */
  already: number;
  conflicts: ImportConflict[];
  skipped: { cancelled: number; empty: number; unannotated: number };
  reviewers: string[];
}

/** One annotation that is a label, checked and matched, ready for `decide`. */
interface Planned {
  index: number;
  itemId: number;
  extId: string;
  label: string;
  reviewer: string;
  sourceKey: string;
  updatedAt: string | null;
  shown: Record<string, unknown>;
}

/** Where in the file: `FILE: task [3] (id 17)`, plus the annotation. */
function fail(file: string, index: number, task: LsTask | undefined, reason: string): InputError {
  const id = task?.id === undefined ? '' : ` (Label Studio task ${task.id})`;
  return new InputError(file, undefined, `task [${index}]${id}: ${reason}`);
}

/** The file, parsed through `LsExport`: a bad shape names the task's index and the field. */
export function readLabelStudioExport(file: string): LsTask[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new InputError(file, undefined, `cannot read (${(e as NodeJS.ErrnoException).code ?? e})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new InputError(
      file,
      undefined,
      `not JSON (${(e as Error).message.split('\n')[0]}); export the project from Label Studio as JSON`,
    );
  }
  if (!Array.isArray(json)) throw new InputError(file, undefined, "expected Label Studio's JSON export: an array of tasks");
  const parsed = LsExport.safeParse(json);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const [index, ...rest] = issue.path;
  const at = rest
    .map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`))
    .join('')
    .replace(/^\./, '');
  const hint =
    rest[0] === 'data' && json[Number(index)] && typeof json[Number(index)] === 'object' && !('data' in json[Number(index)])
      ? " (is this Label Studio's JSON export? JSON-MIN and CSV exports are not read)"
      : '';
  throw fail(file, Number(index), undefined, `${at || 'the task'}: ${issue.message}${hint}`);
}

/**
 * A reviewer name from `completed_by`: an email as it is, a user id as `labelstudio-<id>`. A name that is not a valid
 * reviewer name (a character outside [A-Za-z0-9._@+-], over 64 characters) is made one: those characters become `_`
 * and, since that could make two names one, a short hash of the original follows.
 */
export function reviewerOf(user: LsUser | null | undefined): string | undefined {
  if (user === null || user === undefined) return undefined;
  let name: string | undefined;
  if (typeof user === 'number') name = `labelstudio-${user}`;
  else if (typeof user === 'string') name = /^\d+$/.test(user) ? `labelstudio-${user}` : user;
  else if (user.email) name = user.email;
  else if (user.id !== undefined) name = `labelstudio-${user.id}`;
  if (name === undefined || REVIEWER_RE.test(name)) return name;
  const hash = createHash('sha256').update(name).digest('hex').slice(0, 8);
  return `${name.replace(/[^A-Za-z0-9._@+-]/g, '_').slice(0, 55)}-${hash}`;
}

/** The annotation's one choice: from the `label` control when there are several Choices. undefined: no choice. */
function choiceOf(a: LsAnnotation, reason: (r: string) => Error): string | undefined {
  const results = (a.result ?? []).filter((r) => r.type === 'choices');
  if (results.length === 0) return undefined;
  const controls = [...new Set(results.map((r) => r.from_name))];
  let chosen = results;
  if (controls.length > 1) {
    chosen = results.filter((r) => r.from_name === CONTROL);
    if (chosen.length === 0)
      throw reason(
        `choices from ${controls.map((c) => `"${c}"`).join(', ')}: which one is the label? (distillery's config names it "${CONTROL}")`,
      );
  }
  const choices = chosen.flatMap((r) => {
    const c = z.array(z.string()).safeParse(r.value.choices);
    if (!c.success) throw reason(`result "${r.from_name}": value.choices is not a list of strings`);
    return c.data;
  });
  if (choices.length === 0) return undefined;
  if (new Set(choices).size > 1) throw reason(`${choices.length} choices (${choices.join(', ')}): a label is one class`);
  return choices[0];
}

/** Items by ext_id, and by text where the text is unique (text tasks: for tasks without distillery_id). */
function itemIndex(store: Store, task: TaskRow): { byId: Map<string, number>; byText: Map<string, number | 'ambiguous'> } {
  const byId = new Map<string, number>();
  const byText = new Map<string, number | 'ambiguous'>();
  for (const it of store.taskItemRows(task.id)) {
    byId.set(it.ext_id, it.id);
    if (task.input_kind !== 'text') continue;
    const text = (JSON.parse(it.input) as { text?: unknown }).text;
    if (typeof text === 'string') byText.set(text, byText.has(text) ? 'ambiguous' : it.id);
  }
  return { byId, byText };
}

/**
 * The task an export is imported into: the task its tasks name (`data.distillery_task`) when they all name one
 * that is in the database, else `fallback` (the --task resolver: the named task, or the database's only one).
 */
export function taskOfExport(store: Store, tasks: readonly LsTask[], fallback: () => TaskRow): TaskRow {
  const named = new Set(tasks.map((t) => t.data[DATA.task]).filter((n): n is string => typeof n === 'string'));
  if (named.size === 1) {
    const row = store.findTask([...named][0]);
    if (row) return row;
  }
  return fallback();
}

/** Check every task of the file and plan one decision per annotation that is a label; throws on the first problem. */
function plan(
  store: Store,
  task: TaskRow,
  file: string,
  tasks: readonly LsTask[],
  o: ImportReviewOptions,
): { planned: Planned[]; skipped: ImportReviewResult['skipped'] } {
  const fixed = o.reviewer === undefined ? undefined : checkReviewer(o.reviewer);
  const { byId, byText } = itemIndex(store, task);
  const planned: Planned[] = [];
  const skipped = { cancelled: 0, empty: 0, unannotated: 0 };
  /** Each decision's key, with the task index that has it: a key twice would store only the first (decide sees it imported). */
  const keys = new Map<string, number>();
  tasks.forEach((t, index) => {
    const bad = (reason: string) => fail(file, index, t, reason);
    const annotations = t.annotations ?? [];
    if (annotations.length === 0) {
      skipped.unannotated++;
      return;
    }
    const named = t.data[DATA.task];
    if (named !== undefined && named !== task.name) throw bad(`${DATA.task} is "${String(named)}", the import is into task "${task.name}"`);
    if (t.id === undefined) throw bad("annotations but no task id (is this Label Studio's JSON export?)");
    const extId = t.data[DATA.id];
    let itemId: number | undefined;
    if (extId !== undefined) {
      if (typeof extId !== 'string') throw bad(`${DATA.id} must be a string`);
      itemId = byId.get(extId);
      if (itemId === undefined) throw bad(`${DATA.id} "${extId}": no such item in task "${task.name}"`);
    } else {
      const text = t.data.text;
      if (task.input_kind !== 'text' || typeof text !== 'string')
        throw bad(`no ${DATA.id} to find its item by (export the tasks with export.ts --format labelstudio)`);
      const found = byText.get(text);
      if (found === undefined) throw bad(`no ${DATA.id}, and no item of task "${task.name}" has this text`);
      if (found === 'ambiguous') throw bad(`no ${DATA.id}, and several items of task "${task.name}" have this text`);
      itemId = found;
    }
    for (const a of annotations) {
      const badA = (reason: string) => bad(`annotation ${a.id}: ${reason}`);
      if (a.was_cancelled) {
        skipped.cancelled++;
        continue;
      }
      const label = choiceOf(a, badA);
      if (label === undefined) {
        skipped.empty++;
        continue;
      }
      if (!task.labels.includes(label))
        throw badA(`choice "${label}" is not a label of task "${task.name}" (labels: ${task.labels.join(', ')})`);
      const reviewer = fixed ?? reviewerOf(a.completed_by);
      if (reviewer === undefined) throw badA('no completed_by; give --reviewer');
      const sourceKey = `${t.id}:${a.id}`;
      const first = keys.get(sourceKey);
      if (first !== undefined)
        throw badA(`task id ${t.id} with annotation id ${a.id} is also task [${first}]'s: a file merged from two exports?`);
      keys.set(sourceKey, index);
      planned.push({
        index,
        itemId,
        extId: typeof extId === 'string' ? extId : String(itemId),
        label,
        reviewer,
        sourceKey,
        updatedAt: a.updated_at ?? a.created_at ?? null,
        shown: { source: SOURCE, task: t.id, annotation: a.id, completed_by: a.completed_by ?? null, updated_at: a.updated_at ?? null },
      });
    }
  });
  return { planned, skipped };
}

/**
 * The reviewers' live decisions per item, read once per reviewer (not once per annotation: a re-import of n
 * annotations would read n^2 rows) and kept current as the import writes.
 */
class LiveDecisions {
  readonly #byReviewer = new Map<string, Map<number, Decision[]>>();
  constructor(
    private readonly store: Store,
    private readonly taskId: number,
  ) {}

  #of(reviewer: string): Map<number, Decision[]> {
    let m = this.#byReviewer.get(reviewer);
    if (!m) {
      m = new Map();
      for (const d of liveDecisions(this.store, this.taskId, reviewer)) m.set(d.itemId, [...(m.get(d.itemId) ?? []), d]);
      this.#byReviewer.set(reviewer, m);
    }
    return m;
  }

  /** The live decision on the item that came from this annotation (its first key or a later version's). */
  ofAnnotation(p: Planned): Decision | undefined {
    return this.#of(p.reviewer)
      .get(p.itemId)
      ?.find((d) => d.source === SOURCE && (d.sourceKey === p.sourceKey || d.sourceKey?.startsWith(`${p.sourceKey}@`)));
  }

  stored(d: Decision): void {
    const m = this.#byReviewer.get(d.reviewer);
    if (m) m.set(d.itemId, [...(m.get(d.itemId) ?? []), d]);
  }

  undone(d: Decision): void {
    const m = this.#byReviewer.get(d.reviewer);
    if (m)
      m.set(
        d.itemId,
        (m.get(d.itemId) ?? []).filter((x) => x.id !== d.id),
      );
  }
}

/** Rolls the dry run's transaction back. */
class DryRun extends Error {}

/**
 * Import Label Studio's JSON export `file` into `task` (see the module
 * comment). Throws, storing nothing, on a bad file.
 */
export function importLabelStudio(
  store: Store,
  task: TaskRow,
  file: string,
  tasks: readonly LsTask[],
  o: ImportReviewOptions = {},
): ImportReviewResult {
  const { planned, skipped } = plan(store, task, file, tasks, o);
  const result: ImportReviewResult = {
    task: task.name,
    stored: 0,
    updated: 0,
    replaced: 0,
    already: 0,
    conflicts: [],
    skipped,
    reviewers: [...new Set(planned.map((p) => p.reviewer))].sort(),
  };
  const live = new LiveDecisions(store, task.id);
  const store1 = (p: Planned, d: DecideInput) => {
    const r = decide(store, d);
    if (r.status === 'stored') live.stored(r.decision);
    // The key was imported before for another item (an export of another Label Studio project or instance, whose ids
    // overlap): counting it 'already there' would drop this annotation without a word.
    if (r.status === 'unchanged' && r.decision.itemId !== d.itemId) {
      const other = store.itemsByIds([r.decision.itemId])[0]?.ext_id ?? `#${r.decision.itemId}`;
      throw new DistilleryError(
        `task [${p.index}] (Label Studio task ${String(p.shown.task)}): annotation ${String(p.shown.annotation)} was imported ` +
          `before for item "${other}", not "${p.extId}" (an export of another Label Studio project or instance?)`,
      );
    }
    return r;
  };
  const undo1 = (p: Planned, d: Decision) => {
    undo(store, { task, reviewer: p.reviewer, decisionId: d.id });
    live.undone(d);
  };
  const apply = (p: Planned) => {
    const d: DecideInput = {
      task,
      reviewer: p.reviewer,
      itemId: p.itemId,
      label: p.label,
      shown: p.shown,
      source: SOURCE,
      sourceKey: p.sourceKey,
    };
    const r = store1(p, d);
    if (r.status === 'stored') return void result.stored++;
    const conflict = (other: Decision) =>
      result.conflicts.push({
        index: p.index,
        sourceKey: p.sourceKey,
        reviewer: p.reviewer,
        itemId: p.extId,
        label: p.label,
        live: { label: other.label, source: other.source, sourceKey: other.sourceKey },
      });
    const own = live.ofAnnotation(p);
    // A conflict with another decision (the page's, another annotation's) is reported; with this annotation's own
    // earlier choice it is the annotation changed in Label Studio, below.
    if (r.status === 'conflict' && r.decision.id !== own?.id) {
      if (!o.replace) return void conflict(r.decision);
      undo1(p, r.decision);
      const replaced = store1(p, d);
      if (replaced.status === 'stored') return void result.replaced++;
      return void conflict(replaced.decision);
    }
    // unchanged: this annotation's key was imported before, or the reviewer's live label on the item is this one.
    if (own ? own.label === p.label : r.decision.label === p.label) return void result.already++;
    // The annotation was changed in Label Studio since it was imported: its new choice replaces its live decision.
    if (own) undo1(p, own);
    const again = store1(p, { ...d, sourceKey: `${p.sourceKey}@${p.updatedAt ?? p.label}` });
    if (again.status === 'stored') return void (own ? result.updated++ : result.stored++);
    if (again.status === 'conflict') return void conflict(again.decision);
    result.already++;
  };
  try {
    store.transactionSync(() => {
      for (const p of planned) apply(p);
      if (o.dryRun) throw new DryRun();
    });
  } catch (e) {
    if (!(e instanceof DryRun)) {
      if (e instanceof SettingError || !(e instanceof DistilleryError)) throw e;
      throw new DistilleryError(`${file}: ${e.message}; nothing imported`);
    }
  }
  return result;
}
