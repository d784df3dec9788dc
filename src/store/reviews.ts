/**
 * People in the loop (schema v6): a reviewer's decisions. Each reviewer has one human run per task
 * (runs.kind = 'human', teacher 'human:<reviewer>'); a live decision is an ordinary label row of that run
 * (hard label only, soft_method 'human', request_key 'review:<reviews.id>'), so everything that reads a
 * teacher's labels reads a reviewer's the same way. The `reviews` table is the append-only log of every
 * label, skip and undo: an undo deletes the label row it takes back, and the log still says what it was.
 *
 * Every write is one IMMEDIATE transaction that first reads what is live: two tabs, two servers or two
 * imports of the same file never store the same decision twice.
 */
import { createHash } from 'node:crypto';
import { SettingError } from '../errors.ts';
import type { Statement } from 'better-sqlite3';
import { Store, unpaidLabel, type RunRow, type TaskRow } from './store.ts';

export const HUMAN_KIND = 'human';
export const HUMAN_SOFT_METHOD = 'human';
/** Emails work (Label Studio's annotators), and so do plain user names; nothing that needs quoting anywhere. */
export const REVIEWER_RE = /^[A-Za-z0-9._@+-]{1,64}$/;

export type DecisionAction = 'label' | 'skip' | 'undo';
export type DecisionSource = 'page' | 'labelstudio';

export interface Decision {
  id: number;
  taskId: number;
  runId: number;
  itemId: number;
  reviewer: string;
  action: DecisionAction;
  label: string | null;
  undoes: number | null;
  source: string;
  sourceKey: string | null;
  /** JSON text: what the reviewer was shown when deciding. */
  shown: string | null;
  createdAt: string;
}

/** A reviewer's live label on an item. */
export interface HumanLabel {
  itemId: number;
  reviewer: string;
  runId: number;
  label: string;
  decisionId: number;
  createdAt: string;
}

export interface DecideInput {
  task: TaskRow;
  reviewer: string;
  itemId: number;
  /** null: skip (not now; the item comes again later). */
  label: string | null;
  shown?: unknown;
  source?: DecisionSource;
  /** Where the decision was made outside distillery (a Label Studio annotation): the same key is never stored twice. */
  sourceKey?: string;
}

export interface DecideResult {
  /** stored: new. unchanged: already live (or this source key already stored): nothing written. conflict: the reviewer's live decision differs: nothing written. */
  status: 'stored' | 'unchanged' | 'conflict';
  decision: Decision;
}

export interface UndoResult {
  status: 'undone' | 'unchanged' | 'none';
  decision?: Decision;
}

const DECISION_SELECT = `SELECT id, task_id AS taskId, run_id AS runId, item_id AS itemId, reviewer, action, label, undoes, source,
  source_key AS sourceKey, shown, created_at AS createdAt FROM reviews`;
/** Label and skip rows no undo has taken back. */
const LIVE = `action IN ('label', 'skip') AND NOT EXISTS (SELECT 1 FROM reviews u WHERE u.undoes = reviews.id)`;

const now = () => new Date().toISOString();

/** Prepared once per connection: a long review session or a large import decides thousands of times. */
const statements = new WeakMap<Store, Map<string, Statement>>();
function sql(store: Store, text: string): Statement {
  let cache = statements.get(store);
  if (!cache) statements.set(store, (cache = new Map()));
  let st = cache.get(text);
  if (!st) cache.set(text, (st = Store.sqlOf(store).prepare(text)));
  return st;
}

export function checkReviewer(name: string): string {
  if (!REVIEWER_RE.test(name)) throw new SettingError('reviewer', name, `"${name}": a reviewer name is 1-64 letters, digits or . _ @ + -`);
  return name;
}

export function isHumanRun(run: Pick<RunRow, 'kind'>): boolean {
  return run.kind === HUMAN_KIND;
}

export function humanTeacherName(reviewer: string): string {
  return `human:${reviewer}`;
}

/** The reviewer's human run on the task, created on first use. */
export function humanRun(store: Store, task: TaskRow, reviewer: string): RunRow {
  checkReviewer(reviewer);
  return store.transactionSync(() => findHumanRun(store, task, reviewer) ?? createHumanRun(store, task, reviewer));
}

