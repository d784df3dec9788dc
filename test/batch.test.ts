/**
 * Labeling through the Batch API (src/batch/) against the fake server's /v1/files and /v1/batches, through the
 * real TeacherClient (the openai SDK over HTTP) and a real SQLite store. A "restart" is a second
 * runBatchLabeling call on a freshly opened store (or a second CLI process on the same database).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { batchJobSummaries } from '../src/store/batch-ledger.ts';
import { runBatchLabeling } from '../src/batch/batch.ts';
import type { BatchOptions } from '../src/batch/types.ts';
import { batchPrice, resolvePrice } from '../src/label/cost.ts';
import { runLabeling } from '../src/label/live.ts';
import { planLabeling } from '../src/label/plan.ts';
import type { LabelOptions } from '../src/label/types.ts';
import { Store, type ImportResult } from '../src/store/store.ts';
import type { Task } from '../src/task/task.ts';
import { RequestBuilder } from '../src/teacher/request.ts';
import { type ChatRequest, type FakeTeacher, type FakeTeacherOptions } from './fake-openai.ts';
import {
  animalRows,
  fakeServer,
  startNode,
  count,
  firstRequestsOf,
  importFile,
  itemText,
  LABELS,
  labelOptions,
  labelRows,
  loadTaskFile,
  makeClient,
  PRICE,
  runScript,
  workDir,
  writeJsonl,
  writeTask,
  type ScriptResult,
  sqlOn,
} from './helpers.ts';

const stores: Store[] = [];
after(() => {
  for (const s of stores) if (s.isOpen) s.close();
});

interface Setup {
  dir: string;
  db: string;
  fake: FakeTeacher;
  store: Store;
  task: Task;
  imported: ImportResult;
  opts: (over?: Parameters<typeof labelOptions>[4]) => LabelOptions;
  /** Close the store and open the database again, as a new process would. */
  restart: () => void;
}

async function setup(rows: Array<Record<string, unknown>>, fakeOpts: FakeTeacherOptions = {}): Promise<Setup> {
  const dir = workDir();
  const fake = await fakeServer(fakeOpts);
  const db = path.join(dir, 'distill.db');
  const task = loadTaskFile(writeTask(dir));
  const first = Store.open(db);
  stores.push(first);
  const imported = await importFile(first, task, writeJsonl(dir, 'in.jsonl', rows));
  const client = makeClient(fake.url);
  const s: Setup = {
    dir,
    db,
    fake,
    store: first,
    task,
    imported,
    opts: (over = {}) => labelOptions(s.store, task, imported, client, over),
    restart: () => {
      s.store.close();
      s.store = Store.open(db);
      stores.push(s.store);
    },
  };
  return s;
}

const WAIT: BatchOptions = { wait: true, pollIntervalMs: 0, retry: 'batch' };
const NO_WAIT: BatchOptions = { wait: false, pollIntervalMs: 0, retry: 'batch' };

/** Chat requests answered as batch lines, and those sent live. */
const batchLines = (f: FakeTeacher) => f.requests.filter((r) => r.batchId !== undefined);
const liveRequests = (f: FakeTeacher) => f.requests.filter((r) => r.batchId === undefined);

function mentioned(text: string): string {
  const l = LABELS.find((x) => text.includes(x));
  assert.ok(l, `no label in "${text}"`);
  return l;
}

/** Every item has exactly one ok label, the one its text mentions. */
function assertAllLabeled(s: Setup, n: number): void {
  const ok = labelRows(s.store).filter((r) => r.status === 'ok');
  assert.equal(ok.length, n, 'one ok label per item');
  assert.equal(new Set(ok.map((r) => r.ext_id)).size, n, 'no item labeled twice');
  for (const r of ok) assert.equal(r.label, mentioned(r.text), `hard label of ${r.ext_id}`);
}

/** No item text was answered twice (as a batch line or live). */
function assertNoneTwice(f: FakeTeacher, reqs: ChatRequest[] = f.requests): void {
  const texts = reqs.map(itemText);
  assert.equal(new Set(texts).size, texts.length, `an item was sent twice: ${texts.join(' | ')}`);
}

