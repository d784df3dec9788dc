/**
 * What a reviewer's decision becomes downstream: human runs are left out of the default teachers but can be named;
 * the reviewers' majority is gold for --calibrate and --aggregate weighted where none was imported (train split);
 * training targets take the human label (and --no-human-labels gives the teachers' back); Cohen's κ against
 * scikit-learn; reviewer agreement; status, teachers, eval and export show the human runs.
 *
 * The world: 90 items of three classes, item i of class i % 3, train for i < 75; gold imported on even items only.
 * Teacher "keyword" (logits, scale 2.5) is wrong on i % 5 = 0, "noisy" (scale 1.5) on i % 3 = 0, both answering
 * (i + 1) % 3 when wrong; "keyword" dominates their mean, so the teachers' target is wrong exactly on i % 5 = 0.
 * alice labels odd train items 1..29 with the truth, item 2 (which has gold) wrongly and test item 77; bob labels
 * 1, 3, 5, 7, 9 (3 wrongly: a tie with alice, so no human gold there) and 31.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { agreement, cohenKappa } from '../src/eval/metrics.ts';
import { verifyExport } from '../src/export/verify.ts';
import { writeExport } from '../src/export/export.ts';
import { reviewerAgreement } from '../src/review/agreement.ts';
import { decide } from '../src/store/reviews.ts';
import { Store, type TaskRow } from '../src/store/store.ts';
import { fitTemperature } from '../src/targets/calibrate.ts';
import { buildTargets, resolveTeachers, taskItems } from '../src/targets/from-store.ts';
import { humanGold, majorityLabel } from '../src/targets/human.ts';
import { loadDataset } from '../src/train/data.ts';
import { ingestLogits } from '../src/whitebox/ingest.ts';
import { importFile, LABELS, loadTaskFile, runScript, workDir, writeJsonl, writeTask } from './helpers.ts';
import { TRAIN_BACKEND } from './train-backend.ts';

const N = 90;
const TRAIN = 75;
const truth = (i: number) => i % 3;
const wrong = (i: number) => (i + 1) % 3;
const keywordLabel = (i: number) => (i % 5 === 0 ? wrong(i) : truth(i));
const noisyLabel = (i: number) => (i % 3 === 0 ? wrong(i) : truth(i));

/** alice's and bob's answers: item index → class. */
const ALICE = new Map<number, number>([
  ...Array.from({ length: 15 }, (_, k) => 2 * k + 1).map((i) => [i, truth(i)] as [number, number]),
  [2, wrong(2)],
  [77, truth(77)],
]);
const BOB = new Map<number, number>([
  [1, truth(1)],
  [3, 2],
  [5, truth(5)],
  [7, truth(7)],
  [9, truth(9)],
  [31, truth(31)],
]);

// From test/fixtures/sklearn-kappa.py (scikit-learn 1.9.1, Python 3.11.7): `python3 test/fixtures/sklearn-kappa.py`.
const SKLEARN_KAPPA = {
  'three-classes': { n: 9, kappa: 0.4999999999999999 },
  negative: { n: 8, kappa: -0.5 },
  'one-sided-class': { n: 8, kappa: 0.6 },
  perfect: { n: 6, kappa: 1.0 },
  constant: { n: 4, kappa: null },
};
const KAPPA_FIXTURES: Record<keyof typeof SKLEARN_KAPPA, { a: (number | null)[]; b: (number | null)[] }> = {
  'three-classes': { a: [0, 1, 2, 0, 1, null, 2, 2, 0, 1, 0, null], b: [0, 1, 1, 0, 2, 1, 2, 0, 0, 1, null, 2] },
  negative: { a: [0, 1, 0, 1, 0, 1, 0, 1], b: [1, 0, 1, 0, 0, 1, 1, 0] },
  'one-sided-class': { a: [0, 0, 1, 1, 2, 2, 0, 1], b: [0, 0, 1, 1, 0, 1, 0, 1] },
  perfect: { a: [0, 1, 2, 3, 0, 1], b: [0, 1, 2, 3, 0, 1] },
  constant: { a: [1, 1, 1, 1], b: [1, 1, 1, 1] },
};
// alice and bob on their five common items (1, 3, 5, 7, 9): sklearn's cohen_kappa_score([1,0,2,1,0], [1,2,2,1,0]).
const ALICE_BOB_KAPPA = 0.7058823529411764;

