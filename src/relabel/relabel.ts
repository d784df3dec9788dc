/**
 * One relabel pass: choose the items (policy.ts), ask the teacher again under a
 * fresh key salt, and record what changed. The selection is stored before the
 * first request, so a pass that crashes or hits its cost cap is resumed — same
 * items, same salt, nothing paid twice — by the next invocation with the same
 * teacher settings, before anything new is selected.
 */
import { randomUUID } from 'node:crypto';
import { configHash, type LabelOptions, type LabelResult } from '../label/labeler.ts';
import type { Store } from '../store/store.ts';
import { policyName, selectItems, type Policy, type Reason, type SelectContext } from './policy.ts';

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

export interface RelabelOptions {
  /** The labeling pass over the selected items, without itemIds, salt or hooks (set here). */
  label: LabelOptions;
  policies: Policy[];
  /** Live (runLabeling) or the Batch API: same contract. */
  run: (o: LabelOptions) => Promise<LabelResult>;
  student?: SelectContext['student'];
  limit?: number;
  now?: Date;
  /** Select and report, send nothing, write nothing. */
  dryRun?: boolean;
}

export interface RelabelOutcome {
  relabel?: RelabelRow;
  resumed: boolean;
  selected: Record<Reason, number>;
  /** The selected items, most useful first. */
  itemIds: number[];
  result?: LabelResult;
  drift?: Drift;
}

const countReasons = (reasons: Reason[]): Record<Reason, number> => {
  const c: Record<Reason, number> = { disagree: 0, 'low-confidence': 0, changed: 0, stale: 0 };
  for (const r of reasons) c[r]++;
  return c;
};

export async function relabelOnce(o: RelabelOptions): Promise<RelabelOutcome> {
  const { store, taskRow, task, settings } = o.label;
  const baseConfig = configHash(task, { ...settings, keySalt: undefined });

  const unfinished = store.db
    .prepare(`SELECT * FROM relabels WHERE task_id = ? AND base_config = ? AND status != 'completed' ORDER BY id DESC LIMIT 1`)
    .get(taskRow.id, baseConfig) as RelabelRow | undefined;
  let relabel: RelabelRow;
  let itemIds: number[];
  let reasons: Reason[];
  if (unfinished) {
    const rows = store.db.prepare('SELECT item_id, reason FROM relabel_items WHERE relabel_id = ? ORDER BY rank').all(unfinished.id) as { item_id: number; reason: Reason }[];
    relabel = unfinished;
    itemIds = rows.map((r) => r.item_id);
    reasons = rows.map((r) => r.reason);
    if (o.dryRun) return { relabel, resumed: true, selected: countReasons(reasons), itemIds };
  } else {
    const picked = selectItems(store, taskRow, o.policies, {
      model: settings.model,
      promptVersion: task.version,
      baseConfig,
      now: o.now ?? new Date(),
      student: o.student,
      limit: o.limit,
    });
    reasons = picked.map((p) => p.reason);
    if (picked.length === 0 || o.dryRun) return { resumed: false, selected: countReasons(reasons), itemIds: picked.map((p) => p.itemId) };
    relabel = recordSelection(store, taskRow.id, baseConfig, o.policies, picked);
    itemIds = picked.map((p) => p.itemId);
  }

  const result = await o.run({
    ...o.label,
    settings: { ...settings, keySalt: relabel.salt },
    itemIds,
    limit: undefined, // the selection is the limit
    runParams: { ...o.label.runParams, relabel: { id: relabel.id, policies: JSON.parse(relabel.policies) } },
    onRunOpened: (run) => {
      store.db.prepare(`UPDATE relabels SET run_id = ?, status = 'running' WHERE id = ?`).run(run.id, relabel.id);
      o.label.onRunOpened?.(run);
    },
  });
  const finished = relabelStatus(result);
  const drift = result.run ? measureDrift(store, relabel.id, result.run.id) : undefined;
  store.db
    .prepare(`UPDATE relabels SET status = ?, drift = ?, ended_at = CASE WHEN ? = 'completed' THEN ? ELSE NULL END WHERE id = ?`)
    .run(finished, drift ? JSON.stringify(drift) : null, finished, new Date().toISOString(), relabel.id);
  return { relabel: relabelRow(store, relabel.id), resumed: unfinished !== undefined, selected: countReasons(reasons), itemIds, result, drift };
}

function relabelStatus(r: LabelResult): string {
  // Every selected item already answered under this salt: the pass is complete.
  return r.status === 'nothing-to-do' ? 'completed' : r.status;
}

function recordSelection(store: Store, taskId: number, baseConfig: string, policies: Policy[], picked: ReturnType<typeof selectItems>): RelabelRow {
  store.flush();
  return store.db.transaction(() => {
    const info = store.db
      .prepare(`INSERT INTO relabels (task_id, salt, base_config, policies, status, created_at) VALUES (?, ?, ?, ?, 'selected', ?)`)
      .run(taskId, randomUUID(), baseConfig, JSON.stringify(policies.map(policyName)), new Date().toISOString());
    const id = Number(info.lastInsertRowid);
    const insert = store.db.prepare('INSERT INTO relabel_items (relabel_id, item_id, reason, rank, prev_label_id) VALUES (?, ?, ?, ?, ?)');
    picked.forEach((p, rank) => insert.run(id, p.itemId, p.reason, rank, p.prevLabelId));
    return relabelRow(store, id)!;
  }).immediate();
}

export function relabelRow(store: Store, id: number): RelabelRow | undefined {
  return store.db.prepare('SELECT * FROM relabels WHERE id = ?').get(id) as RelabelRow | undefined;
}

/** Old label (the one each item had when selected) against the new one from the relabel run. */
export function measureDrift(store: Store, relabelId: number, runId: number): Drift {
  store.flush();
  const pairs = store.db
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
