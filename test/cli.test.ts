/**
 * The scripts as a user runs them: `node --import tsx scripts/X.ts ...` in a
 * child process, against the fake OpenAI-compatible server in this process.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { defaultTeacher, type FakeTeacher } from './fake-openai.ts';
import {
  animalRows,
  fakeServer,
  startNode,
  type ScriptResult,
  itemText,
  LABELS,
  REPO_ROOT,
  writeJsonl,
  writeTask,
  workDir,
} from './helpers.ts';

type Result = ScriptResult;
const start = (script: string, args: string[], env: Record<string, string> = {}) => startNode([`scripts/${script}.ts`, ...args], env);

function run(script: string, args: string[], env: Record<string, string> = {}): Promise<Result> {
  return start(script, args, env).done;
}

/** The label.ts arguments every test uses: free local teacher, fast retries, no progress chatter. */
interface LabelTarget {
  task: string;
  db: string;
  url: string;
  input?: string;
  /** Give --price-in/--price-out (default true); false leaves the price to the table. */
  price?: boolean;
  model?: string;
}

function labelArgs(o: LabelTarget, extra: string[] = []): string[] {
  return [
    '--task',
    o.task,
    '--db',
    o.db,
    '--model',
    o.model ?? 'fake-teacher',
    '--base-url',
    o.url,
    ...(o.price === false ? [] : ['--price-in', '2', '--price-out', '10']),
    '--retry-base-ms',
    '5',
    '--progress-interval',
    '60',
    ...(o.input ? ['--input', o.input] : []),
    ...extra,
  ];
}

function openDb(file: string): Database.Database {
  return new Database(file, { readonly: true, fileMustExist: true });
}

function scalar(db: Database.Database, sql: string): number {
  return (db.prepare(sql).get() as { n: number }).n;
}

function mentioned(text: string): string {
  const l = LABELS.find((x) => text.includes(x));
  assert.ok(l, `no label in "${text}"`);
  return l;
}

