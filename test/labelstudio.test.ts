/**
 * Label Studio in and out: export.ts --format labelstudio writes tasks JSON
 * (teachers' answers as predictions with scores, full distributions in the
 * data) and the labeling config; import-review.ts stores the completed
 * annotations of Label Studio's JSON export (test/fixtures/labelstudio-export.json,
 * written by hand in its documented format) as human labels, idempotently.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import {
  CONFIG_FILE,
  labelingConfig,
  LsExport,
  LsTaskOut,
  TASKS_FILE,
  writeLabelStudio,
  type LabelStudioOptions,
} from '../src/export/labelstudio.ts';
import { encodeSoft } from '../src/soft/codec.ts';
import { Store, type TaskRow } from '../src/store/store.ts';
import { animalRows, importFile, LABELS, loadTaskFile, pngFile, runScript, workDir, writeJsonl, writeTask } from './helpers.ts';

const FIXTURE = path.join(path.dirname(new URL(import.meta.url).pathname), 'fixtures', 'labelstudio-export.json');

/** Log-probabilities that put `p` on class `k`, the rest evenly. */
function peaked(k: number, p: number, c = LABELS.length): Float32Array {
  return Float32Array.from({ length: c }, (_, j) => Math.log(j === k ? p : (1 - p) / (c - 1)));
}

/** A completed teacher run; `labels[i]`: [class, confidence] (confidence null: a hard label only), undefined: no label. */
function addRun(
  store: Store,
  task: TaskRow,
  itemIds: number[],
  teacher: string,
  labels: Array<[number, number | null] | undefined>,
): number {
  const run = store.createRun({
    task_id: task.id,
    kind: 'llm',
    teacher,
    base_url: null,
    prompt_version: 'a'.repeat(64),
    config_hash: `cfg-${teacher}-${Math.random()}`,
    params: JSON.stringify({ soft: labels.some((l) => l?.[1] === null) ? 'none' : 'logprobs', temperature: 0 }),
    labels: JSON.stringify(task.labels),
    items_total: labels.filter(Boolean).length,
  });
  labels.forEach((l, i) => {
    if (!l) return;
    const [k, p] = l;
    store.insertLabel({
      itemId: itemIds[i],
      runId: run.id,
      requestKey: `key-${run.id}-${i}`,
      status: 'ok',
      label: task.labels[k],
      soft: p === null ? null : encodeSoft({ kind: 'logprobs', values: peaked(k, p) }, { kind: 'dense32' }),
      softMethod: p === null ? 'none' : 'logprobs',
      sparse: false,
      raw: null,
      promptTokens: 1,
      completionTokens: 1,
      cost: 0,
      latencyMs: 1,
      attempts: 1,
      error: null,
    });
  });
  store.finishRun(run.id, 'completed', null);
  return run.id;
}

/**
 * Task "animals": 12 items (item0..item11, every 4th in the test split); teacher gpt-a labels every item but item 11
 * with a distribution, gpt-b (hard labels only) the even ones and disagrees on item 2.
 */
async function animalsStore(dir: string): Promise<{ db: string; store: Store; task: TaskRow; runs: number[] }> {
  const db = path.join(dir, 'ls.sqlite');
  const store = Store.open(db);
  const rows = animalRows(12).map((r, i) => ({ ...r, split: i % 4 === 3 ? 'test' : 'train' }));
  const imported = await importFile(store, loadTaskFile(writeTask(dir)), writeJsonl(dir, 'items.jsonl', rows));
  const task = imported.taskRow;
  const a = addRun(
    store,
    task,
    imported.itemIds,
    'gpt-a',
    rows.map((_, i) => (i === 11 ? undefined : [i % 3, 0.5 + 0.04 * i])),
  );
  const b = addRun(
    store,
    task,
    imported.itemIds,
    'gpt-b',
    rows.map((_, i) => (i % 2 === 0 ? [i === 2 ? 0 : i % 3, null] : undefined)),
  );
  return { db, store, task, runs: [a, b] };
}

function readTasks(dir: string): unknown[] {
  return JSON.parse(fs.readFileSync(path.join(dir, TASKS_FILE), 'utf8')) as unknown[];
}

