import Database from 'better-sqlite3';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { DistilleryError, InputError } from '../errors.ts';
import type { ItemInput } from '../input/types.ts';
import type { Task } from '../task/task.ts';
import { MIGRATIONS, SCHEMA_VERSION } from './schema.ts';
import { WriterThread, type WriterRow } from './writer.ts';

export type DB = Database.Database;

export interface TaskRow {
  id: number;
  name: string;
  labels: string[];
  input_kind: string;
}

export interface ItemRow {
  id: number;
  task_id: number;
  ext_id: string;
  hash: string;
  input: string;
  image: string | null;
  gold: string | null;
  split: string;
}

export interface RunRow {
  id: number;
  task_id: number;
  kind: string;
  teacher: string;
  base_url: string | null;
  prompt_version: string | null;
  source: string | null;
  source_hash: string | null;
  config_hash: string;
  params: string;
  labels: string;
  status: string;
  items_total: number;
  /** HTTP requests sent, retries included (derived). */
  requests: number;
  /** Requests that got no answer (derived). */
  errors: number;
  started_at: string;
  ended_at: string | null;
  message: string | null;
}

export interface ResponseRecord {
  requestKey: string;
  runId: number;
  itemId: number;
  status: 'ok' | 'invalid';
  body: unknown;
  promptTokens: number;
  completionTokens: number;
  cost: number;
  latencyMs: number;
}

export interface LabelRecord {
  itemId: number;
  runId: number;
  requestKey: string;
  status: 'ok' | 'failed';
  label: string | null;
  soft: Buffer | null;
  softMethod: string;
  sparse: boolean;
  raw: string | null;
  promptTokens: number;
  completionTokens: number;
  cost: number;
  latencyMs: number;
  attempts: number;
  error: string | null;
}

/**
 * A valid label nobody was paid for (a white-box teacher's, a reviewer's, one restored from an export): no tokens,
 * no latency, no error; the caller names what differs.
 */
export function unpaidLabel(
  l: Pick<LabelRecord, 'itemId' | 'runId' | 'requestKey' | 'label' | 'softMethod'> & Partial<LabelRecord>,
): LabelRecord {
  return {
    status: 'ok',
    soft: null,
    sparse: false,
    raw: null,
    promptTokens: 0,
    completionTokens: 0,
    cost: 0,
    latencyMs: 0,
    attempts: 0,
    error: null,
    ...l,
  };
}

/** A label row found by its request key (Store.answersByKeys). */
export interface KeyLabelRow {
  request_key: string;
  item_id: number;
  run_id: number;
  status: 'ok' | 'failed';
  label: string | null;
  soft: Buffer | null;
}

/** A paid answer found by its request key (Store.answersByKeys). */
export interface KeyResponseRow {
  request_key: string;
  status: 'ok' | 'invalid';
  prompt_tokens: number;
  completion_tokens: number;
  cost: number;
  latency_ms: number;
}

/** An item as the targets and the export read it: no hash, no timestamps. */
export interface TaskItemRow {
  id: number;
  ext_id: string;
  gold: string | null;
  split: string;
  input: string;
  image: string | null;
}

/** A teacher's latest valid label on an item, with what the export also carries. */
export interface LatestLabelRow {
  item_id: number;
  run_id: number;
  label: string;
  soft: Buffer | null;
  cost: number;
  request_key: string;
}

export interface ImportResult {
  taskRow: TaskRow;
  added: number;
  existing: number;
  /** Internal ids of every item of the input, in input order. */
  itemIds: number[];
}

const now = () => new Date().toISOString();

/** A run with its request counters, derived from what was stored rather than kept twice. */
const RUN_SELECT = `SELECT r.*,
  (SELECT count(*) FROM responses x WHERE x.run_id = r.id) + (SELECT count(*) FROM request_errors e WHERE e.run_id = r.id) AS requests,
  (SELECT count(*) FROM request_errors e WHERE e.run_id = r.id) AS errors
  FROM runs r`;

/**
 * The SQLite store: the only module that writes SQL. One connection per
 * process, WAL so that readers (status, export) never block the labeler.
 */