describe('batch: the happy path', () => {
  test('answers are interpreted like live ones (same labels, soft labels, request keys) at half the price', async () => {
    const rows = animalRows(9);
    const b = await setup(rows);
    const res = await runBatchLabeling(b.opts(), WAIT);
    assert.equal(res.status, 'completed', res.message);
    assert.equal(res.stats.labeled, 9);
    assert.deepEqual(res.jobs, { submitted: 1, collected: 1, pending: 0, pendingRequests: 0 });
    assert.equal(b.fake.batches.length, 1);
    assert.equal(batchLines(b.fake).length, 9);
    assert.equal(liveRequests(b.fake).length, 0);
    assertAllLabeled(b, 9);
    assert.equal(b.store.run(res.run!.id)!.status, 'completed');

    // The same items live, in another database: the same labels and distributions, the same request keys, twice the cost.
    const l = await setup(rows);
    const live = await runLabeling(l.opts());
    assert.equal(live.status, 'completed');
    const batchRows = labelRows(b.store);
    const liveRows = labelRows(l.store);
    assert.equal(batchRows.length, liveRows.length);
    for (let i = 0; i < batchRows.length; i++) {
      assert.equal(batchRows[i].label, liveRows[i].label);
      assert.deepEqual(batchRows[i].probs, liveRows[i].probs);
      assert.equal(batchRows[i].prompt_tokens, liveRows[i].prompt_tokens);
      assert.ok(
        Math.abs(batchRows[i].cost * 2 - liveRows[i].cost) < 1e-12,
        `batch cost ${batchRows[i].cost} is half of ${liveRows[i].cost}`,
      );
    }
    // The request keys are the live path's (RequestBuilder's): the servers differ here (base URLs), so compare with the builder.
    const keys = (st: Store) => sqlOn(st, (db) => db.prepare('SELECT request_key FROM labels ORDER BY item_id').pluck().all() as string[]);
    const builder = new RequestBuilder(b.task, b.opts().settings);
    assert.deepEqual(
      keys(b.store),
      b.store.itemsByIds(b.imported.itemIds).map((it) => builder.key(it)),
    );
    // custom_id is the request key.
    assert.deepEqual([...b.fake.batches[0].customIds].sort(), [...keys(b.store)].sort());

    // A rerun: nothing to do in either mode.
    const again = await runBatchLabeling(b.opts(), WAIT);
    assert.equal(again.status, 'nothing-to-do');
    assert.equal((await runLabeling(b.opts())).status, 'nothing-to-do');
    assert.equal(b.fake.requests.length, 9);
  });

  test('samples:N and none are ingested too', async () => {
    const b = await setup(animalRows(4));
    assert.equal((await runBatchLabeling(b.opts({ soft: 'samples:3' }), WAIT)).status, 'completed');
    assert.equal((await runBatchLabeling(b.opts({ soft: 'none' }), WAIT)).status, 'completed');
    const rows = labelRows(b.store);
    assert.equal(rows.filter((r) => r.soft_method === 'samples:3' && r.status === 'ok').length, 4);
    assert.equal(rows.filter((r) => r.soft_method === 'none' && r.status === 'ok' && r.probs === null).length, 4);
  });
});

describe('batch: never paid twice', () => {
  test('a request in a live job is not sent again, in batch or live mode; one labeled live is not batched', async () => {
    const b = await setup(animalRows(8), { batch: () => ({ inProgressPolls: 2 }) });
    // Three items live first.
    const live = await runLabeling(b.opts({ itemIds: b.imported.itemIds.slice(0, 3) }));
    assert.equal(live.stats.labeled, 3);

    const first = await runBatchLabeling(b.opts(), NO_WAIT);
    assert.equal(first.status, 'pending');
    assert.equal(first.plan.todo.length, 5, 'the three live labels are not batched');
    assert.equal(b.fake.batches[0].customIds.length, 5);

    // While the job is live: the live path sends nothing, and the batch path submits nothing new.
    const plan = await planLabeling(b.opts(), false);
    assert.equal(plan.inBatch, 5);
    const liveAgain = await runLabeling(b.opts());
    assert.equal(liveAgain.status, 'nothing-to-do');
    assert.match(liveAgain.message ?? '', /5 item\(s\) are in live batch jobs/);
    b.restart();
    const second = await runBatchLabeling(b.opts(), NO_WAIT);
    assert.equal(second.status, 'pending');
    assert.equal(second.jobs.submitted, 0);
    assert.equal(b.fake.batches.length, 1);

    b.restart();
    const third = await runBatchLabeling(b.opts(), WAIT);
    assert.equal(third.status, 'completed', third.message);
    assert.equal(b.fake.batches.length, 1);
    assertAllLabeled(b, 8);
    assertNoneTwice(b.fake);
  });
});

