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
import { InputError } from '../src/errors.ts';
import {
  importLabelStudio,
  readLabelStudioExport,
  reviewerOf,
  taskOfExport,
  type ImportReviewOptions,
  type ImportReviewResult,
} from '../src/review/import-labelstudio.ts';
import { buildQueue, buildReviewContext, type ReviewPolicy } from '../src/review/queue.ts';
import { encodeSoft } from '../src/soft/codec.ts';
import { checkReviewer, decide, humanLabels } from '../src/store/reviews.ts';
import { Store, type TaskRow } from '../src/store/store.ts';
import { animalRows, importFile, LABELS, loadTaskFile, pngFile, runScript, sqlOn, workDir, writeJsonl, writeTask } from './helpers.ts';

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

  test("--policy: the review queue's items only, most doubtful first, each with its rank and why; --limit", async () => {
    const dir = workDir();
    const { store, task } = await animalsStore(dir);
    try {
      const write = async (policy: ReviewPolicy, o: LabelStudioOptions = {}) => {
        const out = path.join(dir, `q${Math.random()}`);
        const queue = buildQueue(await buildReviewContext(store, task, { split: o.split }), policy);
        writeLabelStudio(store, task, out, { ...o, queue });
        return readTasks(out).map((t) => LsTaskOut.parse(t));
      };
      // The teachers disagree on item 2 only.
      const disagree = await write('disagree');
      assert.deepEqual(
        disagree.map((t) => [t.data.distillery_id, t.data.distillery_review!.rank, t.data.distillery_review!.policy]),
        [['item2', 1, 'disagree']],
      );
      assert.ok(disagree[0].data.distillery_review!.reason.length > 0);
      const low = await write('low-confidence', { limit: 4 });
      assert.equal(low.length, 4);
      const scores = low.map((t) => t.data.distillery_review!.score);
      assert.deepEqual(
        scores,
        [...scores].sort((a, b) => a - b),
      );
      assert.deepEqual(
        low.map((t) => t.data.distillery_review!.rank),
        [1, 2, 3, 4],
      );
      // The mean target of gpt-a (0.5 + 0.04 i on its label) and gpt-b (one-hot, even items): item 1 alone at 0.54, then
      // item 2, where they disagree (0.605), then item 3 (0.62).
      assert.deepEqual(
        low.slice(0, 3).map((t) => [t.data.distillery_id, t.data.distillery_review!.score]),
        [
          ['item1', 0.54],
          ['item2', 0.605],
          ['item3', 0.62],
        ],
      );
      const test = await write('low-confidence', { split: 'test' });
      assert.ok(test.every((t) => t.data.distillery_split === 'test'));
      assert.throws(() => writeLabelStudio(store, task, path.join(dir, 'x'), { queue: [], asOf: 1 }), /goes without a review policy/);
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
      // Back from Label Studio: found by distillery_id; an image task without it has nothing to be found by.
      const annotated = (drop: boolean) =>
        tasks.map((t, i) => ({
          id: i + 1,
          data: drop ? { image: t.data.image } : t.data,
          annotations: [{ id: 10 + i, completed_by: 9, result: [{ ...t.predictions[0].result[0] }], was_cancelled: false }],
        }));
      const file = path.join(dir, 'ls-export.json');
      fs.writeFileSync(file, JSON.stringify(annotated(false)));
      const r = importLabelStudio(store, imported.taskRow, file, readLabelStudioExport(file));
      assert.deepEqual([r.stored, r.reviewers], [2, ['labelstudio-9']]);
      assert.deepEqual(humanRows(store, imported.taskRow), ['p0 labelstudio-9 dog', 'p1 labelstudio-9 bird']);
      fs.writeFileSync(file, JSON.stringify(annotated(true)));
      assert.throws(
        () => importLabelStudio(store, imported.taskRow, file, readLabelStudioExport(file)),
        /ls-export\.json: task \[0\] \(Label Studio task 1\): no distillery_id to find its item by/,
      );
    } finally {
      store.close();
    }
  });

  test('the script: --format labelstudio says what to do with the files; it goes alone, --split only with it', async () => {
    const dir = workDir();
    const { db, store } = await animalsStore(dir);
    store.close();
    const out = path.join(dir, 'ls');
    const [ok, mixed, split, queued, limit] = await Promise.all([
      runScript('export', ['--db', db, '--out', out, '--format', 'labelstudio', '--split', 'train']),
      runScript('export', ['--db', db, '--out', path.join(dir, 'x'), '--format', 'jsonl,labelstudio']),
      runScript('export', ['--db', db, '--out', path.join(dir, 'y'), '--split', 'train']),
      runScript('export', [
        '--db',
        db,
        '--out',
        path.join(dir, 'q'),
        '--format',
        'labelstudio',
        '--policy',
        'low-confidence',
        '--limit',
        '2',
      ]),
      runScript('export', ['--db', db, '--out', path.join(dir, 'z'), '--format', 'labelstudio', '--limit', '2']),
    ]);
    assert.equal(queued.code, 0, queued.stderr);
    assert.match(queued.stdout, /^wrote 2 task\(s\) \(most doubtful first by low-confidence, of 11 queued\) with 3 prediction\(s\)/);
    assert.equal(limit.code, 1);
    assert.equal(limit.stderr, 'error: --limit goes with --policy (it ranks the review queue)\n');
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /wrote 9 task\(s\) with 15 prediction\(s\) to .*tasks\.json and the labeling config to .*labeling-config\.xml/);
    assert.match(ok.stdout, /import-review\.ts FILE --format labelstudio/);
    assert.equal(readTasks(out).length, 9);
    assert.equal(mixed.code, 1);
    assert.equal(mixed.stderr, 'error: --format labelstudio goes alone (it writes a folder of its own)\n');
    assert.equal(split.code, 1);
    assert.match(split.stderr, /^error: --split goes with --format labelstudio/);
    for (const d of ['x', 'y', 'z']) assert.ok(!fs.existsSync(path.join(dir, d)), d);
  });
});

