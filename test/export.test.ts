/**
 * Reproducible exports: byte-identical files from one database state, JSONL
 * and Parquet that read back the same, a manifest that verifies, --as-of,
 * images by content hash, and export -> import-export -> export round trips.
 * Stores are built in-process (no teacher server), so the suite stays fast.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { flagOf } from '../src/cli/run.ts';
import { SettingError, settingMessage } from '../src/errors.ts';
import { writeExport, type WriteOptions } from '../src/export/export.ts';
import { importExport } from '../src/export/import.ts';
import { Manifest } from '../src/export/manifest.ts';
import { readParquetRows } from '../src/export/parquet.ts';
import { verifyExport } from '../src/export/verify.ts';
import { encodeSoft, type SoftFormat } from '../src/soft/codec.ts';
import { decide } from '../src/store/reviews.ts';
import { Store, type TaskRow } from '../src/store/store.ts';
import { buildTargets, type TargetsOptions } from '../src/targets/from-store.ts';
import { animalRows, importFile, LABELS, loadTaskFile, pngFile, runScript, sqlOn, workDir, writeJsonl, writeTask } from './helpers.ts';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Every file under dir (relative path -> bytes). */
function snapshot(dir: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const walk = (rel: string) => {
    for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(r);
      else out.set(r, fs.readFileSync(path.join(dir, r)));
    }
  };
  walk('');
  return out;
}

function assertSameFiles(a: string, b: string): void {
  const x = snapshot(a);
  const y = snapshot(b);
  assert.deepEqual([...x.keys()], [...y.keys()]);
  for (const [k, v] of x) assert.ok(v.equals(y.get(k)!), `${k} differs`);
}

function jsonlRows(dir: string): Record<string, unknown>[] {
  return fs
    .readFileSync(path.join(dir, 'labels.jsonl'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l));
}