describe('batch: a restart in every state', () => {
  test('validating, in_progress, finalizing: each --no-poll invocation polls once and the last one ingests', async () => {
    const b = await setup(animalRows(6), { batch: () => ({ validatingPolls: 1, inProgressPolls: 2, finalizingPolls: 1 }) });
    const seen: string[] = [];
    let res = await runBatchLabeling(b.opts(), NO_WAIT);
    seen.push(b.fake.batches[0].status);
    for (let i = 0; i < 10 && res.status === 'pending'; i++) {
      b.restart();
      res = await runBatchLabeling(b.opts(), NO_WAIT);
      seen.push(b.fake.batches[0].status);
      const summary = batchJobSummaries(b.store)[0];
      assert.equal(summary.remote_status, b.fake.batches[0].status, 'the ledger records the polled state');
    }
    assert.deepEqual(seen, ['validating', 'validating', 'in_progress', 'in_progress', 'finalizing', 'completed']);
    assert.equal(res.status, 'completed', res.message);
    assert.equal(b.fake.batches.length, 1, 'one job, never resubmitted');
    assertAllLabeled(b, 6);
    assertNoneTwice(b.fake);
    const [job] = batchJobSummaries(b.store);
    assert.equal(job.state, 'done');
    assert.equal(job.answered, 6);
    assert.equal(job.reserved, 0);
  });

  test('killed before the upload (preparing): the rerun uploads the job it wrote', async () => {
    // Every upload fails: the job is written to the ledger but not uploaded.
    let failUploads = true;
    const b = await setup(animalRows(5), {
      apiFault: (c) => (failUploads && c.method === 'POST' && c.path === '/v1/files' ? { kind: 'status', status: 503 } : undefined),
    });
    const first = await runBatchLabeling(b.opts({ retry: { maxRetries: 0, baseDelayMs: 1, maxDelayMs: 1, maxServerWaitMs: 1 } }), NO_WAIT);
    assert.equal(first.status, 'pending');
    assert.equal(batchJobSummaries(b.store)[0].state, 'preparing');
    assert.equal(b.fake.files.size, 0);
    failUploads = false;
    b.restart();
    const second = await runBatchLabeling(b.opts(), WAIT);
    assert.equal(second.status, 'completed', second.message);
    assert.equal(b.fake.batches.length, 1);
    assert.equal(second.jobs.submitted, 0, 'no new job: the one in the ledger was uploaded');
    assertAllLabeled(b, 5);
  });

  test('killed between the upload and the batch (uploaded): the rerun creates it once', async () => {
    let failCreate = true;
    const b = await setup(animalRows(5), {
      apiFault: (c) => (failCreate && c.method === 'POST' && c.path === '/v1/batches' ? { kind: 'status', status: 500 } : undefined),
    });
    const first = await runBatchLabeling(b.opts({ retry: { maxRetries: 0, baseDelayMs: 1, maxDelayMs: 1, maxServerWaitMs: 1 } }), NO_WAIT);
    assert.equal(first.status, 'pending');
    assert.equal(batchJobSummaries(b.store)[0].state, 'uploaded');
    assert.equal(b.fake.batches.length, 0);
    failCreate = false;
    b.restart();
    assert.equal((await runBatchLabeling(b.opts(), WAIT)).status, 'completed');
    assert.equal(b.fake.batches.length, 1);
    assert.equal(b.fake.files.size, 2, 'one upload and one output file');
    assertAllLabeled(b, 5);
  });

  test('killed after the batch was created but before its id was recorded: the rerun finds it, no second batch', async () => {
    let drop = true;
    const b = await setup(animalRows(5), {
      apiFault: (c) => (drop && c.method === 'POST' && c.path === '/v1/batches' ? { kind: 'drop' } : undefined),
    });
    const first = await runBatchLabeling(b.opts({ retry: { maxRetries: 0, baseDelayMs: 1, maxDelayMs: 1, maxServerWaitMs: 1 } }), NO_WAIT);
    assert.equal(first.status, 'pending');
    assert.equal(batchJobSummaries(b.store)[0].state, 'uploaded');
    assert.equal(b.fake.batches.length, 1, 'the server did create it');
    drop = false;
    b.restart();
    const second = await runBatchLabeling(b.opts(), WAIT);
    assert.equal(second.status, 'completed', second.message);
    assert.equal(b.fake.batches.length, 1, 'found by the token in its metadata, not created again');
    assert.equal(batchJobSummaries(b.store)[0].batch_id, b.fake.batches[0].id);
    assertAllLabeled(b, 5);
    assertNoneTwice(b.fake);
  });

  test('killed while downloading the output (completed, not ingested): the rerun ingests it once', async () => {
    let failDownload = true;
    const b = await setup(animalRows(5), {
      apiFault: (c) => (failDownload && c.path.endsWith('/content') ? { kind: 'status', status: 502 } : undefined),
    });
    const first = await runBatchLabeling(b.opts({ retry: { maxRetries: 0, baseDelayMs: 1, maxDelayMs: 1, maxServerWaitMs: 1 } }), WAIT);
    assert.equal(first.status, 'pending', first.message);
    const [job] = batchJobSummaries(b.store);
    assert.equal(job.state, 'submitted');
    assert.equal(job.remote_status, 'completed');
    assert.equal(count(b.store, 'SELECT count(*) AS n FROM labels'), 0);
    failDownload = false;
    b.restart();
    assert.equal((await runBatchLabeling(b.opts(), NO_WAIT)).status, 'completed');
    assertAllLabeled(b, 5);
    assert.equal(count(b.store, 'SELECT count(*) AS n FROM responses'), 5, 'each answer recorded once');
  });
});

