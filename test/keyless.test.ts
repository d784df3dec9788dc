/**
 * A keyless first hour: a dry run needs no API key, and neither a dry run nor a command that fails (bad input, a
 * missing key, a bad task) leaves a database file behind. Each writer script, run as a user runs it, in a temp dir.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { animalRows, fakeServer, runScript, workDir, writeJsonl, writeTask, type ScriptResult } from './helpers.ts';

const show = (r: ScriptResult) => `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;

/** The database file and SQLite's companions: none may exist. */
function assertNoDb(db: string, why: string): void {
  const left = [db, `${db}-wal`, `${db}-shm`, `${db}-journal`].filter((f) => fs.existsSync(f));
  assert.deepEqual(left, [], `${why}: left ${left.join(', ')}`);
}

function items(db: string): number {
  const d = new Database(db, { readonly: true, fileMustExist: true });
  try {
    return (d.prepare('SELECT count(*) AS n FROM items').get() as { n: number }).n;
  } finally {
    d.close();
  }
}

/** A task, a good input, and an input whose third line is not JSON. */
function fixture() {
  const dir = workDir();
  const task = writeTask(dir);
  const good = writeJsonl(dir, 'good.jsonl', animalRows(5));
  const bad = path.join(dir, 'bad.jsonl');
  fs.writeFileSync(bad, `${JSON.stringify(animalRows(2)[0])}\n${JSON.stringify(animalRows(2)[1])}\n{"text": "broken\n`);
  return { dir, task, good, bad, db: path.join(dir, 'distill.db') };
}

// No OPENAI_* variable reaches a child (startNode's clean environment): no key, the official base URL.
describe('label.ts without an API key', () => {
  test('--dry-run needs no key and creates no database; without the flag, a missing key is one line and no file', async () => {
    const f = fixture();
    const args = ['--db', f.db, '--task', f.task, '--input', f.good, '--model', 'gpt-4o-mini'];
    const dry = await runScript('label', [...args, '--dry-run']);
    assert.equal(dry.code, 0, show(dry));
    assert.match(dry.stdout, /dry run: 5 item\(s\) to label .* with gpt-4o-mini, .*estimated cost \$0\.\d{4}.*; nothing sent/);
    assertNoDb(f.db, 'a dry run');

    const batchDry = await runScript('label', [...args, '--dry-run', '--batch']);
    assert.equal(batchDry.code, 0, show(batchDry));
    assert.match(batchDry.stdout, /at the batch price; nothing sent/);
    assertNoDb(f.db, 'a batch dry run');

    const noKey = await runScript('label', args);
    assert.equal(noKey.code, 1, show(noKey));
    assert.match(noKey.stderr, /^error: no API key: set OPENAI_API_KEY \(or --api-key-env NAME\).*sim-teacher.*\n$/);
    assertNoDb(f.db, 'a missing key');

    const noDb = await runScript('label', ['--db', f.db, '--task', f.task, '--model', 'gpt-4o-mini', '--dry-run']);
    assert.equal(noDb.code, 1, show(noDb));
    assert.equal(noDb.stderr, `error: ${f.db}: no such database (create one with import.ts or label.ts)\n`);
    assertNoDb(f.db, 'a dry run without --input on a missing database');
  });

  test('a dry run on an existing database reads it and adds nothing', async () => {
    const f = fixture();
    const imp = await runScript('import', ['--db', f.db, '--task', f.task, '--input', f.good]);
    assert.equal(imp.code, 0, show(imp));
    const more = writeJsonl(f.dir, 'more.jsonl', animalRows(8));
    const dry = await runScript('label', ['--db', f.db, '--task', f.task, '--input', more, '--model', 'gpt-4o-mini', '--dry-run']);
    assert.equal(dry.code, 0, show(dry));
    assert.match(dry.stdout, /dry run: 8 item\(s\) to label/);
    const dryAll = await runScript('label', ['--db', f.db, '--task', f.task, '--model', 'gpt-4o-mini', '--dry-run']);
    assert.equal(dryAll.code, 0, show(dryAll));
    assert.match(dryAll.stdout, /dry run: 5 item\(s\) to label/);
    assert.equal(items(f.db), 5, 'the dry run imported nothing');
  });
});