/** The fixture with `edit` applied, written next to the database. */
function fixtureCopy(dir: string, name: string, edit: (tasks: any[]) => void): string {
  const tasks = JSON.parse(fs.readFileSync(FIXTURE, 'utf8')) as any[];
  edit(tasks);
  const file = path.join(dir, name);
  fs.writeFileSync(file, JSON.stringify(tasks, null, 2));
  return file;
}

/** Live human labels as `ext_id reviewer label`, sorted. */
function humanRows(store: Store, task: TaskRow): string[] {
  const ext = new Map(store.taskItemRows(task.id).map((it) => [it.id, it.ext_id]));
  return humanLabels(store, task.id)
    .map((h) => `${ext.get(h.itemId)} ${h.reviewer} ${h.label}`)
    .sort();
}

function countRows(store: Store, table: 'reviews' | 'labels'): number {
  return sqlOn(store, (db) => (db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n);
}

const FIXTURE_LABELS = [
  'item0 alice@example.com cat',
  'item0 labelstudio-2 dog',
  'item1 alice@example.com dog',
  'item3 labelstudio-2 cat',
  'item4 alice@example.com dog',
];

function importFixture(store: Store, task: TaskRow, file = FIXTURE, o: ImportReviewOptions = {}): ImportReviewResult {
  return importLabelStudio(store, task, file, readLabelStudioExport(file), o);
}

describe('import-review --format labelstudio', () => {
  test("Label Studio's export: completed annotations become human labels, reviewers from completed_by; cancelled and empty ones are not labels", async () => {
    const dir = workDir();
    const { store, task } = await animalsStore(dir);
    try {
      const r = importFixture(store, task);
      assert.deepEqual(
        { stored: r.stored, updated: r.updated, already: r.already, conflicts: r.conflicts, skipped: r.skipped, reviewers: r.reviewers },
        {
          stored: 5,
          updated: 0,
          already: 0,
          conflicts: [],
          skipped: { cancelled: 1, empty: 1, unannotated: 1 },
          reviewers: ['alice@example.com', 'labelstudio-2'],
        },
      );
      // item3's task has no distillery_id: found by its text. User 2's cancelled annotation on item1 and empty one on item5: no label.
      assert.deepEqual(humanRows(store, task), FIXTURE_LABELS);
      const keys = sqlOn(store, (db) => db.prepare(`SELECT source, source_key, action FROM reviews ORDER BY id`).all());
      assert.deepEqual(
        keys.map((k: any) => `${k.source} ${k.source_key} ${k.action}`),
        ['101:1001', '101:1002', '102:1003', '104:1005', '105:1006'].map((k) => `labelstudio ${k} label`),
      );
      const humans = store.runs(task.id).filter((run) => run.kind === 'human');
      assert.deepEqual(humans.map((h) => h.teacher).sort(), ['human:alice@example.com', 'human:labelstudio-2']);
    } finally {
      store.close();
    }
  });

  test('importing the same file twice adds nothing', async () => {
    const dir = workDir();
    const { store, task } = await animalsStore(dir);
    try {
      importFixture(store, task);
      const before = [countRows(store, 'reviews'), countRows(store, 'labels')];
      const again = importFixture(store, task);
      assert.deepEqual([again.stored, again.updated, again.already, again.conflicts.length], [0, 0, 5, 0]);
      assert.deepEqual([countRows(store, 'reviews'), countRows(store, 'labels')], before);
      assert.deepEqual(humanRows(store, task), FIXTURE_LABELS);
    } finally {
      store.close();
    }
  });

  test('an annotation changed in Label Studio replaces its decision; an answer given on the page is a conflict, kept unless --replace', async () => {
    const dir = workDir();
    const { store, task } = await animalsStore(dir);
    try {
      importFixture(store, task);
      const changed = fixtureCopy(dir, 'changed.json', (ts) => {
        ts[1].annotations[0].result[0].value.choices = ['bird'];
        ts[1].annotations[0].updated_at = '2026-11-30T11:00:00.000000Z';
      });
      const r = importFixture(store, task, changed);
      assert.deepEqual([r.stored, r.updated, r.already, r.conflicts.length], [0, 1, 4, 0]);
      assert.ok(humanRows(store, task).includes('item1 alice@example.com bird'));
      assert.ok(!humanRows(store, task).includes('item1 alice@example.com dog'));
      const again = importFixture(store, task, changed);
      assert.deepEqual([again.stored, again.updated, again.already], [0, 0, 5]);
      // Changed back: the first choice again replaces the second.
      const back = importFixture(
        store,
        task,
        fixtureCopy(dir, 'back.json', (ts) => (ts[1].annotations[0].updated_at = '2026-11-30T12:00:00Z')),
      );
      assert.deepEqual([back.stored, back.updated, back.already], [0, 1, 4]);
      assert.deepEqual(humanRows(store, task), FIXTURE_LABELS);

      // Alice answered item4 on the page before the import: her Label Studio answer conflicts with it.
      const dir2 = workDir();
      const fresh = await animalsStore(dir2);
      try {
        decide(fresh.store, {
          task: fresh.task,
          reviewer: 'alice@example.com',
          itemId: fresh.store.itemIdByExtId(fresh.task.id, 'item4')!,
          label: 'bird',
        });
        const c = importFixture(fresh.store, fresh.task);
        assert.equal(c.stored, 4);
        assert.deepEqual(c.conflicts, [
          {
            index: 4,
            sourceKey: '105:1006',
            reviewer: 'alice@example.com',
            itemId: 'item4',
            label: 'dog',
            live: { label: 'bird', source: 'page', sourceKey: null },
          },
        ]);
        assert.ok(humanRows(fresh.store, fresh.task).includes('item4 alice@example.com bird'));
        const replaced = importFixture(fresh.store, fresh.task, FIXTURE, { replace: true });
        assert.deepEqual([replaced.stored, replaced.replaced, replaced.already, replaced.conflicts.length], [0, 1, 4, 0]);
        assert.deepEqual(humanRows(fresh.store, fresh.task), FIXTURE_LABELS);
      } finally {
        fresh.store.close();
      }
    } finally {
      store.close();
    }
  });

  test('a bad file stores nothing: one error naming the file and the task', async () => {
    const dir = workDir();
    const { store, task } = await animalsStore(dir);
    try {
      const cases: Array<[string, (ts: any[]) => void, RegExp]> = [
        [
          'cow.json',
          (ts) => (ts[4].annotations[0].result[0].value.choices = ['cow']),
          /cow\.json: task \[4\] \(Label Studio task 105\): annotation 1006: choice "cow" is not a label of task "animals" \(labels: cat, dog, bird\)$/,
        ],
        [
          'unknown.json',
          (ts) => (ts[1].data.distillery_id = 'nope'),
          /unknown\.json: task \[1\] \(Label Studio task 102\): distillery_id "nope": no such item in task "animals"$/,
        ],
        ['shape.json', (ts) => (ts[5].annotations[0].was_cancelled = 'yes'), /shape\.json: task \[5\]: annotations\[0\]\.was_cancelled: /],
        [
          'other.json',
          (ts) => (ts[0].data.distillery_task = 'plants'),
          /other\.json: task \[0\] \(Label Studio task 101\): distillery_task is "plants", the import is into task "animals"$/,
        ],
        [
          'two.json',
          (ts) => (ts[0].annotations[0].result[0].value.choices = ['cat', 'dog']),
          /two\.json: task \[0\] \(Label Studio task 101\): annotation 1001: 2 choices \(cat, dog\): a label is one class$/,
        ],
        [
          'min.json',
          (ts) => ts.splice(0, ts.length, { id: 1, text: 'number 0 is about a cat', label: 'cat', annotator: 1 }),
          /min\.json: task \[0\]: data: .*JSON-MIN and CSV exports are not read/,
        ],
      ];
      for (const [name, edit, message] of cases) {
        const file = fixtureCopy(dir, name, edit);
        assert.throws(
          () => importFixture(store, task, file),
          (e: Error) => e instanceof InputError && message.test(e.message),
          name,
        );
      }
      const notJson = path.join(dir, 'broken.json');
      fs.writeFileSync(notJson, '[{"id": 1,');
      assert.throws(() => readLabelStudioExport(notJson), /broken\.json: not JSON/);
      assert.equal(countRows(store, 'reviews'), 0);
      assert.equal(store.runs(task.id).filter((r) => r.kind === 'human').length, 0);
    } finally {
      store.close();
    }
  });

  test("the round trip: export's tasks, annotated as Label Studio exports them, import as human labels", async () => {
    const dir = workDir();
    const { store, task } = await animalsStore(dir);
    try {
      const out = path.join(dir, 'ls');
      writeLabelStudio(store, task, out, { split: 'test' });
      // What Label Studio does: ids for the tasks; bob accepts gpt-a's prediction on two tasks, skips the third.
      const tasks = (readTasks(out) as any[]).map((t, i) => ({
        id: 40 + i,
        data: t.data,
        annotations: [
          {
            id: 900 + i,
            completed_by: { id: 5, email: 'bob@example.com', first_name: '', last_name: '' },
            result: i < 2 ? [{ ...t.predictions[0].result[0], id: `r${i}`, origin: 'prediction' }] : [],
            was_cancelled: i === 2,
            created_at: '2026-11-30T13:00:00Z',
            updated_at: '2026-11-30T13:00:00Z',
          },
        ],
        predictions: t.predictions,
      }));
      const file = path.join(dir, 'project-1-at-2026-11-30.json');
      fs.writeFileSync(file, JSON.stringify(tasks));
      const r = importFixture(store, task, file);
      assert.deepEqual([r.stored, r.skipped.cancelled], [2, 1]);
      assert.deepEqual(humanRows(store, task), ['item3 bob@example.com cat', 'item7 bob@example.com dog']);
      // Exported again, the reviewer is no prediction (a second annotator would not be independent), unless named.
      const again = path.join(dir, 'again');
      writeLabelStudio(store, task, again, { split: 'test' });
      assert.deepEqual(
        readTasks(again).map((t) => LsTaskOut.parse(t).predictions.map((p) => p.model_version)),
        [['gpt-a'], ['gpt-a'], []],
      );
      writeLabelStudio(store, task, again, { split: 'test', teachers: 'gpt-a,human:bob@example.com' });
      const named = readTasks(again).map((t) => LsTaskOut.parse(t));
      assert.deepEqual(named[1].predictions.at(-1), {
        model_version: 'human:bob@example.com',
        result: [{ from_name: 'label', to_name: 'text', type: 'choices', value: { choices: ['dog'] } }],
      });
      assert.deepEqual(named[1].data.distillery_teachers['human:bob@example.com'], { label: 'dog', probs: null });
    } finally {
      store.close();
    }
  });

  test('the task: the one the file names, else the fallback (--task, or the only task)', async () => {
    const dir = workDir();
    const { store, task } = await animalsStore(dir);
    try {
      const plants = await importFile(
        store,
        loadTaskFile(writeTask(dir, { name: 'plants', labels: ['tree', 'herb'] })),
        writeJsonl(dir, 'plants.jsonl', [{ id: 'p1', text: 'an oak' }]),
      );
      const fallback = () => plants.taskRow;
      assert.equal(taskOfExport(store, readLabelStudioExport(FIXTURE), fallback).name, 'animals');
      // Tasks created in Label Studio name no task: the fallback decides.
      const bare = fixtureCopy(dir, 'bare.json', (ts) => ts.forEach((t) => delete t.data.distillery_task));
      assert.equal(taskOfExport(store, readLabelStudioExport(bare), fallback).name, 'plants');
      assert.equal(task.name, 'animals');
    } finally {
      store.close();
    }
  });

  test('reviewer names from completed_by', () => {
    assert.equal(reviewerOf(2), 'labelstudio-2');
    assert.equal(reviewerOf({ id: 3, email: 'c@d.org' }), 'c@d.org');
    assert.equal(reviewerOf({ id: 3, email: '' }), 'labelstudio-3');
    assert.equal(reviewerOf('e@f.org'), 'e@f.org');
    assert.equal(reviewerOf(null), undefined);
    // Not a valid reviewer name as it is: made one, with a hash of the original so that two names stay two.
    const odd = reviewerOf({ id: 4, email: "o'brien@example.com" })!;
    assert.match(odd, /^o_brien@example\.com-[0-9a-f]{8}$/);
    assert.notEqual(odd, reviewerOf('o"brien@example.com'));
    const long = reviewerOf(`${'x'.repeat(70)}@example.com`)!;
    assert.equal(long.length, 64);
    for (const name of [odd, long]) assert.equal(checkReviewer(name), name);
  });

  test('the script: counts, twice adds nothing, --dry-run stores nothing, a bad file exits 1 with one line, --reviewer', async () => {
    const dir = workDir();
    const { db, store } = await animalsStore(dir);
    store.close();
    const bad = fixtureCopy(dir, 'bad.json', (ts) => (ts[4].annotations[0].result[0].value.choices = ['cow']));
    const [dry, wrong, badName] = await Promise.all([
      runScript('import-review', [FIXTURE, '--format', 'labelstudio', '--db', db, '--dry-run']),
      runScript('import-review', [bad, '--db', db]),
      runScript('import-review', [FIXTURE, '--db', db, '--reviewer', 'no spaces']),
    ]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /^would store 5 human label\(s\) for task "animals"/);
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /^error: .*bad\.json: task \[4\] \(Label Studio task 105\): annotation 1006: choice "cow" is not a label/);
    assert.equal(wrong.stderr.split('\n').length, 2);
    assert.equal(badName.code, 1);
    assert.match(badName.stderr, /^error: --reviewer: /);
    const check = Store.open(db);
    try {
      assert.equal(countRows(check, 'reviews'), 0);
    } finally {
      check.close();
    }
    const first = await runScript('import-review', [FIXTURE, '--format', 'labelstudio', '--db', db]);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(
      first.stdout,
      'stored 5 human label(s) for task "animals" (reviewers: alice@example.com, labelstudio-2); 0 updated (changed in Label Studio), ' +
        '0 already there, 0 conflict(s), 3 skipped (1 cancelled, 1 without a choice, 1 task(s) without annotations)\n',
    );
    const [second, bob] = await Promise.all([
      runScript('import-review', [FIXTURE, '--db', db]),
      runScript('import-review', [FIXTURE, '--db', db, '--reviewer', 'bob', '--dry-run']),
    ]);
    assert.match(second.stdout, /^stored 0 human label\(s\) .* 5 already there, 0 conflict\(s\)/);
    // --reviewer: every annotation is bob's, so user 2's dog on item0 conflicts with alice's cat, now both bob's.
    assert.match(bob.stdout, /^would store 4 human label\(s\) for task "animals" \(reviewers: bob\).* 1 conflict\(s\)/);
    assert.match(
      bob.stdout,
      /\nconflict: task \[0\] 101:1002: bob chose "dog" for item "item0", but their live answer is "cat" \(labelstudio 101:1001\)/,
    );
  });
});