describe('batch: splitting', () => {
  test('by request count', async () => {
    const b = await setup(animalRows(10));
    const res = await runBatchLabeling(b.opts(), { ...WAIT, maxRequests: 4 });
    assert.equal(res.status, 'completed');
    assert.deepEqual(
      b.fake.batches.map((x) => x.customIds.length),
      [4, 4, 2],
    );
    assertAllLabeled(b, 10);
    assertNoneTwice(b.fake);
  });

  test('by bytes; a request larger than the limit is an error', async () => {
    const b = await setup(animalRows(10));
    // The size of one line, measured as the batch code writes it.
    const builder = new RequestBuilder(b.task, b.opts().settings);
    const item = b.store.itemsByIds([b.imported.itemIds[0]])[0];
    const one =
      Buffer.byteLength(
        JSON.stringify({ custom_id: builder.key(item), method: 'POST', url: '/v1/chat/completions', body: builder.build(item).params }),
      ) + 1;
    const maxBytes = 3 * one + Math.floor(one / 2);
    const res = await runBatchLabeling(b.opts(), { ...WAIT, maxBytes });
    assert.equal(res.status, 'completed');
    assert.ok(b.fake.batches.length >= 4, `${b.fake.batches.length} batches`);
    for (const x of b.fake.batches) assert.ok(x.bytes <= maxBytes, `${x.bytes} > ${maxBytes}`);
    assert.equal(
      b.fake.batches.reduce((a, x) => a + x.customIds.length, 0),
      10,
    );
    assertAllLabeled(b, 10);

    const small = await setup(animalRows(2));
    await assert.rejects(runBatchLabeling(small.opts(), { ...WAIT, maxBytes: 50 }), /more than the 50 allowed/);
    assert.equal(small.fake.batches.length, 0);
  });
});