describe('a failed first command leaves no database', () => {
  test('label.ts: bad input, a missing input, a bad task, a price it cannot find; a good run still works', async () => {
    const f = fixture();
    const fake = await fakeServer();
    const base = ['--db', f.db, '--model', 'fake-teacher', '--base-url', fake.url, '--price-in', '1', '--price-out', '1'];

    const bad = await runScript('label', [...base, '--task', f.task, '--input', f.bad]);
    assert.equal(bad.code, 1, show(bad));
    assert.match(bad.stderr, new RegExp(`^error: ${f.bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:3: .*\\n$`));
    assertNoDb(f.db, 'bad input');

    const missing = await runScript('label', [...base, '--task', f.task, '--input', path.join(f.dir, 'nope.jsonl')]);
    assert.equal(missing.code, 1, show(missing));
    assertNoDb(f.db, 'a missing input');

    const badTask = await runScript('label', [...base, '--task', 'no-such-task', '--input', f.good]);
    assert.equal(badTask.code, 1, show(badTask));
    assert.match(badTask.stderr, /^error: --task no-such-task: no such task file/);
    assertNoDb(f.db, 'a bad task');

    const noPrice = await runScript('label', [
      ...['--db', f.db, '--model', 'unpriced-model', '--base-url', fake.url, '--task', f.task, '--input', f.good],
    ]);
    assert.equal(noPrice.code, 1, show(noPrice));
    assert.match(noPrice.stderr, /model "unpriced-model" has no price/);
    assertNoDb(f.db, 'a model without a price');
    assert.equal(fake.requests.length, 0, 'nothing was sent');

    const good = await runScript('label', [...base, '--task', f.task, '--input', f.good, '--retry-base-ms', '5']);
    assert.equal(good.code, 0, show(good));
    assert.match(good.stdout, /run 1 completed: 5 labeled/);
    assert.equal(items(f.db), 5);

    // An existing database is never removed: a bad input now leaves it as it was.
    const badLater = await runScript('label', [...base, '--task', f.task, '--input', f.bad]);
    assert.equal(badLater.code, 1, show(badLater));
    assert.equal(items(f.db), 5);
  });

  test('import.ts: bad input leaves no file; a good import works; a bad one later leaves the database as it was', async () => {
    const f = fixture();
    const bad = await runScript('import', ['--db', f.db, '--task', f.task, '--input', f.bad]);
    assert.equal(bad.code, 1, show(bad));
    assert.match(bad.stderr, /bad\.jsonl:3: /);
    assertNoDb(f.db, 'bad input');
    const badTask = await runScript('import', ['--db', f.db, '--task', 'no-such-task', '--input', f.good]);
    assert.equal(badTask.code, 1, show(badTask));
    assertNoDb(f.db, 'a bad task');

    const good = await runScript('import', ['--db', f.db, '--task', f.task, '--input', f.good]);
    assert.equal(good.code, 0, show(good));
    assert.equal(items(f.db), 5);
    const badLater = await runScript('import', ['--db', f.db, '--task', f.task, '--input', f.bad]);
    assert.equal(badLater.code, 1, show(badLater));
    assert.equal(items(f.db), 5);
  });

  test('relabel.ts --dry-run needs no key; relabel and ingest-logits never create a database', async () => {
    const f = fixture();
    const relabel = ['--db', f.db, '--task', f.task, '--model', 'gpt-4o-mini', '--policy', 'changed'];
    const missing = await runScript('relabel', [...relabel, '--dry-run']);
    assert.equal(missing.code, 1, show(missing));
    assertNoDb(f.db, 'relabel on a missing database');
    const ingest = await runScript('ingest-logits', ['--db', f.db, '--teacher', 't', '--input', f.good]);
    assert.equal(ingest.code, 1, show(ingest));
    assertNoDb(f.db, 'ingest-logits on a missing database');

    const imp = await runScript('import', ['--db', f.db, '--task', f.task, '--input', f.good]);
    assert.equal(imp.code, 0, show(imp));
    const dry = await runScript('relabel', [...relabel, '--dry-run']);
    assert.equal(dry.code, 0, show(dry));
    assert.match(dry.stdout, /^dry run: /);
    const noKey = await runScript('relabel', relabel);
    assert.equal(noKey.code, 1, show(noKey));
    assert.match(noKey.stderr, /^error: no API key/);
  });
});
