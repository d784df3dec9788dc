/**
 * `--as-of RUN_ID`: the task as it was after that run, as a throwaway
 * in-memory copy of the database that the ordinary export code then reads.
 * Only this copy is written to; the database itself is only read.
 */
import { SettingError } from '../errors.ts';
import type { Store, TaskRow } from '../store/store.ts';

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
    throw new SettingError('asOf', runId, `not a run of task "${task.name}" (its runs: ${ids.join(', ') || 'none'})`);
  }
  const lastLabel = store.lastLabelAt(runId);
  const cutoff = [run.started_at, run.ended_at, lastLabel]
    .filter((t): t is string => t !== null)
    .sort()
    .at(-1)!;
  return store.snapshotUntil(task, runId, cutoff);
}