describe('batch: failures inside a batch', () => {
  const failFirstLine = {
    batch: (i: { index: number }) =>
      i.index === 1 ? { lineError: (_l: unknown, n: number) => (n < 2 ? { status: 500 } : undefined) } : undefined,
  };

  test('failed lines are retried in the next batch (--batch-retry batch)', async () => {
    const b = await setup(animalRows(6), failFirstLine);
    const res = await runBatchLabeling(b.opts(), WAIT);
    assert.equal(res.status, 'completed', res.message);
    assert.deepEqual(
      b.fake.batches.map((x) => x.customIds.length),
      [6, 2],
    );
    assert.deepEqual(b.fake.batches[1].customIds, b.fake.batches[0].customIds.slice(0, 2));
    assert.equal(liveRequests(b.fake).length, 0);
    assertAllLabeled(b, 6);
    assert.equal(res.run!.errors, 2, 'the failed lines count as request errors');
  });

  test('failed lines are retried live (--batch-retry live)', async () => {
    const b = await setup(animalRows(6), failFirstLine);
    const res = await runBatchLabeling(b.opts(), { ...WAIT, retry: 'live' });
    assert.equal(res.status, 'completed', res.message);
    assert.equal(b.fake.batches.length, 1);
    assert.equal(liveRequests(b.fake).length, 2);
    assertAllLabeled(b, 6);
    // Live answers at the live price, batch answers at the batch price.
    const costs = sqlOn(b.store, (db) =>
      db.prepare('SELECT r.cost, r.prompt_tokens AS p, r.completion_tokens AS c FROM responses r').all(),
    ) as Array<{ cost: number; p: number; c: number }>;
    const live = costs.filter((x) => Math.abs(x.cost - (x.p * PRICE.input + x.c * PRICE.output) / 1e6) < 1e-12);
    assert.equal(live.length, 2);
  });

  test('an invalid answer in a batch is asked again, and counts towards --max-invalid', async () => {
    // Item 0 answers prose every time; item 1 only the first time.
    const b = await setup(animalRows(4), {
      fault: (req) => {
        const t = itemText(req);
        if (t.startsWith('number 0 ')) return { kind: 'invalid-json' };
        return undefined;
      },
    });
    const once = firstRequestsOf(1, (t) => t.startsWith('number 1 '), { kind: 'invalid-json' } as const);
    const b2 = await setup(animalRows(4), { fault: once });
    const res = await runBatchLabeling(b.opts({ maxInvalid: 1 }), WAIT);
    assert.equal(res.status, 'completed', res.message);
    assert.equal(res.stats.failed, 1);
    const failed = labelRows(b.store).filter((r) => r.status === 'failed');
    assert.equal(failed.length, 1);
    assert.equal(failed[0].attempts, 2, 'two invalid answers: the first batch and the retry');
    assert.match(failed[0].error ?? '', /^2 invalid answers/);
    assert.equal(b.fake.batches.length, 2);

    const res2 = await runBatchLabeling(b2.opts(), WAIT);
    assert.equal(res2.status, 'completed');
    assertAllLabeled(b2, 4);
    const retried = labelRows(b2.store).find((r) => r.text.startsWith('number 1 '))!;
    assert.equal(retried.attempts, 2);
  });

  test('an expired batch: its partial output is ingested and the rest retried', async () => {
    const b = await setup(animalRows(7), {
      batch: (i) => (i.index === 1 ? { inProgressPolls: 1, outcome: 'expired', answered: 3 } : undefined),
    });
    const res = await runBatchLabeling(b.opts(), WAIT);
    assert.equal(res.status, 'completed', res.message);
    assert.deepEqual(
      b.fake.batches.map((x) => [x.status, x.customIds.length]),
      [
        ['expired', 7],
        ['completed', 4],
      ],
    );
    assert.deepEqual(b.fake.batches[1].customIds, b.fake.batches[0].customIds.slice(3));
    assertAllLabeled(b, 7);
    assertNoneTwice(b.fake);
    const jobs = batchJobSummaries(b.store);
    assert.deepEqual(
      jobs.map((j) => [j.answered, j.failed]),
      [
        [4, 0],
        [3, 4],
      ],
    );
  });

  test('a cancelled batch is ingested like an expired one', async () => {
    const b = await setup(animalRows(4), { batch: (i) => (i.index === 1 ? { inProgressPolls: 100, answered: 1 } : undefined) });
    assert.equal((await runBatchLabeling(b.opts(), NO_WAIT)).status, 'pending');
    const cancel = await fetch(`${b.fake.url}/batches/${b.fake.batches[0].id}/cancel`, { method: 'POST' });
    assert.equal(cancel.status, 200);
    const res = await runBatchLabeling(b.opts(), WAIT);
    assert.equal(res.status, 'completed', res.message);
    assert.equal(b.fake.batches[0].status, 'cancelled');
    assert.equal(b.fake.batches[1].customIds.length, 3);
    assertAllLabeled(b, 4);
  });

  test('a batch that fails validation fails the run; a rerun resubmits its requests', async () => {
    const b = await setup(animalRows(3), {
      batch: (i) =>
        i.index === 1
          ? { outcome: 'failed', errors: [{ code: 'token_limit_exceeded', message: 'Enqueued token limit reached (fake).' }] }
          : undefined,
    });
    const res = await runBatchLabeling(b.opts(), WAIT);
    assert.equal(res.status, 'failed');
    assert.match(res.message ?? '', /failed: token_limit_exceeded: Enqueued token limit reached/);
    assert.equal(b.store.run(res.run!.id)!.status, 'failed');
    assert.equal(count(b.store, 'SELECT count(*) AS n FROM labels'), 0);
    const again = await runBatchLabeling(b.opts(), WAIT);
    assert.equal(again.status, 'completed', again.message);
    assert.equal(again.run!.id, res.run!.id, 'the same run resumes');
    assertAllLabeled(b, 3);
  });

  test('a line the API refuses (400) fails the run with its message', async () => {
    const b = await setup(animalRows(3), {
      batch: () => ({ lineError: (_l, n) => (n === 1 ? { status: 400, message: 'Invalid image (fake)' } : undefined) }),
    });
    const res = await runBatchLabeling(b.opts(), WAIT);
    assert.equal(res.status, 'failed');
    assert.match(res.message ?? '', /400: Invalid image \(fake\)/);
    assert.equal(labelRows(b.store).filter((r) => r.status === 'ok').length, 2, 'the other answers are kept');
  });

  test('a request that never gets an answer is given up after --max-retries batches', async () => {
    const b = await setup(animalRows(3), {
      batch: () => ({
        lineError: (l) => (l.body.messages?.some((m) => String(m.content).includes('number 2 ')) ? { status: 500 } : undefined),
      }),
    });
    const res = await runBatchLabeling(b.opts({ retry: { maxRetries: 2, baseDelayMs: 1, maxDelayMs: 1, maxServerWaitMs: 1 } }), WAIT);
    assert.equal(res.status, 'stopped');
    assert.match(res.message ?? '', /1 item\(s\) got no answer in 3 batches/);
    assert.equal(b.fake.batches.length, 3);
    assert.equal(labelRows(b.store).filter((r) => r.status === 'ok').length, 2);
  });
});

