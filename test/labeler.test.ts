/**
 * runLabeling against the fake OpenAI-compatible server, through the real
 * TeacherClient (the openai SDK over HTTP) and a real SQLite store.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { runLabeling } from '../src/label/live.ts';
import type { LabelOptions } from '../src/label/types.ts';
import { decodeSoft } from '../src/soft/codec.ts';
import { Store, type ImportResult } from '../src/store/store.ts';
import { TeacherClient } from '../src/teacher/client.ts';
import type { Task } from '../src/task/task.ts';
import {
  defaultTeacher,
  INVALID_JSON_CONTENT,
  startFakeTeacher,
  type ChatRequest,
  type Fault,
  type FakeTeacher,
  type FakeTeacherOptions,
} from './fake-openai.ts';
import {
  animalRows,
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
  pngFile,
  requestsPerItem,
  tmpDir,
  writeJsonl,
  writeTask,
  sqlOn,
} from './helpers.ts';

const dirs: string[] = [];
const fakes: FakeTeacher[] = [];
const stores: Store[] = [];
after(async () => {
  for (const s of stores) if (s.isOpen) s.close();
  await Promise.all(fakes.map((f) => f.close()));
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

interface Setup {
  dir: string;
  fake: FakeTeacher;
  store: Store;
  task: Task;
  imported: ImportResult;
  opts: (over?: Parameters<typeof labelOptions>[4]) => LabelOptions;
}

/** A temp dir, a fake server, a store with `rows` imported for a text task. */
async function setup(rows: Array<Record<string, unknown>>, fakeOpts: FakeTeacherOptions = {}, timeoutMs = 5_000): Promise<Setup> {
  const dir = tmpDir();
  dirs.push(dir);
  const fake = await startFakeTeacher(fakeOpts);
  fakes.push(fake);
  const store = Store.open(path.join(dir, 'distill.db'));
  stores.push(store);
  const task = loadTaskFile(writeTask(dir));
  const imported = await importFile(store, task, writeJsonl(dir, 'in.jsonl', rows));
  const client = makeClient(fake.url, timeoutMs);
  return { dir, fake, store, task, imported, opts: (over = {}) => labelOptions(store, task, imported, client, over) };
}

/** The label a text mentions: what the default fake teacher answers with 0.8. */
function mentioned(text: string): string {
  const l = LABELS.find((x) => text.includes(x));
  assert.ok(l, `no label in "${text}"`);
  return l;
}

function near(actual: number, expected: number, eps: number, what: string): void {
  assert.ok(Math.abs(actual - expected) <= eps, `${what}: ${actual} is not within ${eps} of ${expected}`);
}

function runRow(store: Store, id: number) {
  store.flush();
  return store.run(id)!;
}

/** Every item has exactly one ok label, equal to the label its text mentions. */
function assertAllLabeled(s: Setup, n: number): void {
  const ok = labelRows(s.store).filter((r) => r.status === 'ok');
  assert.equal(ok.length, n, 'one ok label per item');
  assert.equal(new Set(ok.map((r) => r.ext_id)).size, n, 'no item labeled twice');
  for (const r of ok) assert.equal(r.label, mentioned(r.text), `hard label of ${r.ext_id}`);
}

