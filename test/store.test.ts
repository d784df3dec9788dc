import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { readItems } from '../src/input/read.ts';
import { decodeSoft, encodeSoft, softToProbs, probsToLogprobs } from '../src/soft/codec.ts';
import { SCHEMA_VERSION } from '../src/store/schema.ts';
import { Store } from '../src/store/store.ts';
import { parseTask } from '../src/task/task.ts';

const tmp = () => mkdtempSync(join(tmpdir(), 'distillery-store-'));
const task = parseTask('---\nname: t\nlabels: [a, b]\n---\nSay: {{text}}\n', 'task.md');

test('a new database is migrated to the current schema version, with WAL', () => {
  const path = join(tmp(), 'x.db');
  const store = Store.open(path);
  const db = new Database(path, { readonly: true });
  assert.equal(db.pragma('user_version', { simple: true }), SCHEMA_VERSION);
  assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
  db.close();
  store.close();
  // Opening again is a no-op.
  Store.open(path).close();
});

test('a database from a newer distillery is refused with a clear message', () => {
  const path = join(tmp(), 'x.db');
  const db = new Database(path);
  db.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
  db.close();
  assert.throws(() => Store.open(path), /schema v\d+ is newer than this distillery/);
});

test('importing the same content twice adds nothing; a bad row rolls the whole import back', async () => {
  const dir = tmp();
  const input = join(dir, 'in.jsonl');
  writeFileSync(input, '{"id":"1","text":"one"}\n{"id":"2","text":"two"}\n');
  const store = Store.open(join(dir, 'x.db'));
  const first = await store.importItems(task, readItems(input, task));
  assert.equal(first.added, 2);
  const again = await store.importItems(task, readItems(input, task));
  assert.deepEqual([again.added, again.existing], [0, 2]);
  assert.deepEqual(again.itemIds, first.itemIds);

  const bad = join(dir, 'bad.jsonl');
  writeFileSync(bad, '{"id":"3","text":"three"}\n{"id":"4","text":""}\n');
  await assert.rejects(store.importItems(task, readItems(bad, task)), /bad\.jsonl:2: .*empty/);
  assert.equal(store.countItems(first.taskRow.id), 2, 'the good row before the bad one was rolled back too');

  const clash = join(dir, 'clash.jsonl');
  writeFileSync(clash, '{"id":"1","text":"different"}\n');
  await assert.rejects(store.importItems(task, readItems(clash, task)), /clash\.jsonl:1: id "1" already names an item/);
  store.close();
});

test('a task name keeps its labels for life', async () => {
  const store = Store.open(join(tmp(), 'x.db'));
  store.ensureTask(task);
  const changed = parseTask('---\nname: t\nlabels: [a, b, c]\n---\nSay: {{text}}\n', 'task2.md');
  assert.throws(() => store.ensureTask(changed), /task2\.md: task "t" is already in the database with labels \["a","b"\]/);
  // A new prompt body with the same labels is fine (a new prompt version).
  const reworded = parseTask('---\nname: t\nlabels: [a, b]\n---\nPlease say: {{text}}\n', 'task3.md');
  assert.equal(store.ensureTask(reworded).id, store.ensureTask(task).id);
  store.close();
});

test('soft-label codec: dense32 round trip of log-probabilities and probabilities', () => {
  const probs = [0.7, 0.2, 0.1, 0];
  const back = decodeSoft(encodeSoft({ kind: 'logprobs', values: probsToLogprobs(probs) }));
  assert.equal(back.kind, 'logprobs');
  assert.equal(back.values[3], Number.NEGATIVE_INFINITY);
  softToProbs(back).forEach((p, i) => assert.ok(Math.abs(p - probs[i]) < 1e-6));
  const p2 = decodeSoft(encodeSoft({ kind: 'probs', values: Float32Array.from([0.25, 0.75]) }));
  assert.deepEqual(softToProbs(p2), [0.25, 0.75]);
  assert.throws(() => decodeSoft(Buffer.from([9, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0])), /unknown soft-label format 9/);
  assert.throws(() => decodeSoft(Buffer.from([1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0])), /wrong length/);
});