function manifestOf(dir: string): Manifest {
  return Manifest.parse(JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')));
}

/** Log-probabilities of a distribution that puts `p` on class `k`, the rest evenly. */
function peaked(k: number, p: number, c = LABELS.length): Float32Array {
  return Float32Array.from({ length: c }, (_, j) => Math.log(j === k ? p : (1 - p) / (c - 1)));
}

interface RunSpec {
  kind: 'llm' | 'logits';
  teacher: string;
  soft: string;
  baseUrl?: string;
  format?: SoftFormat;
  /** item index -> [class, confidence or logits]; null: a failed label. */
  labels: Array<[number, number | number[]] | null | undefined>;
}

function addRun(store: Store, taskRow: TaskRow, itemIds: number[], spec: RunSpec): number {
  const run = store.createRun({
    task_id: taskRow.id,
    kind: spec.kind,
    teacher: spec.teacher,
    base_url: spec.baseUrl ?? null,
    prompt_version: spec.kind === 'llm' ? 'a'.repeat(64) : null,
    config_hash: `cfg-${spec.teacher}-${Math.random()}`,
    params: JSON.stringify(
      spec.kind === 'llm'
        ? { soft: spec.soft, temperature: 0, max_tokens: 20, image_detail: 'low' }
        : { store: 'dense16', ids: null, model: '/home/someone/models/cnn' },
    ),
    labels: JSON.stringify(taskRow.labels),
    items_total: spec.labels.filter((l) => l !== undefined).length,
    ...(spec.kind === 'logits' ? { source: 'logits.jsonl', source_hash: 'b'.repeat(64) } : {}),
  });
  spec.labels.forEach((l, i) => {
    if (l === undefined) return;
    const base = {
      itemId: itemIds[i],
      runId: run.id,
      requestKey: `key-${run.id}-${i}`,
      sparse: false,
      raw: null,
      promptTokens: 10,
      completionTokens: 2,
      latencyMs: 5,
      attempts: 1,
    };
    if (l === null) {
      store.insertLabel({ ...base, status: 'failed', label: null, soft: null, softMethod: spec.soft, cost: 0.0000123, error: 'invalid' });
      return;
    }
    const [k, v] = l;
    const soft =
      spec.soft === 'none'
        ? null
        : Array.isArray(v)
          ? encodeSoft({ kind: 'logits', values: Float32Array.from(v) }, spec.format ?? { kind: 'dense16' })
          : encodeSoft({ kind: 'logprobs', values: peaked(k, v) }, spec.format ?? { kind: 'dense16' });
    store.insertLabel({
      ...base,
      status: 'ok',
      label: taskRow.labels[k],
      soft,
      softMethod: spec.soft,
      cost: spec.kind === 'llm' ? 0.0000123 * (i + 1) : 0,
      error: null,
    });
  });
  store.finishRun(run.id, 'completed', null);
  return run.id;
}

/**
 * A text task with 12 items and four runs: an LLM teacher twice (its second
 * run relabels items 0-3, so those labels win), a logits teacher (top-2 store,
 * a sparse row), a hard-label-only teacher. Run 1 also has a failed label.
 */
async function textStore(dir: string, name = 'db.sqlite'): Promise<{ db: string; store: Store; task: TaskRow }> {
  const db = path.join(dir, name);
  const store = Store.open(db);
  const task = loadTaskFile(writeTask(dir));
  const rows = animalRows(12).map((r, i) => ({ ...r, split: i % 4 === 3 ? 'test' : 'train', ...(i === 5 ? { label: undefined } : {}) }));
  const imported = await importFile(store, task, writeJsonl(dir, 'items.jsonl', rows));
  const ids = imported.itemIds;
  const right = (i: number) => i % 3;
  addRun(store, imported.taskRow, ids, {
    kind: 'llm',
    teacher: 'gpt-a',
    soft: 'logprobs',
    baseUrl: 'https://user:secretpw@llm.example.com/v1',
    labels: Array.from({ length: 12 }, (_, i) =>
      i === 10 ? null : i === 11 ? undefined : [i === 7 ? (right(i) + 1) % 3 : right(i), 0.6 + 0.03 * i],
    ),
  });
  addRun(store, imported.taskRow, ids, {
    kind: 'logits',
    teacher: 'cnn',
    soft: 'logits',
    format: { kind: 'topk', k: 2 },
    labels: Array.from({ length: 12 }, (_, i) => {
      const z = [0.1 * i, -0.5, 0.3];
      z[right(i)] += 2 + 0.1 * i;
      return [right(i), z];
    }),
  });
  addRun(store, imported.taskRow, ids, {
    kind: 'llm',
    teacher: 'gpt-a',
    soft: 'logprobs',
    labels: Array.from({ length: 12 }, (_, i) => (i < 4 ? [(right(i) + 1) % 3, 0.9] : undefined)),
  });
  addRun(store, imported.taskRow, ids, {
    kind: 'llm',
    teacher: 'gpt-b',
    soft: 'none',
    labels: Array.from({ length: 12 }, (_, i) => (i % 2 === 0 ? [right(i), 1] : undefined)),
  });
  return { db, store, task: imported.taskRow };
}

async function exportTo(store: Store, task: TaskRow, dir: string, o: WriteOptions = {}): Promise<string> {
  await writeExport(store, task, dir, { formats: ['jsonl', 'parquet'], ...o });
  return dir;
}

describe('export: deterministic files', () => {
  test('two exports of one state are byte-identical (jsonl, parquet, manifest), per teacher and aggregated', async () => {
    const dir = workDir();
    const { store, task } = await textStore(dir);
    try {
      for (const [name, o] of [
        ['teachers', { logits: true }],
        ['ds', { targets: { aggregate: 'dawid-skene', calibrate: false } }],
        ['cal', { targets: { aggregate: 'mean', calibrate: true } }],
      ] as Array<[string, WriteOptions]>) {
        const a = await exportTo(store, task, path.join(dir, `${name}-a`), o);
        const b = await exportTo(store, task, path.join(dir, `${name}-b`), o);
        assertSameFiles(a, b);
        assert.deepEqual([...snapshot(a).keys()], ['labels.jsonl', 'labels.parquet', 'manifest.json']);
      }
      // an export over an earlier one in the same folder: the same bytes, and no leftover format
      const again = path.join(dir, 'teachers-a');
      await writeExport(store, task, again, { formats: ['jsonl'], logits: true });
      assert.deepEqual([...snapshot(again).keys()], ['labels.jsonl', 'manifest.json']);
      assert.ok(fs.readFileSync(path.join(again, 'labels.jsonl')).equals(fs.readFileSync(path.join(dir, 'teachers-b', 'labels.jsonl'))));
    } finally {
      store.close();
    }
  });

  test('rows: item order, the latest valid label per item and teacher, and the parquet reads back to the jsonl rows', async () => {
    const dir = workDir();
    const { store, task } = await textStore(dir);
    try {
      for (const o of [{ logits: true }, { targets: { aggregate: 'vote', calibrate: false } }, { teachers: '3,cnn' }] as WriteOptions[]) {
        const out = await exportTo(store, task, path.join(dir, `out-${Math.random().toString(36).slice(2)}`), o);
        const rows = jsonlRows(out);
        const back = await readParquetRows(fs.readFileSync(path.join(out, 'labels.parquet')));
        assert.deepStrictEqual(back, rows);
        assert.ok(rows.length > 0);
      }
      const out = await exportTo(store, task, path.join(dir, 'plain'));
      const rows = jsonlRows(out) as Array<{
        id: string;
        teacher: string;
        run: number;
        label: string;
        probs: number[] | null;
        soft: string | null;
      }>;
      assert.deepEqual(
        [...new Set(rows.map((r) => r.id))],
        animalRows(12).map((r) => r.id),
        'item order',
      );
      const a = rows.filter((r) => r.teacher === 'gpt-a');
      assert.equal(a.length, 10, 'no row for the failed label or the unlabeled item');
      assert.deepEqual(
        a.slice(0, 4).map((r) => r.run),
        [3, 3, 3, 3],
        'the relabel run wins',
      );
      assert.equal(a[4].run, 1);
      assert.equal(a[0].label, LABELS[1]);
      assert.ok(rows.filter((r) => r.teacher === 'gpt-b').every((r) => r.probs === null && r.soft === null));
      for (const r of rows) for (const p of r.probs ?? []) assert.equal(p, Math.round(p * 1e6) / 1e6);
    } finally {
      store.close();
    }
  });

  test('manifest: task, runs with models and parameters, counts, cost, version, files; no times, paths or credentials', async () => {
    const dir = workDir();
    const { store, task } = await textStore(dir);
    try {
      const out = await exportTo(store, task, path.join(dir, 'out'));
      const text = fs.readFileSync(path.join(out, 'manifest.json'), 'utf8');
      const m = manifestOf(out);
      const rows = jsonlRows(out) as Array<{ split: string; label: string; teacher: string; cost: number }>;
      assert.equal(m.tool.version, JSON.parse(fs.readFileSync('package.json', 'utf8')).version);
      assert.deepEqual(m.task, { name: 'animals', input: 'text', labels: LABELS, prompt_version: 'a'.repeat(64) });
      assert.deepEqual(
        m.runs.map((r) => [r.id, r.teacher, r.kind, r.labels]),
        [
          [1, 'gpt-a', 'llm', 6],
          [2, 'cnn', 'logits', 12],
          [3, 'gpt-a', 'llm', 4],
          [4, 'gpt-b', 'llm', 6],
        ],
      );
      assert.equal(m.runs[0].base_url, 'https://llm.example.com/v1', 'userinfo stripped');
      assert.deepEqual(m.runs[0].params, { soft: 'logprobs', temperature: 0, max_tokens: 20, image_detail: 'low' });
      assert.equal(m.runs[1].params.model, 'cnn', 'an absolute path is cut to its name');
      assert.deepEqual(m.teachers, [
        { name: 'gpt-a', runs: [1, 3], labels: 10 },
        { name: 'cnn', runs: [2], labels: 12 },
        { name: 'gpt-b', runs: [4], labels: 6 },
      ]);
      assert.equal(m.counts.rows, rows.length);
      assert.equal(m.counts.items, 12);
      assert.deepEqual(m.counts.by_split, {
        test: rows.filter((r) => r.split === 'test').length,
        train: rows.filter((r) => r.split === 'train').length,
      });
      assert.deepEqual(Object.keys(m.counts.by_class), LABELS);
      assert.equal(
        Object.values(m.counts.by_class).reduce((a, b) => a + b, 0),
        rows.length,
      );
      assert.ok(Math.abs(m.cost_usd - rows.reduce((s, r) => s + r.cost, 0)) < 1e-9 && m.cost_usd > 0);
      assert.equal(m.aggregation, null);
      assert.deepEqual(
        m.files.map((f) => [f.path, f.rows]),
        [
          ['labels.jsonl', rows.length],
          ['labels.parquet', rows.length],
        ],
      );
      for (const f of m.files) {
        const bytes = fs.readFileSync(path.join(out, f.path));
        assert.equal(f.bytes, bytes.length);
        assert.equal(f.sha256, sha256(bytes));
      }
      for (const file of ['manifest.json', 'labels.jsonl']) {
        const t = fs.readFileSync(path.join(out, file), 'utf8');
        assert.doesNotMatch(t, /\d{4}-\d\d-\d\dT\d\d:/, `${file}: no timestamps`);
        assert.ok(!t.includes(dir) && !t.includes('/home/') && !t.includes('secretpw'), `${file}: no paths, no userinfo`);
      }
      assert.ok(text.endsWith('}\n'));

      const agg = await exportTo(store, task, path.join(dir, 'agg'), {
        targets: { aggregate: 'weighted', calibrate: true },
        teachers: 'gpt-a,cnn',
      });
      const am = manifestOf(agg);
      assert.equal(am.rows, 'aggregate');
      assert.equal(am.aggregation?.method, 'weighted');
      assert.equal(am.aggregation?.weights?.length, 2);
      assert.equal(am.aggregation?.temperatures?.length, 2);
      assert.deepEqual(
        am.runs.map((r) => r.id),
        [1, 2, 3],
      );
    } finally {
      store.close();
    }
  });

  test('a failed export writes nothing', async () => {
    const dir = workDir();
    const { store, task } = await textStore(dir);
    try {
      const out = path.join(dir, 'out');
      await assert.rejects(writeExport(store, task, out, { teachers: 'nobody', formats: ['jsonl', 'parquet'] }), /no teacher "nobody"/);
      await assert.rejects(writeExport(store, task, out, { withImages: true }), /text task/);
      assert.ok(!fs.existsSync(out) || fs.readdirSync(out).length === 0);
    } finally {
      store.close();
    }
  });
  test('a rerun clears the temporary files of a killed export (its process gone) and keeps a live one', async () => {
    const dir = workDir();
    const { store, task } = await textStore(dir);
    try {
      const out = path.join(dir, 'out');
      fs.mkdirSync(out, { recursive: true });
      // A pid that is gone: a child that has exited and been reaped.
      const gone = spawnSync(process.execPath, ['-e', '0']).pid!;
      const stale = path.join(out, `.labels.jsonl.tmp-${gone}`);
      const other = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)']); // another export, still running
      const live = path.join(out, `.labels.parquet.tmp-${other.pid}`);
      fs.writeFileSync(stale, 'half a file');
      fs.writeFileSync(live, 'another export, still writing');
      await exportTo(store, task, out).finally(() => other.kill());
      assert.ok(!fs.existsSync(stale), 'the temporary file of the dead export is gone');
      assert.ok(fs.existsSync(live), 'the temporary file of a live process stays');
      fs.rmSync(live);
      assert.deepEqual((await verifyExport(out)).problems, []);
    } finally {
      store.close();
    }
  });
});