describe('export --format labelstudio', () => {
  test("tasks.json: Label Studio's tasks, one per item, each teacher a prediction with its top probability as score", async () => {
    const dir = workDir();
    const { store, task } = await animalsStore(dir);
    try {
      const out = path.join(dir, 'ls');
      const r = writeLabelStudio(store, task, out);
      assert.equal(r.tasks, 12);
      assert.equal(r.predictions, 11 + 6);
      const json = readTasks(out);
      // Both the reader's schema (Label Studio's format) and the writer's own (strict) accept the file.
      assert.equal(LsExport.parse(json).length, 12);
      const tasks = json.map((t) => LsTaskOut.parse(t));
      const t0 = tasks[0];
      assert.equal(t0.data.text, 'number 0 is about a cat');
      assert.equal(t0.data.distillery_id, 'item0');
      assert.equal(t0.data.distillery_task, 'animals');
      assert.equal(t0.data.distillery_split, 'train');
      assert.deepEqual(
        t0.predictions.map((p) => [p.model_version, p.score, p.result[0].value.choices[0], p.result[0].from_name, p.result[0].to_name]),
        [
          ['gpt-a', 0.5, 'cat', 'label', 'text'],
          ['gpt-b', undefined, 'cat', 'label', 'text'],
        ],
      );
      // The full distribution per teacher, in the task's label order; a hard-label teacher has none.
      const a0 = t0.data.distillery_teachers['gpt-a'];
      assert.deepEqual(Object.keys(a0.probs!), LABELS);
      assert.deepEqual(a0.probs, { cat: 0.5, dog: 0.25, bird: 0.25 });
      assert.deepEqual(t0.data.distillery_teachers['gpt-b'], { label: 'cat', probs: null });
      // Item 7: gpt-a at 0.78; item 2: the teachers disagree; item 11: no teacher label, still a task.
      assert.equal(tasks[7].predictions[0].score, 0.78);
      assert.deepEqual(
        tasks[2].predictions.map((p) => p.result[0].value.choices[0]),
        ['bird', 'cat'],
      );
      assert.deepEqual(tasks[11].predictions, []);
      assert.deepEqual(tasks[11].data.distillery_teachers, {});
      for (const t of tasks) for (const p of t.predictions) if (p.score !== undefined) assert.ok(p.score > 1 / 3 && p.score <= 1);
    } finally {
      store.close();
    }
  });

  test('the labeling config names the tags the predictions use, labels escaped; same database, same bytes', async () => {
    const dir = workDir();
    const { store, task } = await animalsStore(dir);
    try {
      const a = path.join(dir, 'a');
      const b = path.join(dir, 'b');
      writeLabelStudio(store, task, a);
      writeLabelStudio(store, task, b);
      for (const f of [TASKS_FILE, CONFIG_FILE]) assert.ok(fs.readFileSync(path.join(a, f)).equals(fs.readFileSync(path.join(b, f))), f);
      assert.deepEqual(fs.readdirSync(a).sort(), [TASKS_FILE, CONFIG_FILE].sort());
      const xml = fs.readFileSync(path.join(a, CONFIG_FILE), 'utf8');
      assert.match(xml, /<Text name="text" value="\$text"\/>/);
      assert.match(xml, /<Choices name="label" toName="text" choice="single"/);
      assert.deepEqual(
        [...xml.matchAll(/<Choice value="([^"]*)"\/>/g)].map((m) => m[1]),
        LABELS,
      );
      const odd = labelingConfig({ ...task, labels: ['a<b', 'say "hi"', 'x&y'] });
      assert.deepEqual(
        [...odd.matchAll(/<Choice value="([^"]*)"\/>/g)].map((m) => m[1]),
        ['a&lt;b', 'say &quot;hi&quot;', 'x&amp;y'],
      );
    } finally {
      store.close();
    }
  });

  test('--split, --teachers, --aggregate (the target a prediction too) and --as-of', async () => {
    const dir = workDir();
    const { store, task, runs } = await animalsStore(dir);
    try {
      const write = (o: LabelStudioOptions) => {
        const out = path.join(dir, `o${Math.random()}`);
        writeLabelStudio(store, task, out, o);
        return readTasks(out).map((t) => LsTaskOut.parse(t));
      };
      const test = write({ split: 'test' });
      assert.deepEqual(
        test.map((t) => t.data.distillery_id),
        ['item3', 'item7', 'item11'],
      );
      assert.throws(() => write({ split: 'dev' }), /no item of task "animals" is in split "dev" \(splits: test, train\)/);
      const onlyB = write({ teachers: 'gpt-b' });
      assert.deepEqual(
        onlyB[0].predictions.map((p) => p.model_version),
        ['gpt-b'],
      );
      const agg = write({ targets: { aggregate: 'mean', calibrate: false } });
      const p0 = agg[0].predictions.at(-1)!;
      assert.equal(p0.model_version, 'mean(gpt-a,gpt-b)');
      assert.equal(agg[0].data.distillery_target!.method, 'mean(gpt-a,gpt-b)');
      assert.equal(p0.score, Math.max(...Object.values(agg[0].data.distillery_target!.probs)));
      const asOf = write({ asOf: runs[0] });
      assert.ok(asOf.every((t) => t.predictions.every((p) => p.model_version === 'gpt-a')));
    } finally {
      store.close();
    }
  });

  test('an image task: the image as a data: URL of its bytes, an <Image> in the config', async () => {
    const dir = workDir();
    const store = Store.open(path.join(dir, 'img.sqlite'));
    try {
      const rows = [0, 1].map((i) => ({ id: `p${i}`, image: path.basename(pngFile(dir, `p${i}.png`, i)) }));
      const imported = await importFile(
        store,
        loadTaskFile(writeTask(dir, { name: 'pics', input: 'image' })),
        writeJsonl(dir, 'p.jsonl', rows),
      );
      addRun(store, imported.taskRow, imported.itemIds, 'cnn', [
        [1, 0.7],
        [2, 0.9],
      ]);
      const out = path.join(dir, 'ls');
      writeLabelStudio(store, imported.taskRow, out);
      const tasks = readTasks(out).map((t) => LsTaskOut.parse(t));
      const url = String(tasks[1].data.image);
      assert.match(url, /^data:image\/png;base64,/);
      assert.ok(Buffer.from(url.slice(url.indexOf(',') + 1), 'base64').equals(fs.readFileSync(path.join(dir, 'p1.png'))));
      assert.equal(tasks[1].predictions[0].result[0].to_name, 'image');
      const xml = fs.readFileSync(path.join(out, CONFIG_FILE), 'utf8');
      assert.match(xml, /<Image name="image" value="\$image"\/>/);
      assert.match(xml, /toName="image"/);
    } finally {
      store.close();
    }
  });

  test('the script: --format labelstudio says what to do with the files; it goes alone, --split only with it', async () => {
    const dir = workDir();
    const { db, store } = await animalsStore(dir);
    store.close();
    const out = path.join(dir, 'ls');
    const [ok, mixed, split] = await Promise.all([
      runScript('export', ['--db', db, '--out', out, '--format', 'labelstudio', '--split', 'train']),
      runScript('export', ['--db', db, '--out', path.join(dir, 'x'), '--format', 'jsonl,labelstudio']),
      runScript('export', ['--db', db, '--out', path.join(dir, 'y'), '--split', 'train']),
    ]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /wrote 9 task\(s\) with 15 prediction\(s\) to .*tasks\.json and the labeling config to .*labeling-config\.xml/);
    assert.match(ok.stdout, /import-review\.ts FILE --format labelstudio/);
    assert.equal(readTasks(out).length, 9);
    assert.equal(mixed.code, 1);
    assert.equal(mixed.stderr, 'error: --format labelstudio goes alone (it writes a folder of its own)\n');
    assert.equal(split.code, 1);
    assert.match(split.stderr, /^error: --split goes with --format labelstudio/);
    assert.ok(!fs.existsSync(path.join(dir, 'x')) && !fs.existsSync(path.join(dir, 'y')));
  });
});