function humanConfigHash(task: TaskRow, reviewer: string): string {
  return createHash('sha256')
    .update(JSON.stringify({ kind: HUMAN_KIND, task: task.name, reviewer }))
    .digest('hex');
}

function findHumanRun(store: Store, task: TaskRow, reviewer: string): RunRow | undefined {
  const row = sql(store, `SELECT id FROM runs WHERE task_id = ? AND kind = ? AND config_hash = ? ORDER BY id LIMIT 1`).get(
    task.id,
    HUMAN_KIND,
    humanConfigHash(task, reviewer),
  ) as { id: number } | undefined;
  return row ? store.run(row.id) : undefined;
}

function createHumanRun(store: Store, task: TaskRow, reviewer: string): RunRow {
  const run = store.createRun({
    task_id: task.id,
    kind: HUMAN_KIND,
    teacher: humanTeacherName(reviewer),
    base_url: null,
    prompt_version: null,
    config_hash: humanConfigHash(task, reviewer),
    params: JSON.stringify({ reviewer }),
    labels: JSON.stringify(task.labels),
    items_total: 0,
  });
  // Nothing is ever in flight in a human run: it is complete after every decision.
  store.finishRun(run.id, 'completed', null);
  return store.run(run.id)!;
}

/** Store one decision (a label, or a skip when `label` is null), unless it is already live or contradicts a live one. */
export function decide(store: Store, d: DecideInput): DecideResult {
  checkReviewer(d.reviewer);
  if (d.label !== null && !d.task.labels.includes(d.label))
    throw new SettingError('label', d.label, `"${d.label}" is not a label of task "${d.task.name}" (${d.task.labels.join(', ')})`);
  const source = d.source ?? 'page';
  store.flush();
  return store.transactionSync(() => {
    const item = sql(store, 'SELECT id FROM items WHERE id = ? AND task_id = ?').get(d.itemId, d.task.id);
    if (!item) throw new SettingError('item', d.itemId, `item ${d.itemId} is not an item of task "${d.task.name}"`);
    const run = findHumanRun(store, d.task, d.reviewer) ?? createHumanRun(store, d.task, d.reviewer);
    if (d.sourceKey !== undefined) {
      const imported = sql(store, `${DECISION_SELECT} WHERE run_id = ? AND source = ? AND source_key = ?`).get(
        run.id,
        source,
        d.sourceKey,
      ) as Decision | undefined;
      if (imported) return { status: 'unchanged', decision: imported };
    }
    const live = liveOn(store, run.id, d.itemId);
    const liveLabel = live.find((x) => x.action === 'label');
    if (liveLabel) return { status: liveLabel.label === d.label ? 'unchanged' : 'conflict', decision: liveLabel };
    const liveSkip = live.find((x) => x.action === 'skip');
    if (d.label === null && liveSkip) return { status: 'unchanged', decision: liveSkip };
    const decision = insertDecision(store, {
      taskId: d.task.id,
      runId: run.id,
      itemId: d.itemId,
      reviewer: d.reviewer,
      action: d.label === null ? 'skip' : 'label',
      label: d.label,
      undoes: null,
      source,
      sourceKey: d.sourceKey ?? null,
      shown: d.shown === undefined ? null : JSON.stringify(d.shown),
    });
    if (d.label !== null) insertHumanLabel(store, decision);
    return { status: 'stored', decision };
  });
}

/** Take back one live decision of the reviewer: the one named, or their latest on the task. */
export function undo(store: Store, o: { task: TaskRow; reviewer: string; decisionId?: number }): UndoResult {
  checkReviewer(o.reviewer);
  store.flush();
  return store.transactionSync(() => {
    const run = findHumanRun(store, o.task, o.reviewer);
    if (!run) return { status: 'none' };
    let target: Decision | undefined;
    if (o.decisionId !== undefined) {
      target = sql(store, `${DECISION_SELECT} WHERE id = ? AND run_id = ?`).get(o.decisionId, run.id) as Decision | undefined;
      if (!target || target.action === 'undo')
        throw new SettingError('decision', o.decisionId, `decision ${o.decisionId} is not a label or skip of reviewer ${o.reviewer}`);
      const taken = sql(store, 'SELECT 1 FROM reviews WHERE undoes = ?').get(target.id);
      if (taken) return { status: 'unchanged', decision: target };
    } else {
      target = sql(store, `${DECISION_SELECT} WHERE run_id = ? AND ${LIVE} ORDER BY id DESC LIMIT 1`).get(run.id) as Decision | undefined;
      if (!target) return { status: 'none' };
    }
    insertDecision(store, {
      taskId: target.taskId,
      runId: run.id,
      itemId: target.itemId,
      reviewer: o.reviewer,
      action: 'undo',
      label: null,
      undoes: target.id,
      source: 'page',
      sourceKey: null,
      shown: null,
    });
    if (target.action === 'label') {
      sql(store, 'DELETE FROM labels WHERE run_id = ? AND request_key = ?').run(run.id, labelKey(target.id));
      addToItemsTotal(store, run.id, -1);
    }
    return { status: 'undone', decision: target };
  });
}