describe('export: verify', () => {
  test('passes on an untouched export; names the file on a flipped byte, a missing file, an extra file, an edited count', async () => {
    const dir = workDir();
    const { store, task } = await textStore(dir);
    const fresh = async (name: string) => exportTo(store, task, path.join(dir, name));
    try {
      const ok = await fresh('ok');
      assert.deepEqual((await verifyExport(ok)).problems, []);

      const flipped = await fresh('flipped');
      const file = path.join(flipped, 'labels.parquet');
      const bytes = fs.readFileSync(file);
      bytes[Math.floor(bytes.length / 2)] ^= 1;
      fs.writeFileSync(file, bytes);
      assert.match((await verifyExport(flipped)).problems.join('\n'), /labels\.parquet: sha256 differs/);

      const missing = await fresh('missing');
      fs.rmSync(path.join(missing, 'labels.jsonl'));
      assert.match((await verifyExport(missing)).problems.join('\n'), /labels\.jsonl: missing/);

      const extra = await fresh('extra');
      fs.writeFileSync(path.join(extra, 'more.jsonl'), '{}\n');
      assert.match((await verifyExport(extra)).problems.join('\n'), /more\.jsonl: not listed in manifest\.json/);

      const edited = await fresh('edited');
      const mpath = path.join(edited, 'manifest.json');
      const m = JSON.parse(fs.readFileSync(mpath, 'utf8'));
      m.counts.by_split.train += 1;
      fs.writeFileSync(mpath, JSON.stringify(m, null, 2));
      const problems = (await verifyExport(edited)).problems.join('\n');
      assert.match(problems, /labels\.jsonl: counts\.by_split/);
      assert.match(problems, /labels\.parquet: counts\.by_split/);

      // a consistent edit of data and hash is still caught by the recount
      const forged = await fresh('forged');
      const jl = path.join(forged, 'labels.jsonl');
      const lines = fs.readFileSync(jl, 'utf8').split('\n');
      lines.splice(0, 1);
      fs.writeFileSync(jl, lines.join('\n'));
      const fm = JSON.parse(fs.readFileSync(path.join(forged, 'manifest.json'), 'utf8'));
      const entry = fm.files.find((f: { path: string }) => f.path === 'labels.jsonl');
      const nb = fs.readFileSync(jl);
      Object.assign(entry, { bytes: nb.length, sha256: sha256(nb) });
      fs.writeFileSync(path.join(forged, 'manifest.json'), JSON.stringify(fm, null, 2));
      assert.match((await verifyExport(forged)).problems.join('\n'), /labels\.jsonl: .*rows/);
    } finally {
      store.close();
    }
  });
});

