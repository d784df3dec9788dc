/**
 * Relabeling: the policies on a hand-made store, relabel passes against the fake
 * teacher (history kept, drift recorded, resume after a stop), the lease, and the
 * CLI once and on a cron schedule.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { runLabeling } from '../src/label/live.ts';
import { configHash } from '../src/label/plan.ts';
import { parseAge, parsePolicies, selectItems, type SelectContext } from '../src/relabel/policy.ts';
import { relabelOnce } from '../src/relabel/relabel.ts';
import { encodeSoft } from '../src/soft/codec.ts';
import { currentLease, Lease, LeaseHeld, processGone, procStatState } from '../src/store/lease.ts';
import { Store, type TaskRow } from '../src/store/store.ts';
import { defaultTeacher, type ChatRequest, type FakeTeacherOptions } from './fake-openai.ts';
import {
  animalRows,
  count,
  fakeServer,
  importFile,
  itemText,
  LABELS,
  labelOptions,
  loadTaskFile,
  makeClient,
  sqlOn,
  startNode,
  workDir,
  writeJsonl,
  writeTask,
} from './helpers.ts';

describe('relabel policies', () => {
  test('parsePolicies and durations', () => {
    assert.deepEqual(
      parsePolicies(['changed,stale:7d', 'low-confidence:0.6']).map((p) => p.kind),
      ['changed', 'stale', 'low-confidence'],
    );
    assert.equal(parseAge('7d'), 7 * 86_400_000);
    assert.equal(parseAge('1h30m'), 90 * 60_000);
    assert.equal(parseAge('0s'), 0);
    assert.throws(() => parseAge('7 days'), /stale:7 days: expected a duration/);
    assert.throws(() => parsePolicies('low-confidence:2'), /probability/);
    assert.throws(() => parsePolicies('sometimes'), /unknown policy/);
    assert.throws(() => parsePolicies('changed,changed'), /given twice/);
    assert.throws(() => parsePolicies(''), /at least one/);
  });

  /**
   * Items 0..9 of one task (version V), labeled by hand:
   *   run a (gpt-a, V): items 0-6, top probability 0.9 except item 3 (0.4) and item 4 (0.55); item 5's label is 10 days old.
   *   run b (gpt-a, old prompt): item 7.      run c (gpt-b, V): item 8, and item 2 with another label than gpt-a's.
   *   item 9: never labeled.
   */
  async function handMadeStore() {
    const dir = workDir();
    const task = loadTaskFile(writeTask(dir));
    const store = Store.open(path.join(dir, 'hand.db'));
    const imported = await importFile(store, task, writeJsonl(dir, 'items.jsonl', animalRows(10)));
    const ids = imported.itemIds;
    const run = (teacher: string, promptVersion: string) =>
      store.createRun({
        task_id: imported.taskRow.id,
        kind: 'llm',
        teacher,
        base_url: 'http://x/v1',
        prompt_version: promptVersion,
        config_hash: `${teacher}-${promptVersion}`,
        params: JSON.stringify({ soft: 'logprobs' }),
        labels: JSON.stringify(LABELS),
        items_total: 0,
      });
    const put = (runId: number, item: number, label: string, top: number) => {
      const probs = LABELS.map((l) => (l === label ? top : (1 - top) / 2));
      store.insertLabel({
        itemId: ids[item],
        runId,
        requestKey: `k${runId}-${item}`,
        status: 'ok',
        label,
        soft: encodeSoft({ kind: 'probs', values: Float32Array.from(probs) }),
        softMethod: 'logprobs',
        sparse: false,
        raw: null,
        promptTokens: 0,
        completionTokens: 0,
        cost: 0,
        latencyMs: 0,
        attempts: 1,
        error: null,
      });
    };
    const a = run('gpt-a', task.version);
    for (let i = 0; i <= 6; i++) put(a.id, i, LABELS[i % 3], i === 3 ? 0.4 : i === 4 ? 0.55 : 0.9);
    const b = run('gpt-a', 'old-version');
    put(b.id, 7, LABELS[7 % 3], 0.9);
    const c = run('gpt-b', task.version);
    put(c.id, 8, LABELS[8 % 3], 0.9);
    put(c.id, 2, 'cat', 0.9); // gpt-a said bird
    sqlOn(store, (db) =>
      db
        .prepare(`UPDATE labels SET created_at = ? WHERE item_id = ? AND run_id = ?`)
        .run(new Date(Date.now() - 10 * 86_400_000).toISOString(), ids[5], a.id),
    );
    const ctx = (over: Partial<SelectContext> = {}): SelectContext => ({
      model: 'gpt-a',
      promptVersion: task.version,
      baseConfig: 'cfg',
      now: new Date(),
      ...over,
    });
    return { store, task, taskRow: imported.taskRow as TaskRow, ids, ctx };
  }

  test('each policy selects exactly its items, once each, most useful first', async () => {
    const { store, taskRow, ids, ctx } = await handMadeStore();
    const pick = (spec: string, over: Partial<SelectContext> = {}) =>
      selectItems(store, taskRow, parsePolicies(spec), ctx(over)).map((s) => `${ids.indexOf(s.itemId)}:${s.reason}`);
    assert.deepEqual(pick('disagree'), ['2:disagree']);
    assert.deepEqual(pick('low-confidence:0.5'), ['3:low-confidence']);
    assert.deepEqual(pick('low-confidence:0.6'), ['3:low-confidence', '4:low-confidence']); // lowest confidence first
    // Item 2's current label is gpt-b's (the latest), item 7's is from another prompt, item 8's from gpt-b: oldest label first.
    assert.deepEqual(pick('changed'), ['7:changed', '8:changed', '2:changed']);
    assert.deepEqual(pick('stale:7d'), ['5:stale']);
    assert.deepEqual(pick('stale:0s').length, 9); // every labeled item; never item 9
    assert.deepEqual(pick('stale:7d,changed,low-confidence:0.5,disagree'), [
      '2:disagree',
      '3:low-confidence',
      '7:changed',
      '8:changed',
      '5:stale',
    ]);
    assert.deepEqual(pick('stale:7d,changed,low-confidence:0.5,disagree', { limit: 2 }), ['2:disagree', '3:low-confidence']);
    // A student that disagrees with item 4's label (and agrees on item 0) adds item 4 to `disagree`, the weaker evidence first.
    const student = new Map([
      [ids[4], { hard: 0, probs: [0.8, 0.05, 0.15] }], // label is bird (index 2): student gives it 0.15
      [ids[0], { hard: 0, probs: [0.9, 0.05, 0.05] }], // label cat: agrees
      [ids[6], { hard: 1, probs: [0.02, 0.9, 0.08] }], // label cat: student gives it 0.02
    ]);
    assert.deepEqual(pick('disagree', { student }), ['6:disagree', '4:disagree', '2:disagree']);
    store.close();
  });
});