async function world(dir: string, o: { teachers: boolean; db?: string }): Promise<{ db: string; task: TaskRow }> {
  const taskFile = writeTask(dir, { name: 'animals' });
  const task = loadTaskFile(taskFile);
  const rows = Array.from({ length: N }, (_, i) => ({
    id: `item${i}`,
    text: `number ${i} is about a ${LABELS[truth(i)]}`,
    split: i < TRAIN ? 'train' : 'test',
    ...(i % 2 === 0 ? { label: LABELS[truth(i)] } : {}),
  }));
  const db = path.join(dir, o.db ?? 'human.db');
  const store = Store.open(db);
  try {
    await importFile(store, task, writeJsonl(dir, 'items.jsonl', rows));
    if (o.teachers) {
      const logits = (name: string, label: (i: number) => number, scale: number) =>
        writeJsonl(
          dir,
          `${name}.jsonl`,
          rows.map((r, i) => ({ id: r.id, logits: LABELS.map((_, k) => (k === label(i) ? scale : 0)) })),
        );
      await ingestLogits({ store, task, teacher: 'keyword', input: logits('keyword', keywordLabel, 2.5), format: { kind: 'dense32' } });
      await ingestLogits({ store, task, teacher: 'noisy', input: logits('noisy', noisyLabel, 1.5), format: { kind: 'dense32' } });
    }
    const taskRow = store.findTask('animals')!;
    const ids = taskItems(store, taskRow).items.map((it) => it.id);
    for (const [reviewer, answers] of [
      ['alice', ALICE],
      ['bob', BOB],
    ] as const) {
      for (const [i, k] of answers) {
        const r = decide(store, { task: taskRow, reviewer, itemId: ids[i], label: LABELS[k] });
        assert.equal(r.status, 'stored');
      }
    }
    return { db, task: taskRow };
  } finally {
    store.close();
  }
}

function withStore<T>(db: string, use: (store: Store) => T): T {
  const store = Store.open(db);
  try {
    return use(store);
  } finally {
    store.close();
  }
}

/** Expected gold for fitting, from the world's construction: imported gold on even train items, human gold on the rest. */
function expectedFittingGold(): (number | null)[] {
  return Array.from({ length: N }, (_, i) => {
    if (i >= TRAIN) return null;
    if (i % 2 === 0) return truth(i);
    if (i === 3) return null; // alice and bob tie
    return ALICE.has(i) || BOB.has(i) ? truth(i) : null;
  });
}