describe('runLabeling: happy path', () => {
  test('logprobs: hard and soft labels, usage and cost stored', async () => {
    const s = await setup(animalRows(9));
    const res = await runLabeling(s.opts());
    assert.equal(res.status, 'completed');
    assert.equal(res.stats.labeled, 9);
    assert.equal(s.fake.requests.length, 9);
    assert.equal(s.fake.answered, 9);

    const rows = labelRows(s.store);
    assert.equal(rows.length, 9);
    for (const r of rows) {
      assert.equal(r.status, 'ok');
      const hard = mentioned(r.text);
      assert.equal(r.label, hard);
      assert.equal(r.soft_method, 'logprobs');
      assert.ok(r.probs);
      assert.equal(r.probs.length, LABELS.length);
      LABELS.forEach((l, i) => near(r.probs![i], l === hard ? 0.8 : 0.1, 1e-4, `${r.ext_id} p(${l})`));

      // Usage as the fake server counts it: ceil(chars / 4) of the prompt; 5 tokens for {"label":"x"}.
      const req = s.fake.requests.find((q) => itemText(q) === r.text)!;
      const chars = req.body.messages!.reduce((a, m) => a + (typeof m.content === 'string' ? m.content.length : 0), 0);
      assert.equal(r.prompt_tokens, Math.ceil(chars / 4));
      assert.equal(r.completion_tokens, 5);
      near(r.cost, (r.prompt_tokens * PRICE.input + r.completion_tokens * PRICE.output) / 1e6, 1e-12, 'cost');
      assert.ok(r.cost > 0);
      assert.equal(r.attempts, 1);
    }
    // The soft label is stored as log-probabilities (temperable later).
    const blob = sqlOn(s.store, (db) => db.prepare('SELECT soft FROM labels LIMIT 1').get()) as { soft: Buffer };
    assert.equal(decodeSoft(blob.soft).kind, 'logprobs');

    const run = runRow(s.store, res.run!.id);
    assert.equal(run.status, 'completed');
    assert.equal(run.requests, 9);
    assert.equal(run.errors, 0);
    const spent = count(s.store, 'SELECT sum(cost) AS n FROM responses');
    near(
      spent,
      rows.reduce((a, r) => a + r.cost, 0),
      1e-12,
      'responses cost = labels cost',
    );
    near(res.stats.cost, spent, 1e-12, 'stats cost');
  });
});

describe('runLabeling: faults are retried and nothing is lost or paid twice', () => {
  const cases: Array<{ name: string; fault: Fault; invalid?: boolean; timeoutMs?: number }> = [
    { name: '429 with retry-after-ms', fault: { kind: 'status', status: 429, headers: { 'retry-after-ms': '20' } } },
    { name: '429 with retry-after: 0', fault: { kind: 'status', status: 429, headers: { 'retry-after': '0' } } },
    {
      name: '429 with x-ratelimit-reset-requests: 30ms',
      fault: { kind: 'status', status: 429, headers: { 'x-ratelimit-reset-requests': '30ms' } },
    },
    { name: '500', fault: { kind: 'status', status: 500 } },
    { name: '503', fault: { kind: 'status', status: 503 } },
    { name: 'dropped connection', fault: { kind: 'drop' } },
    { name: 'hang past the timeout', fault: { kind: 'hang' }, timeoutMs: 300 },
    { name: 'invalid JSON answer', fault: { kind: 'invalid-json' }, invalid: true },
    { name: 'unknown label', fault: { kind: 'unknown-label' }, invalid: true },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      const n = 6;
      // Items about cats and dogs (4 of 6) fail on their first two requests.
      const fault = firstRequestsOf(2, (t) => !t.includes('bird'), c.fault);
      const s = await setup(animalRows(n), { fault }, c.timeoutMs);
      const res = await runLabeling(s.opts());
      assert.equal(res.status, 'completed', res.message);
      assertAllLabeled(s, n);

      const faulted = 4 * 2;
      const invalid = count(s.store, `SELECT count(*) AS n FROM responses WHERE status = 'invalid'`);
      const okResponses = count(s.store, `SELECT count(*) AS n FROM responses WHERE status = 'ok'`);
      assert.equal(okResponses, n);
      assert.equal(invalid, c.invalid ? faulted : 0);
      assert.equal(s.fake.answered, n + invalid, 'answered = labels + invalid answers');
      assert.equal(s.fake.requests.length, n + faulted);

      const run = runRow(s.store, res.run!.id);
      assert.equal(run.requests, s.fake.requests.length, 'every HTTP request counted');
      assert.equal(run.errors, c.invalid ? 0 : faulted, 'errors = requests without a paid answer');
      assert.equal(run.requests - run.errors, s.fake.answered);
      assert.equal(res.stats.requests, run.requests);
      assert.equal(res.stats.errors, run.errors);

      // The label's attempts and cost cover every paid answer for the item.
      for (const r of labelRows(s.store)) {
        const paid = c.invalid && !r.text.includes('bird') ? 3 : 1;
        assert.equal(r.attempts, paid, `attempts of ${r.ext_id}`);
      }
      const labelCost = count(s.store, 'SELECT sum(cost) AS n FROM labels');
      const responseCost = count(s.store, 'SELECT sum(cost) AS n FROM responses');
      near(labelCost, responseCost, 1e-12, 'label costs add up to the paid responses');
    });
  }
});