describe('export: --as-of', () => {
  test('the state after a run: later runs and items imported later are left out', async () => {
    const dir = workDir();
    const { store, task } = await textStore(dir);
    try {
      const full = manifestOf(await exportTo(store, task, path.join(dir, 'full')));
      // items imported after run 2 ended (made explicit: times are set, not waited for)
      sqlOn(store, (db) => {
        const t2 = (db.prepare('SELECT ended_at FROM runs WHERE id = 2').get() as { ended_at: string }).ended_at;
        db.prepare('UPDATE items SET created_at = ? WHERE id > 10').run(new Date(Date.parse(t2) + 1000).toISOString());
      });
      const out = await exportTo(store, task, path.join(dir, 'asof'), { asOf: 2 });
      const m = manifestOf(out);
      const rows = jsonlRows(out) as Array<{ id: string; run: number; teacher: string }>;
      assert.equal(m.as_of, 2);
      assert.deepEqual(
        m.runs.map((r) => r.id),
        [1, 2],
      );
      assert.ok(rows.every((r) => r.run <= 2));
      assert.ok(!rows.some((r) => r.id === 'item10' || r.id === 'item11'), 'items imported after run 2');
      assert.equal(rows.filter((r) => r.teacher === 'gpt-a' && r.id === 'item0').length, 1);
      assert.equal(
        (rows.find((r) => r.teacher === 'gpt-a' && r.id === 'item0') as { run: number }).run,
        1,
        "run 3's relabel is not there yet",
      );
      assert.ok(full.counts.rows > m.counts.rows);
      assert.deepEqual((await verifyExport(out)).problems, []);
      // deterministic too, and a later state does not change it
      assertSameFiles(out, await exportTo(store, task, path.join(dir, 'asof2'), { asOf: 2 }));
      const agg = manifestOf(
        await exportTo(store, task, path.join(dir, 'asof-ds'), { asOf: 2, targets: { aggregate: 'dawid-skene', calibrate: false } }),
      );
      assert.deepEqual(
        agg.runs.map((r) => r.id),
        [1, 2],
      );
      assert.equal(agg.counts.items, 10, 'aggregated over the items of that state');
      await assert.rejects(writeExport(store, task, path.join(dir, 'x'), { asOf: 99 }), (e: SettingError) => {
        assert.deepEqual([e.setting, e.value], ['asOf', 99]);
        assert.match(settingMessage(e, flagOf(e.setting)), /^--as-of: not a run of task "animals"/);
        return true;
      });
      await assert.rejects(writeExport(store, task, path.join(dir, 'x'), { asOf: 1, teachers: 'gpt-b' }), /no teacher "gpt-b"/);
    } finally {
      store.close();
    }
  });
});