describe('batch: cost', () => {
  test('the price table can give a batch price; else it is half the live price', () => {
    const table = { models: { a: { input: 2, output: 8 }, b: { input: 2, output: 8, batch: { input: 1.5, output: 3 } } } };
    assert.deepEqual([batchPrice(resolvePrice('a', table, 't')).input, batchPrice(resolvePrice('a', table, 't')).output], [1, 4]);
    assert.deepEqual([batchPrice(resolvePrice('b-1', table, 't')).input, batchPrice(resolvePrice('b-1', table, 't')).output], [1.5, 3]);
    // Flags override the live price: the batch price is then half the flags.
    assert.equal(batchPrice(resolvePrice('b', table, 't', 4, 4)).input, 2);
  });

  test('--max-cost reserves the worst case at the batch price before submitting, and stops over budget', async () => {
    const b = await setup(animalRows(10), { batch: (i) => (i.index === 1 ? { inProgressPolls: 1 } : undefined) });
    const o = b.opts();
    const builder = new RequestBuilder(b.task, o.settings);
    const half = batchPrice(o.price);
    const worst = b.store.itemsByIds(b.imported.itemIds).map((it) => {
      const r = builder.build(it);
      return (r.promptTokens * half.input + r.maxCompletionTokens * half.output) / 1e6;
    });
    // Room for the worst case of exactly four items at the batch price (at the live price it would be two).
    const four = worst.slice(0, 4).reduce((a, x) => a + x, 0);
    const cap = four + worst[4] / 2;
    const first = await runBatchLabeling(b.opts({ maxCost: cap }), NO_WAIT);
    assert.equal(first.status, 'stopped');
    assert.match(first.message ?? '', /cost cap reached.*batch price.*1 batch job\(s\) pending/);
    assert.equal(b.fake.batches.length, 1);
    assert.equal(b.fake.batches[0].customIds.length, 4);
    assert.ok(Math.abs(batchJobSummaries(b.store)[0].reserved - four) < 1e-12, 'the reservation is in the ledger');

    // A second invocation while the job is live: its reservation still counts, nothing new is submitted.
    b.restart();
    const second = await runBatchLabeling(b.opts({ maxCost: cap }), NO_WAIT);
    assert.equal(second.status, 'stopped');
    assert.equal(b.fake.batches.length, 1);
    assert.equal(b.fake.batches[0].status, 'in_progress');

    // Waiting: the job is collected (its real cost is far below its worst case), which frees room for more, within the cap.
    const third = await runBatchLabeling(b.opts({ maxCost: cap }), WAIT);
    const spent = count(b.store, 'SELECT sum(cost) AS n FROM responses');
    assert.ok(spent <= cap + 1e-12, `spent ${spent} > cap ${cap}`);
    assert.ok(third.stats.labeled >= 4, `${third.stats.labeled} labeled`);
    assert.equal(count(b.store, `SELECT count(*) AS n FROM batch_jobs WHERE state != 'done'`), 0);

    // Raise the cap: the rest.
    const fourth = await runBatchLabeling(b.opts({ maxCost: 1 }), WAIT);
    assert.ok(fourth.status === 'completed' || fourth.status === 'nothing-to-do', fourth.message);
    assertAllLabeled(b, 10);
    assertNoneTwice(b.fake);
    const rows = labelRows(b.store);
    const expected = rows.reduce((a, r) => a + (r.prompt_tokens * half.input + r.completion_tokens * half.output) / 1e6, 0);
    assert.ok(
      Math.abs(count(b.store, 'SELECT sum(cost) AS n FROM responses') - expected) < 1e-12,
      'every answer priced at the batch price',
    );
  });
});

