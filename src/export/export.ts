import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { DistilleryError } from '../errors.ts';
import { decodeSoft, softToProbs } from '../soft/codec.ts';
import type { Store, TaskRow } from '../store/store.ts';
import { ExportRow } from './rows.ts';

/**
 * Latest valid label per item and teacher (model name), for one task, in
 * item order. Rows are built and validated one at a time: memory stays flat.
 */
export function* exportRows(store: Store, task: TaskRow): Generator<ExportRow> {
  const rows = store.db
    .prepare(
      `SELECT i.ext_id, i.input, i.image, i.gold, i.split, x.teacher, x.prompt_version, x.label, x.soft, x.soft_method
       FROM (SELECT l.item_id, l.label, l.soft, l.soft_method, r.teacher, r.prompt_version,
                    row_number() OVER (PARTITION BY l.item_id, r.teacher ORDER BY l.id DESC) AS rn
             FROM labels l JOIN runs r ON r.id = l.run_id
             WHERE l.status = 'ok' AND r.task_id = ?) x
       JOIN items i ON i.id = x.item_id
       WHERE x.rn = 1
       ORDER BY i.id, x.teacher`,
    )
    .iterate(task.id) as Iterable<any>;
  for (const r of rows) {
    const fields = JSON.parse(r.input) as Record<string, unknown>;
    yield ExportRow.parse({
      id: r.ext_id,
      ...(task.input_kind === 'image' ? { image: r.image } : { text: String(fields.text) }),
      gold: r.gold,
      split: r.split,
      teacher: r.teacher,
      prompt_version: r.prompt_version,
      label: r.label,
      probs: r.soft ? softToProbs(decodeSoft(r.soft)).map(round6) : null,
      soft_method: r.soft_method,
    });
  }
}

/** Six decimals: enough for any teacher, and the same bytes every time. */
function round6(x: number): number {
  return Math.round(x * 1e6) / 1e6;
}

/** Write DIR/labels.jsonl through a temporary file: a reader never sees half a file. */
export function writeJsonlExport(store: Store, task: TaskRow, dir: string): { path: string; rows: number } {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, 'labels.jsonl');
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w');
  let n = 0;
  try {
    let buf = '';
    for (const row of exportRows(store, task)) {
      buf += `${JSON.stringify(row)}\n`;
      n++;
      if (buf.length > 1 << 20) {
        writeSync(fd, buf);
        buf = '';
      }
    }
    writeSync(fd, buf);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw e;
  }
  closeSync(fd);
  renameSync(tmp, path);
  return { path, rows: n };
}

export function pickTask(store: Store, name: string | undefined): TaskRow {
  const tasks = store.listTasks();
  if (name !== undefined) {
    const t = tasks.find((x) => x.name === name);
    if (!t) throw new DistilleryError(`${store.path}: no task "${name}" (tasks: ${tasks.map((x) => x.name).join(', ') || 'none'})`);
    return t;
  }
  if (tasks.length === 1) return tasks[0];
  throw new DistilleryError(tasks.length === 0 ? `${store.path}: the database has no tasks` : `${store.path}: several tasks (${tasks.map((x) => x.name).join(', ')}); choose one with --task`);
}
