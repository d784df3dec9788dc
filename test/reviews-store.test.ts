/**
 * The store side of people in the loop: a reviewer's decisions as the labels of a human run, the append-only
 * log, undo, and the guarantees two tabs and two processes rely on.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { SettingError } from '../src/errors.ts';
import { decide, decisionLog, humanLabels, humanRun, liveDecisions, undo } from '../src/store/reviews.ts';
import { Store, type TaskRow } from '../src/store/store.ts';
import { loadTask } from '../src/task/task.ts';
import { animalRows, importFile, REPO_ROOT, workDir, writeJsonl, writeTask } from './helpers.ts';

async function storeWithItems(n = 6): Promise<{ store: Store; task: TaskRow; ids: number[]; db: string }> {
  const dir = workDir();
  const task = loadTask(writeTask(dir));
  const db = path.join(dir, 'distill.db');
  const store = Store.open(db);
  const r = await importFile(store, task, writeJsonl(dir, 'items.jsonl', animalRows(n)));
  return { store, task: r.taskRow, ids: r.itemIds, db };
}

function humanRows(db: string): Array<{ item_id: number; label: string; soft_method: string; request_key: string }> {
  const d = new Database(db, { readonly: true });
  try {
    return d
      .prepare(
        `SELECT l.item_id, l.label, l.soft_method, l.request_key FROM labels l JOIN runs r ON r.id = l.run_id WHERE r.kind = 'human' ORDER BY l.id`,
      )
      .all() as never;
  } finally {
    d.close();
  }
}

test('a decision is a label of the reviewer’s human run; the same decision twice is stored once', async () => {
  const { store, task, ids, db } = await storeWithItems();
  const first = decide(store, { task, reviewer: 'alice', itemId: ids[0], label: 'dog', shown: { policy: 'disagree' } });
  assert.equal(first.status, 'stored');
  const again = decide(store, { task, reviewer: 'alice', itemId: ids[0], label: 'dog' });
  assert.equal(again.status, 'unchanged');
  assert.equal(again.decision.id, first.decision.id);
  const run = humanRun(store, task, 'alice');
  assert.equal(run.kind, 'human');
  assert.equal(run.teacher, 'human:alice');
  assert.equal(run.status, 'completed');
  assert.equal(run.items_total, 1);
  assert.deepEqual(humanRows(db), [{ item_id: ids[0], label: 'dog', soft_method: 'human', request_key: `review:${first.decision.id}` }]);
  assert.deepEqual(JSON.parse(first.decision.shown!), { policy: 'disagree' });
  // What every teacher reader uses sees it too.
  assert.deepEqual(
    [...store.latestLabels([run.id])].map((r) => [r.item_id, r.label]),
    [[ids[0], 'dog']],
  );
  store.close();
});

test('a different label over a live one is a conflict and writes nothing; a second reviewer is a second label', async () => {
  const { store, task, ids, db } = await storeWithItems();
  decide(store, { task, reviewer: 'alice', itemId: ids[1], label: 'cat' });
  const clash = decide(store, { task, reviewer: 'alice', itemId: ids[1], label: 'bird' });
  assert.equal(clash.status, 'conflict');
  assert.equal(clash.decision.label, 'cat');
  const skipOverLabel = decide(store, { task, reviewer: 'alice', itemId: ids[1], label: null });
  assert.equal(skipOverLabel.status, 'conflict');
  assert.equal(decide(store, { task, reviewer: 'bob', itemId: ids[1], label: 'bird' }).status, 'stored');
  assert.deepEqual(
    humanLabels(store, task.id).map((h) => [h.reviewer, h.label]),
    [
      ['alice', 'cat'],
      ['bob', 'bird'],
    ],
  );
  assert.equal(humanRows(db).length, 2);
  assert.equal(decisionLog(store, task.id).length, 2);
  store.close();
});

test('undo takes back the latest decision, keeps it in the log, and a label can follow', async () => {
  const { store, task, ids, db } = await storeWithItems();
  decide(store, { task, reviewer: 'alice', itemId: ids[0], label: 'cat' });
  decide(store, { task, reviewer: 'alice', itemId: ids[1], label: null });
  const d2 = decide(store, { task, reviewer: 'alice', itemId: ids[2], label: 'bird' }).decision;
  const u = undo(store, { task, reviewer: 'alice' });
  assert.equal(u.status, 'undone');
  assert.equal(u.decision!.id, d2.id);
  assert.equal(undo(store, { task, reviewer: 'alice', decisionId: d2.id }).status, 'unchanged');
  assert.deepEqual(
    humanRows(db).map((r) => r.item_id),
    [ids[0]],
  );
  // The skip is next to undo; then the first label.
  assert.equal(undo(store, { task, reviewer: 'alice' }).decision!.action, 'skip');
  assert.equal(decide(store, { task, reviewer: 'alice', itemId: ids[2], label: 'dog' }).status, 'stored');
  assert.deepEqual(
    liveDecisions(store, task.id, 'alice').map((d) => [d.itemId, d.label]),
    [
      [ids[0], 'cat'],
      [ids[2], 'dog'],
    ],
  );
  assert.deepEqual(
    decisionLog(store, task.id).map((d) => d.action),
    ['label', 'skip', 'label', 'undo', 'undo', 'label'],
  );
  assert.equal(humanRun(store, task, 'alice').items_total, 2);
  assert.equal(undo(store, { task, reviewer: 'carol' }).status, 'none');
  store.close();
});

test('a label over a live skip is stored; a source key is stored once', async () => {
  const { store, task, ids } = await storeWithItems();
  decide(store, { task, reviewer: 'alice', itemId: ids[3], label: null });
  assert.equal(decide(store, { task, reviewer: 'alice', itemId: ids[3], label: null }).status, 'unchanged');
  assert.equal(decide(store, { task, reviewer: 'alice', itemId: ids[3], label: 'dog' }).status, 'stored');
  const key = { source: 'labelstudio' as const, sourceKey: '7:31' };
  assert.equal(decide(store, { task, reviewer: 'bob', itemId: ids[4], label: 'cat', ...key }).status, 'stored');
  // Undone in the page, the same annotation imported again stays out: the import already happened.
  undo(store, { task, reviewer: 'bob' });
  assert.equal(decide(store, { task, reviewer: 'bob', itemId: ids[4], label: 'cat', ...key }).status, 'unchanged');
  assert.equal(humanLabels(store, task.id).filter((h) => h.reviewer === 'bob').length, 0);
  store.close();
});

test('bad reviewer names, labels and items are refused with the setting named, and nothing is written', async () => {
  const { store, task, ids, db } = await storeWithItems();
  assert.throws(
    () => decide(store, { task, reviewer: 'a b', itemId: ids[0], label: 'cat' }),
    (e: unknown) => e instanceof SettingError && e.setting === 'reviewer',
  );
  assert.throws(() => decide(store, { task, reviewer: 'alice', itemId: ids[0], label: 'cow' }), /"cow" is not a label of task "animals"/);
  assert.throws(
    () => decide(store, { task, reviewer: 'alice', itemId: 99999, label: 'cat' }),
    /item 99999 is not an item of task "animals"/,
  );
  assert.equal(humanRows(db).length, 0);
  assert.equal(decisionLog(store, task.id).length, 0);
  store.close();
});

test('two processes deciding the same item at once store it once', async () => {
  const { store, ids, db } = await storeWithItems();
  store.close();
  const script = `
    import { Store } from './src/store/store.ts';
    import { decide } from './src/store/reviews.ts';
    const store = Store.open(${JSON.stringify(db)});
    const task = store.findTask('animals');
    let stored = 0;
    for (const id of ${JSON.stringify(ids)}) if (decide(store, { task, reviewer: 'alice', itemId: id, label: 'cat' }).status === 'stored') stored++;
    store.close();
    console.log(stored);`;
  // Both children run at once (spawn, not spawnSync): their decide calls interleave on the same file.
  const run = () =>
    new Promise<number>((resolve, reject) => {
      const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: REPO_ROOT });
      let out = '';
      let err = '';
      child.stdout.on('data', (b: Buffer) => (out += b));
      child.stderr.on('data', (b: Buffer) => (err += b));
      child.on('close', (code) => (code === 0 ? resolve(Number(out.trim())) : reject(new Error(err))));
    });
  const [a, b] = await Promise.all([run(), run()]);
  assert.equal(a + b, ids.length);
  assert.equal(humanRows(db).length, ids.length);
});
