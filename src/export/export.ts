import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { DistilleryError } from '../errors.ts';
import type { Store, TaskRow } from '../store/store.ts';
import { buildTargets, loadView, resolveTeachers, taskItems, type TargetsOptions, type TaskItems } from '../targets/from-store.ts';
import { ExportRow } from './rows.ts';

export interface ExportOptions {
  /** Comma list of teacher names or run ids (default: every teacher of the task). */
  teachers?: string;
  /** Present: one row per item with the aggregated target instead of one per item and teacher. */
  targets?: Omit<TargetsOptions, 'teachers'>;
  /** Include the stored logits of white-box teachers (per-teacher rows only). */
  logits?: boolean;
}

/** Six decimals: enough for any teacher, and the same bytes every time. */
function round6(x: number): number {
  return Math.round(x * 1e6) / 1e6;
}

function itemFields(task: TaskRow, it: TaskItems['items'][number]): Pick<ExportRow, 'id' | 'text' | 'image' | 'gold' | 'split'> {
  const content = task.input_kind === 'image' ? { image: it.image ?? '' } : { text: String((JSON.parse(it.input) as Record<string, unknown>).text) };
  return { id: it.ext_id, ...content, gold: it.gold, split: it.split };
}

/**
 * The export's rows, in item order: per item and teacher its latest valid
 * label, or per item the target aggregated from the teachers (the same
 * module the trainer uses, so an export trains the same student).
 */
export function* exportRows(store: Store, task: TaskRow, o: ExportOptions = {}): Generator<ExportRow> {
  const items = taskItems(store, task);
  if (o.targets) {
    if (o.logits) throw new DistilleryError('--logits goes with per-teacher rows (without --aggregate)');
    const t = buildTargets(store, task, { ...o.targets, teachers: o.teachers });
    const name = `${o.targets.aggregate}(${t.teachers.map((s) => s.name).join(',')})`;
    for (let i = 0; i < items.items.length; i++) {
      const probs = t.probs[i];
      const hard = t.hard[i];
      if (!probs || hard === null) continue;
      yield ExportRow.parse({
        ...itemFields(task, items.items[i]),
        teacher: name,
        prompt_version: null,
        label: task.labels[hard],
        probs: Array.from(probs, round6),
        soft_method: `aggregate:${o.targets.aggregate}${o.targets.calibrate ? '+calibrated' : ''}`,
      });
    }
    return;
  }
  const sources = resolveTeachers(store, task, o.teachers);
  const views = sources.map((s) => loadView(store, task, items, s));
  const runs = new Map(store.runs(task.id).map((r) => [r.id, r]));
  for (let i = 0; i < items.items.length; i++) {
    for (const view of views) {
      const runId = view.runIds[i];
      const hard = view.hard[i];
      if (runId === null || hard === null) continue;
      const run = runs.get(runId)!;
      const soft = view.soft[i];
      const logprobs = view.logprobs[i];
      yield ExportRow.parse({
        ...itemFields(task, items.items[i]),
        teacher: view.name,
        prompt_version: run.prompt_version,
        label: task.labels[hard],
        probs: logprobs ? Array.from(logprobs, (z) => round6(Math.exp(z))) : null,
        soft_method: softMethodOf(run),
        ...(o.logits ? { logits: soft?.kind === 'logits' ? Array.from(soft.values, round6) : null } : {}),
      });
    }
  }
}

function softMethodOf(run: { kind: string; params: string }): string {
  return run.kind === 'logits' ? 'logits' : (JSON.parse(run.params) as { soft: string }).soft;
}

/** Write DIR/labels.jsonl through a temporary file: a reader never sees half a file. */
export function writeJsonlExport(store: Store, task: TaskRow, dir: string, o: ExportOptions = {}): { path: string; rows: number } {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, 'labels.jsonl');
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w');
  let n = 0;
  try {
    let buf = '';
    for (const row of exportRows(store, task, o)) {
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