describe('batch: relabel hooks', () => {
  test('itemIds, keySalt, runParams, onRunOpened and limit hold in batch mode', async () => {
    const b = await setup(animalRows(6));
    const opened: number[] = [];
    const base = b.opts();
    const o: LabelOptions = {
      ...base,
      itemIds: b.imported.itemIds.slice(0, 5),
      settings: { ...base.settings, keySalt: 'relabel-1' },
      runParams: { policy: 'test' },
      onRunOpened: (r) => opened.push(r.id),
      limit: 3,
    };
    const first = await runBatchLabeling(o, WAIT);
    assert.equal(first.status, 'completed', first.message);
    assert.equal(first.stats.labeled, 3);
    assert.deepEqual(opened, [first.run!.id]);
    const params = JSON.parse(first.run!.params);
    assert.equal(params.policy, 'test');
    assert.equal(params.relabel_salt, 'relabel-1');
    const second = await runBatchLabeling(o, WAIT);
    assert.equal(second.stats.labeled, 2, 'the limit is per invocation');
    assert.equal(labelRows(b.store).length, 5);
    // An unsalted run asks again (other keys).
    assert.equal((await planLabeling(base, false)).todo.length, 6);
  });
});

// ---------------------------------------------------------------------------------------
// The CLI

function labelArgs(o: { task: string; db: string; url: string; input?: string }, extra: string[] = []): string[] {
  return [
    '--task',
    o.task,
    '--db',
    o.db,
    '--model',
    'fake-teacher',
    '--base-url',
    o.url,
    '--price-in',
    '2',
    '--price-out',
    '10',
    '--retry-base-ms',
    '5',
    '--progress-interval',
    '60',
    ...(o.input ? ['--input', o.input] : []),
    ...extra,
  ];
}