describe('runLabeling: invalid answers, fatal errors, exhausted retries', () => {
  test('beyond maxInvalid an item is recorded as failed; reruns skip it unless retryFailed', async () => {
    let broken = true;
    const s = await setup(animalRows(6), {
      fault: (req) => (broken && itemText(req).includes('number 2 ') ? { kind: 'invalid-json' } : undefined),
    });
    const res = await runLabeling(s.opts({ maxInvalid: 2 }));
    assert.equal(res.status, 'completed', 'a failed item does not stop the run');
    assert.equal(res.stats.labeled, 5);
    assert.equal(res.stats.failed, 1);
    const perItem = requestsPerItem(s.fake.requests);
    assert.equal(perItem.get('number 2 is about a bird'), 3, '1 + maxInvalid requests');

    const rows = labelRows(s.store);
    const failed = rows.filter((r) => r.status === 'failed');
    assert.equal(failed.length, 1);
    assert.equal(failed[0].ext_id, 'item2');
    assert.equal(failed[0].label, null);
    assert.equal(failed[0].probs, null);
    assert.equal(failed[0].raw, INVALID_JSON_CONTENT);
    assert.match(failed[0].error ?? '', /3 invalid answers/);
    assert.match(failed[0].error ?? '', /not valid JSON/);
    assert.equal(failed[0].attempts, 3);
    assert.ok(failed[0].cost > 0, 'invalid answers were paid for');
    assert.equal(rows.filter((r) => r.status === 'ok').length, 5);

    const before = s.fake.requests.length;
    const again = await runLabeling(s.opts({ maxInvalid: 2 }));
    assert.equal(again.status, 'nothing-to-do');
    assert.equal(again.plan.failedBefore, 1);
    assert.equal(s.fake.requests.length, before, 'a failed item is not asked again');

    broken = false;
    const retried = await runLabeling(s.opts({ maxInvalid: 2, retryFailed: true }));
    assert.equal(retried.status, 'completed');
    assert.equal(s.fake.requests.length, before + 1, 'only the failed item is asked again');
    const ok = labelRows(s.store).filter((r) => r.status === 'ok');
    assert.equal(ok.length, 6);
    assert.equal(ok.find((r) => r.ext_id === 'item2')?.label, 'bird');
  });

  test('a server that rejects logprobs fails the run with advice to use --soft samples:N', async () => {
    const s = await setup(animalRows(10), { rejectLogprobs: true });
    const res = await runLabeling(s.opts({ concurrency: 4 }));
    assert.equal(res.status, 'failed');
    assert.match(res.message ?? '', /--soft samples:N/);
    assert.ok(s.fake.requests.length <= 4, `the run stops at the first fatal error (${s.fake.requests.length} requests)`);
    assert.equal(s.fake.answered, 0);
    assert.equal(count(s.store, 'SELECT count(*) AS n FROM labels'), 0);
    const run = runRow(s.store, res.run!.id);
    assert.equal(run.status, 'failed');
    assert.match(run.message ?? '', /--soft samples:N/);
  });

  test('retries exhausted: the item stays unlabeled, the run is stopped, a rerun labels it', async () => {
    let down = true;
    const s = await setup(animalRows(5), {
      fault: (req) => (down && itemText(req).includes('number 3 ') ? { kind: 'status', status: 503 } : undefined),
    });
    const res = await runLabeling(s.opts({ retry: { maxRetries: 2, baseDelayMs: 5, maxDelayMs: 20, maxServerWaitMs: 1000 } }));
    assert.equal(res.status, 'stopped');
    assert.match(res.message ?? '', /1 item\(s\) got no answer after 2 retries/);
    assert.equal(requestsPerItem(s.fake.requests).get('number 3 is about a cat'), 3, '1 + maxRetries attempts');
    const rows = labelRows(s.store);
    assert.equal(rows.length, 4);
    assert.ok(!rows.some((r) => r.ext_id === 'item3'), 'no label row for the unreachable item');
    assert.equal(runRow(s.store, res.run!.id).status, 'stopped');

    down = false;
    const before = s.fake.requests.length;
    const again = await runLabeling(s.opts({ retry: { maxRetries: 2, baseDelayMs: 5, maxDelayMs: 20, maxServerWaitMs: 1000 } }));
    assert.equal(again.status, 'completed');
    assert.equal(again.run!.id, res.run!.id, 'the same run is resumed');
    assert.equal(s.fake.requests.length, before + 1, 'only the missing item is asked');
    assertAllLabeled(s, 5);
    assert.equal(count(s.store, 'SELECT count(*) AS n FROM runs'), 1);
  });
});

