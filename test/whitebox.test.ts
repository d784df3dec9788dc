/**
 * White-box teachers end to end, through the scripts as a user runs them
 * (`node --import tsx scripts/X.ts ...` in child processes, real SQLite files in
 * a temp folder): ingest-logits from JSONL and .npy, status, teachers, and
 * export per teacher and aggregated. The one black-box teacher is labeled
 * against the local fake server; nothing touches the network.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { Store } from '../src/store/store.ts';
import { ingestLogits } from '../src/whitebox/ingest.ts';
import { startFakeTeacher, type FakeTeacher } from './fake-openai.ts';
import { importFile, runScript, type ScriptResult, loadTaskFile, writeJsonl, writeTask, workDir } from './helpers.ts';

const LABELS4 = ['cat', 'dog', 'bird', 'fish'];

const fakes: FakeTeacher[] = [];
after(async () => {
  await Promise.all(fakes.map((f) => f.close()));
});

// ---------------------------------------------------------------------------------------
// Running the scripts

type Result = ScriptResult;
const run = runScript;

const show = (r: Result) => `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;

async function ok(script: string, args: string[]): Promise<Result> {
  const r = await run(script, args);
  assert.equal(r.code, 0, `${script} ${args.join(' ')}\n${show(r)}`);
  return r;
}

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** Exit 1 (a user error, not a bug), nothing on stdout, exactly one `error: ` line on stderr matching `re`. */
function assertOneLineError(r: Result, re: RegExp): void {
  assert.equal(r.code, 1, show(r));
  assert.equal(r.stdout, '', show(r));
  assert.ok(r.stderr.endsWith('\n'), show(r));
  const lines = r.stderr.slice(0, -1).split('\n');
  assert.equal(lines.length, 1, `one stderr line: ${JSON.stringify(r.stderr)}`);
  assert.ok(lines[0].startsWith('error: '), lines[0]);
  assert.match(lines[0], re);
}

function ingest(db: string, task: string, teacher: string, input: string, extra: string[] = []): Promise<Result> {
  return run('ingest-logits', ['--db', db, '--task', task, '--teacher', teacher, '--input', input, ...extra]);
}

interface ExportedRow {
  id: string;
  text: string;
  gold: string | null;
  split: string;
  teacher: string;
  prompt_version: string | null;
  label: string;
  probs: number[] | null;
  soft_method: string;
  logits?: number[] | null;
}

async function exportRows(db: string, dir: string, args: string[]): Promise<ExportedRow[]> {
  const out = path.join(dir, `export-${Math.random().toString(36).slice(2)}`);
  const r = await ok('export', ['--db', db, '--out', out, ...args]);
  const rows = fs
    .readFileSync(path.join(out, 'labels.jsonl'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as ExportedRow);
  assert.match(r.stdout, new RegExp(`wrote ${rows.length} row\\(s\\)`));
  return rows;
}

interface Counts {
  tasks: number;
  items: number;
  runs: number;
  labels: number;
}

function dbCounts(file: string): Counts {
  const d = new Database(file, { readonly: true, fileMustExist: true });
  try {
    const n = (sql: string) => (d.prepare(sql).get() as { n: number }).n;
    return {
      tasks: n('SELECT count(*) AS n FROM tasks'),
      items: n('SELECT count(*) AS n FROM items'),
      runs: n('SELECT count(*) AS n FROM runs'),
      labels: n('SELECT count(*) AS n FROM labels'),
    };
  } finally {
    d.close();
  }
}

function dbAll<T>(file: string, sql: string): T[] {
  const d = new Database(file, { readonly: true, fileMustExist: true });
  try {
    return d.prepare(sql).all() as T[];
  } finally {
    d.close();
  }
}

// ---------------------------------------------------------------------------------------
// Reference maths, written independently of src/

function softmax(z: number[], T = 1): number[] {
  const s = z.map((x) => x / T);
  const m = Math.max(...s);
  const e = s.map((x) => Math.exp(x - m));
  const total = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / total);
}

function argmax(z: number[]): number {
  let best = 0;
  for (let i = 1; i < z.length; i++) if (z[i] > z[best]) best = i;
  return best;
}

function roundHalfEven(y: number): number {
  const f = Math.floor(y);
  const d = y - f;
  if (d !== 0.5) return d < 0.5 ? f : f + 1;
  return f % 2 === 0 ? f : f + 1;
}

/** IEEE binary16 bits of the nearest half to x (finite, in range), ties to even. */
function toHalfBits(x: number): number {
  const sign = x < 0 ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a === 0) return sign;
  if (a < 2 ** -14) return sign | roundHalfEven(a / 2 ** -24);
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  if (2 ** (e + 1) <= a) e++;
  let m = roundHalfEven((a / 2 ** e - 1) * 1024);
  if (m === 1024) {
    e++;
    m = 0;
  }
  assert.ok(e <= 15, `${x} is outside the fp16 range`);
  return sign | ((e + 15) << 10) | m;
}

function fromHalfBits(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  return e === 0 ? sign * m * 2 ** -24 : sign * (1 + m / 1024) * 2 ** (e - 15);
}

