/**
 * The store's writer thread (src/store/writer.ts): answers committed on a second connection, in groups, and the
 * promise the labeler keeps with it — no request starts while an answer it received is uncommitted — checked by
 * killing labelers with SIGKILL at many points and counting what was paid against what was kept.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import { describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { Store } from '../src/store/store.ts';
import { defaultMaxTokens } from '../src/teacher/request.ts';
import { defaultTeacher } from './fake-openai.ts';
import { animalRows, fakeServer, importFile, LABELS, loadTaskFile, startNode, workDir, writeJsonl, writeTask } from './helpers.ts';

/** A query on the file through a connection of the test's own, without flushing the store first. */
function peek(db: string, sql: string): number {
  const d = new Database(db, { readonly: true });
  try {
    return (d.prepare(sql).get() as { n: number }).n;
  } finally {
    d.close();
  }
}

async function storeWithRun(dir: string) {
  const dbPath = path.join(dir, 'distill.db');
  const store = Store.open(dbPath);
  const task = loadTaskFile(writeTask(dir));
  const imported = await importFile(store, task, writeJsonl(dir, 'in.jsonl', animalRows(5)));
  const run = store.createRun({
    task_id: imported.taskRow.id,
    kind: 'llm',
    teacher: 't',
    base_url: null,
    prompt_version: null,
    config_hash: 'c',
    params: '{}',
    labels: JSON.stringify(LABELS),
    items_total: 5,
  });
  return { store, dbPath, run, itemIds: imported.itemIds };
}

function answer(store: Store, runId: number, itemId: number, key: string) {
  store.recordResponse({
    requestKey: key,
    runId,
    itemId,
    status: 'ok',
    body: { choices: [{ content: '{"label":"cat"}' }] },
    promptTokens: 10,
    completionTokens: 2,
    cost: 0.001,
    latencyMs: 3,
  });
  store.recordLabel({
    itemId,
    runId,
    requestKey: key,
    status: 'ok',
    label: 'cat',
    soft: Buffer.from([1, 2, 3]),
    softMethod: 'logprobs',
    sparse: false,
    raw: '{"label":"cat"}',
    promptTokens: 10,
    completionTokens: 2,
    cost: 0.001,
    latencyMs: 3,
    attempts: 1,
    error: null,
  });
}

describe('writer thread', () => {
  test('durable() resolves once another connection sees the rows; the body is deflated, the soft label whole', async () => {
    const { store, dbPath, run, itemIds } = await storeWithRun(workDir());
    assert.equal(store.startWriterThread(), true);
    answer(store, run.id, itemIds[0], 'k0');
    answer(store, run.id, itemIds[1], 'k1');
    await store.durable();
    assert.equal(peek(dbPath, 'SELECT count(*) AS n FROM responses'), 2);
    assert.equal(peek(dbPath, 'SELECT count(*) AS n FROM labels'), 2);
    assert.deepEqual(store.okResponses('k1')[0].body, { choices: [{ content: '{"label":"cat"}' }] });
    const d = new Database(dbPath, { readonly: true });
    assert.deepEqual([...(d.prepare("SELECT soft FROM labels WHERE request_key = 'k0'").get() as { soft: Buffer }).soft], [1, 2, 3]);
    d.close();
    // flush() blocks until the thread has committed, so reads on the store's own connection see everything.
    store.recordRequestError({ runId: run.id, itemId: itemIds[2], requestKey: 'k2', reason: '503' });
    store.flush();
    assert.equal(store.run(run.id)!.errors, 1);
    await store.stopWriterThread();
    // Without the thread the store writes on its own connection again.
    answer(store, run.id, itemIds[3], 'k3');
    store.flush();
    assert.equal(peek(dbPath, 'SELECT count(*) AS n FROM labels'), 3);
    store.close();
  });

  test('a failed commit: durable() and every later write fail with one message; what was committed before stays', async () => {
    const { store, dbPath, run, itemIds } = await storeWithRun(workDir());
    store.startWriterThread();
    answer(store, run.id, itemIds[0], 'ok-before');
    await store.durable();
    answer(store, run.id, itemIds[1], 'in-the-failed-group');
    answer(store, run.id + 99, itemIds[2], 'no-such-run'); // a foreign key the database refuses
    await assert.rejects(store.durable(), /distill\.db: cannot write \(FOREIGN KEY constraint failed\); 4 record\(s\) of the last moment/);
    assert.throws(() => answer(store, run.id, itemIds[3], 'after'), /cannot write \(FOREIGN KEY constraint failed\)/);
    assert.throws(() => store.flush(), /cannot write/);
    await assert.rejects(store.stopWriterThread(), /cannot write/);
    assert.equal(peek(dbPath, 'SELECT count(*) AS n FROM labels'), 1, 'the group is all or nothing');
    assert.equal(peek(dbPath, "SELECT count(*) AS n FROM responses WHERE request_key = 'ok-before'"), 1);
    store.close();
  });

  test('a database in memory has no writer thread: it writes on its own connection', () => {
    const store = Store.open(':memory:');
    assert.equal(store.startWriterThread(), false);
    store.close();
  });
});

