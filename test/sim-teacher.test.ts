/**
 * `npm run sim-teacher`: the simulated teacher a user starts to try the pipeline for free. Its answer model and
 * fault machinery in-process; then the command as a user runs it (a child process), with label.ts labeling through it.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { SettingError } from '../src/errors.ts';
import { faultAt, parseFaults, RateLimit } from '../src/sim/faults.ts';
import { makeTickets, TICKET_LABELS, writeTickets } from '../src/datasets/tickets.ts';
import { readItems } from '../src/input/read.ts';
import { GoldIndex, servesModel, simulatedAnswer } from '../src/sim/gold-teacher.ts';
import type { ChatRequest } from '../src/sim/openai-server.ts';
import { loadTask } from '../src/task/task.ts';
import { decodeSoft, softToProbs } from '../src/soft/codec.ts';
import { pngFile, REPO_ROOT, runScript, startNode, workDir, writeJsonl, writeTask, type ScriptResult } from './helpers.ts';

const LABELS4 = ['billing', 'bug report', 'feature request', 'other'];

/** Binomial tolerance: 4 standard deviations of a proportion p over n draws. */
const tolerance = (p: number, n: number) => 4 * Math.sqrt((p * (1 - p)) / n);

describe('the simulated answer', () => {
  test('right at the chosen accuracy, fixed by (seed, model, item), a distribution whose argmax is the answer', () => {
    const n = 4000;
    for (const accuracy of [0.5, 0.85, 1]) {
      let right = 0;
      let confRight = 0;
      let confWrong = 0;
      let goldRunnerUp = 0;
      for (let i = 0; i < n; i++) {
        const gold = LABELS4[i % 4];
        const a = simulatedAnswer(LABELS4, gold, `text:item ${i}`, 'sim-teacher', { accuracy, seed: 7 });
        assert.ok('label' in a);
        const probs = LABELS4.map((l) => a.probs[l] ?? 0);
        assert.ok(Math.abs(probs.reduce((x, y) => x + y, 0) - 1) < 1e-9, 'probabilities sum to 1');
        assert.ok(
          probs.every((p) => p >= 0),
          'no negative mass',
        );
        const top = Math.max(...probs);
        assert.equal(a.probs[a.label], top, 'the answer has the most mass');
        assert.equal(probs.filter((p) => p === top).length, 1, 'and only it');
        if (a.label === gold) {
          right++;
          confRight += top;
        } else {
          confWrong += top;
          const rest = LABELS4.filter((l) => l !== a.label).sort((x, y) => (a.probs[y] ?? 0) - (a.probs[x] ?? 0));
          if (rest[0] === gold) goldRunnerUp++;
        }
      }
      const acc = right / n;
      assert.ok(Math.abs(acc - accuracy) <= tolerance(accuracy, n) + 1e-12, `accuracy ${acc} for ${accuracy}`);
      if (accuracy < 1) {
        assert.ok(confRight / right > confWrong / (n - right), 'right answers are more confident than wrong ones on average');
        assert.equal(goldRunnerUp, n - right, 'a wrong answer puts the gold label second');
      }
    }
    const once = simulatedAnswer(LABELS4, 'other', 'text:x', 'sim-teacher', { accuracy: 0.5, seed: 1 });
    assert.deepEqual(simulatedAnswer(LABELS4, 'other', 'text:x', 'sim-teacher', { accuracy: 0.5, seed: 1 }), once, 'deterministic');
    // Another seed or another model errs on other items.
    const wrongSet = (seed: number, model: string) =>
      Array.from({ length: 400 }, (_, i) => simulatedAnswer(LABELS4, 'other', `text:${i}`, model, { accuracy: 0.5, seed }))
        .map((a) => ('label' in a && a.label === 'other' ? '1' : '0'))
        .join('');
    assert.notEqual(wrongSet(1, 'sim-teacher'), wrongSet(2, 'sim-teacher'));
    assert.notEqual(wrongSet(1, 'sim-a'), wrongSet(1, 'sim-b'));
  });

  test('two labels: the wrong answer still has the most mass', () => {
    for (let i = 0; i < 500; i++) {
      const a = simulatedAnswer(['yes', 'no'], 'yes', `text:${i}`, 'sim', { accuracy: 0.3, seed: 0 });
      assert.ok('label' in a);
      assert.ok(a.probs[a.label] > 0.5, JSON.stringify(a));
    }
  });

  test('the item behind a request: a text by its rendered prompt or (another prompt) its text, an image by its bytes', async () => {
    const dir = workDir();
    const textTask = loadTask(writeTask(dir, { name: 'tickets', labels: LABELS4, body: 'Ticket: {{text}}' }));
    const rows = [
      { id: 'a', text: 'refund me', label: 'billing' },
      { id: 'b', text: 'please refund me twice', label: 'other' }, // contains the first one's text
      { id: 'c', text: 'no gold here' },
    ];
    const texts = await GoldIndex.build(textTask, readItems(writeJsonl(dir, 't.jsonl', rows), textTask));
    assert.equal(texts.size, 2, 'items without gold are not indexed');
    const ask = (content: unknown): ChatRequest => ({ body: { messages: [{ role: 'user', content: content as string }] }, headers: {} });
    assert.deepEqual(texts.lookup(ask('Ticket: refund me')), { key: 'text:Ticket: refund me', gold: 'billing' });
    assert.deepEqual(texts.lookup(ask('Another prompt. Item: please refund me twice!')), {
      key: 'text:please refund me twice',
      gold: 'other',
    });
    assert.deepEqual(texts.lookup(ask('Label this: refund me')), { key: 'text:refund me', gold: 'billing' });
    assert.equal(texts.lookup(ask('Ticket: no gold here')), undefined);

    const imageTask = loadTask(writeTask(dir, { name: 'pics', labels: ['a', 'b'], input: 'image', file: 'pics.md' }));
    pngFile(dir, 'one.png', 1);
    pngFile(dir, 'two.png', 2);
    const imageRows = [
      { image: 'one.png', label: 'a' },
      { image: 'two.png', label: 'b' },
    ];
    const images = await GoldIndex.build(imageTask, readItems(writeJsonl(dir, 'i.jsonl', imageRows), imageTask));
    const png = (name: string) => `data:image/png;base64,${fs.readFileSync(path.join(dir, name)).toString('base64')}`;
    const askImage = (name: string) =>
      ask([
        { type: 'text', text: 'Which is it?' },
        { type: 'image_url', image_url: { url: png(name), detail: 'low' } },
      ]);
    assert.equal(images.lookup(askImage('two.png'))?.gold, 'b');
    assert.equal(images.lookup(askImage('one.png'))?.gold, 'a');
    pngFile(dir, 'three.png', 3);
    assert.equal(images.lookup(askImage('three.png')), undefined);
  });

  test('only sim and sim-* models are served', () => {
    assert.ok(servesModel('sim-teacher') && servesModel('sim') && servesModel('sim-b'));
    assert.ok(!servesModel('gpt-4o-mini') && !servesModel('simple') && !servesModel(''));
  });
});