describe('runLabeling: cost cap', () => {
  test('maxCost lets only some items through, never overspends, and a higher cap finishes the rest', async () => {
    const n = 12;
    const s = await setup(animalRows(n));
    // $0.1 per completion token: every request's worst case is over $2 (20 max tokens), its real cost ~$0.65.
    const price = { input: 10_000, output: 100_000, source: 'test' };
    const cap = 5;
    const res = await runLabeling(s.opts({ price, maxCost: cap }));
    assert.equal(res.status, 'stopped');
    assert.match(res.message ?? '', /cost cap/);
    const labeled = res.stats.labeled;
    assert.ok(labeled > 0 && labeled < n, `some but not all items labeled (${labeled})`);
    const spent = count(s.store, 'SELECT sum(cost) AS n FROM responses');
    assert.ok(spent <= cap, `spent $${spent} over the $${cap} cap`);
    assert.ok(count(s.store, 'SELECT sum(cost) AS n FROM labels') <= cap);
    assert.equal(s.fake.answered, labeled, 'no paid answer was thrown away');
    assert.equal(runRow(s.store, res.run!.id).status, 'stopped');

    const more = await runLabeling(s.opts({ price, maxCost: 100 }));
    assert.equal(more.status, 'completed');
    assert.equal(more.stats.labeled, n - labeled);
    assertAllLabeled(s, n);
    for (const [text, k] of requestsPerItem(s.fake.requests)) assert.equal(k, 1, `"${text}" asked ${k} times`);
    assert.ok(count(s.store, 'SELECT sum(cost) AS n FROM responses') <= 100);
  });
});

describe('runLabeling: idempotency', () => {
  test('a rerun sends nothing; a new prompt version asks again', async () => {
    const s = await setup(animalRows(5));
    const first = await runLabeling(s.opts());
    assert.equal(first.status, 'completed');
    assert.equal(s.fake.requests.length, 5);

    const again = await runLabeling(s.opts());
    assert.equal(again.status, 'nothing-to-do');
    assert.equal(again.plan.cached, 5);
    assert.equal(s.fake.requests.length, 5, 'no request on rerun');
    // Also when the items are not named: the whole task.
    const whole = await runLabeling(s.opts({ itemIds: undefined }));
    assert.equal(whole.status, 'nothing-to-do');
    assert.equal(s.fake.requests.length, 5);

    const v2 = loadTaskFile(writeTask(s.dir, { file: 'animals-v2.md', body: 'Name the animal in this text.\n\nText: {{text}}' }));
    assert.notEqual(v2.version, s.task.version);
    const second = await runLabeling({ ...s.opts(), task: v2 });
    assert.equal(second.status, 'completed');
    assert.equal(s.fake.requests.length, 10, 'the new prompt asks for every item');
    assert.ok(s.fake.requests.slice(5).every((r) => r.body.messages!.some((m) => String(m.content).startsWith('Name the animal'))));
    assert.equal(count(s.store, 'SELECT count(*) AS n FROM runs'), 2);
    assert.equal(count(s.store, 'SELECT count(DISTINCT prompt_version) AS n FROM runs'), 2);
  });
});

