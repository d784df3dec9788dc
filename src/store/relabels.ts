/**
 * The relabel tables (schema v2): a relabel pass's stored selection, its state
 * and its drift. SQL for relabeling lives here; src/relabel/ decides what to
 * select and runs the passes.
 */
import { randomUUID } from 'node:crypto';
import { Store } from './store.ts';

export interface RelabelRow {
  id: number;
  task_id: number;
  salt: string;
  base_config: string;
  run_id: number | null;
  policies: string;
  status: string;
  drift: string | null;
  created_at: string;
  ended_at: string | null;
}

/** How the relabeled answers compare with the labels they replace. */
export interface Drift {
  /** Items with both an old and a new label. */
  compared: number;
  changed: number;
  /** old label → new label → count (only pairs that occur). */
  confusion: Record<string, Record<string, number>>;
}

/** An item's latest valid label from an LLM run of the task. */
export interface CurrentLabel {
  labelId: number;
  itemId: number;
  label: string;
  soft: Buffer | null;
  createdAt: string;
  model: string;
  promptVersion: string | null;
  /** Set when the label came from a relabel run: that relabel's base config. */
  relabelConfig: string | null;
}

export function currentLabels(store: Store, taskId: number): Map<number, CurrentLabel> {
  store.flush();
  const rows = Store.sqlOf(store)
    .prepare(
      `SELECT l.id AS labelId, l.item_id AS itemId, l.label, l.soft, l.created_at AS createdAt, r.teacher AS model,
              r.prompt_version AS promptVersion, rl.base_config AS relabelConfig
       FROM labels l JOIN runs r ON r.id = l.run_id LEFT JOIN relabels rl ON rl.run_id = r.id
       WHERE l.id IN (SELECT max(l2.id) FROM labels l2 JOIN runs r2 ON r2.id = l2.run_id
                      WHERE r2.task_id = ? AND r2.kind = 'llm' AND l2.status = 'ok' GROUP BY l2.item_id)`,
    )
    .all(taskId) as CurrentLabel[];
  return new Map(rows.map((r) => [r.itemId, r]));
}

export function unfinishedRelabel(store: Store, taskId: number, baseConfig: string): RelabelRow | undefined {
  return Store.sqlOf(store)
    .prepare(`SELECT * FROM relabels WHERE task_id = ? AND base_config = ? AND status != 'completed' ORDER BY id DESC LIMIT 1`)
    .get(taskId, baseConfig) as RelabelRow | undefined;
}

export function relabelItems<R extends string>(store: Store, relabelId: number): { itemId: number; reason: R }[] {
  return Store.sqlOf(store)
    .prepare('SELECT item_id AS itemId, reason FROM relabel_items WHERE relabel_id = ? ORDER BY rank')
    .all(relabelId) as { itemId: number; reason: R }[];
}

/** The selection, in one transaction, before any request: what a resume works from. */
export function recordSelection(
  store: Store,
  taskId: number,
  baseConfig: string,
  policies: string[],
  picked: { itemId: number; reason: string; prevLabelId: number }[],
): RelabelRow {
  store.flush();
  return Store.sqlOf(store)
    .transaction(() => {
      const info = Store.sqlOf(store)
        .prepare(`INSERT INTO relabels (task_id, salt, base_config, policies, status, created_at) VALUES (?, ?, ?, ?, 'selected', ?)`)
        .run(taskId, randomUUID(), baseConfig, JSON.stringify(policies), new Date().toISOString());
      const id = Number(info.lastInsertRowid);
      const insert = Store.sqlOf(store).prepare(
        'INSERT INTO relabel_items (relabel_id, item_id, reason, rank, prev_label_id) VALUES (?, ?, ?, ?, ?)',
      );
      picked.forEach((p, rank) => insert.run(id, p.itemId, p.reason, rank, p.prevLabelId));
      return relabelRow(store, id)!;
    })
    .immediate();
}

export function relabelRow(store: Store, id: number): RelabelRow | undefined {
  return Store.sqlOf(store).prepare('SELECT * FROM relabels WHERE id = ?').get(id) as RelabelRow | undefined;
}

export function setRelabelRun(store: Store, relabelId: number, runId: number): void {
  Store.sqlOf(store).prepare(`UPDATE relabels SET run_id = ?, status = 'running' WHERE id = ?`).run(runId, relabelId);
}

export function finishRelabel(store: Store, relabelId: number, status: string, drift: Drift | undefined): void {
  Store.sqlOf(store)
    .prepare(`UPDATE relabels SET status = ?, drift = ?, ended_at = CASE WHEN ? = 'completed' THEN ? ELSE NULL END WHERE id = ?`)
    .run(status, drift ? JSON.stringify(drift) : null, status, new Date().toISOString(), relabelId);
}

/** Old label (the one each item had when selected) against the new one from the relabel run. */
export function measureDrift(store: Store, relabelId: number, runId: number): Drift {
  store.flush();
  const pairs = Store.sqlOf(store)
    .prepare(
      `SELECT old.label AS old, new.label AS new
       FROM relabel_items ri
       JOIN labels old ON old.id = ri.prev_label_id
       JOIN labels new ON new.id = (SELECT max(id) FROM labels WHERE run_id = ? AND item_id = ri.item_id AND status = 'ok')
       WHERE ri.relabel_id = ?`,
    )
    .all(runId, relabelId) as { old: string; new: string }[];
  const drift: Drift = { compared: pairs.length, changed: 0, confusion: {} };
  for (const p of pairs) {
    if (p.old !== p.new) drift.changed++;
    const row = (drift.confusion[p.old] ??= {});
    row[p.new] = (row[p.new] ?? 0) + 1;
  }
  return drift;
}