/** Live label and skip decisions, oldest first: of one reviewer, or of everyone. */
export function liveDecisions(store: Store, taskId: number, reviewer?: string): Decision[] {
  store.flush();
  return (
    reviewer === undefined
      ? sql(store, `${DECISION_SELECT} WHERE task_id = ? AND ${LIVE} ORDER BY id`).all(taskId)
      : sql(store, `${DECISION_SELECT} WHERE task_id = ? AND reviewer = ? AND ${LIVE} ORDER BY id`).all(taskId, reviewer)
  ) as Decision[];
}

/**
 * One reviewer's log on the task after decision `afterId` (labels, skips and undos), oldest first: what a
 * long-lived reader (the review session) applies to what it read before, rather than reading everything again.
 */
export function decisionsSince(store: Store, taskId: number, reviewer: string, afterId: number): Decision[] {
  store.flush();
  return sql(store, `${DECISION_SELECT} WHERE task_id = ? AND reviewer = ? AND id > ? ORDER BY id`).all(
    taskId,
    reviewer,
    afterId,
  ) as Decision[];
}

/** Every reviewer's live labels on the task, oldest first. */
export function humanLabels(store: Store, taskId: number): HumanLabel[] {
  return liveDecisions(store, taskId)
    .filter((d) => d.action === 'label')
    .map((d) => ({ itemId: d.itemId, reviewer: d.reviewer, runId: d.runId, label: d.label!, decisionId: d.id, createdAt: d.createdAt }));
}

/** The whole log of a task (labels, skips and undos), oldest first. */
export function decisionLog(store: Store, taskId: number): Decision[] {
  store.flush();
  return sql(store, `${DECISION_SELECT} WHERE task_id = ? ORDER BY id`).all(taskId) as Decision[];
}

function liveOn(store: Store, runId: number, itemId: number): Decision[] {
  return sql(store, `${DECISION_SELECT} WHERE run_id = ? AND item_id = ? AND ${LIVE} ORDER BY id`).all(runId, itemId) as Decision[];
}

function insertDecision(store: Store, d: Omit<Decision, 'id' | 'createdAt'>): Decision {
  const createdAt = now();
  const info = sql(
    store,
    `INSERT INTO reviews (task_id, run_id, item_id, reviewer, action, label, undoes, source, source_key, shown, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  ).run(d.taskId, d.runId, d.itemId, d.reviewer, d.action, d.label, d.undoes, d.source, d.sourceKey, d.shown, createdAt);
  return { ...d, id: Number(info.lastInsertRowid), createdAt };
}

/** The label row a label decision stands for. */
export function labelKey(decisionId: number): string {
  return `review:${decisionId}`;
}

function insertHumanLabel(store: Store, d: Decision): void {
  store.insertLabel(
    unpaidLabel({ itemId: d.itemId, runId: d.runId, requestKey: labelKey(d.id), label: d.label, softMethod: HUMAN_SOFT_METHOD }),
  );
  addToItemsTotal(store, d.runId, 1);
}

/**
 * A human run's item count is how many items it has a live label on: one more per stored label, one less per
 * undone one (a reviewer has at most one live label per item), not a recount that grows with the run.
 */
function addToItemsTotal(store: Store, runId: number, delta: 1 | -1): void {
  sql(store, 'UPDATE runs SET items_total = items_total + ? WHERE id = ?').run(delta, runId);
}
