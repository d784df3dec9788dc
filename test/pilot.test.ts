/**
 * pilot.ts through the CLI against the fake OpenAI-compatible server: two models × two prompts on a stratified
 * sample, measured against gold; the sample's answers reused by a rerun and by label.ts with the chosen
 * configuration (the server's request count shows nothing is asked twice); agreement without gold; bad prompts.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { allocate, pilotSample, type SampleItem } from '../src/pilot/sample.ts';
import { defaultTeacher, lastUserText, type ChatRequest, type Fault, type TeacherAnswer } from './fake-openai.ts';
import { animalRows, fakeServer, LABELS, runScript, workDir, writeJsonl, writeTask, type ScriptResult } from './helpers.ts';

const show = (r: ScriptResult) => `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
const numberOf = (req: ChatRequest) => Number(/number (\d+)/.exec(lastUserText(req))![1]);

/** `good` answers the label the text mentions (p = 0.8); `weak` is wrong on every item whose number is a multiple of 4. */
function teacher(req: ChatRequest): TeacherAnswer {
  const answer = defaultTeacher(req);
  if (req.body.model !== 'weak' || numberOf(req) % 4 !== 0 || !('label' in answer)) return answer;
  const wrong = LABELS[(LABELS.indexOf(answer.label) + 1) % LABELS.length];
  return { label: wrong, probs: Object.fromEntries(LABELS.map((l) => [l, l === wrong ? 0.7 : 0.15])) };
}

/** `weak`'s first answer to items whose number is 3 mod 5 is not JSON (it is asked again). */
function invalidOnce(): (req: ChatRequest) => Fault | undefined {
  const seen = new Set<string>(); // per prompt: the first answer of each configuration
  return (req) => {
    const text = lastUserText(req);
    if (req.body.model !== 'weak' || numberOf(req) % 5 !== 3 || seen.has(text)) return undefined;
    seen.add(text);
    return { kind: 'invalid-json' };
  };
}

function teacherArgs(url: string): string[] {
  return ['--base-url', url, '--price-in', '2', '--price-out', '10', '--retry-base-ms', '5', '--progress-interval', '60'];
}

const lastJson = (r: ScriptResult) => JSON.parse(r.stdout.trim().split('\n').at(-1)!);

describe('pilot sample', () => {
  const items = (n: number, golds: (i: number) => string | null): SampleItem[] =>
    Array.from({ length: n }, (_, i) => ({ id: i + 1, hash: `h${(i * 7919) % 1000}`.padEnd(6, '0'), gold: golds(i) }));

  test('allocate: close to proportional, every class at least once, all when n covers them, monotone in n', () => {
    assert.deepEqual(allocate([50, 30, 20], 10), [5, 3, 2]);
    assert.deepEqual(allocate([90, 9, 1], 10), [8, 1, 1]);
    assert.deepEqual(allocate([5, 5, 0], 20), [5, 5, 0]);
    assert.deepEqual(allocate([10, 10, 10], 2), [1, 1, 0]);
    const sizes = [40, 25, 9, 3, 1];
    for (let n = 0; n < 78; n++) {
      const [a, b] = [allocate(sizes, n), allocate(sizes, n + 1)];
      assert.equal(
        b.reduce((x, y) => x + y, 0),
        n + 1,
      );
      assert.ok(
        b.every((k, j) => k >= a[j]),
        `allocate(${n + 1}) = ${b} adds to allocate(${n}) = ${a}`,
      );
    }
    for (const [sizes, n] of [
      [[7, 3, 1, 1], 6],
      [[100, 1, 1, 1], 5],
      [[3, 3, 3], 7],
    ] as const) {
      const a = allocate(sizes, n);
      assert.equal(
        a.reduce((x, y) => x + y, 0),
        n,
        `${sizes} → ${a}`,
      );
      a.forEach((k, j) => assert.ok(k >= 1 && k <= sizes[j], `${sizes} → ${a}`));
    }
  });

  test('stratified by gold, seeded, independent of input order, nested as the sample grows; uniform without gold', () => {
    const pool = items(60, (i) => (i % 10 === 9 ? null : LABELS[i % 3]));
    const s = pilotSample(pool, LABELS, 12, 7);
    assert.equal(s.gold, true);
    assert.equal(s.population, 54);
    assert.deepEqual(
      s.perClass.map((c) => c.sampled),
      [4, 4, 4],
    );
    const byId = new Map(pool.map((it) => [it.id, it]));
    for (const label of LABELS) assert.equal(s.ids.filter((id) => byId.get(id)!.gold === label).length, 4);
    assert.deepEqual(pilotSample([...pool].reverse(), LABELS, 12, 7).ids, s.ids, 'the input order does not matter');
    assert.notDeepEqual(pilotSample(pool, LABELS, 12, 8).ids, s.ids, 'another seed, another sample');
    const larger = new Set(pilotSample(pool, LABELS, 24, 7).ids);
    assert.ok(
      s.ids.every((id) => larger.has(id)),
      'a larger sample with the same seed contains the smaller one',
    );
    const none = pilotSample(
      items(20, () => null),
      LABELS,
      5,
      1,
    );
    assert.equal(none.gold, false);
    assert.equal(none.ids.length, 5);
  });
});

