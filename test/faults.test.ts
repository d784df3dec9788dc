/**
 * The reliability sweep, through the CLIs as a user runs them: a full disk under
 * the database, SIGKILL in the middle of an ingest and of a training run, a
 * database from an older schema, a newer one, corrupt images and bad UTF-8.
 * In each case: a clear one-line error, nothing half-written, nothing lost, and
 * no label paid for twice beyond what the failure itself made impossible to save.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { writeShapes } from '../src/datasets/shapes.ts';
import { MIGRATIONS, SCHEMA_VERSION } from '../src/store/schema.ts';
import {
  animalRows,
  cleanEnv,
  fakeServer,
  LABELS,
  REPO_ROOT,
  runScript,
  startNode,
  workDir,
  writeJsonl,
  writeTask,
  type ScriptResult,
} from './helpers.ts';

const KEY = 'sk-faults-secret-0123456789';
const env = { OPENAI_API_KEY: KEY };
const oneLine = (r: ScriptResult) => {
  assert.equal(
    r.stderr
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('error:')).length,
    1,
    r.stderr,
  );
  assert.doesNotMatch(r.stderr, /^\s+at /m, 'no stack trace');
};
const scalar = (db: string, sql: string) => {
  const d = new Database(db, { readonly: true });
  try {
    return (d.prepare(sql).get() as { n: number }).n;
  } finally {
    d.close();
  }
};

/** A small tmpfs at `dir`, or undefined when this machine does not let us mount one. */
function mountTmpfs(dir: string, size: string): boolean {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe('faults', () => {
  test('disk full under the database: one-line error, what was committed stays, the rerun finishes', async (t) => {
    const dir = workDir();
    // Not inside the work folder: it is removed after the tests, and a mounted folder cannot be.
    const mnt = fs.mkdtempSync(path.join(os.tmpdir(), 'distillery-full-'));
    t.after(() => {
      try {
        execFileSync('umount', [mnt]);
      } catch {
        // not mounted
      }
      fs.rmSync(mnt, { recursive: true, force: true });
    });
    if (!mountTmpfs(mnt, '600k')) {
      t.skip('cannot mount a tmpfs here (needs root); the full-disk case is not exercised');
      return;
    }
    const fake = await fakeServer();
    const task = writeTask(dir);
    const input = writeJsonl(
      dir,
      'items.jsonl',
      animalRows(600).map((r) => ({ ...r, text: `${r.text} ${'x'.repeat(100)}` })),
    );
    const db = path.join(mnt, 'full.db');
    const args = [
      '--task',
      task,
      '--db',
      db,
      '--model',
      'fake-teacher',
      '--base-url',
      fake.url,
      '--price-in',
      '1',
      '--price-out',
      '1',
      '--input',
      input,
      '--progress-interval',
      '60',
    ];
    const full = await runScript('label', args, env);
    assert.equal(full.code, 1, full.stderr);
    oneLine(full);
    assert.match(
      full.stderr,
      /^error: .*full\.db: cannot write \(database or disk is full\); \d+ record\(s\) of the last moment were not saved/m,
    );
    const paidFirst = fake.answered;
    execFileSync('mount', ['-o', 'remount,size=20m', mnt]);
    const saved = scalar(db, `SELECT count(*) AS n FROM labels WHERE status = 'ok'`);
    assert.ok(saved > 0 && saved < paidFirst + 1, `saved ${saved} of ${paidFirst} paid answers`);
    const again = await runScript('label', args, env);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(scalar(db, `SELECT count(DISTINCT item_id) AS n FROM labels WHERE status = 'ok'`), 600);
    // Answers paid for but not saved when the disk filled are the only ones paid twice: at most the requests in flight (8).
    const repaid = fake.answered - 600;
    t.diagnostic(`disk full: ${paidFirst} answers paid before the failure, ${saved} saved, ${repaid} paid again`);
    assert.equal(repaid, paidFirst - saved);
    assert.ok(repaid <= 8, `paid twice: ${repaid}`);
  });

  test('two labelers on one database at once: the second is refused naming the first, nothing is paid twice', async () => {
    const dir = workDir();
    // The first labeler's requests hang until the second has been refused (then time out and are retried):
    // however slow the machine, the first still holds the lease when the second starts.
    let gateOpen = false;
    const fake = await fakeServer({ fault: () => (gateOpen ? undefined : { kind: 'hang' }) });
    const task = writeTask(dir);
    const input = writeJsonl(dir, 'items.jsonl', animalRows(60));
    const db = path.join(dir, 'two.db');
    assert.equal((await runScript('import', ['--task', task, '--db', db, '--input', input])).code, 0);
    const args = [
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
      '1',
      '--price-out',
      '1',
      '--concurrency',
      '2',
      '--progress-interval',
      '60',
      '--timeout',
      '4',
      '--retry-base-ms',
      '5',
    ];
    const first = startNode(args, env);
    await new Promise<void>((resolve) => {
      first.child.stderr!.on('data', (d: string) => {
        if (d.includes('labeling 60 item(s)')) resolve();
      });
    });
    const second = await startNode(args, env).done;
    assert.equal(second.code, 1, second.stdout + second.stderr);
    oneLine(second);
    assert.match(
      second.stderr,
      new RegExp(`two\\.db: labeling animals with fake-teacher \\(config \\w+\\) is held by pid ${first.child.pid} on `),
    );
    gateOpen = true;
    const done = await first.done;
    assert.equal(done.code, 0, done.stderr);
    assert.equal(fake.answered, 60, 'every item paid once');
    assert.equal(scalar(db, `SELECT count(*) AS n FROM labels WHERE status = 'ok'`), 60);
    // Once the first is done, the same command has nothing to do; the lease is gone.
    const third = await startNode(args, env).done;
    assert.equal(third.code, 0, third.stderr);
    assert.match(third.stdout, /nothing to do: 60 item\(s\) already labeled/);
    assert.equal(scalar(db, 'SELECT count(*) AS n FROM leases'), 0);
  });

  test('a labeler whose process group is killed: the same command rerun at once is never refused', async (t) => {
    const dir = workDir();
    // Requests hang until the loop is over: every labeler still holds the lease when it is killed.
    let gateOpen = false;
    const fake = await fakeServer({ fault: () => (gateOpen ? undefined : { kind: 'hang' }) });
    const task = writeTask(dir);
    const db = path.join(dir, 'killed.db');
    assert.equal(
      (await runScript('import', ['--task', task, '--db', db, '--input', writeJsonl(dir, 'items.jsonl', animalRows(30))])).code,
      0,
    );
    const args = [
      '--task',
      task,
      '--db',
      db,
      '--model',
      'fake-teacher',
      '--base-url',
      fake.url,
      '--price-in',
      '1',
      '--price-out',
      '1',
      '--concurrency',
      '2',
      '--progress-interval',
      '60',
      '--timeout',
      '4',
      '--retry-base-ms',
      '5',
    ];
    // Each labeler is its own process group (setsid), as a shell job is. When `npx tsx scripts/label.ts` is killed
    // as a group, its parent dies with it and the labeler stays a zombie until init reaps it (1-2 s here); its parent
    // is a `sleep` that never reaps it, so the zombie outlasts the rerun whatever the machine's speed.
    const parents: ChildProcess[] = [];
    const groups: number[] = [];
    t.after(() => {
      for (const g of groups) {
        try {
          process.kill(-g, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      for (const p of parents) p.kill('SIGKILL');
    });
    const start = async () => {
      const script = 'setsid "$@" >/dev/null & echo $!; exec sleep 600';
      const parent = spawn('sh', ['-c', script, 'sh', process.execPath, '--import', 'tsx', 'scripts/label.ts', ...args], {
        cwd: REPO_ROOT,
        env: cleanEnv(env),
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      parents.push(parent);
      let stderr = '';
      const started = new Promise<{ started: boolean; stderr: string }>((resolve) => {
        parent.stderr!.setEncoding('utf8').on('data', (d: string) => {
          stderr += d;
          if (/labeling \d+ item\(s\)/.test(stderr)) resolve({ started: true, stderr });
          if (/^error:/m.test(stderr)) resolve({ started: false, stderr });
        });
      });
      const pid = Number(await new Promise<string>((resolve) => parent.stdout!.once('data', (d: Buffer) => resolve(d.toString()))));
      groups.push(pid);
      return { pid, started };
    };
    /** Where /proc shows it: the killed labeler is a zombie when the rerun starts, the case `kill(pid, 0)` cannot tell. */
    const killedToZombie = async (pid: number) => {
      if (!fs.existsSync('/proc/self/stat')) return;
      const state = () => /\) (\S)/.exec(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'))?.[1];
      for (let i = 0; i < 200 && state() !== 'Z'; i++) await new Promise((r) => setTimeout(r, 10));
      assert.equal(state(), 'Z');
    };
    let labeler = await start();
    for (let i = 0; i < 5; i++) {
      const first = await labeler.started;
      assert.ok(first.started, `iteration ${i}: ${first.stderr}`);
      process.kill(-labeler.pid, 'SIGKILL');
      await killedToZombie(labeler.pid);
      labeler = await start();
    }
    const last = await labeler.started;
    assert.ok(last.started, `the last rerun: ${last.stderr}`);
    assert.doesNotMatch(last.stderr, /is held by pid/);
    process.kill(-labeler.pid, 'SIGKILL');
    gateOpen = true;
    const done = await runScript('label', args, env);
    assert.equal(done.code, 0, done.stderr);
    assert.equal(scalar(db, `SELECT count(DISTINCT item_id) AS n FROM labels WHERE status = 'ok'`), 30);
  });

  test('SIGKILL during an ingest: the run is all there or not at all, and the rerun completes it', async () => {
    const dir = workDir();
    const task = writeTask(dir);
    const db = path.join(dir, 'ingest.db');
    const n = 40_000;
    const rows = Array.from({ length: n }, (_, i) => ({ id: `i${i}`, text: `item ${i} about a ${LABELS[i % 3]}` }));
    assert.equal((await runScript('import', ['--task', task, '--db', db, '--input', writeJsonl(dir, 'items.jsonl', rows)])).code, 0);
    const logits = writeJsonl(
      dir,
      'logits.jsonl',
      rows.map((r, i) => ({ id: r.id, logits: [i % 3 === 0 ? 2 : 0, i % 3 === 1 ? 2 : 0, i % 3 === 2 ? 2 : 0] })),
    );
    const args = ['--db', db, '--task', task, '--teacher', 'local', '--input', logits];
    const child = startNode(['scripts/ingest-logits.ts', ...args]);
    await new Promise((r) => setTimeout(r, 2500)); // tsx start-up is ~1.5 s; the ingest itself takes a few seconds
    child.child.kill('SIGKILL');
    await child.done;
    const runs = scalar(db, `SELECT count(*) AS n FROM runs`);
    const labels = scalar(db, `SELECT count(*) AS n FROM labels`);
    assert.ok((runs === 0 && labels === 0) || (runs === 1 && labels === n), `after the kill: ${runs} run(s), ${labels} label(s)`);
    const again = await runScript('ingest-logits', args);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(scalar(db, `SELECT count(*) AS n FROM labels`), n);
    assert.equal(scalar(db, `SELECT count(*) AS n FROM runs`), 1);
  });

  test('SIGKILL during an export: every file under its final name is whole; the rerun writes an export that verifies', async () => {
    const dir = workDir();
    const task = writeTask(dir);
    const db = path.join(dir, 'export.db');
    const n = 30_000;
    const rows = Array.from({ length: n }, (_, i) => ({ id: `i${i}`, text: `item ${i} about a ${LABELS[i % 3]}` }));
    assert.equal((await runScript('import', ['--task', task, '--db', db, '--input', writeJsonl(dir, 'items.jsonl', rows)])).code, 0);
    const logits = writeJsonl(
      dir,
      'logits.jsonl',
      rows.map((r, i) => ({ id: r.id, logits: [i % 3, (i + 1) % 3, (i + 2) % 3] })),
    );
    assert.equal((await runScript('ingest-logits', ['--db', db, '--task', task, '--teacher', 'local', '--input', logits])).code, 0);
    const out = path.join(dir, 'export');
    const args = ['--db', db, '--format', 'jsonl,parquet', '--logits', '--out', out];
    const child = startNode(['scripts/export.ts', ...args]);
    await new Promise((r) => setTimeout(r, 2500));
    child.child.kill('SIGKILL');
    await child.done;
    const jsonl = path.join(out, 'labels.jsonl');
    if (fs.existsSync(jsonl)) {
      const text = fs.readFileSync(jsonl, 'utf8');
      assert.ok(text.endsWith('\n'), 'labels.jsonl is whole');
      assert.equal(text.split('\n').length - 1, n);
    }
    const manifest = path.join(out, 'manifest.json');
    if (fs.existsSync(manifest)) JSON.parse(fs.readFileSync(manifest, 'utf8')); // whole JSON, or absent
    const again = await runScript('export', args);
    assert.equal(again.code, 0, again.stderr);
    const verify = await runScript('export', ['--verify', out]);
    assert.equal(verify.code, 0, verify.stdout + verify.stderr);
    assert.deepEqual(
      fs.readdirSync(out).filter((f) => f.includes('.tmp')),
      [],
      'no temporary file left',
    );
  });

  test('SIGKILL during training: --resume continues from the last checkpoint to the full history', async () => {
    const dir = workDir();
    writeShapes(dir, 20, 12);
    const db = path.join(dir, 'train.db');
    assert.equal(
      (await runScript('import', ['--task', 'prompts/shapes.md', '--input', path.join(dir, 'shapes.jsonl'), '--db', db])).code,
      0,
    );
    const out = path.join(dir, 'model');
    const args = [
      '--db',
      db,
      '--task',
      'shapes',
      '--arch',
      'mlp',
      '--hidden',
      '16',
      '--supervised',
      '--epochs',
      '6',
      '--batch-size',
      '4',
      '--backend',
      'wasm',
      '--warmup',
      '0',
      '--out',
      out,
    ];
    const child = startNode(['scripts/train.ts', ...args]);
    await new Promise<void>((resolve) => {
      child.child.stderr!.on('data', (d: string) => {
        if (/epoch 2:/.test(d)) resolve();
      });
      void child.done.then(() => resolve());
    });
    child.child.kill('SIGKILL');
    const killed = await child.done;
    assert.equal(killed.signal, 'SIGKILL', 'killed before it finished');
    assert.ok(!fs.existsSync(path.join(out, 'metrics.json')), 'no metrics from an unfinished run');
    const resumed = await runScript('train', [...args, '--resume']);
    assert.equal(resumed.code, 0, resumed.stderr);
    const metrics = JSON.parse(fs.readFileSync(path.join(out, 'metrics.json'), 'utf8')) as { history: { epoch: number }[] };
    assert.deepEqual(
      metrics.history.map((h) => h.epoch),
      [0, 1, 2, 3, 4, 5],
    );
  });

  test('a database from the first schema version migrates and keeps its data; a newer one is refused', async () => {
    const dir = workDir();
    const db = path.join(dir, 'old.db');
    const d = new Database(db);
    d.exec(MIGRATIONS[0]);
    d.pragma('user_version = 1');
    const now = new Date().toISOString();
    d.prepare(`INSERT INTO tasks (id, name, labels, input_kind, created_at) VALUES (1, 'animals', ?, 'text', ?)`).run(
      JSON.stringify(LABELS),
      now,
    );
    d.prepare(
      `INSERT INTO items (id, task_id, ext_id, hash, input, gold, split, created_at) VALUES (1, 1, 'a', 'h1', '{"text":"a cat"}', 'cat', 'train', ?)`,
    ).run(now);
    d.prepare(
      `INSERT INTO runs (id, task_id, kind, teacher, config_hash, params, labels, status, items_total, started_at) VALUES (1, 1, 'llm', 'old-model', 'c', '{"soft":"none"}', ?, 'completed', 1, ?)`,
    ).run(JSON.stringify(LABELS), now);
    d.prepare(
      `INSERT INTO labels (item_id, run_id, request_key, status, label, soft_method, created_at) VALUES (1, 1, 'k', 'ok', 'cat', 'none', ?)`,
    ).run(now);
    d.close();
    const status = await runScript('status', ['--db', db, '--json']);
    assert.equal(status.code, 0, status.stderr);
    const s = JSON.parse(status.stdout) as { runs: { teacher: string; labeled: number }[] };
    assert.deepEqual(
      s.runs.map((r) => [r.teacher, r.labeled]),
      [['old-model', 1]],
    );
    assert.equal(scalar(db, 'SELECT user_version AS n FROM pragma_user_version'), SCHEMA_VERSION);
    assert.equal(scalar(db, `SELECT count(*) AS n FROM labels WHERE label = 'cat'`), 1);

    const newer = path.join(dir, 'newer.db');
    const e = new Database(newer);
    e.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
    e.close();
    const refused = await runScript('status', ['--db', newer]);
    assert.equal(refused.code, 1);
    oneLine(refused);
    assert.match(refused.stderr, new RegExp(`newer\\.db: database schema v${SCHEMA_VERSION + 1} is newer than this distillery`));
  });

  test('a corrupt image and a file that is not UTF-8: one line naming file and line, the database unchanged', async () => {
    const dir = workDir();
    writeShapes(dir, 3, 12);
    const db = path.join(dir, 'bad.db');
    const shapes = path.join(dir, 'shapes.jsonl');
    const first = fs.readFileSync(shapes, 'utf8').trim().split('\n')[0];
    const image = path.join(dir, (JSON.parse(first) as { image: string }).image);
    fs.writeFileSync(image, fs.readFileSync(image).subarray(0, 40)); // a truncated PNG
    const r = await runScript('import', ['--task', 'prompts/shapes.md', '--input', shapes, '--db', db]);
    assert.equal(r.code, 1);
    oneLine(r);
    assert.match(r.stderr, /shapes\.jsonl:1: .*image/);
    assert.ok(!fs.existsSync(db) || scalar(db, 'SELECT count(*) AS n FROM items') === 0, 'nothing imported');

    const task = writeTask(dir);
    const text = path.join(dir, 'latin1.jsonl');
    fs.writeFileSync(
      text,
      Buffer.concat([Buffer.from('{"text":"a cat"}\n{"text":"un chat caf'), Buffer.from([0xe9]), Buffer.from('"}\n')]),
    );
    const u = await runScript('import', ['--task', task, '--input', text, '--db', db]);
    assert.equal(u.code, 1);
    oneLine(u);
    assert.match(u.stderr, /latin1\.jsonl:2: invalid UTF-8/);
    assert.ok(!fs.existsSync(db) || scalar(db, 'SELECT count(*) AS n FROM items') === 0, 'nothing imported');
  });
});

describe('secrets', () => {
  test('the API key reaches no database file, export, report, log line or error message', async () => {
    const dir = workDir();
    const fake = await fakeServer();
    // A server that echoes the key back in its 401 error, as careless proxies do.
    const echo = http.createServer((req, res) => {
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          error: {
            message: `Incorrect API key provided: ${String(req.headers.authorization).replace('Bearer ', '')}`,
            type: 'invalid_request_error',
            code: 'invalid_api_key',
          },
        }),
      );
    });
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    const echoUrl = `http://127.0.0.1:${(echo.address() as AddressInfo).port}/v1`;
    try {
      const task = writeTask(dir);
      const input = writeJsonl(dir, 'items.jsonl', animalRows(12));
      const db = path.join(dir, 'secret.db');
      const teacher = [
        '--task',
        task,
        '--db',
        db,
        '--base-url',
        fake.url,
        '--price-in',
        '1',
        '--price-out',
        '1',
        '--progress-interval',
        '60',
      ];
      const outputs: ScriptResult[] = [];
      const run = async (script: string, args: string[], code = 0) => {
        const r = await runScript(script, args, env);
        assert.equal(r.code, code, `${script}: ${r.stderr}`);
        outputs.push(r);
        return r;
      };
      await run('label', [...teacher, '--model', 'fake-teacher', '--input', input]);
      await run('label', [...teacher, '--model', 'fake-batch', '--batch', '--poll-interval', '0.02']);
      await run('relabel', [...teacher, '--model', 'fake-teacher', '--policy', 'stale:0s']);
      await run(
        'label',
        [
          '--task',
          task,
          '--db',
          db,
          '--base-url',
          echoUrl,
          '--model',
          'other',
          '--price-in',
          '1',
          '--price-out',
          '1',
          '--max-retries',
          '0',
        ],
        1,
      );
      const failed = outputs[outputs.length - 1];
      assert.match(failed.stdout + failed.stderr, /Incorrect API key provided: (sk-)?\[redacted\]/, 'the echoed key is masked');
      await run('status', ['--db', db]);
      await run('export', ['--db', db, '--format', 'jsonl,parquet', '--out', path.join(dir, 'export')]);
      await run('report', ['--db', db, '--out', dir, '--no-predict']);

      const files = [
        db,
        `${db}-wal`,
        `${db}-shm`,
        path.join(dir, 'report.html'),
        ...fs.readdirSync(path.join(dir, 'export')).map((f) => path.join(dir, 'export', f)),
      ].filter((f) => fs.existsSync(f));
      assert.ok(files.length >= 5);
      for (const f of files) assert.equal(fs.readFileSync(f).indexOf(KEY), -1, `the key is in ${f}`);
      for (const r of outputs) assert.doesNotMatch(r.stdout + r.stderr, new RegExp(KEY), 'the key is in a log line');
      // The key really was sent: the fake server saw it on every request.
      assert.ok(fake.requests.length > 0);
    } finally {
      echo.close();
    }
  });
});