describe('human labels downstream', () => {
  const dir = workDir();
  let db = '';

  before(async () => {
    db = (await world(dir, { teachers: true })).db;
  });

  test("Cohen's κ matches scikit-learn's cohen_kappa_score", () => {
    for (const [name, f] of Object.entries(KAPPA_FIXTURES)) {
      const want = SKLEARN_KAPPA[name as keyof typeof SKLEARN_KAPPA];
      const got = cohenKappa(f.a, f.b);
      assert.equal(got.n, want.n, name);
      if (want.kappa === null) assert.ok(Number.isNaN(got.value), `${name}: undefined κ is NaN`);
      else assert.ok(Math.abs(got.value - want.kappa) < 1e-12, `${name}: ${got.value} vs ${want.kappa}`);
    }
    assert.equal(cohenKappa([0, null], [null, 1]).n, 0);
  });

  test('majority of the reviewers: a tie is no gold', () => {
    assert.equal(majorityLabel([2]), 2);
    assert.equal(majorityLabel([1, 1, 0]), 1);
    assert.equal(majorityLabel([1, 0]), null);
    assert.equal(majorityLabel([1, 0, 2, 2, 0]), null);
    assert.equal(majorityLabel([]), null);
  });

  test('human gold per item: the majority, ties counted', () => {
    withStore(db, (store) => {
      const task = store.findTask('animals')!;
      const g = humanGold(store, task, taskItems(store, task));
      assert.deepEqual(g.reviewers, ['alice', 'bob']);
      assert.equal(g.reviewed, 18);
      assert.equal(g.ties, 1);
      assert.equal(g.labels[3], null);
      assert.equal(g.labels[2], wrong(2), "alice's label, though the item has imported gold");
      assert.equal(g.labels[31], truth(31));
      assert.equal(g.labels.filter((l) => l !== null).length, 17);
    });
  });

  test('default teachers leave the human runs out; naming one works; humans: true shows them', () => {
    withStore(db, (store) => {
      const task = store.findTask('animals')!;
      assert.deepEqual(
        resolveTeachers(store, task).map((t) => t.name),
        ['keyword', 'noisy'],
      );
      assert.deepEqual(
        resolveTeachers(store, task, undefined, { humans: true }).map((t) => t.name),
        ['keyword', 'noisy', 'human:alice', 'human:bob'],
      );
      const named = resolveTeachers(store, task, 'keyword,human:alice');
      assert.deepEqual(
        named.map((t) => t.name),
        ['keyword', 'human:alice'],
      );
      assert.equal(named[1].runs[0].kind, 'human');
      const t = buildTargets(store, task, { aggregate: 'mean', calibrate: false });
      assert.deepEqual(
        t.teachers.map((s) => s.name),
        ['keyword', 'noisy'],
      );
      // The teachers' mean is wrong exactly where keyword is.
      t.hard.forEach((h, i) => assert.equal(h, keywordLabel(i), `item ${i}`));
    });
  });

  test('human gold is gold for --calibrate where none was imported (train split only)', () => {
    withStore(db, (store) => {
      const task = store.findTask('animals')!;
      const on = buildTargets(store, task, { aggregate: 'mean', calibrate: true });
      const off = buildTargets(store, task, { aggregate: 'mean', calibrate: true, humanLabels: false });
      assert.equal(on.humanFitted, 15);
      assert.equal(off.humanFitted, 0);
      assert.equal(off.human, null);
      const gold = expectedFittingGold();
      on.views.forEach((v, k) => assert.equal(on.temperatures![k], fitTemperature(v.logprobs, gold)));
      const importedOnly = gold.map((g, i) => (i % 2 === 0 ? g : null));
      off.views.forEach((v, k) => assert.equal(off.temperatures![k], fitTemperature(v.logprobs, importedOnly)));
      assert.notEqual(on.temperatures![1], off.temperatures![1]);
    });
  });

  test('human gold is gold for --aggregate weighted: each weight is the accuracy on imported + human gold', () => {
    withStore(db, (store) => {
      const task = store.findTask('animals')!;
      const gold = expectedFittingGold();
      const acc = (label: (i: number) => number, g: (number | null)[]) => {
        const idx = g.flatMap((x, i) => (x === null ? [] : [i]));
        return idx.filter((i) => label(i) === g[i]).length / idx.length;
      };
      const on = buildTargets(store, task, { aggregate: 'weighted', calibrate: false });
      assert.equal(on.humanFitted, 15);
      assert.deepEqual(on.weights, [acc(keywordLabel, gold), acc(noisyLabel, gold)]);
      const importedOnly = gold.map((g, i) => (i % 2 === 0 ? g : null));
      const off = buildTargets(store, task, { aggregate: 'weighted', calibrate: false, humanLabels: false });
      assert.deepEqual(off.weights, [acc(keywordLabel, importedOnly), acc(noisyLabel, importedOnly)]);
      assert.notDeepEqual(on.weights, off.weights);
    });
  });

  test("training targets: the human label where there is human gold; humanLabels false restores the teachers'", () => {
    withStore(db, (store) => {
      const task = store.findTask('animals')!;
      const c = LABELS.length;
      const on = loadDataset(store, task, { supervised: false, targets: { calibrate: false } });
      const off = loadDataset(store, task, { supervised: false, targets: { calibrate: false, humanLabels: false } });
      const teachers = buildTargets(store, task, { aggregate: 'mean', calibrate: false, humanLabels: false });
      assert.deepEqual(on.human, { items: 17, targets: 16, fitted: 0 });
      assert.equal(off.human, undefined);
      const human = humanGold(store, task, taskItems(store, task)).labels;
      for (let i = 0; i < N; i++) {
        const row = Array.from(on.targetProbs.subarray(i * c, (i + 1) * c));
        if (human[i] !== null) {
          assert.equal(on.targetHard[i], human[i], `item ${i}`);
          assert.deepEqual(
            row,
            LABELS.map((_, k) => (k === human[i] ? 1 : 0)),
          );
        } else {
          assert.equal(on.targetHard[i], keywordLabel(i), `item ${i}`);
        }
        assert.equal(off.targetHard[i], teachers.hard[i]);
        const teacherRow = Array.from(teachers.probs[i]!, Math.fround);
        assert.deepEqual(Array.from(off.targetProbs.subarray(i * c, (i + 1) * c)), teacherRow);
        // The teachers' own label (for the agreement figure) is never replaced.
        assert.equal(on.teacherHard[i], keywordLabel(i));
      }
      // Item 5: the teachers said cat (keyword is wrong there), alice and bob bird.
      assert.equal(on.targetHard[5], 2);
      assert.equal(off.targetHard[5], 0);
    });
  });

  test('--supervised: gold is the imported gold, else the human gold', () => {
    withStore(db, (store) => {
      const task = store.findTask('animals')!;
      const on = loadDataset(store, task, { supervised: true, targets: { calibrate: false } });
      const off = loadDataset(store, task, { supervised: true, targets: { calibrate: false, humanLabels: false } });
      assert.equal(on.human!.targets, 15);
      const gold = expectedFittingGold();
      for (let i = 0; i < TRAIN; i++) {
        assert.equal(on.targetHard[i], gold[i] ?? -1, `item ${i}`);
        assert.equal(off.targetHard[i], i % 2 === 0 ? truth(i) : -1, `item ${i}`);
      }
      // Item 2: imported gold wins over alice's (wrong) label.
      assert.equal(on.targetHard[2], truth(2));
      // Evaluation gold stays the imported gold.
      assert.deepEqual(on.gold, off.gold);
    });
  });

  test("reviewer agreement: κ per pair, agreement with the teachers' target and with gold", () => {
    withStore(db, (store) => {
      const task = store.findTask('animals')!;
      const a = reviewerAgreement(store, task);
      assert.deepEqual(
        a.reviewers.map((r) => [r.reviewer, r.items]),
        [
          ['alice', 17],
          ['bob', 6],
        ],
      );
      const [alice, bob] = a.reviewers;
      // alice disagrees with the target on 5, 15, 25 (the target is wrong) and 2 (she is).
      assert.deepEqual(alice.target, { n: 17, rate: 13 / 17 });
      assert.deepEqual(alice.gold, { n: 1, rate: 0 });
      assert.deepEqual(bob.target, { n: 6, rate: 4 / 6 });
      assert.equal(bob.gold.n, 0);
      assert.equal(a.pairs.length, 1);
      assert.equal(a.pairs[0].n, 5);
      assert.equal(a.pairs[0].agreement, 4 / 5);
      assert.ok(Math.abs(a.pairs[0].kappa! - ALICE_BOB_KAPPA) < 1e-12);
      assert.deepEqual([a.reviewed, a.humanGold, a.ties], [18, 17, 1]);
      // The same figure the metric gives on the stored labels.
      const x = new Array<number | null>(N).fill(null);
      const y = new Array<number | null>(N).fill(null);
      for (const [i, k] of ALICE) x[i] = k;
      for (const [i, k] of BOB) y[i] = k;
      assert.equal(agreement(x, y).rate, a.pairs[0].agreement);
    });
  });

  test('export: human runs are exported like any teacher, the manifest verifies; an aggregated target is the teachers', async () => {
    const out = path.join(dir, 'export');
    const task = withStore(db, (store) => store.findTask('animals')!);
    const r = await withStore(db, (store) => writeExport(store, task, out));
    const rows = fs
      .readFileSync(path.join(out, 'labels.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { teacher: string; soft_method: string; probs: number[] | null; label: string; id: string });
    const alice = rows.filter((x) => x.teacher === 'human:alice');
    assert.equal(alice.length, 17);
    assert.ok(alice.every((x) => x.soft_method === 'human' && x.probs === null));
    assert.equal(alice.find((x) => x.id === 'item2')!.label, LABELS[wrong(2)]);
    assert.equal(rows.filter((x) => x.teacher === 'human:bob').length, 6);
    assert.equal(r.manifest.counts.by_teacher['human:alice'], 17);
    assert.ok(r.manifest.runs.some((run) => run.kind === 'human' && run.teacher === 'human:bob' && run.labels === 6));
    const v = await verifyExport(out);
    assert.deepEqual(v.problems, []);

    const agg = await withStore(db, (store) =>
      writeExport(store, task, path.join(dir, 'export-agg'), { targets: { aggregate: 'mean', calibrate: false } }),
    );
    assert.deepEqual(agg.manifest.aggregation!.teachers, ['keyword', 'noisy']);
    assert.deepEqual((await verifyExport(path.join(dir, 'export-agg'))).problems, []);
  });

  test('status, teachers and eval show the human runs and the reviewers', async () => {
    const [status, statusText, teachers, evaluation] = await Promise.all([
      runScript('status', ['--db', db, '--json']),
      runScript('status', ['--db', db]),
      runScript('teachers', ['--db', db, '--json', '--calibrate']),
      runScript('eval', ['--db', db, '--json']),
    ]);
    for (const r of [status, statusText, teachers, evaluation]) assert.equal(r.code, 0, r.stderr);
    const s = JSON.parse(status.stdout.trim().split('\n').at(-1)!);
    assert.ok(s.runs.some((r: { teacher: string; labeled: number }) => r.teacher === 'human:alice' && r.labeled === 17));
    assert.equal(s.reviewers.length, 1);
    assert.ok(Math.abs(s.reviewers[0].pairs[0].kappa - ALICE_BOB_KAPPA) < 1e-12);
    assert.equal(s.reviewers[0].reviewers[1].gold.rate, null, 'bob has no item with gold: null, not NaN');
    assert.match(statusText.stdout, /alice ~ bob: κ 0\.706, agreement 80\.0% on 5 common item\(s\)/);
    assert.match(statusText.stdout, /alice \(run \d+\): 17 item\(s\); agrees with the teachers' target 76\.5% of 17/);

    const t = JSON.parse(teachers.stdout.trim().split('\n').at(-1)!);
    assert.deepEqual(
      t.teachers.map((x: { teacher: string }) => x.teacher),
      ['keyword', 'noisy', 'human:alice', 'human:bob'],
    );
    assert.equal(t.human_gold.calibration, 15);
    assert.equal(t.reviewers.pairs[0].n, 5);
    const aliceRow = t.teachers.find((x: { teacher: string }) => x.teacher === 'human:alice');
    // Scored like a teacher against imported gold: the one item of hers with gold, item 2, she got wrong.
    assert.deepEqual([aliceRow.accuracy_n, aliceRow.accuracy, aliceRow.labeled], [1, 0, 17]);

    const e = JSON.parse(evaluation.stdout.trim().split('\n').at(-1)!);
    assert.deepEqual(
      e.evaluations.map((x: { name: string }) => x.name),
      ['keyword', 'noisy', 'human:alice', 'human:bob'],
    );
  });

  test('train.ts: human labels in the targets by default, recorded in metrics.json; --no-human-labels turns them off', async () => {
    const common = ['--db', db, '--arch', 'fasttext', '--dim', '8', '--buckets', '1024', '--epochs', '1', '--batch-size', '16'];
    const [on, off] = await Promise.all([
      runScript('train', [...common, '--backend', TRAIN_BACKEND, '--out', path.join(dir, 'on')]),
      runScript('train', [...common, '--backend', TRAIN_BACKEND, '--no-human-labels', '--out', path.join(dir, 'off')]),
    ]);
    assert.equal(on.code, 0, on.stderr);
    assert.equal(off.code, 0, off.stderr);
    const m = (d: string) => JSON.parse(fs.readFileSync(path.join(dir, d, 'metrics.json'), 'utf8'));
    assert.deepEqual(m('on').targets, { teachers: 'all', aggregate: 'mean', calibrate: false, human_labels: true });
    assert.deepEqual(m('on').human_labels, { used: true, items: 17, targets: 16, fitted: 0 });
    assert.equal(m('off').targets.human_labels, false);
    assert.deepEqual(m('off').human_labels, { used: false });
  });
});

describe('a task whose only runs are human', () => {
  const dir = workDir();
  let db = '';

  before(async () => {
    db = (await world(dir, { teachers: false })).db;
  });

  test('a target from the default teachers is a clear error; naming a reviewer works; --supervised uses human gold', () => {
    withStore(db, (store) => {
      const task = store.findTask('animals')!;
      assert.throws(
        () => buildTargets(store, task, { aggregate: 'mean', calibrate: false }),
        /only reviewers' runs \(human:alice, human:bob\), no teacher/,
      );
      assert.throws(() => loadDataset(store, task, { supervised: false, targets: { calibrate: false } }), /--teachers human:alice/);
      const t = buildTargets(store, task, { aggregate: 'mean', calibrate: false, teachers: 'human:alice' });
      assert.equal(t.hard.filter((h) => h !== null).length, 17);
      const ds = loadDataset(store, task, { supervised: true, targets: { calibrate: false } });
      assert.equal(ds.human!.targets, 15);
      // Without teachers, agreement with their target is not measured.
      assert.equal(reviewerAgreement(store, task).reviewers[0].target, null);
    });
  });

  test('train.ts without --supervised says so in one line', async () => {
    const r = await runScript('train', ['--db', db, '--arch', 'fasttext', '--out', path.join(dir, 'x'), '--backend', TRAIN_BACKEND]);
    assert.equal(r.code, 1);
    // One `error: ` line (the `backend: …` info line may precede it), no stack trace.
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.filter((l) => l.startsWith('error: ')).length, 1, r.stderr);
    assert.ok(
      lines.every((l) => l.startsWith('error: ') || l.startsWith('backend: ')),
      r.stderr,
    );
    assert.match(r.stderr, /task "animals" has only reviewers' runs/);
  });
});