/** What dense16 storage keeps of a float32 logit. */
const fp16 = (x: number) => fromHalfBits(toHalfBits(Math.fround(x)));
/** The export's six decimals. */
const round6 = (x: number) => Math.round(x * 1e6) / 1e6;

function assertClose(actual: number[] | null | undefined, expected: number[], tol: number, what: string): void {
  assert.ok(Array.isArray(actual), `${what}: ${JSON.stringify(actual)}`);
  assert.equal(actual.length, expected.length, what);
  actual.forEach((a, k) => assert.ok(Math.abs(a - expected[k]) <= tol, `${what}[${k}] = ${a}, expected ${expected[k]} (±${tol})`));
}

/** A logit stored as fp16 is within half an fp16 ulp of the float32 value (plus the export's rounding). */
function assertFp16Close(actual: number[] | null | undefined, input: number[], what: string): void {
  assert.ok(Array.isArray(actual), `${what}: ${JSON.stringify(actual)}`);
  assert.equal(actual.length, input.length, what);
  actual.forEach((a, k) => {
    const x = Math.fround(input[k]);
    const halfUlp = x === 0 ? 2 ** -25 : 2 ** (Math.floor(Math.log2(Math.abs(x))) - 11);
    assert.ok(Math.abs(a - x) <= halfUlp + 1e-6, `${what}[${k}] = ${a}, input ${input[k]} (fp16 ±${halfUlp})`);
  });
}

// ---------------------------------------------------------------------------------------
// .npy files, built as numpy.save writes them (format 1.0, data aligned to 64)

