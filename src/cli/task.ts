/**
 * --task NAME|FILE: the one resolver every script uses.
 *
 * A path that exists is a task file; else a task of that name in the
 * database; else prompts/NAME(.md). Scripts that read a database default to
 * its only task (`taskInStore`); scripts that need the prompt (label, import,
 * relabel) need a file, found from the name when the database holds it
 * (`taskFromArg`).
 */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DistilleryError } from '../errors.ts';
import { Store, type TaskRow } from '../store/store.ts';
import { loadTask, type Task } from '../task/task.ts';

/** prompts/NAME, then prompts/NAME.md, if either is a file. */
function promptFile(name: string): string | undefined {
  return [join('prompts', name), join('prompts', `${name}.md`)].find(isFile);
}

function isFile(p: string): boolean {
  return existsSync(p) && statSync(p).isFile();
}

function names(tasks: TaskRow[]): string {
  return tasks.map((t) => t.name).join(', ') || 'none';
}

/** The file's task must be the database's task of that name: same labels, same input kind. */
function checkAgainst(task: Task, row: TaskRow | undefined, where: string): void {
  if (!row) return;
  if (JSON.stringify(row.labels) !== JSON.stringify(task.labels) || row.input_kind !== task.input) {
    throw new DistilleryError(
      `${task.path}: task "${task.name}" is in ${where} with labels ${JSON.stringify(row.labels)} (${row.input_kind}), the file says ${JSON.stringify(task.labels)} (${task.input})`,
    );
  }
}

/** Every task of the database at `dbPath`; none when the file does not exist yet. */
function storedTasks(db: Store | string | undefined): TaskRow[] {
  if (db === undefined) return [];
  if (typeof db !== 'string') return db.listTasks();
  if (!existsSync(db)) return [];
  const store = Store.open(db);
  try {
    return store.listTasks();
  } finally {
    store.close();
  }
}

/**
 * The task file behind --task, for scripts that need the prompt. Without
 * --task: the database's only task, when its file is prompts/NAME(.md).
 * `db` is a database path (read only if it exists) or an open store.
 */
export function taskFromArg(arg: string | undefined, db?: Store | string): Task {
  const where = typeof db === 'string' ? db : (db?.path ?? 'the database');
  const tasks = storedTasks(db);
  let task: Task;
  if (arg === undefined) {
    if (tasks.length !== 1)
      throw new DistilleryError(`give --task NAME|FILE (${where} holds ${tasks.length === 0 ? 'no tasks' : `tasks: ${names(tasks)}`})`);
    const file = promptFile(tasks[0].name);
    if (!file) throw new DistilleryError(`give --task FILE: the task file of "${tasks[0].name}" is not prompts/${tasks[0].name}.md`);
    task = loadTask(file);
  } else if (isFile(arg)) {
    task = loadTask(arg);
  } else {
    const file = promptFile(arg);
    if (!file) {
      const stored = tasks.some((t) => t.name === arg);
      throw new DistilleryError(
        stored
          ? `--task ${arg}: the task is in ${where} but its file is not prompts/${arg}.md; give the task file`
          : `--task ${arg}: no such task file, and no task of that name in ${where} (tasks: ${names(tasks)})`,
      );
    }
    task = loadTask(file);
  }
  checkAgainst(
    task,
    tasks.find((t) => t.name === task.name),
    where,
  );
  return task;
}

/**
 * The database's task behind --task, for scripts that read a task from the
 * database: a task file is matched by its front-matter name (labels checked);
 * a name is looked up in the database, then in prompts/. Without --task: the
 * database's only task.
 */
export function taskInStore(store: Store, arg?: string): TaskRow {
  const tasks = store.listTasks();
  if (arg === undefined) {
    if (tasks.length === 1) return tasks[0];
    throw new DistilleryError(
      tasks.length === 0
        ? `${store.path}: the database has no tasks`
        : `${store.path}: several tasks (${names(tasks)}); choose one with --task`,
    );
  }
  const byName = (name: string) => tasks.find((t) => t.name === name);
  const file = isFile(arg) ? arg : byName(arg) ? undefined : promptFile(arg);
  if (file === undefined) {
    const row = byName(arg);
    if (!row) throw new DistilleryError(`${store.path}: no task "${arg}" (tasks: ${names(tasks)})`);
    return row;
  }
  const task = loadTask(file);
  const row = byName(task.name);
  if (!row) throw new DistilleryError(`${store.path}: no task "${task.name}" (from ${file}; tasks: ${names(tasks)})`);
  checkAgainst(task, row, store.path);
  return row;
}

/** A task as the database knows it, for code that takes a Task but needs no prompt: no template, no file. */
export function storedTask(row: TaskRow, store: Store): Task {
  return { name: row.name, labels: row.labels, input: row.input_kind as Task['input'], path: store.path, template: '', version: '' };
}

/**
 * The task file behind a database task, for what shows its instructions (the review page): `--task` when it is a
 * file, else prompts/NAME(.md); null when there is none or it is another task (other labels or input).
 */
export function taskFileOf(row: TaskRow, arg?: string): Task | null {
  const file = arg !== undefined && isFile(arg) ? arg : promptFile(row.name);
  if (file === undefined) return null;
  const task = loadTask(file);
  const same = task.name === row.name && JSON.stringify(task.labels) === JSON.stringify(row.labels) && task.input === row.input_kind;
  return same ? task : null;
}