describe('make-tickets: synthetic tickets for the free path', () => {
  test('distinct, balanced, the same for a seed, and read as the tickets task reads them', async () => {
    const a = makeTickets(400, 1);
    assert.deepEqual(makeTickets(400, 1), a);
    assert.notDeepEqual(makeTickets(400, 2), a);
    assert.equal(new Set(a.map((t) => t.text)).size, 400);
    for (const l of TICKET_LABELS) assert.equal(a.filter((t) => t.label === l).length, 100);
    const task = loadTask(path.join(REPO_ROOT, 'prompts', 'tickets.md'));
    assert.deepEqual(task.labels, [...TICKET_LABELS]);
    const dir = workDir();
    const items = [];
    for await (const it of readItems(writeTickets(dir, 400, 1), task)) items.push(it);
    assert.deepEqual(
      items.map((it) => it.gold),
      a.map((t) => t.label),
    );
  });
});

describe('faults and rate limits', () => {
  test('--faults: parsed strictly; each kind drawn at its rate, the same for the same seed', () => {
    assert.deepEqual(parseFaults('429:0.1,timeout:0.05'), [
      { kind: '429', rate: 0.1 },
      { kind: 'timeout', rate: 0.05 },
    ]);
    for (const bad of ['418:0.1', '429', '429:x', '429:1.5', '500:0.6,503:0.6', '429:0.1:2']) {
      assert.throws(() => parseFaults(bad), SettingError, bad);
    }
    const rates = parseFaults('429:0.2,invalid-json:0.1');
    const n = 5000;
    const seen = { status: 0, 'invalid-json': 0, none: 0 };
    for (let i = 1; i <= n; i++) {
      const f = faultAt(rates, 3, i);
      if (!f) seen.none++;
      else if (f.kind === 'status') {
        assert.equal(f.status, 429);
        seen.status++;
      } else if (f.kind === 'invalid-json') seen['invalid-json']++;
      else assert.fail(`unexpected fault ${f.kind}`);
      assert.deepEqual(faultAt(rates, 3, i), f, 'fixed by the seed and the request');
    }
    assert.ok(Math.abs(seen.status / n - 0.2) <= tolerance(0.2, n), `429 rate ${seen.status / n}`);
    assert.ok(Math.abs(seen['invalid-json'] / n - 0.1) <= tolerance(0.1, n), `invalid-json rate ${seen['invalid-json'] / n}`);
  });

  test('--rate-limit: the (N+1)th request in a minute gets a 429 with the wait the labeler honours', () => {
    const limit = new RateLimit(3);
    const t0 = 1_000_000;
    assert.equal(limit.check(t0), undefined);
    assert.equal(limit.check(t0 + 10), undefined);
    assert.equal(limit.check(t0 + 20), undefined);
    const refused = limit.check(t0 + 30_000);
    assert.ok(refused?.kind === 'status' && refused.status === 429);
    assert.equal(refused.headers?.['retry-after-ms'], String(30_000));
    assert.equal(limit.check(t0 + 60_000), undefined, 'the first request has left the window');
    assert.throws(() => new RateLimit(0), SettingError);
  });
});