export class Store {
  /** The connection: private to the store (modules under src/store/ reach it through `Store.sqlOf`). */
  readonly #db: DB;
  /** While a labeling pass runs: the thread its answers are committed by (see startWriterThread). */
  #writer?: WriterThread;
  private pendingWrites: Array<() => void> = [];
  private flushScheduled = false;

  private constructor(
    db: DB,
    readonly path: string,
  ) {
    this.#db = db;
  }

  /**
   * The connection, for the store's own modules under src/store/ (status, relabels, lease, the batch ledger) that keep
   * their SQL next to their types. eslint forbids it anywhere else: callers get a Store method instead.
   */
  static sqlOf(store: Store): DB {
    return store.#db;
  }

  /** False once closed. */
  get isOpen(): boolean {
    return this.#db.open;
  }

  static open(path: string, opts: { readonly?: boolean } = {}): Store {
    let db: DB;
    try {
      db = new Database(path, { readonly: opts.readonly === true, fileMustExist: opts.readonly === true });
    } catch (e) {
      throw new DistilleryError(`${path}: cannot open database (${(e as Error).message})`);
    }
    db.pragma('busy_timeout = 10000');
    if (!opts.readonly) {
      db.pragma('journal_mode = WAL');
      // NORMAL in WAL mode: a commit survives a process kill; only an OS crash may lose the last ones.
      db.pragma('synchronous = NORMAL');
      // Checkpoint (the only fsync in WAL + NORMAL) every ~16 MiB of WAL rather than every 4 MiB:
      // pages written by many small commits coalesce before they go to the database file.
      db.pragma('wal_autocheckpoint = 4000');
      db.pragma('foreign_keys = ON');
      // 64 MiB of page cache: index look-ups per item stay in memory as the database grows.
      db.pragma('cache_size = -65536');
    }
    const store = new Store(db, path);
    store.migrate(opts.readonly ?? false);
    return store;
  }

  private migrate(readonly: boolean): void {
    const version = this.#db.pragma('user_version', { simple: true }) as number;
    if (version > SCHEMA_VERSION) {
      throw new DistilleryError(
        `${this.path}: database schema v${version} is newer than this distillery (v${SCHEMA_VERSION}); upgrade distillery`,
      );
    }
    if (version === SCHEMA_VERSION) return;
    if (readonly) throw new DistilleryError(`${this.path}: database schema v${version} needs migrating; run a writing command first`);
    for (let v = version; v < SCHEMA_VERSION; v++) {
      this.#db
        .transaction(() => {
          this.#db.exec(MIGRATIONS[v]);
          this.#db.pragma(`user_version = ${v + 1}`);
        })
        .immediate();
    }
  }

  close(): void {
    this.flush();
    // A writer thread still running (its pass did not stop it) has committed everything: let it go with the process.
    this.#writer = undefined;
    this.#db.close();
  }

  /** Fold the WAL into the database file and truncate it (after a bulk write, so that a copy of the file is whole). */
  checkpoint(): void {
    this.flush();
    this.#db.pragma('wal_checkpoint(TRUNCATE)');
  }

  /**
   * Synchronous work in one write transaction (BEGIN IMMEDIATE; a savepoint when already inside one): committed when
   * `work` returns, rolled back when it throws.
   */
  transactionSync<T>(work: () => T): T {
    return this.#db.transaction(work).immediate();
  }

  // ---- tasks -------------------------------------------------------------

  /** The task's row, created on first use. A task name keeps its label list for life. */
  ensureTask(task: Task): TaskRow {
    const row = this.findTask(task.name);
    if (row) {
      if (JSON.stringify(row.labels) !== JSON.stringify(task.labels) || row.input_kind !== task.input) {
        throw new InputError(
          task.path,
          undefined,
          `task "${task.name}" is already in the database with labels ${JSON.stringify(row.labels)} (${row.input_kind}); changing the labels or input kind needs a new task name`,
        );
      }
      return row;
    }
    const info = this.#db
      .prepare('INSERT INTO tasks (name, labels, input_kind, created_at) VALUES (?, ?, ?, ?)')
      .run(task.name, JSON.stringify(task.labels), task.input, now());
    return { id: Number(info.lastInsertRowid), name: task.name, labels: task.labels, input_kind: task.input };
  }