describe('relabel passes', () => {
  async function labeledStore(n: number, teacher: FakeTeacherOptions['teacher']) {
    const dir = workDir();
    const fake = await fakeServer({ teacher });
    const task = loadTaskFile(writeTask(dir));
    const store = Store.open(path.join(dir, 'r.db'));
    const imported = await importFile(store, task, writeJsonl(dir, 'items.jsonl', animalRows(n)));
    const client = makeClient(fake.url);
    const base = labelOptions(store, task, imported, client);
    assert.equal((await runLabeling(base)).status, 'completed');
    return { dir, fake, store, task, base: { ...base, itemIds: undefined } };
  }

  test('stale:0s asks every item again, keeps the old labels and records drift', async () => {
    let flip = false; // second pass: items mentioning "dog" are answered "bird"
    const { fake, store, base } = await labeledStore(9, (req: ChatRequest) => {
      const a = defaultTeacher(req);
      return flip && itemText(req).includes('dog') ? { label: 'bird', probs: { bird: 0.8, cat: 0.1, dog: 0.1 } } : a;
    });
    assert.equal(fake.answered, 9);
    flip = true;
    const out = await relabelOnce({ label: base, policies: parsePolicies('stale:0s'), run: runLabeling });
    assert.equal(out.result?.status, 'completed');
    assert.equal(fake.answered, 18, 'every item asked once more');
    assert.equal(count(store, 'SELECT count(*) AS n FROM labels'), 18, 'old labels stay');
    assert.deepEqual(out.drift, { compared: 9, changed: 3, confusion: { cat: { cat: 3 }, dog: { bird: 3 }, bird: { bird: 3 } } });
    const stored = JSON.parse(
      (sqlOn(store, (db) => db.prepare('SELECT drift FROM relabels WHERE id = ?').get(out.relabel!.id)) as { drift: string }).drift,
    );
    assert.deepEqual(stored, out.drift);

    // Every answer has top probability 0.8, but this teacher with these settings was just asked again: not twice.
    const low = await relabelOnce({ label: base, policies: parsePolicies('low-confidence:0.9'), run: runLabeling });
    assert.equal(low.itemIds.length, 0);
    assert.equal(fake.answered, 18);
    store.close();
  });

  test('low-confidence asks once per teacher setting: a scheduled pass does not pay again for the same doubt', async () => {
    const { fake, store, base } = await labeledStore(6, defaultTeacher);
    const first = await relabelOnce({ label: base, policies: parsePolicies('low-confidence:0.9'), run: runLabeling });
    assert.equal(first.itemIds.length, 6);
    assert.equal(fake.answered, 12);
    const second = await relabelOnce({ label: base, policies: parsePolicies('low-confidence:0.9'), run: runLabeling });
    assert.equal(second.itemIds.length, 0);
    assert.equal(second.result, undefined);
    // Another teacher setting (a higher max_tokens here) is a new question.
    const other = await relabelOnce({
      label: { ...base, settings: { ...base.settings, maxTokens: 21 } },
      policies: parsePolicies('low-confidence:0.9'),
      run: runLabeling,
    });
    assert.equal(other.itemIds.length, 6);
    assert.equal(fake.answered, 18);
    store.close();
  });

  test('a pass stopped by its cost cap resumes with the same items and pays for none twice', async () => {
    const { fake, store, base } = await labeledStore(12, defaultTeacher);
    // Each answer costs ~$0.0001 here (PRICE: $2/$10 per 1M) and reserves its worst case: a cap of $0.0006 stops after a few.
    const stopped = await relabelOnce({
      label: { ...base, maxCost: 0.0006, concurrency: 1 },
      policies: parsePolicies('stale:0s'),
      run: runLabeling,
    });
    assert.equal(stopped.result?.status, 'stopped');
    const paidFirst = fake.answered - 12;
    assert.ok(paidFirst > 0 && paidFirst < 12, `first pass paid for ${paidFirst}`);
    // The next invocation (no cap) resumes the same relabel before selecting anything new.
    const resumed = await relabelOnce({ label: base, policies: parsePolicies('stale:0s'), run: runLabeling });
    assert.equal(resumed.resumed, true);
    assert.equal(resumed.relabel!.id, stopped.relabel!.id);
    assert.equal(resumed.result?.status, 'completed');
    assert.equal(fake.answered, 24, 'each item relabeled exactly once');
    assert.equal(resumed.drift?.compared, 12);
    assert.equal(count(store, `SELECT count(*) AS n FROM relabels WHERE status = 'completed'`), 1);
    store.close();
  });

  test('the run of a relabel pass is a new run with the salt in its config; plain label runs keep their keys', async () => {
    const { store, task, base } = await labeledStore(3, defaultTeacher);
    const out = await relabelOnce({ label: base, policies: parsePolicies('stale:0s'), run: runLabeling });
    const run = out.result!.run!;
    assert.notEqual(run.config_hash, configHash(task, base.settings));
    assert.equal(run.config_hash, configHash(task, { ...base.settings, keySalt: out.relabel!.salt }));
    assert.deepEqual(JSON.parse(run.params).relabel, { id: out.relabel!.id, policies: ['stale:0s'] });
    store.close();
  });
});

