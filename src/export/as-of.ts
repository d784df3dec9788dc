/**
 * `--as-of RUN_ID`: the task as it was after that run, as a throwaway
 * in-memory copy of the database that the ordinary export code then reads.
 * Only this copy is written to; the database itself is only read.
 */
import { DistilleryError } from '../errors.ts';
import { Store, type TaskRow } from '../store/store.ts';

/**
 * The copy holds the task; its runs with id <= RUN_ID; their labels; and the
 * items imported no later than the end of run RUN_ID (its last end when it
 * was resumed; its last label when it never ended). Blobs are not copied:
 * images are read from the database itself.
 */
export function snapshotAsOf(store: Store, task: TaskRow, runId: number): Store {
  const run = store.run(runId);
  if (!run || run.task_id !== task.id) {
    const ids = store.runs(task.id).map((r) => r.id);
    throw new DistilleryError(`--as-of: run ${runId} is not a run of task "${task.name}" (its runs: ${ids.join(', ') || 'none'})`);
  }
  const lastLabel = (store.db.prepare('SELECT max(created_at) AS t FROM labels WHERE run_id = ?').get(runId) as { t: string | null }).t;
  const cutoff = [run.started_at, run.ended_at, lastLabel].filter((t): t is string => t !== null).sort().at(-1)!;
  const snap = Store.open(':memory:');
  try {
    snap.db.pragma('foreign_keys = OFF'); // blobs stay behind
    snap.db.prepare('ATTACH DATABASE ? AS src').run(store.path);
    try {
      snap.db.transaction(() => {
        snap.db.prepare('INSERT INTO main.tasks SELECT * FROM src.tasks WHERE id = ?').run(task.id);
        snap.db.prepare('INSERT INTO main.items SELECT * FROM src.items WHERE task_id = ? AND created_at <= ? ORDER BY id').run(task.id, cutoff);
        snap.db.prepare('INSERT INTO main.runs SELECT * FROM src.runs WHERE task_id = ? AND id <= ? ORDER BY id').run(task.id, runId);
        snap.db
          .prepare('INSERT INTO main.labels SELECT * FROM src.labels WHERE run_id IN (SELECT id FROM main.runs) AND item_id IN (SELECT id FROM main.items) ORDER BY id')
          .run();
      })();
    } finally {
      snap.db.exec('DETACH DATABASE src');
    }
  } catch (e) {
    snap.close();
    throw e;
  }
  return snap;
}