const show = (r: ScriptResult) => `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;

describe('batch: the CLI', () => {
  test('label.ts --batch end to end: --no-poll for cron (exit 3 while pending), then waiting; status; the key nowhere', async () => {
    const key = 'sk-test-BATCHSECRET987';
    const dir = workDir();
    // Batch 2's first line fails with a message that quotes the key, as a careless server might.
    const fake = await fakeServer({
      batch: (i) =>
        i.index === 1
          ? { inProgressPolls: 1 }
          : i.index === 2
            ? { lineError: (_l, n) => (n === 0 ? { status: 503, message: `overloaded (auth Bearer ${key})` } : undefined) }
            : undefined,
    });
    const task = writeTask(dir);
    const input = writeJsonl(dir, 'in.jsonl', animalRows(7));
    const db = path.join(dir, 'distill.db');
    const env = { OPENAI_API_KEY: key };
    const args = labelArgs({ task, db, url: fake.url, input }, ['--batch', '--batch-max-requests', '5', '--poll-interval', '0']);

    const dry = await runScript('label', [...args, '--dry-run'], env);
    assert.equal(dry.code, 0, show(dry));
    assert.match(dry.stdout, /dry run: 7 item\(s\) to label .* at the batch price; nothing sent/);

    // Cron style: submit and exit 3 (pending); the next invocation polls, ingests what finished, submits the retries.
    const r1 = await runScript('label', [...args, '--no-poll'], env);
    assert.equal(r1.code, 3, show(r1));
    assert.match(r1.stdout, /run 1 pending: 0 labeled, 0 failed, 7 pending.*batch jobs: 2 submitted, 0 collected, 2 pending/);
    assert.match(r1.stderr, /batch job 1: submitted batch_fake_1 \(5 requests/);
    const r2 = await runScript('label', [...args, '--no-poll'], env);
    assert.equal(r2.code, 3, show(r2));
    // Batch 2 finished at its first poll with one failed line (retried in batch 3); batch 1 is still in progress.
    assert.equal(fake.batches.length, 3);
    assert.deepEqual(fake.batches[2].customIds, [fake.batches[1].customIds[0]]);

    // Waiting: polls until every job is in.
    const r3 = await runScript('label', args, env);
    assert.equal(r3.code, 0, show(r3));
    assert.match(r3.stdout, /run 1 completed/);
    const r4 = await runScript('label', args, env);
    assert.equal(r4.code, 0, show(r4));
    assert.match(r4.stdout, /nothing to do: 7 item\(s\) already labeled; 0 requests sent/);
    assert.equal(fake.batches.length, 3);
    assertNoneTwice(
      fake,
      fake.requests.filter((r) => r.batchId !== undefined && r.batchId !== 'batch_fake_3'),
    );

    const status = await runScript('status', ['--db', db, '--json'], env);
    assert.equal(status.code, 0, show(status));
    const st = JSON.parse(status.stdout);
    assert.equal(st.total.labeled, 7);
    assert.equal(st.total.requests, 8, '7 answers and one failed line');

    const store = Store.open(db);
    stores.push(store);
    const jobs = batchJobSummaries(store);
    assert.deepEqual(
      jobs.map((j) => [j.job, j.state, j.remote_status, j.requests]),
      [
        [3, 'done', 'completed', 1],
        [2, 'done', 'completed', 2],
        [1, 'done', 'completed', 5],
      ],
    );
    store.close();

    // The key went to the server on every call, and nowhere else: not in any output, upload or database byte.
    for (const c of fake.apiCalls) assert.equal(c.headers.authorization, `Bearer ${key}`);
    for (const r of [dry, r1, r2, r3, r4, status])
      assert.ok(!(r.stdout + r.stderr).includes('BATCHSECRET'), 'the key leaked into the output');
    const uploads = [...fake.files.values()].filter((f) => f.purpose === 'batch');
    assert.equal(uploads.length, 3);
    for (const f of uploads) assert.equal(f.bytes.indexOf('BATCHSECRET'), -1, `the key is in the upload ${f.filename}`);
    // The server's error file quoted it; what was stored of that line is redacted.
    assert.ok([...fake.files.values()].some((f) => f.bytes.includes('BATCHSECRET')));
    for (const f of fs.readdirSync(dir).filter((x) => x.startsWith('distill.db'))) {
      assert.equal(fs.readFileSync(path.join(dir, f)).indexOf('BATCHSECRET'), -1, `the key is in ${f}`);
    }
  });
});

describe('batch: a killed CLI', () => {
  test('SIGKILL while waiting on a job, then the same command: the job is polled again, never resubmitted', async () => {
    const dir = workDir();
    let release = false;
    // The job stays in progress until the test releases it.
    const fake = await fakeServer({
      batch: () => ({
        get inProgressPolls() {
          return release ? 0 : Number.MAX_SAFE_INTEGER;
        },
      }),
    });
    const task = writeTask(dir);
    const input = writeJsonl(dir, 'in.jsonl', animalRows(6));
    const db = path.join(dir, 'distill.db');
    const args = ['scripts/label.ts', ...labelArgs({ task, db, url: fake.url, input }, ['--batch', '--poll-interval', '0.02'])];

    const first = startNode(args);
    while (!(fake.batches[0]?.polls >= 2)) {
      const exited = await Promise.race([first.done.then(() => true), new Promise<false>((r) => setTimeout(() => r(false), 20))]);
      if (exited) assert.fail(`label.ts exited before it was killed: ${show(await first.done)}`);
    }
    first.child.kill('SIGKILL');
    const killed = await first.done;
    assert.equal(killed.signal, 'SIGKILL');

    release = true;
    const second = await runScript('label', args.slice(1));
    assert.equal(second.code, 0, show(second));
    assert.match(second.stdout, /run 1 completed: 6 labeled/);
    assert.equal(fake.batches.length, 1, 'the job was not resubmitted');
    assert.equal(fake.requests.length, 6);
    const store = Store.open(db);
    stores.push(store);
    assert.equal(labelRows(store).filter((r) => r.status === 'ok').length, 6);
    store.close();
  });
});
