/**
 * The replay tables (schema v4): a teacher's outputs on augmented views, one row per run, epoch and item with the
 * view's seed (TinyViT's stored sparse logits: seed + top-K per sample and epoch). SQL for replay lives here;
 * src/whitebox/replay.ts produces the rows and src/train/data.ts turns them into per-epoch targets.
 */
import { Store } from './store.ts';

export interface ReplayLabelRow {
  run_id: number;
  epoch: number;
  item_id: number;
  aug_seed: number;
  label: string;
  soft: Buffer;
}

/** Insert one row now, inside the caller's transaction (the ingest writes a run's rows all or nothing). */
export function insertReplayLabel(store: Store, r: ReplayLabelRow): void {
  Store.sqlOf(store)
    .prepare('INSERT INTO replay_labels (run_id, epoch, item_id, aug_seed, label, soft) VALUES (?, ?, ?, ?, ?, ?)')
    .run(r.run_id, r.epoch, r.item_id, r.aug_seed, r.label, r.soft);
}

/** Every row of a run, epoch by epoch, items in id order. */
export function replayLabels(store: Store, runId: number): IterableIterator<ReplayLabelRow> {
  return Store.sqlOf(store)
    .prepare('SELECT run_id, epoch, item_id, aug_seed, label, soft FROM replay_labels WHERE run_id = ? ORDER BY epoch, item_id')
    .iterate(runId) as IterableIterator<ReplayLabelRow>;
}

/** How many rows each epoch of a run holds (no rows: not a replay run). */
export function replayEpochCounts(store: Store, runId: number): Array<{ epoch: number; rows: number }> {
  return Store.sqlOf(store)
    .prepare('SELECT epoch, count(*) AS rows FROM replay_labels WHERE run_id = ? GROUP BY epoch ORDER BY epoch')
    .all(runId) as Array<{ epoch: number; rows: number }>;
}

/** What a replay run's params record (src/whitebox/ingest.ts): the augmentation spec, the epochs and the base seed. */
export interface ReplayParams {
  augment: string;
  epochs: number;
  seed: number;
}

/** The replay settings of a run, or undefined for an ordinary run. */
export function replayParamsOf(run: { params: string }): ReplayParams | undefined {
  const p = JSON.parse(run.params) as { replay?: ReplayParams };
  return p.replay ?? undefined;
}