describe('pilot.ts', () => {
  test('two models × two prompts: metrics against gold, projections; a rerun and label.ts never pay for the sample again', async () => {
    const dir = workDir();
    const fake = await fakeServer({ teacher, fault: invalidOnce() });
    const p1 = writeTask(dir, { file: 'p1.md' });
    const p2 = writeTask(dir, { file: 'p2.md', body: 'Name the animal in this text.\n\nText: {{text}}' });
    const input = writeJsonl(dir, 'in.jsonl', animalRows(30));
    const db = path.join(dir, 'distill.db');
    const args = ['--db', db, '--input', input, '--models', 'good,weak', '--prompts', `${p1},${p2}`, '--sample', '12'];

    const r = await runScript('pilot', [...args, ...teacherArgs(fake.url), '--json']);
    assert.equal(r.code, 0, show(r));
    const out = lastJson(r);
    assert.equal(out.gold, true);
    assert.equal(out.items, 30);
    assert.deepEqual(
      out.sample.perClass.map((c: { sampled: number }) => c.sampled),
      [4, 4, 4],
    );
    const sampled: number[] = out.sample.items.map((id: string) => Number(id.replace('item', '')));
    assert.equal(sampled.length, 12);
    const weakWrong = sampled.filter((i) => i % 4 === 0).length;
    const weakInvalid = sampled.filter((i) => i % 5 === 3).length;
    assert.ok(weakWrong > 0 && weakInvalid > 0, `the sample ${sampled} exercises the weak teacher's mistakes`);
    // Every configuration asked once per sampled item; the weak one again after each invalid answer.
    assert.equal(fake.requests.length, 4 * 12 + 2 * weakInvalid);

    assert.deepEqual(
      out.configurations.map((c: { model: string; prompt: string }) => `${c.model} ${path.basename(c.prompt)}`),
      ['good p1.md', 'weak p1.md', 'good p2.md', 'weak p2.md'],
    );
    for (const c of out.configurations) {
      const weak = c.model === 'weak';
      assert.equal(c.answered, 12);
      assert.equal(c.metrics.n, 12);
      assert.equal(c.metrics.accuracy, weak ? (12 - weakWrong) / 12 : 1);
      // The good teacher is right with confidence 0.8 on every item: ECE = |0.8 - 1|.
      if (!weak) assert.ok(Math.abs(c.metrics.ece - 0.2) < 1e-3, `ECE ${c.metrics.ece}`);
      assert.ok(weak ? c.metrics.macroF1 < 1 : c.metrics.macroF1 === 1);
      assert.equal(c.invalidRate, weak ? weakInvalid / (12 + weakInvalid) : 0);
      assert.equal(c.answers, weak ? 12 + weakInvalid : 12);
      assert.equal(c.latency.n, c.answers);
      assert.ok(c.latency.p95 >= c.latency.p50);
      // Projections: the measured mean per item × 30 items; the Batch API at half the flags' price; the worst case
      // (every item at max_tokens) above what was measured.
      const p = c.projection;
      assert.ok(Math.abs(p.expected - (c.costPer1000 / 1000) * 30) < 1e-12);
      assert.ok(Math.abs(p.batchExpected - p.expected / 2) < 1e-12);
      assert.ok(Math.abs(p.batchWorst - p.worst / 2) < 1e-12);
      assert.ok(p.worst > p.expected, `worst ${p.worst} > expected ${p.expected}`);
      assert.ok(Math.abs(p.remainingExpected - (p.expected * 18) / 30) < 1e-12);
      assert.ok(c.spent > 0);
      assert.equal(c.status, 'completed');
    }
    // The weak teacher pays for its invalid answers: a higher cost per item than the good one on the same prompt.
    assert.ok(out.configurations[1].costPer1000 > out.configurations[0].costPer1000);
    assert.equal(out.best, 0, 'the good teacher: most accurate; of its two prompts the shorter one (ties go to the cheaper)');

    // The same pilot again: every answer is read back from the store, nothing is sent.
    const again = await runScript('pilot', [...args, ...teacherArgs(fake.url)]);
    assert.equal(again.code, 0, show(again));
    assert.equal(fake.requests.length, 4 * 12 + 2 * weakInvalid, 'a rerun sends nothing');
    assert.match(
      again.stdout,
      /pilot of task "animals": 12 of the 30 input item\(s\) with a gold label, stratified by gold label, seed 1: 4 cat, 4 dog, 4 bird/,
    );
    assert.match(again.stdout, /most accurate: good · p1\.md/);

    // Label everything with the chosen configuration: only the 18 items outside the sample are asked, in the
    // pilot's own run of that configuration.
    const before = fake.requests.length;
    const pilotRun = out.configurations[2].runId;
    const label = await runScript('label', ['--task', p2, '--db', db, '--model', 'good', '--input', input, ...teacherArgs(fake.url)]);
    assert.equal(label.code, 0, show(label));
    assert.equal(fake.requests.length - before, 18, 'the sample is not asked again');
    const asked = new Set(fake.requests.slice(before).map(numberOf));
    assert.ok(
      sampled.every((i) => !asked.has(i)),
      'no sampled item was asked',
    );
    assert.match(label.stdout, new RegExp(`run ${pilotRun} completed: 18 labeled, 0 failed, 0 pending, 12 already labeled`));
  });

  test('without gold: agreement between the configurations, and the output says so', async () => {
    const dir = workDir();
    const fake = await fakeServer({ teacher });
    const task = writeTask(dir);
    const input = writeJsonl(
      dir,
      'in.jsonl',
      animalRows(20).map(({ label: _gold, ...r }) => r),
    );
    const db = path.join(dir, 'distill.db');
    const args = ['--db', db, '--task', task, '--input', input, '--models', 'good,weak', '--sample', '8', ...teacherArgs(fake.url)];
    // label.ts --dry-run's "at most" for the whole input: the worst case the pilot projects for the same configuration.
    const dry = await runScript('label', [
      '--db',
      db,
      '--task',
      task,
      '--input',
      input,
      '--model',
      'good',
      ...teacherArgs(fake.url),
      '--dry-run',
    ]);
    assert.equal(dry.code, 0, show(dry));
    const atMost = /at most \$(\d+\.\d{4})/.exec(dry.stdout)![1];
    const r = await runScript('pilot', [...args, '--json']);
    assert.equal(r.code, 0, show(r));
    const out = lastJson(r);
    assert.ok(Number(atMost) > 0);
    assert.equal(out.configurations[0].projection.worst.toFixed(4), atMost);
    assert.equal(out.gold, false);
    assert.equal(fake.requests.length, 16);
    const sampled: number[] = out.sample.items.map((id: string) => Number(id.replace('item', '')));
    assert.equal(sampled.length, 8);
    for (const c of out.configurations) assert.equal(c.metrics, null);
    assert.equal(out.agreement.length, 1);
    assert.equal(out.agreement[0].n, 8);
    assert.equal(out.agreement[0].rate, sampled.filter((i) => i % 4 !== 0).length / 8);
    assert.equal(out.best, null);

    // A larger sample with the same seed contains this one: only the 2 new items are asked, by each configuration.
    const table = await runScript('pilot', [...args, '--sample', '10']);
    assert.equal(table.code, 0, show(table));
    assert.equal(fake.requests.length, 16 + 2 * 2);
    assert.match(table.stdout, /10 of 20 item\(s\) sampled at random/);
    assert.match(table.stdout, /no gold labels in the input, so no accuracy/);
    assert.match(table.stdout, /agreement between configurations/);
    assert.doesNotMatch(table.stdout, /accuracy {2}/);
  });

  test('a prompt of another task is refused in one line before a database is created', async () => {
    const dir = workDir();
    const task = writeTask(dir);
    const other = writeTask(dir, { name: 'pets', file: 'pets.md' });
    const input = writeJsonl(dir, 'in.jsonl', animalRows(6));
    const db = path.join(dir, 'distill.db');
    const r = await runScript('pilot', [
      '--db',
      db,
      '--task',
      task,
      '--input',
      input,
      '--models',
      'good',
      '--prompts',
      `${task},${other}`,
      ...teacherArgs('http://127.0.0.1:9/v1'),
    ]);
    assert.equal(r.code, 1, show(r));
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /pets\.md: a prompt variant must be a file of task "animals"/);
    assert.ok(!fs.existsSync(db), 'no database was created');
  });
});