// ---------------------------------------------------------------------------------------
// The command, as a user runs it

interface Sim {
  url: string;
  /** SIGINT, then the exit: the summary is on stderr. */
  stop(): Promise<ScriptResult>;
  stderr(): string;
}

const running: Array<() => Promise<unknown>> = [];
after(async () => {
  await Promise.all(running.map((stop) => stop()));
});

/** Start `npm run sim-teacher -- ARGS` (on any free port) and wait for its base URL on stdout. */
async function startSim(args: string[]): Promise<Sim> {
  const { child, done } = startNode(['scripts/sim-teacher.ts', '--port', '0', ...args]);
  let out = '';
  let err = '';
  child.stderr!.on('data', (d: string) => (err += d));
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', (d: string) => {
      out += d;
      const m = /^(http:\/\/127\.0\.0\.1:\d+\/v1)\n/.exec(out);
      if (m) resolve(m[1]);
    });
    void done.then((r) => reject(new Error(`sim-teacher exited ${r.code}: ${r.stderr}`)));
  });
  let stopped: Promise<ScriptResult> | undefined;
  const stop = () => {
    if (!stopped) {
      child.kill('SIGINT');
      stopped = done;
    }
    return stopped;
  };
  running.push(stop);
  return { url, stop, stderr: () => err };
}