test('--as-of: a reviewer’s decisions made after the run ended are left out', async () => {
  const dir = workDir();
  const { store, task } = await textStore(dir);
  try {
    const ids = sqlOn(store, (db) => (db.prepare('SELECT id FROM items ORDER BY id LIMIT 2').all() as { id: number }[]).map((r) => r.id));
    const early = decide(store, { task, reviewer: 'alice', itemId: ids[0], label: LABELS[1] }).decision;
    const late = decide(store, { task, reviewer: 'alice', itemId: ids[1], label: LABELS[2] }).decision;
    const humanRunId = early.runId;
    // The human run was created before run humanRunId + 1 ended; the second decision came an hour after it.
    sqlOn(store, (db) => {
      db.prepare(
        `INSERT INTO runs (task_id, kind, teacher, config_hash, params, labels, status, started_at, ended_at)
                  SELECT task_id, 'logits', 'later', 'x', '{}', labels, 'completed', started_at, ended_at FROM runs WHERE id = ?`,
      ).run(humanRunId);
      const end = (db.prepare('SELECT max(ended_at) AS t FROM runs').get() as { t: string }).t;
      db.prepare('UPDATE labels SET created_at = ? WHERE request_key = ?').run(
        new Date(Date.parse(end) - 1000).toISOString(),
        `review:${early.id}`,
      );
      db.prepare('UPDATE labels SET created_at = ? WHERE request_key = ?').run(
        new Date(Date.parse(end) + 3_600_000).toISOString(),
        `review:${late.id}`,
      );
    });
    const asOf = humanRunId + 1;
    const rows = (out: string) => (jsonlRows(out) as Array<{ teacher: string; id: string }>).filter((r) => r.teacher === 'human:alice');
    assert.equal(rows(await exportTo(store, task, path.join(dir, 'all'))).length, 2);
    assert.deepEqual(
      rows(await exportTo(store, task, path.join(dir, 'asof'), { asOf })).map((r) => r.id),
      ['item0'],
    );
  } finally {
    store.close();
  }
});