describe('pilot.ts: stopping and failing', () => {
  test('the cap is over the whole pilot: a cap nothing fits under sends nothing, stops (exit 3) and says which configurations did not run', async () => {
    const dir = workDir();
    const fake = await fakeServer({ teacher });
    const task = writeTask(dir);
    const input = writeJsonl(dir, 'in.jsonl', animalRows(9));
    const db = path.join(dir, 'distill.db');
    const r = await runScript('pilot', [
      ...['--db', db, '--task', task, '--input', input, '--models', 'good,weak', '--sample', '3', '--max-cost', '0'],
      ...teacherArgs(fake.url),
      '--json',
    ]);
    assert.equal(r.code, 3, show(r));
    assert.equal(fake.requests.length, 0);
    const out = lastJson(r);
    assert.equal(out.status, 'stopped');
    assert.deepEqual(
      out.configurations.map((c: { status: string }) => c.status),
      ['stopped', 'not run'],
    );
    assert.match(out.configurations[0].message, /cost cap reached/);
    assert.equal(out.configurations[0].answered, 0);
  });

  test('a configuration that fails does not keep the next from being tried; the pilot exits 1', async () => {
    const dir = workDir();
    const fake = await fakeServer({ teacher, rejectLogprobs: true });
    const task = writeTask(dir);
    const input = writeJsonl(dir, 'in.jsonl', animalRows(6));
    const db = path.join(dir, 'distill.db');
    const r = await runScript('pilot', [
      ...['--db', db, '--task', task, '--input', input, '--models', 'good,weak', '--sample', '3', '--concurrency', '1'],
      ...teacherArgs(fake.url),
      '--json',
    ]);
    assert.equal(r.code, 1, show(r));
    const out = lastJson(r);
    assert.equal(out.status, 'failed');
    assert.deepEqual(
      out.configurations.map((c: { status: string }) => c.status),
      ['failed', 'failed'],
    );
    assert.deepEqual([...new Set(fake.requests.map((q) => q.body.model))], ['good', 'weak']);
  });
});