function npyFile(file: string, descr: '<f4' | '<f2', shape: [number, number], data: Uint8Array): string {
  const dict = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${shape[0]}, ${shape[1]}), }`;
  const pad = (64 - ((10 + dict.length + 1) % 64)) % 64;
  const header = Buffer.from(`${dict}${' '.repeat(pad)}\n`, 'latin1');
  const prelude = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, 0, 0]);
  prelude.writeUInt16LE(header.length, 8);
  assert.equal((prelude.length + header.length) % 64, 0);
  fs.writeFileSync(file, Buffer.concat([prelude, header, data]));
  return file;
}

function f32Bytes(rows: number[][]): Uint8Array {
  const flat = rows.flat();
  const dv = new DataView(new ArrayBuffer(4 * flat.length));
  flat.forEach((x, i) => dv.setFloat32(4 * i, x, true));
  return new Uint8Array(dv.buffer);
}

function f16Bytes(rows: number[][]): Uint8Array {
  const flat = rows.flat();
  const dv = new DataView(new ArrayBuffer(2 * flat.length));
  flat.forEach((x, i) => dv.setUint16(2 * i, toHalfBits(x), true));
  return new Uint8Array(dv.buffer);
}

// ---------------------------------------------------------------------------------------

/**
 * A 4-label text task, and `rows` imported into a fresh database: with scripts/import.ts,
 * or (to spare a ~1.4 s child process where the import is not what is tested) in process.
 */
async function setup(
  rows: Array<Record<string, unknown>>,
  via: 'cli' | 'store' = 'store',
): Promise<{ dir: string; db: string; task: string; input: string }> {
  const dir = workDir();
  const task = writeTask(dir, { labels: LABELS4 });
  const input = writeJsonl(dir, 'items.jsonl', rows);
  const db = path.join(dir, 'distill.db');
  if (via === 'cli') {
    const r = await ok('import', ['--db', db, '--task', task, '--input', input]);
    assert.match(r.stdout, new RegExp(`imported ${rows.length} new item\\(s\\)`));
  } else {
    const store = Store.open(db);
    try {
      assert.equal((await importFile(store, loadTaskFile(task), input)).added, rows.length);
    } finally {
      store.close();
    }
  }
  return { dir, db, task, input };
}

describe('white-box teachers through the CLIs', { concurrency: true }, () => {
  test('JSONL logits by id and by text: status, export --logits, and re-ingesting', async () => {
    const items = [
      { id: 'a0', text: 'a cat asleep', label: 'cat', split: 'train' },
      { id: 'a1', text: 'the dog barked', label: 'dog', split: 'train' },
      { id: 7, text: 'a bird sang', label: 'bird', split: 'train' },
      { id: 'a3', text: 'a fish swam', label: 'fish', split: 'test' },
      { id: 'a4', text: 'two cats and a hat', split: 'train' },
      { id: 'a5', text: 'no animal at all', split: 'test' },
    ];
    const { dir, db, task } = await setup(items, 'cli');
    // Logits no fp16 holds exactly, one per item, distinct, argmax on every class; the file is not in item order.
    const byId: Record<string, number[]> = {
      a3: [0.3, -1.7, 2.71828, 3.14159],
      a0: [4.2, 1.1, -0.33, 0.05],
      '7': [-2.2, 0.9, 5.55, 1.01],
      a1: [0.7, 1.3, -0.1, 0.2],
      a5: [-10.5, 12.125, 0.001, -0.77],
      a4: [1.234, 0.4, 1.233, -3],
    };
    const idFile = writeJsonl(
      dir,
      'by-id.jsonl',
      // The item imported with the number 7 as its id is named by the number here too.
      Object.entries(byId).map(([id, logits]) => ({ id: id === '7' ? 7 : id, logits })),
    );
    const byText: Record<string, number[]> = {
      'a fish swam': [0.11, 0.22, 0.33, 0.44],
      'the dog barked': [-0.5, 2.75, 0.6, 0.125],
      'a cat asleep': [1.9, -0.6, 0.61, 1.8],
      'a bird sang': [0, 0, 1.5, -1.5],
    };
    const textFile = writeJsonl(
      dir,
      'by-text.jsonl',
      Object.entries(byText).map(([text, logits]) => ({ text, logits })),
    );

    const r1 = await ok('ingest-logits', ['--db', db, '--task', task, '--teacher', 't-id', '--input', idFile]);
    assert.match(r1.stdout, /^run 1: ingested 6 rows of logits from .* as teacher "t-id", stored as dense16\n$/);
    const r2 = await ok('ingest-logits', ['--db', db, '--task', task, '--teacher', 't-text', '--input', textFile]);
    assert.match(r2.stdout, /^run 2: ingested 4 rows/);

    const [status, idRows, textRows] = await Promise.all([
      ok('status', ['--db', db, '--json']),
      exportRows(db, dir, ['--teachers', 't-id', '--logits']),
      exportRows(db, dir, ['--teachers', 't-text', '--logits']),
    ]);
    const st = JSON.parse(status.stdout);
    assert.equal(st.runs.length, 2);
    const pick = (r: Record<string, unknown>) => ({
      run: r.run,
      kind: r.kind,
      teacher: r.teacher,
      soft: r.soft,
      status: r.status,
      items: r.items,
      labeled: r.labeled,
      failed: r.failed,
      pending: r.pending,
      requests: r.requests,
      cost: r.cost,
    });
    assert.deepEqual(st.runs.map(pick), [
      {
        run: 1,
        kind: 'logits',
        teacher: 't-id',
        soft: 'logits',
        status: 'completed',
        items: 6,
        labeled: 6,
        failed: 0,
        pending: 0,
        requests: 0,
        cost: 0,
      },
      {
        run: 2,
        kind: 'logits',
        teacher: 't-text',
        soft: 'logits',
        status: 'completed',
        items: 4,
        labeled: 4,
        failed: 0,
        pending: 0,
        requests: 0,
        cost: 0,
      },
    ]);
    assert.equal(st.total.items, 6);
    assert.equal(st.total.labeled, 6);

    // Per teacher rows, in item (import) order.
    assert.deepEqual(
      idRows.map((r) => r.id),
      ['a0', 'a1', '7', 'a3', 'a4', 'a5'],
    );
    assert.deepEqual(
      textRows.map((r) => r.id),
      ['a0', 'a1', '7', 'a3'],
    );
    for (const [rows, teacher, expected] of [
      [idRows, 't-id', (row: ExportedRow) => byId[row.id]],
      [textRows, 't-text', (row: ExportedRow) => byText[row.text]],
    ] as const) {
      for (const row of rows) {
        const z = expected(row);
        const item = items.find((it) => String(it.id) === row.id)!;
        const what = `${teacher} ${row.id}`;
        assert.equal(row.text, item.text, what);
        assert.equal(row.gold, item.label ?? null, what);
        assert.equal(row.split, item.split, what);
        assert.equal(row.teacher, teacher, what);
        assert.equal(row.prompt_version, null, what);
        assert.equal(row.soft_method, 'logits', what);
        assert.equal(row.label, LABELS4[argmax(z)], what);
        assertClose(row.probs, softmax(z.map(Math.fround)), 1e-3, `${what} probs`);
        assertFp16Close(row.logits, z, `${what} logits`);
      }
    }

    // The same file again for the same teacher: nothing to do, nothing added.
    const before = dbCounts(db);
    const again = await ok('ingest-logits', ['--db', db, '--task', task, '--teacher', 't-id', '--input', idFile]);
    assert.match(again.stdout, /nothing to do: .*by-id\.jsonl was already ingested as run 1 \(6 rows\)/);
    assert.deepEqual(dbCounts(db), before);
    // The same file under another teacher's name is another teacher: a new run.
    const other = await ok('ingest-logits', ['--db', db, '--task', task, '--teacher', 't-id-2', '--input', idFile]);
    assert.match(other.stdout, /^run 3: ingested 6 rows/);
    assert.deepEqual(dbCounts(db), { ...before, runs: before.runs + 1, labels: before.labels + 6 });
    const runs = dbAll<{ id: number; teacher: string; kind: string; status: string; items_total: number }>(
      db,
      'SELECT id, teacher, kind, status, items_total FROM runs ORDER BY id',
    );
    assert.deepEqual(runs.at(-1), { id: 3, teacher: 't-id-2', kind: 'logits', status: 'completed', items_total: 6 });
  });

  test('.npy logits (float32 and float16) with --ids, and --store dense32 and topk:2', async () => {
    const items = ['n0', 'n1', 'n2', 'n3', 'n4'].map((id, i) => ({
      id,
      text: `text number ${i} about a ${LABELS4[i % 4]}`,
      split: 'train',
    }));
    const { dir, db, task } = await setup(items);
    // Row order differs from the import order.
    const ids = ['n3', 'n0', 'n4', 'n1', 'n2'];
    const idsFile = path.join(dir, 'ids.txt');
    fs.writeFileSync(idsFile, `${ids.join('\n')}\n`);
    const z32 = [
      [0.3, -1.7, 2.71828, 3.14159],
      [4.2, 1.1, -0.33, 0.05],
      [-2.2, 0.9, 5.55, 1.01],
      [0.7, 1.3, -0.1, 1.2],
      [-10.5, 12.3456, 0.001, 11.9],
    ];
    const f32 = npyFile(path.join(dir, 'logits32.npy'), '<f4', [5, 4], f32Bytes(z32));
    const z16raw = [
      [1.5, -0.25, 0.1, 2.2],
      [-3.3, 0.75, 0.5, 0.2],
      [0.01, 0.02, 7.7, -7.7],
      [2.9, 3.1, -1, 0],
      [0.333, 0.666, 0.999, 1.332],
    ];
    const z16 = z16raw.map((row) => row.map((x) => fromHalfBits(toHalfBits(x))));
    const f16 = npyFile(path.join(dir, 'logits16.npy'), '<f2', [5, 4], f16Bytes(z16raw));

    await ok('ingest-logits', ['--db', db, '--task', task, '--teacher', 'np32', '--input', f32, '--ids', idsFile]);
    await ok('ingest-logits', ['--db', db, '--task', task, '--teacher', 'np16', '--input', f16, '--ids', idsFile]);
    const x = await ok('ingest-logits', [
      '--db',
      db,
      '--task',
      task,
      '--teacher',
      'np32x',
      '--input',
      f32,
      '--ids',
      idsFile,
      '--store',
      'dense32',
    ]);
    assert.match(x.stdout, /stored as dense32/);
    const k = await ok('ingest-logits', [
      '--db',
      db,
      '--task',
      task,
      '--teacher',
      'np32k',
      '--input',
      f32,
      '--ids',
      idsFile,
      '--store',
      'topk:2',
    ]);
    assert.match(k.stdout, /stored as topk:2/);

    const runs = dbAll<{ teacher: string; kind: string; status: string; items_total: number }>(
      db,
      'SELECT teacher, kind, status, items_total FROM runs ORDER BY id',
    );
    assert.deepEqual(
      runs,
      ['np32', 'np16', 'np32x', 'np32k'].map((teacher) => ({ teacher, kind: 'logits', status: 'completed', items_total: 5 })),
    );
    const sparse = dbAll<{ teacher: string; sparse: number; n: number }>(
      db,
      'SELECT r.teacher, l.sparse, count(*) AS n FROM labels l JOIN runs r ON r.id = l.run_id GROUP BY r.id, l.sparse ORDER BY r.id',
    );
    assert.deepEqual(sparse, [
      { teacher: 'np32', sparse: 0, n: 5 },
      { teacher: 'np16', sparse: 0, n: 5 },
      { teacher: 'np32x', sparse: 0, n: 5 },
      { teacher: 'np32k', sparse: 1, n: 5 },
    ]);

    const rows = await exportRows(db, dir, ['--teachers', 'np32,np16,np32x,np32k', '--logits']);
    assert.equal(rows.length, 20);
    const rowOf = (id: string) => ids.indexOf(id);
    for (const row of rows) {
      const what = `${row.teacher} ${row.id}`;
      const r = rowOf(row.id);
      assert.ok(r >= 0, what);
      assert.equal(row.soft_method, 'logits', what);
      assert.equal(row.prompt_version, null, what);
      const zf = (row.teacher === 'np16' ? z16[r] : z32[r]).map(Math.fround);
      assert.equal(row.label, LABELS4[argmax(zf)], what);
      switch (row.teacher) {
        case 'np32':
          assertClose(row.probs, softmax(zf), 1e-3, `${what} probs`);
          assertFp16Close(row.logits, z32[r], `${what} logits`);
          break;
        case 'np16':
          // Half floats stored as dense16 come back exactly (up to the export's six decimals).
          assertClose(row.logits, z16[r], 5e-7 + 1e-12, `${what} logits`);
          assertClose(row.probs, softmax(z16[r]), 1e-5, `${what} probs`);
          break;
        case 'np32x':
          assert.deepEqual(row.logits, zf.map(round6), `${what}: dense32 keeps the float32 logits`);
          assertClose(row.probs, softmax(zf), 1e-5, `${what} probs`);
          break;
        case 'np32k': {
          const order = [0, 1, 2, 3].sort((a, b) => zf[b] - zf[a] || a - b);
          const [t0, t1, o0, o1] = order;
          const logits = row.logits!;
          const probs = row.probs!;
          assertFp16Close([logits[t0], logits[t1]], [z32[r][t0], z32[r][t1]], `${what} top-2 logits`);
          assert.equal(logits[o0], logits[o1], `${what}: the two classes outside the top 2 get the same logit`);
          assert.ok(logits[o0] < logits[t1], `${what}: the tail ranks below the top 2`);
          const p = softmax(zf);
          assert.ok(Math.abs(probs.reduce((a, b) => a + b, 0) - 1) <= 1e-5, `${what}: probs sum to 1`);
          assertClose([probs[t0], probs[t1]], [p[t0], p[t1]], 1e-3, `${what} top-2 probs`);
          const leftover = (1 - p[t0] - p[t1]) / 2;
          assertClose([probs[o0], probs[o1]], [leftover, leftover], 1e-3, `${what} tail probs`);
          assert.equal(probs[o0], probs[o1], `${what}: the tail shares the leftover evenly`);
          // The exported probabilities are those of the exported (reconstructed) logits.
          assertClose(probs, softmax(logits), 1e-5, `${what} probs vs logits`);
          break;
        }
        default:
          assert.fail(`unexpected teacher ${row.teacher}`);
      }
    }
    assert.deepEqual([...new Set(rows.map((r) => r.teacher))], ['np32', 'np16', 'np32x', 'np32k']);
  });

  describe('bad input leaves the database as it was', { concurrency: true }, () => {
    const items = ['e0', 'e1', 'e2', 'e3'].map((id, i) => ({ id, text: `error case item ${i}`, split: 'train' }));
    const good = (id: string) => ({ id, logits: [0.5, 1.5, -0.5, 0] });
    const ready = (async () => {
      const s = await setup(items);
      // One good run already there (ingested in process: what is tested here is the bad ones).
      const store = Store.open(s.db);
      try {
        const file = writeJsonl(
          s.dir,
          'good.jsonl',
          items.map((it) => good(it.id)),
        );
        await ingestLogits({ store, task: loadTaskFile(s.task), teacher: 'good', input: file, format: { kind: 'dense16' } });
      } finally {
        store.close();
      }
      const baseline = dbCounts(s.db);
      assert.deepEqual(baseline, { tasks: 1, items: 4, runs: 1, labels: 4 });
      return { ...s, baseline };
    })();
    // Not an unhandled rejection before the first test awaits it.
    ready.catch(() => {});

    async function expectRejected(
      name: string,
      make: (dir: string) => { input: string; extra?: string[]; task?: string },
      where: (f: { input: string; db: string; extra: string[] }) => RegExp,
    ): Promise<void> {
      const c = await ready;
      const dir = path.join(c.dir, name);
      fs.mkdirSync(dir);
      const { input, extra = [], task = c.task } = make(dir);
      const r = await ingest(c.db, task, `bad-${name}`, input, extra);
      assertOneLineError(r, where({ input, db: c.db, extra }));
      assert.deepEqual(dbCounts(c.db), c.baseline, 'no run and no label kept');
    }

    test('an unknown id on line 3, after two good rows', () =>
      expectRejected(
        'unknown-id',
        (dir) => ({ input: writeJsonl(dir, 'logits.jsonl', [good('e0'), good('e1'), good('nope'), good('e2')]) }),
        ({ input }) => new RegExp(`^error: ${esc(input)}:3: no item with id "nope"`),
      ));

    test('a wrong number of logits', () =>
      expectRejected(
        'count',
        (dir) => ({ input: writeJsonl(dir, 'logits.jsonl', [good('e0'), { id: 'e1', logits: [1, 2, 3] }]) }),
        ({ input }) => new RegExp(`^error: ${esc(input)}:2: has 3 logits, the task has 4 labels`),
      ));

    test('a string logit', () =>
      expectRejected(
        'string',
        (dir) => ({ input: writeJsonl(dir, 'logits.jsonl', [good('e0'), good('e1'), { id: 'e2', logits: [1, 'NaN', 0, 0] }]) }),
        ({ input }) => new RegExp(`^error: ${esc(input)}:3: logits\\[1\\] is not a number`),
      ));

    test('a logit beyond the fp16 range with the default dense16 store', () =>
      expectRejected(
        'fp16-range',
        (dir) => ({ input: writeJsonl(dir, 'logits.jsonl', [good('e0'), { id: 'e1', logits: [1e5, 0, 0, 0] }]) }),
        ({ input }) => new RegExp(`^error: ${esc(input)}:2: value 100000 .*outside the fp16 range.*dense32`),
      ));

    test('a NaN in a .npy', () =>
      expectRejected(
        'nan-npy',
        (dir) => {
          const ids = path.join(dir, 'ids.txt');
          fs.writeFileSync(ids, 'e0\ne1\ne2\n');
          return {
            input: npyFile(
              path.join(dir, 'l.npy'),
              '<f4',
              [3, 4],
              f32Bytes([
                [1, 2, 3, 4],
                [1, 2, NaN, 4],
                [1, 2, 3, 4],
              ]),
            ),
            extra: ['--ids', ids],
          };
        },
        ({ input }) => new RegExp(`^error: ${esc(input)}:2: logits\\[2\\] is not finite`),
      ));

    test('a truncated .npy', () =>
      expectRejected(
        'truncated',
        (dir) => {
          const ids = path.join(dir, 'ids.txt');
          fs.writeFileSync(ids, 'e0\ne1\ne2\ne3\n');
          // Shape (4, 4), but the data stops in the middle of row 3.
          const data = f32Bytes([
            [1, 2, 3, 4],
            [4, 3, 2, 1],
            [0, 1, 0, 1],
            [1, 0, 1, 0],
          ]).subarray(0, 2 * 16 + 6);
          return { input: npyFile(path.join(dir, 'l.npy'), '<f4', [4, 4], data), extra: ['--ids', ids] };
        },
        ({ input }) => new RegExp(`^error: ${esc(input)}:3: file ends early`),
      ));

    test('a .npy without --ids', () =>
      expectRejected(
        'no-ids',
        (dir) => ({ input: npyFile(path.join(dir, 'l.npy'), '<f4', [1, 4], f32Bytes([[1, 2, 3, 4]])) }),
        ({ input }) => new RegExp(`^error: ${esc(input)}: .*ids file`),
      ));

    test('an ids file with the wrong count', () =>
      expectRejected(
        'ids-count',
        (dir) => {
          const ids = path.join(dir, 'ids.txt');
          fs.writeFileSync(ids, 'e0\ne1\ne2\n');
          return {
            input: npyFile(
              path.join(dir, 'l.npy'),
              '<f4',
              [4, 4],
              f32Bytes([
                [1, 2, 3, 4],
                [4, 3, 2, 1],
                [0, 1, 0, 1],
                [1, 0, 1, 0],
              ]),
            ),
            extra: ['--ids', ids],
          };
        },
        ({ extra }) => new RegExp(`^error: ${esc(extra[1])}: has 3 ids but .* has 4 rows`),
      ));

    test('the same item twice (by id, then by its text)', () =>
      expectRejected(
        'twice',
        (dir) => ({ input: writeJsonl(dir, 'logits.jsonl', [good('e2'), { text: 'error case item 2', logits: [0, 0, 0, 1] }]) }),
        ({ input }) => new RegExp(`^error: ${esc(input)}:2: the same item as row 1`),
      ));

    test('a task with no imported items', () =>
      expectRejected(
        'no-items',
        (dir) => ({ input: writeJsonl(dir, 'logits.jsonl', [good('e0')]), task: writeTask(dir, { name: 'other', labels: LABELS4 }) }),
        ({ db }) => new RegExp(`^error: ${esc(db)}: no task "other" \\(from .*other\\.md; tasks: animals\\)`),
      ));
  });

  test('teachers report and aggregated export: two logits teachers and an LLM', async () => {
    // Gold on g0-g3 (g3 the only test item); A is wrong on g0 only, B is right on all four.
    const items = [
      { id: 'g0', text: 'a cat on the mat', label: 'cat', split: 'train' },
      { id: 'g1', text: 'the dog barked', label: 'dog', split: 'train' },
      { id: 'g2', text: 'a bird sang', label: 'bird', split: 'train' },
      { id: 'g3', text: 'a fish swam', label: 'fish', split: 'test' },
      { id: 'u4', text: 'another cat nap', split: 'train' },
      { id: 'u5', text: 'one more dog walk', split: 'train' },
    ];
    const { dir, db, task } = await setup(items);
    const A: Record<string, number[]> = {
      g0: [1.0, 2.0, -0.5, 0.25], // dog: wrong
      g1: [0.1, 3.0, -1.0, 0.5],
      g2: [-0.3, 0.2, 2.2, 0.0],
      g3: [0.0, -0.7, 0.4, 1.9],
      u4: [2.5, 0.0, -1.0, 0.3], // cat
      u5: [0.2, 1.1, 0.0, -0.4],
    };
    const B: Record<string, number[]> = {
      g0: [3.0, 0.5, -1.0, 0.0],
      g1: [-0.5, 2.5, 0.3, 0.1],
      g2: [0.0, -0.2, 1.5, 0.4],
      g3: [-1.0, 0.2, 0.1, 2.7],
      u4: [0.1, 0.4, 0.2, 1.6], // fish: disagrees with A; B has no label for u5
    };
    const fake = await startFakeTeacher();
    fakes.push(fake);
    // The LLM labels the gold items only, and answers the label each text mentions (the gold).
    const llmInput = writeJsonl(dir, 'gold-items.jsonl', items.slice(0, 4));
    const labeled = await ok('label', [
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
      '--retry-base-ms',
      '5',
      '--progress-interval',
      '60',
      '--input',
      llmInput,
    ]);
    assert.match(labeled.stdout, /run 1 completed: 4 labeled/);
    assert.equal(fake.requests.length, 4);
    const fileOf = (name: string, z: Record<string, number[]>) =>
      writeJsonl(
        dir,
        `${name}.jsonl`,
        Object.entries(z).map(([id, logits]) => ({ id, logits })),
      );
    // A stored exactly (dense32), B as dense16 (the default).
    assert.match(
      (await ok('ingest-logits', ['--db', db, '--task', task, '--teacher', 'A', '--input', fileOf('A', A), '--store', 'dense32'])).stdout,
      /^run 2: /,
    );
    assert.match((await ok('ingest-logits', ['--db', db, '--task', task, '--teacher', 'B', '--input', fileOf('B', B)])).stdout, /^run 3: /);
    const zA = (id: string) => A[id].map(Math.fround);
    const zB = (id: string) => B[id]?.map(fp16);
    const ids = items.map((it) => it.id);
    const gold = items.map((it) => (it.label === undefined ? null : LABELS4.indexOf(it.label)));

    const [plain, calibrated, mean, vote, weighted, meanCal, byRun, noCalibrate, unknown] = await Promise.all([
      ok('teachers', ['--db', db, '--json']),
      ok('teachers', ['--db', db, '--json', '--calibrate']),
      exportRows(db, dir, ['--aggregate', 'mean', '--teachers', 'A,B']),
      exportRows(db, dir, ['--aggregate', 'vote', '--teachers', 'A,B']),
      exportRows(db, dir, ['--aggregate', 'weighted', '--weights', '1,3', '--teachers', 'A,B']),
      exportRows(db, dir, ['--aggregate', 'mean', '--calibrate', '--teachers', 'A,B']),
      exportRows(db, dir, ['--teachers', '3,fake-teacher', '--logits']),
      run('export', ['--db', db, '--out', path.join(dir, 'never'), '--calibrate']),
      run('export', ['--db', db, '--out', path.join(dir, 'never'), '--teachers', 'A,Z']),
    ]);

    // ---- teachers.ts --json
    const report = JSON.parse(plain.stdout);
    assert.equal(report.task, 'animals');
    assert.equal(report.items, 6);
    assert.equal(report.gold, 4);
    const row = (rep: any, name: string) => {
      const r = rep.teachers.find((t: any) => t.teacher === name);
      assert.ok(r, `no row for ${name} in ${JSON.stringify(rep.teachers)}`);
      return r;
    };
    const facts = (r: any) => ({
      runs: r.runs,
      kinds: r.kinds,
      labeled: r.labeled,
      coverage: r.coverage,
      accuracy: r.accuracy,
      accuracy_n: r.accuracy_n,
    });
    assert.deepEqual(facts(row(report, 'A')), { runs: [2], kinds: ['logits'], labeled: 6, coverage: 1, accuracy: 3 / 4, accuracy_n: 4 });
    assert.deepEqual(facts(row(report, 'B')), { runs: [3], kinds: ['logits'], labeled: 5, coverage: 5 / 6, accuracy: 1, accuracy_n: 4 });
    assert.deepEqual(facts(row(report, 'fake-teacher')), {
      runs: [1],
      kinds: ['llm'],
      labeled: 4,
      coverage: 4 / 6,
      accuracy: 1,
      accuracy_n: 4,
    });
    // NLL at T = 1 over the four gold items, from the logits as stored.
    const nllOf = (z: (id: string) => number[], idsWithGold: string[], T = 1) =>
      idsWithGold.reduce((s, id) => s - Math.log(softmax(z(id), T)[gold[ids.indexOf(id)]!]), 0) / idsWithGold.length;
    const goldIds = ['g0', 'g1', 'g2', 'g3'];
    assert.ok(Math.abs(row(report, 'A').nll - nllOf(zA, goldIds)) < 1e-9, `A nll ${row(report, 'A').nll}`);
    assert.ok(Math.abs(row(report, 'B').nll - nllOf(zB, goldIds)) < 1e-9, `B nll ${row(report, 'B').nll}`);
    assert.equal(row(report, 'A').soft_n, 4);
    const pair = (rep: any, a: string, b: string) => {
      const p = rep.agreement.find((x: any) => (x.a === a && x.b === b) || (x.a === b && x.b === a));
      assert.ok(p, `no agreement for ${a} ~ ${b}`);
      return { n: p.n, rate: p.rate };
    };
    assert.equal(report.agreement.length, 3);
    assert.deepEqual(pair(report, 'A', 'B'), { n: 5, rate: 3 / 5 });
    assert.deepEqual(pair(report, 'A', 'fake-teacher'), { n: 4, rate: 3 / 4 });
    assert.deepEqual(pair(report, 'B', 'fake-teacher'), { n: 4, rate: 1 });
    assert.equal(row(report, 'A').temperature, undefined, 'no temperature without --calibrate');

    // ---- teachers.ts --json --calibrate: a temperature per teacher, fitted on the train gold (g0-g2).
    const cal = JSON.parse(calibrated.stdout);
    const temps: Record<string, number> = {};
    for (const [name, z] of [
      ['A', zA],
      ['B', zB],
    ] as const) {
      const r = row(cal, name);
      const T = r.temperature;
      assert.equal(typeof T, 'number', `${name}: ${JSON.stringify(r)}`);
      assert.ok(T >= 0.05 && T <= 20, `${name}: T = ${T}`);
      temps[name] = T;
      // T minimises the train NLL: no better a step either side (inside the search range).
      const train = ['g0', 'g1', 'g2'];
      for (const step of [0.98, 1.02]) {
        if (T * step < 0.05 || T * step > 20) continue;
        assert.ok(nllOf(z, train, T) <= nllOf(z, train, T * step) + 1e-12, `${name}: NLL(${T}) > NLL(${T * step})`);
      }
      // NLL after calibration is reported on the test split (g3).
      assert.ok(Math.abs(r.nll_calibrated - nllOf(z, ['g3'], T)) < 1e-9, `${name}: nll@T ${r.nll_calibrated}`);
      assert.deepEqual(facts(r), facts(row(report, name)), 'calibration changes no count');
    }
    // A is wrong once on train: its optimum is inside the range, a little below 1 for these logits.
    assert.ok(temps.A > 0.6 && temps.A < 1, `A: T = ${temps.A}`);
    // B is right and sure on every train item: sharper is always better, so T goes to the bottom of the range.
    assert.ok(temps.B < 0.06, `B: T = ${temps.B}`);
    assert.equal(typeof row(cal, 'fake-teacher').temperature, 'number');

    // ---- export --aggregate
    const pa = (id: string, T = 1) => softmax(zA(id), T);
    const pb = (id: string, T = 1) => (B[id] ? softmax(zB(id)!, T) : null);
    const checkAggregate = (rows: ExportedRow[], method: string, expected: (id: string) => number[], soft = `aggregate:${method}`) => {
      assert.deepEqual(
        rows.map((r) => r.id),
        ids,
        method,
      );
      for (const r of rows) {
        const p = expected(r.id);
        assert.equal(r.teacher, `${method}(A,B)`);
        assert.equal(r.soft_method, soft);
        assert.equal(r.prompt_version, null);
        assertClose(r.probs, p, 1e-5, `${method} ${r.id}`);
        assert.ok(Math.abs(r.probs!.reduce((a, b) => a + b, 0) - 1) < 1e-5);
        assert.ok(!('logits' in r), 'aggregated rows have no logits');
        if (method !== 'vote') assert.equal(r.label, LABELS4[argmax(p)], `${method} ${r.id} label`);
      }
    };
    const mix =
      (wa: number, wb: number, T: { A: number; B: number } = { A: 1, B: 1 }) =>
      (id: string) => {
        const a = pa(id, T.A);
        const b = pb(id, T.B);
        return b === null ? a : a.map((x, k) => (wa * x + wb * b[k]) / (wa + wb));
      };
    checkAggregate(mean, 'mean', mix(1, 1));
    checkAggregate(weighted, 'weighted', mix(1, 3));
    checkAggregate(meanCal, 'mean', mix(1, 1, { A: temps.A, B: temps.B }), 'aggregate:mean+calibrated');
    // Vote shares: agreement gives 1, the disagreement on u4 a half each, u5 (A alone) A's label.
    const voteShares = (id: string) => {
      const votes = [argmax(zA(id)), ...(B[id] ? [argmax(zB(id)!)] : [])];
      return LABELS4.map((_, k) => votes.filter((v) => v === k).length / votes.length);
    };
    checkAggregate(vote, 'vote', voteShares);
    assert.deepEqual(vote.find((r) => r.id === 'u4')!.probs, [0.5, 0, 0, 0.5]);
    // The tie on u4 goes to the surer voter: A gives cat 0.82, B gives fish 0.57.
    assert.ok(pa('u4')[0] > pb('u4')![3]);
    assert.equal(vote.find((r) => r.id === 'u4')!.label, 'cat');
    for (const r of vote) if (r.id !== 'u4') assert.equal(r.label, LABELS4[argmax(voteShares(r.id))]);

    // ---- a run id in --teachers, next to the LLM teacher, per teacher rows with --logits
    assert.deepEqual(
      byRun.map((r) => [r.id, r.teacher]),
      [
        ['g0', 'B#3'],
        ['g0', 'fake-teacher'],
        ['g1', 'B#3'],
        ['g1', 'fake-teacher'],
        ['g2', 'B#3'],
        ['g2', 'fake-teacher'],
        ['g3', 'B#3'],
        ['g3', 'fake-teacher'],
        ['u4', 'B#3'],
      ],
    );
    for (const r of byRun) {
      if (r.teacher === 'B#3') {
        assert.equal(r.soft_method, 'logits');
        assert.equal(r.label, LABELS4[argmax(zB(r.id)!)]);
        assertFp16Close(r.logits, B[r.id], `B#3 ${r.id}`);
        assertClose(r.probs, pb(r.id)!, 1e-5, `B#3 ${r.id} probs`);
      } else {
        assert.equal(r.soft_method, 'logprobs');
        assert.match(r.prompt_version!, /^[0-9a-f]{64}$/);
        assert.equal(r.label, r.gold, 'the fake LLM answers the label the text mentions');
        assert.equal(r.logits, null, 'an LLM teacher has no logits');
        assert.ok(r.probs![LABELS4.indexOf(r.gold!)] > 0.5);
      }
    }

    // ---- one-line errors
    assertOneLineError(noCalibrate, /^error: --calibrate goes with --aggregate/);
    assertOneLineError(unknown, /^error: --teachers: no teacher "Z" on task "animals" \(teachers: fake-teacher, A, B\)$/);
  });
});