describe('writer thread: SIGKILL', () => {
  test('five SIGKILLs at zero latency, concurrency 16: each loses at most the requests in flight; nothing paid twice after', async () => {
    const dir = workDir();
    const n = 400;
    const concurrency = 16;
    const kills = [40, 110, 180, 250, 320];
    let child: ChildProcess | undefined;
    let answered = 0;
    let killed = 0;
    const fake = await fakeServer({
      // Called just before each answer is sent: kill the labeler once the next mark has gone out.
      teacher: (req) => {
        answered++;
        if (answered === kills[killed] + 1 && child) {
          killed++;
          child.kill('SIGKILL');
        }
        return defaultTeacher(req);
      },
    });
    const task = writeTask(dir);
    const input = writeJsonl(dir, 'in.jsonl', animalRows(n));
    const db = path.join(dir, 'distill.db');
    const args = [
      'scripts/label.ts',
      ...['--task', task, '--db', db, '--model', 'fake-teacher', '--base-url', fake.url, '--price-in', '2', '--price-out', '10'],
      ...['--input', input, '--concurrency', String(concurrency), '--progress-interval', '60'],
    ];
    let kept = 0;
    for (let k = 0; k < kills.length; k++) {
      const paidBefore = fake.answered;
      const started = startNode(args);
      child = started.child;
      const r = await started.done;
      assert.equal(r.signal, 'SIGKILL', `run ${k + 1}: ${r.stderr}`);
      await new Promise((resolve) => setTimeout(resolve, 100)); // the server finishes what it was answering
      // What this run paid for against what it stored: the difference is what the kill lost.
      const stored = peek(db, 'SELECT count(*) AS n FROM responses');
      const paid = fake.answered - paidBefore;
      const lost = paid - (stored - kept);
      assert.ok(lost >= 0 && lost <= concurrency, `kill ${k + 1}: ${paid} answers paid, ${stored - kept} stored`);
      assert.ok(stored > kept, `kill ${k + 1}: the run made progress`);
      kept = stored;
      // Every stored answer has its label: a response and its label are committed together.
      assert.equal(peek(db, "SELECT count(*) AS n FROM labels WHERE status = 'ok'"), stored);
    }
    child = undefined;
    const last = await startNode(args).done;
    assert.equal(last.code, 0, last.stderr);
    assert.equal(peek(db, "SELECT count(*) AS n FROM labels WHERE status = 'ok'"), n, 'one ok label per item');
    assert.equal(peek(db, "SELECT count(DISTINCT item_id) AS n FROM labels WHERE status = 'ok'"), n);
    assert.equal(peek(db, 'SELECT count(*) AS n FROM runs'), 1, 'the same run resumed each time');
    // Paid: every answer stored, plus what each kill lost; never an item asked again once its answer was stored.
    assert.equal(peek(db, 'SELECT count(*) AS n FROM responses'), n);
    assert.ok(fake.answered <= n + kills.length * concurrency, `${fake.answered} answers paid for ${n} items`);
    assert.equal(
      peek(db, 'SELECT max(c) AS n FROM (SELECT count(*) AS c FROM responses GROUP BY request_key)'),
      1,
      'no request key answered twice in the database',
    );
  });
});

describe('default max_tokens', () => {
  test('remembered per label set in the database: the first run stores the tokenizer count, a later one reads it', async () => {
    const dir = workDir();
    const fake = await fakeServer();
    const task = writeTask(dir);
    const db = path.join(dir, 'distill.db');
    const label = (input: string) =>
      startNode([
        'scripts/label.ts',
        ...['--task', task, '--db', db, '--model', 'fake-teacher', '--base-url', fake.url, '--price-in', '2', '--price-out', '10'],
        ...['--input', input, '--progress-interval', '60'],
      ]).done;
    const first = await label(writeJsonl(dir, 'a.jsonl', animalRows(2, 'a')));
    assert.equal(first.code, 0, first.stderr);
    const computed = defaultMaxTokens(LABELS);
    assert.equal(peek(db, 'SELECT max_tokens AS n FROM default_max_tokens'), computed);
    assert.equal(fake.requests[0].body.max_tokens, computed);
    // What the database remembers wins (so a run's keys never change under it): plant another value.
    const d = new Database(db);
    d.prepare('UPDATE default_max_tokens SET max_tokens = 77').run();
    d.close();
    const second = await label(writeJsonl(dir, 'b.jsonl', animalRows(1, 'b')));
    assert.equal(second.code, 0, second.stderr);
    assert.equal(fake.requests.at(-1)!.body.max_tokens, 77);
  });
});