const show = (r: Result) => `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;

describe('cli: label, status, export', () => {
  test('dry run, label, status --json, export, rerun', async () => {
    const dir = workDir();
    const fake = await fakeServer();
    const task = writeTask(dir);
    const rows = animalRows(7).map((r, i) => ({ ...r, split: i < 5 ? 'train' : 'test' }));
    delete (rows[6] as Partial<(typeof rows)[number]>).label; // one item without gold
    const input = writeJsonl(dir, 'in.jsonl', rows);
    const db = path.join(dir, 'distill.db');
    const args = labelArgs({ task, db, url: fake.url, input });

    // --dry-run: counts, tokens and cost; nothing sent, nothing kept.
    const dry = await run('label', [...args, '--dry-run']);
    assert.equal(dry.code, 0, show(dry));
    assert.match(dry.stdout, /dry run: 7 item\(s\) to label \(0 already labeled, 0 failed before\)/);
    assert.match(dry.stdout, /~\d+ input tokens, ~\d+ output tokens, estimated cost \$\d+\.\d{4} \(at most \$\d+\.\d{4}\); nothing sent/);
    const tokens = Number(/~(\d+) input tokens/.exec(dry.stdout)![1]);
    assert.ok(tokens > 7 * 7, `input token estimate ${tokens} covers every prompt`);
    assert.equal(fake.requests.length, 0, 'a dry run sends nothing');
    if (fs.existsSync(db)) {
      const d = openDb(db);
      assert.equal(scalar(d, 'SELECT count(*) AS n FROM items'), 0, 'a dry run imports nothing');
      d.close();
    }

    const labeled = await run('label', args);
    assert.equal(labeled.code, 0, show(labeled));
    assert.match(labeled.stdout, /run 1 completed: 7 labeled, 0 failed, 0 pending/);
    assert.equal(fake.requests.length, 7);

    const status = await run('status', ['--db', db, '--json']);
    assert.equal(status.code, 0, show(status));
    const st = JSON.parse(status.stdout);
    assert.deepEqual(
      {
        items: st.total.items,
        labeled: st.total.labeled,
        failed: st.total.failed,
        pending: st.total.pending,
        requests: st.total.requests,
        errors: st.total.errors,
      },
      { items: 7, labeled: 7, failed: 0, pending: 0, requests: 7, errors: 0 },
    );
    assert.equal(st.runs.length, 1);
    assert.equal(st.runs[0].status, 'completed');
    assert.equal(st.runs[0].soft, 'logprobs');
    assert.equal(st.runs[0].teacher, 'fake-teacher');
    assert.ok(st.runs[0].cost > 0);
    assert.deepEqual(st.tasks[0].labels, LABELS);

    const out = path.join(dir, 'export');
    const exported = await run('export', ['--db', db, '--out', out]);
    assert.equal(exported.code, 0, show(exported));
    assert.match(exported.stdout, /wrote 7 row\(s\)/);
    const lines = fs
      .readFileSync(path.join(out, 'labels.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.equal(lines.length, 7);
    lines.forEach((row, i) => {
      assert.deepEqual(
        Object.keys(row).sort(),
        [
          'gold',
          'id',
          'label',
          'probs',
          'prompt_version',
          'soft_method',
          'split',
          'teacher',
          'text',
          'run',
          'cost',
          'request_key',
          'soft',
        ].sort(),
      );
      assert.equal(row.id, rows[i].id);
      assert.equal(row.text, rows[i].text);
      assert.equal(row.gold, rows[i].label ?? null);
      assert.equal(row.split, i < 5 ? 'train' : 'test');
      assert.equal(row.teacher, 'fake-teacher');
      assert.match(row.prompt_version, /^[0-9a-f]{64}$/);
      assert.equal(row.soft_method, 'logprobs');
      const hard = mentioned(row.text);
      assert.equal(row.label, hard);
      assert.equal(row.probs.length, LABELS.length);
      assert.ok(Math.abs(row.probs.reduce((a: number, b: number) => a + b, 0) - 1) < 1e-5, 'probs sum to 1');
      // Task label order: the mentioned label holds 0.8.
      LABELS.forEach((l, k) => assert.ok(Math.abs(row.probs[k] - (l === hard ? 0.8 : 0.1)) < 1e-4, `${row.id} p(${l}) = ${row.probs[k]}`));
    });

    // The same command again: nothing to do, nothing sent.
    const again = await run('label', args);
    assert.equal(again.code, 0, show(again));
    assert.match(again.stdout, /nothing to do: 7 item\(s\) already labeled; 0 requests sent/);
    assert.equal(fake.requests.length, 7, 'a rerun sends nothing');

    // A dry run now has nothing to label.
    const dry2 = await run('label', [...args, '--dry-run']);
    assert.equal(dry2.code, 0, show(dry2));
    assert.match(dry2.stdout, /dry run: 0 item\(s\) to label \(7 already labeled/);
    assert.equal(fake.requests.length, 7);
  });
});

describe('cli: a killed run resumes without paying twice', () => {
  test('SIGKILL after ~60 answers, then the same command to completion', async () => {
    const dir = workDir();
    const n = 200;
    const concurrency = 4;
    // eslint-disable-next-line prefer-const -- the fake teacher's callback, made before the labeler starts, reads it
    let child: ChildProcess | undefined;
    let answeredAtKill = -1;
    let answered = 0;
    const fake = await fakeServer({
      latencyMs: 20,
      // Called just before each answer is sent: kill the labeler once 60 have gone out.
      teacher: (req) => {
        if (++answered === 61 && child) {
          answeredAtKill = fake.answered;
          child.kill('SIGKILL');
        }
        return defaultTeacher(req);
      },
    });
    const task = writeTask(dir);
    const input = writeJsonl(dir, 'in.jsonl', animalRows(n));
    const db = path.join(dir, 'distill.db');
    const args = labelArgs({ task, db, url: fake.url, input }, ['--concurrency', String(concurrency)]);

    const first = start('label', args);
    child = first.child;
    const killed = await first.done;
    assert.equal(killed.signal, 'SIGKILL', show(killed));
    assert.equal(answeredAtKill, 60);

    const d = openDb(db);
    const kept = scalar(d, `SELECT count(*) AS n FROM labels WHERE status = 'ok'`);
    assert.equal((d.prepare('SELECT status FROM runs').get() as { status: string }).status, 'running');
    d.close();
    assert.ok(kept >= answeredAtKill - concurrency && kept < n, `${kept} labels survived the kill (${answeredAtKill} answered)`);

    const resumed = await run('label', args);
    assert.equal(resumed.code, 0, show(resumed));
    assert.match(resumed.stdout, /completed/);

    const d2 = openDb(db);
    assert.equal(scalar(d2, `SELECT count(*) AS n FROM items`), n);
    assert.equal(scalar(d2, `SELECT count(*) AS n FROM labels WHERE status = 'ok'`), n, 'exactly one ok label per item');
    assert.equal(scalar(d2, `SELECT count(DISTINCT item_id) AS n FROM labels WHERE status = 'ok'`), n);
    assert.equal(scalar(d2, `SELECT count(*) AS n FROM labels WHERE status != 'ok'`), 0);
    assert.equal(scalar(d2, 'SELECT count(*) AS n FROM runs'), 1, 'the same run was resumed');
    assert.equal((d2.prepare('SELECT status FROM runs').get() as { status: string }).status, 'completed');
    d2.close();
    assert.ok(fake.answered <= n + concurrency, `${fake.answered} answers paid for ${n} items`);
  });
});

describe('cli: bad input fails cleanly', { concurrency: true }, () => {
  /** Exit non-zero, one `error: ` line on stderr naming `where`, and no items in the database. */
  async function expectInputError(args: LabelTarget, where: RegExp, fake: FakeTeacher): Promise<void> {
    const r = await run('label', labelArgs(args));
    assert.notEqual(r.code, 0, show(r));
    const lines = r.stderr.split('\n').filter((l, i, all) => !(l === '' && i === all.length - 1));
    assert.equal(lines.length, 1, `one stderr line: ${JSON.stringify(r.stderr)}`);
    assert.ok(lines[0].startsWith('error: '), lines[0]);
    assert.match(lines[0], where);
    assert.equal(r.stdout, '');
    if (fs.existsSync(args.db)) {
      const d = openDb(args.db);
      assert.equal(scalar(d, 'SELECT count(*) AS n FROM items'), 0, 'no items imported');
      assert.equal(scalar(d, 'SELECT count(*) AS n FROM runs'), 0, 'no run started');
      d.close();
    }
    assert.equal(fake.requests.length, 0, 'nothing sent');
  }

  const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

  test('a malformed JSONL line', async () => {
    const dir = workDir();
    const fake = await fakeServer();
    const input = path.join(dir, 'in.jsonl');
    fs.writeFileSync(input, `${JSON.stringify({ text: 'a cat' })}\n${JSON.stringify({ text: 'a dog' })}\n{"text": "a bird"\n`);
    await expectInputError(
      { task: writeTask(dir), db: path.join(dir, 'x.db'), url: fake.url, input },
      new RegExp(`^error: ${esc(input)}:3: invalid JSON`),
      fake,
    );
  });

  test('a missing text column', async () => {
    const dir = workDir();
    const fake = await fakeServer();
    const input = writeJsonl(dir, 'in.jsonl', [{ text: 'a cat' }, { body: 'a dog' }]);
    await expectInputError(
      { task: writeTask(dir), db: path.join(dir, 'x.db'), url: fake.url, input },
      new RegExp(`^error: ${esc(input)}:2: .*missing column "text"`),
      fake,
    );
  });

  test('a task file without labels', async () => {
    const dir = workDir();
    const fake = await fakeServer();
    const task = writeTask(dir, { labels: null });
    const input = writeJsonl(dir, 'in.jsonl', [{ text: 'a cat' }]);
    await expectInputError(
      { task, db: path.join(dir, 'x.db'), url: fake.url, input },
      new RegExp(`^error: ${esc(task)}:\\d+: invalid task: labels`),
      fake,
    );
  });

  test('an unknown model without a price', async () => {
    const dir = workDir();
    const fake = await fakeServer();
    const input = writeJsonl(dir, 'in.jsonl', [{ text: 'a cat' }]);
    await expectInputError(
      { task: writeTask(dir), db: path.join(dir, 'x.db'), url: fake.url, input, model: 'nonexistent-model', price: false },
      new RegExp(`^error: ${esc(path.join(REPO_ROOT, 'prices.json'))}: model "nonexistent-model" has no price.*--price-in`),
      fake,
    );
  });
});

describe('cli: secrets', () => {
  test('the API key is sent to the server and appears nowhere else', async () => {
    const key = 'sk-test-SECRET123456';
    const dir = workDir();
    // Servers echo what they got; these do so with the full Authorization header.
    const echo = (headers: Record<string, unknown>) => `internal error for ${String(headers.authorization)}`;
    // First server: every item's first request is a 500 (retried), one item always 500s (run stopped).
    const seen = new Set<string>();
    const flaky = await fakeServer({
      fault: (req) => {
        const text = itemText(req);
        if (seen.has(text) && !text.includes('number 4 ')) return undefined;
        seen.add(text);
        return {
          kind: 'status',
          status: 500,
          body: { error: { message: echo(req.headers), type: 'server_error', param: null, code: null } },
        };
      },
    });
    // Second server: a fatal 429 (quota) whose message quotes the key.
    const broke = await fakeServer({
      fault: (req) => ({
        kind: 'status',
        status: 429,
        body: {
          error: {
            message: `You exceeded your current quota (${echo(req.headers)})`,
            type: 'insufficient_quota',
            param: null,
            code: 'insufficient_quota',
          },
        },
      }),
    });
    const task = writeTask(dir);
    const input = writeJsonl(dir, 'in.jsonl', animalRows(5));
    const db = path.join(dir, 'distill.db');
    const env = { OPENAI_API_KEY: key };

    const r1 = await run('label', labelArgs({ task, db, url: flaky.url, input }, ['--max-retries', '2']), env);
    assert.equal(r1.code, 3, `stopped: ${show(r1)}`);
    const r2 = await run('label', labelArgs({ task, db, url: broke.url }), env);
    assert.equal(r2.code, 1, `failed: ${show(r2)}`);
    assert.match(r2.stdout, /insufficient quota/);
    const out = path.join(dir, 'export');
    const r3 = await run('export', ['--db', db, '--out', out], env);
    assert.equal(r3.code, 0, show(r3));
    const r4 = await run('status', ['--db', db], env);
    assert.equal(r4.code, 0, show(r4));

    // The key was really used...
    for (const fake of [flaky, broke]) {
      assert.ok(fake.requests.length > 0);
      for (const req of fake.requests) assert.equal(req.headers.authorization, `Bearer ${key}`);
    }
    const exportText = fs.readFileSync(path.join(out, 'labels.jsonl'), 'utf8');
    assert.equal(exportText.trim().split('\n').length, 4, 'four items labeled after a 500 each');
    // ...and is nowhere else: not in any output, the export, or any byte of the database files.
    for (const [what, text] of [
      ['label stdout', r1.stdout],
      ['label stderr', r1.stderr],
      ['fatal stdout', r2.stdout],
      ['fatal stderr', r2.stderr],
      ['export stdout', r3.stdout + r3.stderr],
      ['status', r4.stdout + r4.stderr],
      ['export file', exportText],
    ] as const) {
      assert.ok(!text.includes(key), `the key leaked into ${what}`);
      assert.ok(!text.includes('SECRET123456'), `part of the key leaked into ${what}`);
    }
    const dbFiles = fs.readdirSync(dir).filter((f) => f.startsWith('distill.db'));
    assert.ok(dbFiles.length >= 1);
    for (const f of dbFiles) {
      const bytes = fs.readFileSync(path.join(dir, f));
      assert.equal(bytes.indexOf(key), -1, `the key is in ${f}`);
      assert.equal(bytes.indexOf('SECRET123456'), -1, `part of the key is in ${f}`);
    }
  });
});