describe('lease', () => {
  test('one holder at a time; an expired lease or a dead holder on this host frees it', () => {
    const dir = workDir();
    const store = Store.open(path.join(dir, 'l.db'));
    const first = Lease.acquire(store, 'relabel', { ttlMs: 60_000, command: 'first' });
    assert.throws(
      () => Lease.acquire(store, 'relabel', { ttlMs: 60_000, command: 'second' }),
      (e: unknown) => e instanceof LeaseHeld && /held by pid \d+ on .* \(first\)/.test(e.message),
    );
    first.release();
    assert.equal(currentLease(store, 'relabel'), undefined);

    // A holder on another machine that stopped renewing: blocks until its expiry, not after.
    const put = (expires: Date, host: string, pid: number) =>
      sqlOn(store, (db) =>
        db
          .prepare(`INSERT OR REPLACE INTO leases VALUES ('relabel', 'other', ?, ?, 'crashed', ?, ?)`)
          .run(pid, host, new Date().toISOString(), expires.toISOString()),
      );
    put(new Date(Date.now() + 60_000), 'another-host', 1);
    assert.throws(() => Lease.acquire(store, 'relabel', { ttlMs: 1000, command: 'x' }), LeaseHeld);
    put(new Date(Date.now() - 1), 'another-host', 1);
    Lease.acquire(store, 'relabel', { ttlMs: 1000, command: 'x' }).release();
    // A holder on this host whose process is gone: free at once.
    put(new Date(Date.now() + 60_000), hostname(), 2 ** 22 + 12345);
    Lease.acquire(store, 'relabel', { ttlMs: 1000, command: 'x' }).release();
    store.close();
  });

  test('the state of a /proc stat line, whatever the command name holds', () => {
    assert.equal(procStatState('4242 (node) S 1 4242 4242 0 -1 4194560 1234 0 0 0'), 'S');
    assert.equal(procStatState('4242 (node) Z 1 4242 4242 0 -1 4227084 1234 0 0 0'), 'Z');
    assert.equal(procStatState('17 (a (b) c) ) R 1 17 17 0'), 'R', 'the last ) ends the name');
    assert.equal(procStatState('17 (x) y) Z 1'), 'Z');
    assert.equal(procStatState('not a stat line'), undefined);
    assert.equal(procStatState('17 (x)'), undefined);
  });

  test('a zombie holder on this host (dead, not yet reaped) frees the lease at once', async (t) => {
    if (!fs.existsSync('/proc/self/stat')) {
      t.skip('no /proc here: a same-host holder gets a grace period instead');
      return;
    }
    // `sleep 0.3` exits after its parent has become `sleep 5` (exec), which never reaps it: a zombie until then.
    // (With `sleep 0` the shell could reap it before the exec, and there would be no zombie to see.)
    const parent = spawn('sh', ['-c', 'sleep 0.3 & echo $!; exec sleep 5'], { stdio: ['ignore', 'pipe', 'ignore'] });
    t.after(() => parent.kill('SIGKILL'));
    const pid = Number(await new Promise<string>((resolve) => parent.stdout!.once('data', (d: Buffer) => resolve(d.toString()))));
    const state = () => procStatState(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
    for (let i = 0; i < 200 && state() !== 'Z'; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(state(), 'Z');
    assert.doesNotThrow(() => process.kill(pid, 0), 'kill(pid, 0) takes a zombie for a live process');
    assert.equal(processGone(pid), true);
    assert.equal(processGone(parent.pid!), false, 'its parent is alive');

    const store = Store.open(path.join(workDir(), 'z.db'));
    const put = (holderPid: number) =>
      sqlOn(store, (db) =>
        db
          .prepare(`INSERT OR REPLACE INTO leases VALUES ('label', 'other', ?, ?, 'label', ?, ?)`)
          .run(holderPid, hostname(), new Date().toISOString(), new Date(Date.now() + 60_000).toISOString()),
      );
    put(parent.pid!);
    assert.throws(() => Lease.acquire(store, 'label', { ttlMs: 1000, command: 'x' }), LeaseHeld);
    put(pid);
    Lease.acquire(store, 'label', { ttlMs: 1000, command: 'x' }).release();
    store.close();
  });

  test('a holder that is taken over notices on its next renewal', () => {
    const dir = workDir();
    const store = Store.open(path.join(dir, 'l2.db'));
    let lost = 0;
    const lease = Lease.acquire(store, 'relabel', { ttlMs: 60_000, command: 'a' }, () => lost++);
    sqlOn(store, (db) => db.prepare(`UPDATE leases SET holder = 'someone-else'`).run());
    lease.renew();
    assert.equal(lost, 1);
    assert.equal(lease.isLost, true);
    lease.release(); // must not delete the other holder's lease
    assert.equal(currentLease(store, 'relabel')?.holder, 'someone-else');
    store.close();
  });
});

describe('cli: relabel.ts', () => {
  const args = (o: { task: string; db: string; url: string }, extra: string[]) => [
    'scripts/relabel.ts',
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
    ...extra,
  ];
  const env = { OPENAI_API_KEY: 'sk-relabel-secret-key' };

  async function setup(n: number, fakeOpts: FakeTeacherOptions = {}) {
    const dir = workDir();
    const fake = await fakeServer(fakeOpts);
    const task = writeTask(dir);
    const db = path.join(dir, 'cli.db');
    const input = writeJsonl(dir, 'items.jsonl', animalRows(n));
    const labeled = await startNode(
      [
        'scripts/label.ts',
        '--task',
        task,
        '--db',
        db,
        '--model',
        'fake-teacher',
        '--base-url',
        fake.url,
        '--price-in',
        '2',
        '--price-out',
        '10',
        '--input',
        input,
      ],
      env,
    ).done;
    assert.equal(labeled.code, 0, labeled.stderr);
    return { dir, fake, o: { task, db, url: fake.url } };
  }

  test('dry run, one pass, status shows the drift, a second relabel is refused while one holds the lease', async () => {
    const { fake, o } = await setup(6, { latencyMs: 0 });
    const dry = await startNode(args(o, ['--policy', 'stale:0s', '--dry-run']), env).done;
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /dry run: 6 item\(s\) to relabel \(disagree 0, low-confidence 0, changed 0, stale 6\)/);
    assert.equal(fake.answered, 6);

    const once = await startNode(args(o, ['--policy', 'stale:0s']), env).done;
    assert.equal(once.code, 0, once.stderr);
    assert.match(once.stdout, /relabel 1: 6 item\(s\) selected .*run 2 completed: 6 labeled.*drift: 0 of 6 label\(s\) changed/);
    assert.equal(fake.answered, 12);

    const status = await startNode(['scripts/status.ts', '--db', o.db, '--json']).done;
    const runs = JSON.parse(status.stdout).runs as Array<{ run: number; relabel: any }>;
    assert.equal(runs[0].relabel, null);
    assert.deepEqual(runs[1].relabel, {
      id: 1,
      policies: ['stale:0s'],
      status: 'completed',
      selected: 6,
      by_reason: { stale: 6 },
      drift: { compared: 6, changed: 0, confusion: { cat: { cat: 2 }, dog: { dog: 2 }, bird: { bird: 2 } } },
    });
    const text = await startNode(['scripts/status.ts', '--db', o.db]).done;
    assert.match(text.stdout, /run 2: relabel 1 \(stale:0s\) of 6 item\(s\) \[stale 6\], completed; drift: 0 of 6 label\(s\) changed/);

    // Hold the lease from this process: the CLI names the holder and exits 1; with --wait it waits for the release.
    const db = new Database(o.db);
    db.prepare(`INSERT INTO leases VALUES ('relabel', 'test', ?, 'elsewhere', 'relabel by the test', ?, ?)`).run(
      4242,
      new Date().toISOString(),
      new Date(Date.now() + 60_000).toISOString(),
    );
    const refused = await startNode(args(o, ['--policy', 'stale:0s']), env).done;
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /^error: .*cli\.db: relabel is held by pid 4242 on elsewhere since .*\(relabel by the test\).*--wait/);
    assert.equal(fake.answered, 12);
    const waiting = startNode(args(o, ['--policy', 'stale:0s', '--wait']), env);
    await new Promise<void>((resolve) => {
      waiting.child.stderr!.on('data', (d: string) => {
        if (d.includes('waiting for the relabel lease')) resolve();
      });
    });
    assert.equal(fake.answered, 12, 'nothing sent while waiting');
    db.prepare(`DELETE FROM leases`).run();
    db.close();
    const waited = await waiting.done;
    assert.equal(waited.code, 0, waited.stderr);
    assert.match(waited.stderr, /waiting for the relabel lease held by pid 4242 on elsewhere/);
    assert.equal(fake.answered, 18);
    for (const r of [dry, once, refused, waited]) assert.doesNotMatch(r.stdout + r.stderr, /sk-relabel-secret-key/);
  });

  test('a relabel killed mid-pass: the next one takes over its lease at once and resumes the same pass', async () => {
    const { fake, o } = await setup(30, { latencyMs: 150 });
    const first = startNode(args(o, ['--policy', 'stale:0s', '--concurrency', '2']), env);
    await new Promise<void>((resolve) => {
      const t = setInterval(() => {
        if (fake.answered >= 36) {
          clearInterval(t);
          resolve();
        }
      }, 20);
    });
    first.child.kill('SIGKILL');
    await first.done;
    const db = new Database(o.db, { readonly: true });
    const held = db.prepare('SELECT pid FROM leases').get() as { pid: number } | undefined;
    assert.equal(held?.pid, first.child.pid, 'the killed process still holds the lease on paper');
    db.close();
    const paidBefore = fake.answered;
    const second = await startNode(args(o, ['--policy', 'stale:0s']), env).done;
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stdout, /relabel 1 \(resumed\): 30 item\(s\) selected/);
    const d = new Database(o.db, { readonly: true });
    const relabeled = (
      d.prepare(`SELECT count(*) AS n FROM labels l JOIN relabels r ON r.run_id = l.run_id WHERE l.status = 'ok'`).get() as { n: number }
    ).n;
    d.close();
    assert.equal(relabeled, 30, 'every selected item relabeled once');
    // What the killed pass had paid for but not yet saved (at most its 2 requests in flight) is the only double payment.
    assert.ok(fake.answered - 60 <= 2, `paid ${fake.answered - 60} twice (${paidBefore - 30} paid by the killed pass)`);
  });

  test('--cron fires on its schedule: two passes, each under the lease, then exits', async () => {
    const { fake, o } = await setup(3);
    const r = await startNode(args(o, ['--policy', 'stale:0s', '--cron', '* * * * * *', '--max-runs', '2']), env).done;
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /relabel scheduled "\* \* \* \* \* \*"/);
    assert.equal((r.stdout.match(/relabel \d+: 3 item\(s\) selected/g) ?? []).length, 2);
    assert.equal(fake.answered, 9);
    const db = new Database(o.db, { readonly: true });
    assert.equal((db.prepare(`SELECT count(*) AS n FROM relabels WHERE status = 'completed'`).get() as { n: number }).n, 2);
    assert.equal((db.prepare(`SELECT count(*) AS n FROM leases`).get() as { n: number }).n, 0, 'lease released');
    db.close();
  });

  test('--batch: the relabel pass goes through the Batch API at the batch price, with its drift recorded', async () => {
    const { fake, o } = await setup(5);
    const r = await startNode(args(o, ['--policy', 'stale:0s', '--batch', '--poll-interval', '0.02']), env).done;
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /relabel 1: 5 item\(s\) selected .*drift: 0 of 5 label\(s\) changed/);
    assert.equal(fake.answered, 10);
    const db = new Database(o.db, { readonly: true });
    const batchRuns = db
      .prepare(`SELECT r.id, sum(l.cost) AS cost FROM runs r JOIN labels l ON l.run_id = r.id GROUP BY r.id ORDER BY r.id`)
      .all() as { id: number; cost: number }[];
    assert.equal(batchRuns.length, 2);
    assert.ok(Math.abs(batchRuns[1].cost - batchRuns[0].cost / 2) < 1e-9, `batch labels cost half: ${JSON.stringify(batchRuns)}`);
    assert.equal((db.prepare(`SELECT count(*) AS n FROM batch_jobs WHERE state = 'done'`).get() as { n: number }).n, 1);
    db.close();
    const status = await startNode(['scripts/status.ts', '--db', o.db]).done;
    assert.match(
      status.stdout,
      /run 2: batch job 1 done \(completed, batch_\w+\): 5 request\(s\), 5 answered, 0 invalid, 0 failed, 0 pending/,
    );
  });

  test('bad policy and missing database: one-line errors', async () => {
    const dir = workDir();
    const task = writeTask(dir);
    const bad = await startNode(
      [
        'scripts/relabel.ts',
        '--task',
        task,
        '--db',
        path.join(dir, 'none.db'),
        '--model',
        'm',
        '--price-in',
        '0',
        '--price-out',
        '0',
        '--policy',
        'stale:soon',
      ],
      env,
    ).done;
    assert.equal(bad.code, 1);
    assert.equal(bad.stderr.trim().split('\n').length, 1);
    assert.match(bad.stderr, /stale:soon: expected a duration/);
    const missing = await startNode(
      [
        'scripts/relabel.ts',
        '--task',
        task,
        '--db',
        path.join(dir, 'none.db'),
        '--model',
        'm',
        '--price-in',
        '0',
        '--price-out',
        '0',
        '--policy',
        'changed',
      ],
      env,
    ).done;
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /none\.db: no such database/);
  });
});