  findTask(name: string): TaskRow | undefined {
    const row = this.#db.prepare('SELECT id, name, labels, input_kind FROM tasks WHERE name = ?').get(name) as any;
    return row ? { ...row, labels: JSON.parse(row.labels) } : undefined;
  }

  listTasks(): TaskRow[] {
    return (this.#db.prepare('SELECT id, name, labels, input_kind FROM tasks ORDER BY id').all() as any[]).map((r) => ({
      ...r,
      labels: JSON.parse(r.labels),
    }));
  }

  // ---- items -------------------------------------------------------------

  /**
   * Import items (and the task) in one transaction: a bad row anywhere leaves
   * the database as it was. Items already present (same content) are not
   * added again. `dryRun` rolls everything back after `beforeCommit` has seen it.
   */
  async importItems<T = void>(
    task: Task,
    items: AsyncIterable<ItemInput>,
    opts: { dryRun?: boolean; beforeCommit?: (r: ImportResult) => Promise<T> } = {},
  ): Promise<ImportResult & { extra?: T }> {
    const byHash = this.#db.prepare('SELECT id, ext_id FROM items WHERE task_id = ? AND hash = ?');
    const byExtId = this.#db.prepare('SELECT id, hash FROM items WHERE task_id = ? AND ext_id = ?');
    const insertItem = this.#db.prepare(
      'INSERT INTO items (task_id, ext_id, hash, input, image, gold, split, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
    );
    const insertBlob = this.#db.prepare('INSERT OR IGNORE INTO blobs (sha256, mime, bytes) VALUES (?, ?, ?)');
    const result: ImportResult & { extra?: T } = { added: 0, existing: 0, itemIds: [], taskRow: undefined as unknown as TaskRow };
    const createdAt = now();
    return this.transaction(async (tx) => {
      result.taskRow = this.ensureTask(task);
      const taskId = result.taskRow.id;
      for await (const item of items) {
        const same = byHash.get(taskId, item.hash) as { id: number } | undefined;
        if (same) {
          result.existing++;
          result.itemIds.push(same.id);
          continue;
        }
        const clash = byExtId.get(taskId, item.id) as { id: number } | undefined;
        if (clash) {
          throw new InputError(
            item.source.file,
            item.source.line,
            `id "${item.id}" already names an item with different content (give each row a unique id with --id-field)`,
          );
        }
        if (item.image) insertBlob.run(item.image.sha256, item.image.mime, item.image.bytes);
        const info = insertItem.run(
          taskId,
          item.id,
          item.hash,
          JSON.stringify(item.fields),
          item.image?.sha256 ?? null,
          item.gold ?? null,
          item.split,
          createdAt,
        );
        result.added++;
        result.itemIds.push(Number(info.lastInsertRowid));
      }
      if (opts.beforeCommit) result.extra = await opts.beforeCommit(result);
      if (opts.dryRun) tx.rollback();
      return result;
    });
  }

  /**
   * One write transaction around async work (reading a file, say): committed
   * when `work` resolves, rolled back when it throws or calls `rollback()`.
   * Queued writes are flushed first; nothing else may write meanwhile.
   */
  async transaction<T>(work: (tx: { rollback(): void }) => Promise<T>): Promise<T> {
    this.flush();
    let rolledBack = false;
    this.#db.exec('BEGIN IMMEDIATE');
    try {
      const result = await work({ rollback: () => (rolledBack = true) });
      this.#db.exec(rolledBack ? 'ROLLBACK' : 'COMMIT');
      return result;
    } catch (e) {
      if (this.#db.inTransaction) this.#db.exec('ROLLBACK');
      throw e;
    }
  }

  /** Items of a task after `afterId`, in id order: keyset paging keeps every page O(page). */
  itemPage(taskId: number, afterId: number, limit: number): ItemRow[] {
    return this.#db
      .prepare('SELECT * FROM items WHERE task_id = ? AND id > ? ORDER BY id LIMIT ?')
      .all(taskId, afterId, limit) as ItemRow[];
  }

  itemsByIds(ids: number[]): ItemRow[] {
    const get = this.#db.prepare('SELECT * FROM items WHERE id = ?');
    return ids.map((id) => get.get(id) as ItemRow);
  }

  itemIdByExtId(taskId: number, extId: string): number | undefined {
    return (this.stmt('SELECT id FROM items WHERE task_id = ? AND ext_id = ?').get(taskId, extId) as { id: number } | undefined)?.id;
  }

  /** text -> item id for a text task, for matching rows that name their item by text. */
  itemIdsByText(taskId: number): Map<string, number> {
    const map = new Map<string, number>();
    for (const r of this.#db
      .prepare(`SELECT id, json_extract(input, '$.text') AS text FROM items WHERE task_id = ?`)
      .iterate(taskId) as Iterable<{ id: number; text: string | null }>) {
      if (r.text !== null && !map.has(r.text)) map.set(r.text, r.id);
    }
    return map;
  }

  /** The latest run with this configuration that completed (an ingest already done). */
  completedRun(configHash: string): RunRow | undefined {
    return this.#db
      .prepare(`${RUN_SELECT} WHERE r.config_hash = ? AND r.status = 'completed' ORDER BY r.id DESC LIMIT 1`)
      .get(configHash) as RunRow | undefined;
  }

  /** Every item of a task in id order (the order they were imported in). */
  taskItemRows(taskId: number): TaskItemRow[] {
    return this.stmt('SELECT id, ext_id, gold, split, input, image FROM items WHERE task_id = ? ORDER BY id').all(taskId) as TaskItemRow[];
  }

  /** How many rows each table that import-export fills holds: all 0 in a new or empty database. */
  tableCounts(): { tasks: number; items: number; runs: number; blobs: number } {
    return this.stmt(
      'SELECT (SELECT count(*) FROM tasks) AS tasks, (SELECT count(*) FROM items) AS items, (SELECT count(*) FROM runs) AS runs, (SELECT count(*) FROM blobs) AS blobs',
    ).get() as { tasks: number; items: number; runs: number; blobs: number };
  }

  countItems(taskId: number): number {
    return (this.#db.prepare('SELECT count(*) AS n FROM items WHERE task_id = ?').get(taskId) as { n: number }).n;
  }

  blob(sha256: string): { mime: string; bytes: Buffer } {
    const row = this.#db.prepare('SELECT mime, bytes FROM blobs WHERE sha256 = ?').get(sha256) as
      { mime: string; bytes: Buffer } | undefined;
    if (!row) throw new DistilleryError(`${this.path}: image ${sha256} is missing from the database`);
    return row;
  }

  // ---- runs --------------------------------------------------------------

  /** When the last label of a run was written (null: none). */
  lastLabelAt(runId: number): string | null {
    return (this.stmt('SELECT max(created_at) AS t FROM labels WHERE run_id = ?').get(runId) as { t: string | null }).t;
  }

  /**
   * Per item, the latest valid label over these runs (the largest label id
   * wins): what a teacher of several runs says about each item.
   */
  latestLabels(runIds: number[]): IterableIterator<LatestLabelRow> {
    return this.#db
      .prepare(
        `SELECT item_id, run_id, label, soft, cost, request_key FROM labels
         WHERE id IN (SELECT max(id) FROM labels WHERE status = 'ok' AND run_id IN (${runIds.map(() => '?').join(',')}) GROUP BY item_id)`,
      )
      .iterate(...runIds) as IterableIterator<LatestLabelRow>;
  }

  /**
   * A throwaway in-memory copy of one task as it was after run `runId`: the
   * task, its runs up to `runId`, the items created by `cutoff` and the labels
   * of both (of a human run, those made by `cutoff`). Blobs are not copied (images are read from this store); only the
   * copy is written to.
   */
  snapshotUntil(task: TaskRow, runId: number, cutoff: string): Store {
    const snap = Store.open(':memory:');
    try {
      snap.#db.pragma('foreign_keys = OFF'); // blobs stay behind
      snap.#db.prepare('ATTACH DATABASE ? AS src').run(this.path);
      try {
        snap.#db.transaction(() => {
          snap.#db.prepare('INSERT INTO main.tasks SELECT * FROM src.tasks WHERE id = ?').run(task.id);
          snap.#db
            .prepare('INSERT INTO main.items SELECT * FROM src.items WHERE task_id = ? AND created_at <= ? ORDER BY id')
            .run(task.id, cutoff);
          snap.#db.prepare('INSERT INTO main.runs SELECT * FROM src.runs WHERE task_id = ? AND id <= ? ORDER BY id').run(task.id, runId);
          // A reviewer's human run stays open for good: of its labels, only the decisions made by the cutoff.
          snap.#db
            .prepare(
              `INSERT INTO main.labels SELECT * FROM src.labels WHERE run_id IN (SELECT id FROM main.runs) AND item_id IN (SELECT id FROM main.items)
                 AND (run_id NOT IN (SELECT id FROM main.runs WHERE kind = 'human') OR created_at <= ?) ORDER BY id`,
            )
            .run(cutoff);
        })();
      } finally {
        snap.#db.exec('DETACH DATABASE src');
      }
    } catch (e) {
      snap.close();
      throw e;
    }
    return snap;
  }

  createRun(
    r: Pick<RunRow, 'task_id' | 'kind' | 'teacher' | 'base_url' | 'prompt_version' | 'config_hash' | 'params' | 'labels' | 'items_total'> &
      Partial<Pick<RunRow, 'source' | 'source_hash'>>,
  ): RunRow {
    this.flush();
    const info = this.#db
      .prepare(
        `INSERT INTO runs (task_id, kind, teacher, base_url, prompt_version, source, source_hash, config_hash, params, labels, status, items_total, started_at)
         VALUES (@task_id, @kind, @teacher, @base_url, @prompt_version, @source, @source_hash, @config_hash, @params, @labels, 'running', @items_total, @started_at)`,
      )
      .run({ source: null, source_hash: null, ...r, started_at: now() });
    return this.run(Number(info.lastInsertRowid))!;
  }

  /** The latest run with this configuration that did not complete: the one a rerun resumes. */
  resumableRun(configHash: string): RunRow | undefined {
    return this.#db
      .prepare(`${RUN_SELECT} WHERE r.config_hash = ? AND r.status != 'completed' ORDER BY r.id DESC LIMIT 1`)
      .get(configHash) as RunRow | undefined;
  }

  reopenRun(runId: number, itemsTotal: number): void {
    this.flush();
    this.#db
      .prepare(`UPDATE runs SET status = 'running', ended_at = NULL, message = NULL, items_total = max(items_total, ?) WHERE id = ?`)
      .run(itemsTotal, runId);
  }

  setItemsTotal(runId: number, n: number): void {
    this.#db.prepare('UPDATE runs SET items_total = ? WHERE id = ?').run(n, runId);
  }

  /** A run as described, its id and status included: loading an export into an empty database (src/export/import.ts). */
  restoreRun(
    r: Pick<
      RunRow,
      | 'id'
      | 'task_id'
      | 'kind'
      | 'teacher'
      | 'base_url'
      | 'prompt_version'
      | 'source'
      | 'source_hash'
      | 'config_hash'
      | 'params'
      | 'labels'
      | 'status'
      | 'items_total'
    >,
  ): void {
    this.flush();
    const t = now();
    this.#db
      .prepare(
        `INSERT INTO runs (id, task_id, kind, teacher, base_url, prompt_version, source, source_hash, config_hash, params, labels, status, items_total, started_at, ended_at)
         VALUES (@id, @task_id, @kind, @teacher, @base_url, @prompt_version, @source, @source_hash, @config_hash, @params, @labels, @status, @items_total, @started_at, @ended_at)`,
      )
      .run({ ...r, started_at: t, ended_at: r.status === 'running' ? null : t });
  }

  finishRun(runId: number, status: 'completed' | 'stopped' | 'interrupted' | 'failed', message: string | null): void {
    this.flush();
    this.#db.prepare('UPDATE runs SET status = ?, ended_at = ?, message = ? WHERE id = ?').run(status, now(), message, runId);
  }

  run(id: number): RunRow | undefined {
    this.flush();
    return this.#db.prepare(`${RUN_SELECT} WHERE r.id = ?`).get(id) as RunRow | undefined;
  }

  runs(taskId?: number): RunRow[] {
    this.flush();
    return (
      taskId === undefined
        ? this.#db.prepare(`${RUN_SELECT} ORDER BY r.id`).all()
        : this.#db.prepare(`${RUN_SELECT} WHERE r.task_id = ? ORDER BY r.id`).all(taskId)
    ) as RunRow[];
  }

  /**
   * The default max_tokens of a label set: as first computed in this database (`compute` runs the tokenizer), so a
   * later run neither loads the tokenizer nor gets another value should it change. `remember: false` (a dry run)
   * reads but writes nothing.
   */
  defaultMaxTokens(labels: readonly string[], compute: () => number, opts: { remember?: boolean } = {}): number {
    const key = JSON.stringify(labels);
    const row = this.stmt('SELECT max_tokens FROM default_max_tokens WHERE labels = ?').get(key) as { max_tokens: number } | undefined;
    if (row) return row.max_tokens;
    const n = compute();
    if (opts.remember !== false) {
      this.stmt('INSERT OR IGNORE INTO default_max_tokens (labels, max_tokens, created_at) VALUES (?, ?, ?)').run(key, n, now());
    }
    return n;
  }

  // ---- the idempotency ledger -------------------------------------------

  /** Whether this key already has a label row (ok or failed) in some run. */
  hasLabel(requestKey: string): { ok: boolean; failed: boolean } {
    const rows = this.stmt('SELECT DISTINCT status FROM labels WHERE request_key = ?').all(requestKey) as { status: string }[];
    return { ok: rows.some((r) => r.status === 'ok'), failed: rows.some((r) => r.status === 'failed') };
  }

  /** Stored valid answers for a key, oldest first (bodies inflated). */
  okResponses(requestKey: string): Array<{ body: any; promptTokens: number; completionTokens: number; cost: number; latencyMs: number }> {
    return (
      this.#db
        .prepare(
          `SELECT body, prompt_tokens, completion_tokens, cost, latency_ms FROM responses WHERE request_key = ? AND status = 'ok' ORDER BY id`,
        )
        .all(requestKey) as any[]
    ).map((r) => ({
      body: JSON.parse(inflateRawSync(r.body).toString('utf8')),
      promptTokens: r.prompt_tokens,
      completionTokens: r.completion_tokens,
      cost: r.cost,
      latencyMs: r.latency_ms,
    }));
  }

  /** Items a run has a label row for (ok or failed): what a resumed run already did. */
  labeledItemCount(runId: number): number {
    this.flush();
    return (this.stmt('SELECT count(DISTINCT item_id) AS n FROM labels WHERE run_id = ?').get(runId) as { n: number }).n;
  }

  /**
   * A key's invalid answers in a run, summed, and the body of the last one (inflated; undefined when there is none
   * or it cannot be read): what a label row that settles the key after them totals up.
   */
  invalidAnswers(
    runId: number,
    requestKey: string,
  ): { attempts: number; promptTokens: number; completionTokens: number; cost: number; latencyMs: number; lastBody: unknown } {
    this.flush();
    const rows = this.stmt(
      `SELECT body, prompt_tokens, completion_tokens, cost, latency_ms FROM responses WHERE run_id = ? AND request_key = ? AND status = 'invalid' ORDER BY id`,
    ).all(runId, requestKey) as Array<{ body: Buffer; prompt_tokens: number; completion_tokens: number; cost: number; latency_ms: number }>;
    const t = { attempts: rows.length, promptTokens: 0, completionTokens: 0, cost: 0, latencyMs: 0, lastBody: undefined as unknown };
    for (const r of rows) {
      t.promptTokens += r.prompt_tokens;
      t.completionTokens += r.completion_tokens;
      t.cost += r.cost;
      t.latencyMs += r.latency_ms;
    }
    if (rows.length > 0) {
      try {
        t.lastBody = JSON.parse(inflateRawSync(rows[rows.length - 1].body).toString('utf8'));
      } catch {
        // an unreadable body only loses the raw text of the failed label
      }
    }
    return t;
  }

  /**
   * What is stored under these request keys, in any run: every label row (ok or failed) and every paid answer
   * (valid or invalid, with its tokens, cost and latency), oldest first. A pilot reads its sample back this way,
   * whichever run (a pilot, an earlier label.ts) paid for it.
   */
  answersByKeys(keys: readonly string[]): { labels: KeyLabelRow[]; responses: KeyResponseRow[] } {
    this.flush();
    const out = { labels: [] as KeyLabelRow[], responses: [] as KeyResponseRow[] };
    for (let i = 0; i < keys.length; i += 500) {
      const chunk = keys.slice(i, i + 500);
      const list = chunk.map(() => '?').join(',');
      out.labels.push(
        ...(this.#db
          .prepare(`SELECT request_key, item_id, run_id, status, label, soft FROM labels WHERE request_key IN (${list}) ORDER BY id`)
          .all(...chunk) as KeyLabelRow[]),
      );
      out.responses.push(
        ...(this.#db
          .prepare(
            `SELECT request_key, status, prompt_tokens, completion_tokens, cost, latency_ms FROM responses WHERE request_key IN (${list}) ORDER BY id`,
          )
          .all(...chunk) as KeyResponseRow[]),
      );
    }
    return out;
  }

  /** Cost already spent by a run (all its paid responses). */
  runCost(runId: number): number {
    this.flush();
    return (this.#db.prepare('SELECT coalesce(sum(cost), 0) AS c FROM responses WHERE run_id = ?').get(runId) as { c: number }).c;
  }

  // ---- batched writes ----------------------------------------------------
  // Writes queue up and commit together at the end of the current event-loop
  // turn: one transaction for everything that finished in the same turn, and
  // at most that turn's answers lost if the process is killed.

  // With a writer thread (startWriterThread) these three go to it instead, and commit there in groups.

  recordResponse(r: ResponseRecord): void {
    const w = this.#writer;
    if (w) {
      w.write([
        'response',
        r.requestKey,
        r.runId,
        r.itemId,
        r.status,
        JSON.stringify(r.body),
        r.promptTokens,
        r.completionTokens,
        r.cost,
        r.latencyMs,
        now(),
      ]);
      return;
    }
    this.enqueue(() =>
      this.stmt(
        `INSERT INTO responses (request_key, run_id, item_id, status, body, prompt_tokens, completion_tokens, cost, latency_ms, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ).run(
        r.requestKey,
        r.runId,
        r.itemId,
        r.status,
        deflateRawSync(JSON.stringify(r.body), { level: 1 }),
        r.promptTokens,
        r.completionTokens,
        r.cost,
        r.latencyMs,
        now(),
      ),
    );
  }

  recordLabel(l: LabelRecord): void {
    const w = this.#writer;
    if (!w) return this.enqueue(() => this.insertLabel(l));
    // A copy of exactly its bytes: a pooled Buffer would clone its whole pool into the thread.
    w.write(['label', ...labelValues(l, l.soft ? new Uint8Array(l.soft) : null)]);
  }

  /** Insert a label now, inside the caller's transaction (see `transaction`). */
  insertLabel(l: LabelRecord): void {
    this.stmt(
      `INSERT INTO labels (item_id, run_id, request_key, status, label, soft, soft_method, sparse, raw, prompt_tokens, completion_tokens, cost, latency_ms, attempts, error, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(...labelValues(l, l.soft));
  }

  recordRequestError(e: { runId: number; itemId: number; requestKey: string; reason: string }): void {
    if (this.#writer) return this.#writer.write(['error', e.runId, e.itemId, e.requestKey, e.reason, now()]);
    this.enqueue(() =>
      this.stmt('INSERT INTO request_errors (run_id, item_id, request_key, reason, created_at) VALUES (?, ?, ?, ?, ?)').run(
        e.runId,
        e.itemId,
        e.requestKey,
        e.reason,
        now(),
      ),
    );
  }

  private readonly stmts = new Map<string, Database.Statement>();
  private stmt(sql: string): Database.Statement {
    let s = this.stmts.get(sql);
    if (!s) this.stmts.set(sql, (s = this.#db.prepare(sql)));
    return s;
  }

  private enqueue(write: () => void): void {
    if (this.writeError) throw this.writeError;
    this.pendingWrites.push(write);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => {
        try {
          this.flush();
        } catch {
          // Kept in writeError: the next flush or write (the labeler flushes before every request) reports it.
        }
      });
    }
  }

  /** Set when a commit failed (disk full, I/O error): every later write fails with it, nothing half-saved. */
  private writeError?: DistilleryError;

  /**
   * Hand the answers (responses, labels, request errors) to a writer thread until stopWriterThread: it commits them
   * on its own connection, in groups, off this thread. Only for a database file (a second connection must see it);
   * false, and nothing changes, for `:memory:`.
   */
  startWriterThread(): boolean {
    if (this.#writer) return true;
    if (this.path === ':memory:' || this.#db.memory || this.#db.readonly) return false;
    // The in-thread writes stay selectable (DISTILLERY_WRITER_THREAD=0): bench-label times both in one process.
    if (process.env.DISTILLERY_WRITER_THREAD === '0') return false;
    this.flush();
    this.#writer = new WriterThread(this.path);
    return true;
  }

  /** Commit what the writer thread holds and end it; the store writes on its own connection again. */
  async stopWriterThread(): Promise<void> {
    const w = this.#writer;
    if (!w) return;
    this.#writer = undefined;
    await w.close();
  }

  /**
   * Resolves once every answer recorded so far is committed: the labeler awaits it before it starts a request. One
   * turn of the event loop first, always: answers that arrived together commit in one transaction, and whatever is
   * pending (a Ctrl-C, a stop) is seen before the request starts. Then, with a writer thread, the wait for its group
   * commit; without one, a flush.
   */
  async durable(): Promise<void> {
    await new Promise<void>((resolve) => setImmediate(resolve));
    if (this.#writer) return this.#writer.durable();
    this.flush();
  }

  /** Commit every queued write now, in one transaction (with a writer thread: wait until it has committed them). */
  flush(): void {
    if (this.#writer) {
      // The thread's commit would wait for this connection's write lock, and this thread for the commit.
      if (this.#db.inTransaction) throw new DistilleryError('internal: flush inside a transaction while a writer thread holds writes');
      this.#writer.flushSync();
      return;
    }
    this.flushScheduled = false;
    if (this.writeError) throw this.writeError;
    if (this.pendingWrites.length === 0) return;
    const writes = this.pendingWrites;
    try {
      this.#db.transaction(() => writes.forEach((w) => w())).immediate();
      this.pendingWrites = [];
    } catch (e) {
      this.writeError = new DistilleryError(
        `${this.path}: cannot write (${(e as Error).message}); ${writes.length} record(s) of the last moment were not saved, everything before them is`,
      );
      throw this.writeError;
    }
  }
}

type LabelValues = Extract<WriterRow, ['label', ...unknown[]]> extends ['label', ...infer V] ? V : never;

/** A label's column values, in the order of insertLabel's INSERT (the writer thread runs the same statement). */
function labelValues(l: LabelRecord, soft: Uint8Array | null): LabelValues {
  const { itemId, runId, requestKey, status, label, softMethod, raw, promptTokens, completionTokens, cost, latencyMs } = l;
  return [
    itemId,
    runId,
    requestKey,
    status,
    label,
    soft,
    softMethod,
    l.sparse ? 1 : 0,
    raw,
    promptTokens,
    completionTokens,
    cost,
    latencyMs,
    l.attempts,
    l.error,
    now(),
  ];
}