describe('runLabeling: soft modes', () => {
  test('samples:5 at temperature 1 stores the vote distribution and the majority', async () => {
    const s = await setup(animalRows(12));
    const res = await runLabeling(s.opts({ soft: 'samples:5' }));
    assert.equal(res.status, 'completed');
    for (const req of s.fake.requests) {
      assert.equal(req.body.n, 5);
      assert.equal(req.body.temperature, 1);
      assert.ok(!req.body.logprobs);
    }
    let notUnanimous = 0;
    for (const r of labelRows(s.store)) {
      assert.equal(r.status, 'ok');
      assert.equal(r.soft_method, 'samples:5');
      const votes = (JSON.parse(r.raw!) as string[]).map((c) => JSON.parse(c).label as string);
      assert.equal(votes.length, 5);
      const counts = LABELS.map((l) => votes.filter((v) => v === l).length);
      assert.ok(r.probs);
      near(
        r.probs.reduce((a, b) => a + b, 0),
        1,
        1e-6,
        'sum',
      );
      // Stored as dense16 (the default for a task with up to 20 labels): fp16 keeps ~3 decimal digits.
      r.probs.forEach((p, i) => {
        near(p * 5, Math.round(p * 5), 5e-3, `p(${LABELS[i]}) is a multiple of 1/5`);
        near(p, counts[i] / 5, 1e-3, `p(${LABELS[i]}) = its vote share`);
      });
      assert.equal(counts[LABELS.indexOf(r.label!)], Math.max(...counts), 'hard label is a majority');
      if (Math.max(...counts) < 5) notUnanimous++;
    }
    assert.ok(notUnanimous > 0, 'at temperature 1 some items get split votes');
  });

  test('none: hard labels only', async () => {
    const s = await setup(animalRows(4));
    const res = await runLabeling(s.opts({ soft: 'none' }));
    assert.equal(res.status, 'completed');
    assert.ok(s.fake.requests.every((r) => !r.body.logprobs && r.body.n == null));
    for (const r of labelRows(s.store)) {
      assert.equal(r.status, 'ok');
      assert.equal(r.label, mentioned(r.text));
      assert.equal(r.probs, null);
      assert.equal(r.soft_method, 'none');
    }
  });
});

describe('runLabeling: image task', () => {
  test('sends the image as a data URL and stores the labels', async () => {
    const dir = tmpDir();
    dirs.push(dir);
    const fake = await startFakeTeacher();
    fakes.push(fake);
    const store = Store.open(path.join(dir, 'distill.db'));
    stores.push(store);
    const task = loadTaskFile(writeTask(dir, { name: 'drawings', input: 'image' }));
    const files = [0, 1, 2].map((i) => pngFile(dir, `img${i}.png`, i));
    const input = writeJsonl(
      dir,
      'images.jsonl',
      files.map((f, i) => ({ id: `img${i}`, image: path.basename(f) })),
    );
    const imported = await importFile(store, task, input);
    const res = await runLabeling(labelOptions(store, task, imported, makeClient(fake.url)));
    assert.equal(res.status, 'completed');
    assert.equal(fake.requests.length, 3);

    const sent = fake.requests.map((r) => {
      const user = r.body.messages!.find((m) => m.role === 'user')!;
      assert.ok(Array.isArray(user.content), 'multi-part user message');
      const part = user.content.find((p) => p.type === 'image_url') as { image_url: { url: string; detail: string } } | undefined;
      assert.ok(part, 'an image_url part');
      assert.match(part.image_url.url, /^data:image\/png;base64,/);
      assert.equal(part.image_url.detail, 'low');
      return Buffer.from(part.image_url.url.slice('data:image/png;base64,'.length), 'base64');
    });
    const expected = files.map((f) => fs.readFileSync(f));
    for (const bytes of sent)
      assert.ok(
        expected.some((e) => e.equals(bytes)),
        'the data URL carries the file bytes',
      );

    const rows = sqlOn(store, (db) => db.prepare(`SELECT status, label, soft FROM labels`).all()) as Array<{
      status: string;
      label: string;
      soft: Buffer;
    }>;
    assert.equal(rows.length, 3);
    for (const r of rows) {
      assert.equal(r.status, 'ok');
      assert.ok(LABELS.includes(r.label));
      assert.ok(r.soft);
    }
  });
});