function targetsByItem(db: string, o: TargetsOptions) {
  const store = Store.open(db);
  try {
    const task = store.listTasks()[0];
    const t = buildTargets(store, task, o);
    const out: Record<string, { probs: number[] | null; hard: number | null }> = {};
    t.items.items.forEach((it, i) => {
      if (t.probs[i] || t.hard[i] !== null) out[it.ext_id] = { probs: t.probs[i] ? Array.from(t.probs[i]!) : null, hard: t.hard[i] };
    });
    return out;
  } finally {
    store.close();
  }
}

describe('import-export', () => {
  test('export -> import-export -> export gives the same bytes, and the same training targets', async () => {
    const dir = workDir();
    const { db, store, task } = await textStore(dir);
    const a = await exportTo(store, task, path.join(dir, 'a'), { logits: true });
    store.close();
    const db2 = path.join(dir, 'imported.sqlite');
    const r = await importExport(a, db2);
    assert.deepEqual(r, { task: 'animals', items: 12, runs: 4, labels: manifestOf(a).counts.rows, images: 0 });
    const store2 = Store.open(db2);
    try {
      const b = await exportTo(store2, store2.listTasks()[0], path.join(dir, 'b'), { logits: true });
      assertSameFiles(a, b);
    } finally {
      store2.close();
    }
    for (const o of [
      { aggregate: 'mean', calibrate: false },
      { aggregate: 'weighted', calibrate: true },
      { aggregate: 'vote', calibrate: false },
      { aggregate: 'dawid-skene', calibrate: false },
      { aggregate: 'mean', calibrate: true, teachers: 'gpt-a,3' },
    ] as TargetsOptions[]) {
      assert.deepStrictEqual(targetsByItem(db2, o), targetsByItem(db, o), JSON.stringify(o));
    }
    await assert.rejects(importExport(a, db2), /imported\.sqlite: the database is not empty \(1 tasks, 12 items, 4 runs\)/);
  });

  test('refuses a tampered export, an aggregated one, and leaves no database behind', async () => {
    const dir = workDir();
    const { store, task } = await textStore(dir);
    try {
      const bad = await exportTo(store, task, path.join(dir, 'bad'));
      fs.appendFileSync(path.join(bad, 'labels.jsonl'), '\n');
      const db = path.join(dir, 'new.sqlite');
      await assert.rejects(importExport(bad, db), /labels\.jsonl: .*nothing imported/);
      assert.ok(!fs.existsSync(db));
      const agg = await exportTo(store, task, path.join(dir, 'agg'), { targets: { aggregate: 'mean', calibrate: false } });
      await assert.rejects(importExport(agg, db), /aggregated export \(mean\)/);
      assert.ok(!fs.existsSync(db));
    } finally {
      store.close();
    }
  });
});