const show = (r: ScriptResult) => `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;

/** `n` tickets with gold labels, each text unique; the task's template does not name the labels' words in the texts. */
function ticketInput(dir: string, n: number): string {
  return writeJsonl(
    dir,
    'tickets.jsonl',
    Array.from({ length: n }, (_, i) => ({
      id: `t${i}`,
      text: `ticket number ${i}: please look at case ${i * 7919}`,
      label: LABELS4[i % 4],
    })),
  );
}

function storedLabels(db: string): Array<{ gold: string; label: string; probs: number[]; soft_method: string }> {
  const d = new Database(db, { readonly: true, fileMustExist: true });
  try {
    const rows = d
      .prepare(
        "SELECT i.gold, l.label, l.soft, l.soft_method FROM labels l JOIN items i ON i.id = l.item_id WHERE l.status = 'ok' ORDER BY i.id",
      )
      .all() as Array<{ gold: string; label: string; soft: Buffer; soft_method: string }>;
    return rows.map((r) => ({ gold: r.gold, label: r.label, probs: softToProbs(decodeSoft(r.soft)), soft_method: r.soft_method }));
  } finally {
    d.close();
  }
}

describe('npm run sim-teacher', () => {
  test('label.ts through it: accuracy as asked, logprobs stored as distributions, other models refused, batch too', async () => {
    const dir = workDir();
    const n = 300;
    const accuracy = 0.8;
    const task = writeTask(dir, {
      name: 'tickets',
      labels: LABELS4,
      body: 'Classify the support ticket.\n\nTicket: {{text}}',
    });
    const input = ticketInput(dir, n);
    const sim = await startSim(['--task', task, '--input', input, '--accuracy', String(accuracy), '--seed', '3']);
    assert.match(sim.stderr(), /SIMULATOR: this is NOT a real teacher/);
    assert.match(sim.stderr(), new RegExp(`right 80\\.0% of the time \\(seed 3\\)`));

    const db = path.join(dir, 'sim.db');
    // No API key in the environment (startNode drops OPENAI_*); any key would do.
    const common = [
      '--db',
      db,
      '--task',
      task,
      '--input',
      input,
      '--base-url',
      sim.url,
      '--retry-base-ms',
      '5',
      '--progress-interval',
      '60',
    ];

    // A real model's name is refused, so simulated labels never pass for a real model's.
    const refused = await runScript('label', [...common, '--model', 'gpt-4o-mini', '--limit', '1', '--concurrency', '1']);
    assert.equal(refused.code, 1, show(refused));
    assert.match(refused.stdout, /404 The model `gpt-4o-mini` does not exist here: this is distillery's SIMULATOR/);
    for (const f of [db, `${db}-wal`, `${db}-shm`]) fs.rmSync(f, { force: true });

    const r = await runScript('label', [...common, '--model', 'sim-teacher']);
    assert.equal(r.code, 0, show(r));
    assert.match(r.stdout, new RegExp(`run 1 completed: ${n} labeled, 0 failed, 0 pending.*\\$0\\.0000`));

    const rows = storedLabels(db);
    assert.equal(rows.length, n);
    const right = rows.filter((x) => x.label === x.gold).length;
    assert.ok(Math.abs(right / n - accuracy) <= tolerance(accuracy, n), `accuracy ${right / n}, asked ${accuracy}`);
    for (const x of rows) {
      assert.equal(x.soft_method, 'logprobs');
      assert.equal(x.probs.length, 4);
      assert.ok(Math.abs(x.probs.reduce((a, b) => a + b, 0) - 1) < 0.01, `a distribution: ${x.probs}`);
      assert.equal(LABELS4[x.probs.indexOf(Math.max(...x.probs))], x.label, 'its argmax is the hard label');
    }
    // The soft labels carry the truth: on wrong answers, the gold label is the runner-up.
    const wrong = rows.filter((x) => x.label !== x.gold);
    assert.ok(wrong.length > 0);
    for (const x of wrong) {
      const order = x.probs.map((p, i) => [p, i] as const).sort((a, b) => b[0] - a[0]);
      assert.equal(LABELS4[order[1][1]], x.gold);
    }

    // The Batch API endpoints, through the same answers: another teacher name, the same accuracy model.
    const b = await runScript('label', [...common, '--model', 'sim-batch', '--batch', '--poll-interval', '0', '--limit', '20']);
    assert.equal(b.code, 0, show(b));
    assert.match(b.stdout, /run 2 completed: 20 labeled.*batch jobs: 1 submitted, 1 collected, 0 pending/);

    const end = await sim.stop();
    assert.equal(end.code, 0, show(end));
    // Its own tally agrees with what the store holds.
    assert.match(end.stderr, new RegExp(`sim-teacher: ${n} answer\\(s\\) \\(${right}/${n} right`));
    assert.match(end.stderr, /sim-batch: 20 answer\(s\)/);
  });

  test('faults at a rate: the labeler retries through them and labels everything', async () => {
    const dir = workDir();
    const task = writeTask(dir, { name: 'tickets', labels: LABELS4, body: 'Ticket: {{text}}' });
    const input = ticketInput(dir, 60);
    const sim = await startSim(['--task', task, '--input', input, '--faults', '500:0.15,429:0.1,invalid-json:0.1', '--seed', '1']);
    const db = path.join(dir, 'f.db');
    const r = await runScript('label', [
      ...['--db', db, '--task', task, '--input', input, '--base-url', sim.url, '--model', 'sim-teacher'],
      ...['--retry-base-ms', '5', '--max-retries', '10', '--max-invalid', '10', '--progress-interval', '60'],
    ]);
    assert.equal(r.code, 0, show(r));
    const m = /run 1 completed: 60 labeled, 0 failed, 0 pending, 0 already labeled; (\d+) requests \((\d+) errors\)/.exec(r.stdout);
    assert.ok(m, show(r));
    assert.ok(Number(m[2]) > 0, 'some requests failed and were retried');
    const end = await sim.stop();
    assert.match(end.stderr, /faults: .*500 \d+/);
    assert.match(end.stderr, /invalid-json \d+/);
  });

  test('bad flags: one line, exit 1', async () => {
    const dir = workDir();
    const r1 = await runScript('sim-teacher', ['--faults', 'teapot:0.1']);
    assert.equal(r1.code, 1, show(r1));
    assert.match(r1.stderr, /^error: --faults: "teapot:0\.1": expected KIND:RATE/);
    const r2 = await runScript('sim-teacher', ['--input', ticketInput(dir, 3)]);
    assert.equal(r2.code, 1, show(r2));
    assert.equal(r2.stderr, 'error: --input: give --task NAME|FILE too (it says how to read the file)\n');
  });
});
