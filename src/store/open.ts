/**
 * Opening a database for a command that may create it, without leaving an empty file behind: a dry run never
 * creates one, and a command that fails before it has stored anything (a bad input row, a bad export) removes the
 * file it created. A database that existed before is never removed.
 */
import { existsSync, rmSync } from 'node:fs';
import { Store } from './store.ts';

/** SQLite's companions of a database file (WAL mode; the rollback journal of a migration). */
const COMPANIONS = ['', '-wal', '-shm', '-journal'];

/** The database at `path` if it exists; else an empty one in memory, so that a dry run creates no file. */
export function openForDryRun(path: string): Store {
  return Store.open(existsSync(path) ? path : ':memory:');
}

/**
 * `use` on the database at `path`, created if missing; the store is closed afterwards. When `use` throws and this
 * call created the file, the file is removed if it holds no task, item, run or image: a failed first command leaves
 * no database behind, and a rerun starts from nothing as the user expects.
 */
export async function usingStore<T>(path: string, use: (store: Store) => Promise<T>): Promise<T> {
  const existed = path === ':memory:' || existsSync(path);
  const store = Store.open(path);
  let ok = false;
  try {
    const result = await use(store);
    ok = true;
    return result;
  } finally {
    const empty = !ok && !existed && store.isOpen && isEmpty(store);
    if (store.isOpen) store.close();
    if (empty) for (const suffix of COMPANIONS) rmSync(`${path}${suffix}`, { force: true });
  }
}

function isEmpty(store: Store): boolean {
  try {
    return Object.values(store.tableCounts()).every((n) => n === 0);
  } catch {
    return false; // unreadable: not ours to judge, keep it
  }
}