describe('export: images', () => {
  test('--with-images writes images/<sha256>.png that hash to their names; import-export needs them', async () => {
    const dir = workDir();
    const db = path.join(dir, 'img.sqlite');
    const store = Store.open(db);
    const task = loadTaskFile(writeTask(dir, { name: 'pics', input: 'image' }));
    const rows = [0, 1, 2, 3].map((i) => ({ id: `p${i}`, image: path.basename(pngFile(dir, `p${i}.png`, i)), label: LABELS[i % 3] }));
    const imported = await importFile(store, task, writeJsonl(dir, 'pics.jsonl', rows));
    addRun(store, imported.taskRow, imported.itemIds, {
      kind: 'logits',
      teacher: 'cnn',
      soft: 'logits',
      labels: rows.map((_, i) => [i % 3, [i % 3 === 0 ? 2 : 0, i % 3 === 1 ? 2 : 0, i % 3 === 2 ? 2 : 0]]),
    });
    try {
      const out = await exportTo(store, imported.taskRow, path.join(dir, 'out'), { withImages: true });
      const images = fs.readdirSync(path.join(out, 'images')).sort();
      assert.equal(images.length, 4);
      for (const name of images) assert.equal(`${sha256(fs.readFileSync(path.join(out, 'images', name)))}.png`, name);
      const exported = jsonlRows(out) as Array<{ image: string }>;
      assert.deepEqual(exported.map((r) => `${r.image}.png`).sort(), images);
      assert.deepEqual((await verifyExport(out)).problems, []);
      assertSameFiles(out, await exportTo(store, imported.taskRow, path.join(dir, 'out2'), { withImages: true }));

      const db2 = path.join(dir, 'img2.sqlite');
      assert.equal((await importExport(out, db2)).images, 4);
      const store2 = Store.open(db2);
      try {
        assertSameFiles(out, await exportTo(store2, store2.listTasks()[0], path.join(dir, 'out3'), { withImages: true }));
      } finally {
        store2.close();
      }

      const bare = await exportTo(store, imported.taskRow, path.join(dir, 'bare'));
      assert.ok(!fs.existsSync(path.join(bare, 'images')));
      await assert.rejects(
        importExport(bare, path.join(dir, 'img3.sqlite')),
        /needs its images\/ folder; export it again with --with-images/,
      );
      // an image removed from a --with-images export
      fs.rmSync(path.join(out, 'images', images[0]));
      assert.match((await verifyExport(out)).problems.join('\n'), new RegExp(`images/${images[0].replace('.', '\\.')}: missing`));
    } finally {
      store.close();
    }
  });
});

describe('export: the scripts', () => {
  test('export --format jsonl,parquet, --verify (ok, then a flipped byte: exit 1 naming the file), import-export into a non-empty database', async () => {
    const dir = workDir();
    const { db, store } = await textStore(dir);
    store.close();
    const out = path.join(dir, 'out');
    const e = await runScript('export', ['--db', db, '--out', out, '--format', 'jsonl,parquet']);
    assert.equal(e.code, 0, e.stderr);
    assert.match(e.stdout, /wrote 28 row\(s\) to .*labels\.jsonl and .*labels\.parquet; manifest .*manifest\.json/);
    const [ok, bad] = await Promise.all([runScript('export', ['--verify', out]), runScript('import-export', ['--input', out, '--db', db])]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /ok \(2 file\(s\) and manifest\.json, 28 row\(s\)\)/);
    assert.equal(bad.code, 1);
    assert.match(
      bad.stderr,
      /^error: .*db\.sqlite: the database is not empty \(1 tasks, 12 items, 4 runs\); import-export loads an export into a new or empty database\n$/,
    );
    const jl = path.join(out, 'labels.jsonl');
    const bytes = fs.readFileSync(jl);
    bytes[10] ^= 1;
    fs.writeFileSync(jl, bytes);
    const flipped = await runScript('export', ['--verify', out]);
    assert.equal(flipped.code, 1);
    assert.match(flipped.stderr, /^error: .*out\/labels\.jsonl: sha256 differs from manifest\.json/m);
  });
});