describe('runLabeling: concurrency and rate limits', () => {
  test('never more than `concurrency` requests in flight', async () => {
    let inFlight = 0;
    let peak = 0;
    const s = await setup(animalRows(24), {
      latencyMs: 30,
      // fault() runs when a request arrives, teacher() just before it is answered.
      fault: () => {
        peak = Math.max(peak, ++inFlight);
        return undefined;
      },
      teacher: (req: ChatRequest) => {
        inFlight--;
        return defaultTeacher(req);
      },
    });
    const res = await runLabeling(s.opts({ concurrency: 4 }));
    assert.equal(res.status, 'completed');
    assert.equal(s.fake.requests.length, 24);
    assert.ok(peak <= 4, `${peak} requests in flight`);
    assert.equal(peak, 4, 'the 4 slots are used');
    assert.equal(inFlight, 0);
  });

  test('rpm spaces requests: never more than the bucket plus what refilled', async () => {
    const rpm = 240; // a bucket of 40, refilled at 4 per second
    const capacity = rpm / 6;
    const arrivals: number[] = [];
    let t0 = 0;
    const n = capacity + 6; // the last 6 wait for the bucket to refill (~1.5 s)
    const s = await setup(animalRows(n), {
      latencyMs: 5,
      fault: () => {
        arrivals.push(performance.now());
        return undefined;
      },
    });
    t0 = performance.now();
    const res = await runLabeling(s.opts({ concurrency: 4, limits: { rpm } }));
    assert.equal(res.status, 'completed');
    assert.equal(arrivals.length, n);
    // Request k (1-based) can only have started once k - capacity tokens refilled.
    arrivals.forEach((t, i) => {
      const allowed = capacity + Math.floor(((t - t0) * rpm) / 60_000) + 1;
      assert.ok(i + 1 <= allowed, `request ${i + 1} arrived after ${Math.round(t - t0)} ms: more than ${allowed} allowed`);
    });
  });
});

describe('runLabeling: stop signal', () => {
  test('after the stop signal no new request starts, not even one waiting for the rate limiter', async () => {
    const stop = new AbortController();
    // rpm 60: a bucket of 10, then one request a second.
    const s = await setup(animalRows(14), {
      fault: (_req, k) => {
        if (k === 10) stop.abort();
        return undefined;
      },
    });
    const res = await runLabeling(s.opts({ concurrency: 2, limits: { rpm: 60 }, stopSignal: stop.signal }));
    assert.equal(res.status, 'interrupted');
    assert.equal(s.fake.requests.length, 10, 'requests sent after the stop signal');
    assert.equal(res.stats.labeled, 10, 'answers in flight are kept');
    assert.equal(res.stats.unreachable, 0, 'items not asked because of the stop are not "unreachable"');
    assert.equal(count(s.store, `SELECT count(*) AS n FROM labels WHERE status = 'ok'`), 10);
    assert.equal(runRow(s.store, res.run!.id).status, 'interrupted');

    // The same command resumes the rest.
    const rest = await runLabeling(s.opts({ concurrency: 2 }));
    assert.equal(rest.status, 'completed');
    assert.equal(rest.run!.id, res.run!.id);
    assertAllLabeled(s, 14);
    assert.equal(s.fake.requests.length, 14);
  });
});

describe('runLabeling: secrets', () => {
  test('an error message that quotes the API key is stored without it', async () => {
    const key = 'proxy-token-XYZ987654';
    const s = await setup(animalRows(3), {
      fault: (req) => ({
        kind: 'status',
        status: 429,
        body: {
          error: {
            message: `quota exceeded for ${String(req.headers.authorization)}`,
            type: 'insufficient_quota',
            param: null,
            code: 'insufficient_quota',
          },
        },
      }),
    });
    const client = new TeacherClient({ baseURL: s.fake.url, apiKeyEnv: 'PROXY_TOKEN', timeoutMs: 5_000, env: { PROXY_TOKEN: key } });
    const res = await runLabeling({ ...s.opts(), client });
    assert.equal(res.status, 'failed');
    assert.equal(s.fake.requests[0].headers.authorization, `Bearer ${key}`, 'the key was sent');
    assert.match(res.message ?? '', /insufficient quota: .*quota exceeded for Bearer \[redacted\]/);
    s.store.close();
    for (const f of fs.readdirSync(s.dir).filter((x) => x.startsWith('distill.db'))) {
      assert.equal(fs.readFileSync(path.join(s.dir, f)).indexOf(key), -1, `the key is in ${f}`);
    }
  });
});
