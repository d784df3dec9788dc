import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { TestReport } from '../src/infer/evaluate.ts';
import { lastUserText } from './fake-openai.ts';
import { fakeServer, LABELS, runScript, workDir, writeJsonl, writeTask, type ScriptResult } from './helpers.ts';
import { classificationMetrics, coverageCurve, type ClassificationMetrics } from '../src/eval/metrics.ts';

function assertClose(actual: number | null, expected: number, what: string, tol = 1e-12): void {
  assert.ok(actual !== null && Math.abs(actual - expected) <= tol, `${what}: ${actual} is not within ${tol} of ${expected}`);
}

// ---------- metrics against scikit-learn ----------

// The fixtures (labels, gold, pred, probs) are those of test/fixtures/sklearn-metrics.py, and EXPECTED is that
// script's output, pasted as is: `python3 test/fixtures/sklearn-metrics.py` with scikit-learn 1.9.1, numpy 2.4.6,
// Python 3.11.7 (ECE and the accuracy-coverage curve are numpy, from their definitions: sklearn has neither).
const FIXTURES = {
  'never-predicted': {
    labels: ['a', 'b', 'c'],
    gold: [0, 0, 1, 2, 2, 1, 0, 1, 2, 0],
    pred: [0, 0, 1, 0, 1, 1, 1, 0, 1, 0],
    probs: [
      [0.8, 0.1, 0.1],
      [0.8, 0.15, 0.05],
      [0.2, 0.7, 0.1],
      [0.4, 0.4, 0.2],
      [0.3, 0.5, 0.2],
      [0.05, 0.9, 0.05],
      [0.45, 0.5, 0.05],
      [0.6, 0.3, 0.1],
      [0.1, 0.6, 0.3],
      [1.0, 0.0, 0.0],
    ],
  },
  'absent-from-gold': {
    labels: ['a', 'b', 'c', 'd'],
    gold: [0, 1, 1, 0, 1, 0, 1],
    pred: [0, 1, 2, 2, 1, 0, 0],
    probs: [
      [0.7, 0.2, 0.1, 0.0],
      [0.1, 0.6, 0.2, 0.1],
      [0.0, 0.0, 1.0, 0.0],
      [0.3, 0.1, 0.6, 0.0],
      [0.25, 0.25, 0.25, 0.25],
      [0.9, 0.05, 0.05, 0.0],
      [0.5, 0.3, 0.2, 0.0],
    ],
  },
  'all-ties': {
    labels: ['no', 'yes'],
    gold: [1, 0, 1, 1, 0],
    pred: [0, 0, 0, 0, 0],
    probs: Array.from({ length: 5 }, () => [0.5, 0.5]),
  },
};

const SKLEARN = {
  sklearn: '1.9.1',
  numpy: '2.4.6',
  python: '3.11.7',
  expected: {
    'never-predicted': {
      accuracy: 0.5,
      macroF1: 0.38888888888888884,
      precision: [0.6, 0.4, 0.0],
      recall: [0.75, 0.6666666666666666, 0.0],
      f1: [0.6666666666666666, 0.5, 0.0],
      support: [4, 3, 3],
      confusion: [
        [3, 1, 0],
        [1, 2, 0],
        [1, 2, 0],
      ],
      nll: 0.7333651691962823,
      ece: 0.33999999999999997,
      coverage: [
        { coverage: 0.1, n: 1, accuracy: 1.0 },
        { coverage: 0.2, n: 2, accuracy: 1.0 },
        { coverage: 0.3, n: 3, accuracy: 1.0 },
        { coverage: 0.4, n: 4, accuracy: 1.0 },
        { coverage: 0.5, n: 5, accuracy: 1.0 },
        { coverage: 0.6, n: 6, accuracy: 0.8333333333333334 },
        { coverage: 0.7, n: 7, accuracy: 0.7142857142857143 },
        { coverage: 0.8, n: 8, accuracy: 0.625 },
        { coverage: 0.9, n: 9, accuracy: 0.5555555555555556 },
        { coverage: 1.0, n: 10, accuracy: 0.5 },
      ],
    },
    'absent-from-gold': {
      accuracy: 0.5714285714285714,
      macroF1: 0.3333333333333333,
      precision: [0.6666666666666666, 1.0, 0.0, 0.0],
      recall: [0.6666666666666666, 0.5, 0.0, 0.0],
      f1: [0.6666666666666666, 0.6666666666666666, 0.0, 0.0],
      support: [3, 4, 0, 0],
      confusion: [
        [2, 0, 1, 0],
        [1, 2, 1, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
      ],
      nll: 5.615125349720714,
      ece: 0.33571428571428574,
      coverage: [
        { coverage: 0.1, n: 1, accuracy: 0.0 },
        { coverage: 0.2, n: 2, accuracy: 0.5 },
        { coverage: 0.3, n: 3, accuracy: 0.6666666666666666 },
        { coverage: 0.4, n: 3, accuracy: 0.6666666666666666 },
        { coverage: 0.5, n: 4, accuracy: 0.625 },
        { coverage: 0.6, n: 5, accuracy: 0.6 },
        { coverage: 0.7, n: 5, accuracy: 0.6 },
        { coverage: 0.8, n: 6, accuracy: 0.5 },
        { coverage: 0.9, n: 7, accuracy: 0.5714285714285714 },
        { coverage: 1.0, n: 7, accuracy: 0.5714285714285714 },
      ],
    },
    'all-ties': {
      accuracy: 0.4,
      macroF1: 0.2857142857142857,
      precision: [0.4, 0.0],
      recall: [1.0, 0.0],
      f1: [0.5714285714285714, 0.0],
      support: [2, 3],
      confusion: [
        [2, 0],
        [3, 0],
      ],
      nll: 0.6931471805599453,
      ece: 0.09999999999999998,
      coverage: [
        { coverage: 0.1, n: 1, accuracy: 0.4 },
        { coverage: 0.2, n: 1, accuracy: 0.4 },
        { coverage: 0.3, n: 2, accuracy: 0.4 },
        { coverage: 0.4, n: 2, accuracy: 0.4 },
        { coverage: 0.5, n: 3, accuracy: 0.4000000000000001 },
        { coverage: 0.6, n: 3, accuracy: 0.4000000000000001 },
        { coverage: 0.7, n: 4, accuracy: 0.4 },
        { coverage: 0.8, n: 4, accuracy: 0.4 },
        { coverage: 0.9, n: 5, accuracy: 0.4 },
        { coverage: 1.0, n: 5, accuracy: 0.4 },
      ],
    },
  },
} as const;

describe('classificationMetrics agrees with scikit-learn', () => {
  for (const [name, f] of Object.entries(FIXTURES)) {
    const want = SKLEARN.expected[name as keyof typeof FIXTURES];
    test(name, () => {
      const m = classificationMetrics(f.labels, f.gold, f.pred, f.probs);
      assert.equal(m.n, f.gold.length);
      assertClose(m.accuracy, want.accuracy, 'accuracy');
      assertClose(m.macroF1, want.macroF1, 'macro-F1');
      m.perClass.forEach((c, k) => {
        assert.equal(c.label, f.labels[k]);
        assertClose(c.precision, want.precision[k], `precision[${c.label}]`);
        assertClose(c.recall, want.recall[k], `recall[${c.label}]`);
        assertClose(c.f1, want.f1[k], `f1[${c.label}]`);
        assert.equal(c.support, want.support[k]);
      });
      assert.deepEqual(m.confusion, want.confusion);
      // sklearn 1.9 also clips the top at 1 - 2.2e-16: -log of that is 2.2e-16 per item, inside the tolerance.
      assertClose(m.nll, want.nll, 'nll');
      assertClose(m.ece, want.ece, 'ece');
      assert.equal(m.probN, f.gold.length);
      assert.deepEqual(
        m.coverage!.map((p) => [p.coverage, p.n]),
        want.coverage.map((p) => [p.coverage, p.n]),
      );
      m.coverage!.forEach((p, k) => assertClose(p.accuracy, want.coverage[k].accuracy, `accuracy at ${p.coverage}`));
    });
  }
});

describe('classificationMetrics', () => {
  const f = FIXTURES['never-predicted'];

  test('without probabilities the probability metrics are null, the rest unchanged', () => {
    const m = classificationMetrics(f.labels, f.gold, f.pred);
    const full = classificationMetrics(f.labels, f.gold, f.pred, f.probs);
    assert.equal(m.ece, null);
    assert.equal(m.nll, null);
    assert.equal(m.coverage, null);
    assert.equal(m.probN, 0);
    assert.deepEqual({ ...m, ece: 0, nll: 0, coverage: 0, probN: 0, reliability: 0 }, {
      ...full,
      ece: 0,
      nll: 0,
      coverage: 0,
      probN: 0,
      reliability: 0,
    } as ClassificationMetrics | object);
  });

  test('items without a probability row are left out of the probability metrics only', () => {
    const probs = f.probs.map((p, i) => (i < 5 ? p : null));
    const m = classificationMetrics(f.labels, f.gold, f.pred, probs);
    const head = classificationMetrics(f.labels, f.gold.slice(0, 5), f.pred.slice(0, 5), f.probs.slice(0, 5));
    assert.equal(m.n, 10);
    assert.equal(m.probN, 5);
    assertClose(m.accuracy, SKLEARN.expected['never-predicted'].accuracy, 'accuracy over all items');
    assert.equal(m.nll, head.nll);
    assert.equal(m.ece, head.ece);
    assert.deepEqual(m.coverage, head.coverage);
  });

  test('no items: counts are 0 and rates NaN, not 0', () => {
    const m = classificationMetrics(['a', 'b'], [], [], []);
    assert.equal(m.n, 0);
    assert.ok(Number.isNaN(m.accuracy));
    assert.deepEqual(m.confusion, [
      [0, 0],
      [0, 0],
    ]);
    assert.equal(m.ece, null);
  });

  test('bad input is refused', () => {
    assert.throws(() => classificationMetrics(['a', 'b'], [0, 1], [0]), /differ in length/);
    assert.throws(() => classificationMetrics(['a', 'b'], [0, 2], [0, 1]), /gold\[1\] is 2/);
    assert.throws(() => classificationMetrics(['a', 'b'], [0], [0], [[0.2, 0.3, 0.5]]), /3 classes, expected 2/);
  });

  test('coverageCurve keeps ceil(x·N/100) items, most confident first; ties at the cut at their accuracy', () => {
    // Confidences 0.9 (wrong), 0.8, 0.7, 0.6 (right): the top 25% is all wrong, the top 50% half right.
    const curve = coverageCurve([0.6, 0.9, 0.7, 0.8], [true, false, true, true], [25, 50, 75, 100]);
    assert.deepEqual(
      curve.map((p) => [p.n, p.accuracy]),
      [
        [1, 0],
        [2, 0.5],
        [3, 2 / 3],
        [4, 0.75],
      ],
    );
    // Three items tied at 0.9 (one right) above one at 0.5 (right): keeping 2 takes 2 of the tied three at 1/3 each.
    const tied = coverageCurve([0.9, 0.5, 0.9, 0.9], [false, true, true, false], [50, 75, 100]);
    assert.deepEqual(
      tied.map((p) => [p.n, p.accuracy]),
      [
        [2, 1 / 3],
        [3, 1 / 3],
        [4, 0.5],
      ],
    );
    assert.throws(() => coverageCurve([1], [true], [0]), /percentage/);
  });
});

// ---------- eval.ts end to end ----------

/**
 * 30 items, every fourth in the test split (8 test items, 2 of each class at least). Item i's gold is LABELS[i % 3]; its text mentions
 * that label, except when i % 5 === 0, where it mentions the next one: teacher A (the fake's default teacher)
 * answers the mentioned label with p = 0.8 (0.1 elsewhere), so it is wrong exactly on those. Teacher B answers
 * "cat" with p = 0.5 (0.25 elsewhere) for everything, and garbage the first time it sees item 1, so it pays once
 * more than it labels. Every request is billed 100 prompt + 10 completion tokens at $2 / $10 per 1M: $0.0003.
 */
const N = 30;
const gold = (i: number) => LABELS[i % 3];
const mentioned = (i: number) => (i % 5 === 0 ? LABELS[(i + 1) % 3] : gold(i));
const isTest = (i: number) => i % 4 === 1;
const REQUEST_COST = (100 * 2 + 10 * 10) / 1e6;

interface EvalJson {
  task: string;
  split: string;
  labels: string[];
  evaluations: {
    kind: string;
    name: string;
    gold: number;
    answered: number;
    n: number;
    accuracy: number;
    macro_f1: number;
    ece: number | null;
    nll: number | null;
    teacher_agreement?: number | null;
    cost_per_1000: number;
    paid: number;
    labeled: number;
    latency_ms_per_item: number | null;
    per_class: { label: string; precision: number; recall: number; f1: number; support: number }[];
    confusion: number[][];
    coverage: { coverage: number; n: number; accuracy: number | null }[] | null;
  }[];
}

function evalJson(r: ScriptResult): EvalJson {
  assert.equal(r.code, 0, `exit ${r.code}: ${r.stderr}`);
  const lines = r.stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]) as EvalJson;
}

describe('eval.ts', () => {
  const dir = workDir();
  const db = path.join(dir, 'distill.db');
  const task = writeTask(dir);
  const testIdx = Array.from({ length: N }, (_, i) => i).filter(isTest);
  let student = '';

  before(async () => {
    const rows = Array.from({ length: N }, (_, i) => ({
      id: `item${i}`,
      text: `number ${i} is about a ${mentioned(i)}`,
      label: gold(i),
      split: isTest(i) ? 'test' : 'train',
    }));
    const input = writeJsonl(dir, 'in.jsonl', rows);
    const usage = () => ({ prompt_tokens: 100, completion_tokens: 10 });
    const a = await fakeServer({ usage });
    const seen = new Set<string>();
    const b = await fakeServer({
      usage,
      teacher: (req) => {
        const text = lastUserText(req);
        if (text.includes('number 1 ') && !seen.has(text)) {
          seen.add(text);
          return { raw: 'not an answer' };
        }
        return { label: 'cat', probs: { cat: 0.5, dog: 0.25, bird: 0.25 } };
      },
    });
    const label = (model: string, url: string) =>
      runScript(
        'label',
        ['--task', task, '--db', db, '--input', input, '--model', model, '--base-url', url, '--price-in', '2', '--price-out', '10'],
        { OPENAI_API_KEY: 'sk-test' },
      );
    for (const [model, url] of [
      ['teacher-a', a.url],
      ['teacher-b', b.url],
    ]) {
      const r = await label(model, url);
      assert.equal(r.code, 0, r.stderr);
    }
    student = path.join(dir, 'student');
    const t = await runScript('train', [
      '--db',
      db,
      '--arch',
      'fasttext',
      '--teachers',
      'teacher-a',
      '--epochs',
      '2',
      '--buckets',
      '1024',
      '--dim',
      '8',
      '--backend',
      'cpu',
      '--out',
      student,
    ]);
    assert.equal(t.code, 0, t.stderr);
  });

  test('teachers: accuracy, confusion, NLL, coverage and what was paid, on the test split only', async () => {
    const out = evalJson(await runScript('eval', ['--db', db, '--json']));
    assert.equal(out.split, 'test');
    assert.deepEqual(
      out.evaluations.map((e) => [e.kind, e.name]),
      [
        ['teacher', 'teacher-a'],
        ['teacher', 'teacher-b'],
      ],
    );
    const [a, b] = out.evaluations;
    const wrong = testIdx.filter((i) => mentioned(i) !== gold(i));
    assert.ok(wrong.length > 0 && wrong.length < testIdx.length);
    assert.equal(a.gold, testIdx.length);
    assert.equal(a.n, testIdx.length);
    assert.equal(a.accuracy, (testIdx.length - wrong.length) / testIdx.length);
    const confusion = LABELS.map(() => LABELS.map(() => 0));
    for (const i of testIdx) confusion[LABELS.indexOf(gold(i))][LABELS.indexOf(mentioned(i))]++;
    assert.deepEqual(a.confusion, confusion);
    assert.deepEqual(
      a.per_class.map((c) => c.support),
      LABELS.map((l) => testIdx.filter((i) => gold(i) === l).length),
    );
    // p(gold) is 0.8 where right and 0.1 where wrong (soft labels from logprobs, stored in 16 bits).
    const nll = -(((testIdx.length - wrong.length) * Math.log(0.8) + wrong.length * Math.log(0.1)) / testIdx.length);
    assert.ok(Math.abs(a.nll! - nll) < 1e-3, `nll ${a.nll} vs ${nll}`);
    // Every confidence is 0.8: confidence tells nothing here, and the curve is flat at the accuracy.
    assert.deepEqual(
      a.coverage!.map((p) => p.n),
      [1, 2, 3, 4, 4, 5, 6, 7, 8, 8],
    );
    for (const p of a.coverage!) assert.ok(Math.abs(p.accuracy! - a.accuracy) < 1e-12, `${p.accuracy} at ${p.coverage}`);
    // Teacher A paid one request per item; teacher B one more (item 1's garbage answer), over the same 30 items.
    assert.equal(a.labeled, N);
    assert.ok(Math.abs(a.paid - N * REQUEST_COST) < 1e-12, `paid ${a.paid}`);
    assert.ok(Math.abs(a.cost_per_1000 - 1000 * REQUEST_COST) < 1e-9);
    assert.ok(Math.abs(b.paid - (N + 1) * REQUEST_COST) < 1e-12, `paid ${b.paid}`);
    assert.ok(Math.abs(b.cost_per_1000 - (1000 * (N + 1) * REQUEST_COST) / N) < 1e-9);
    // B always says cat: recall 1 for cat, nothing for the others, macro-F1 from cat's F1 alone.
    const cats = testIdx.filter((i) => gold(i) === 'cat').length;
    assert.equal(b.accuracy, cats / testIdx.length);
    assert.deepEqual(
      b.per_class.map((c) => c.recall),
      [1, 0, 0],
    );
    const catF1 = (2 * cats) / (cats + testIdx.length);
    assert.ok(Math.abs(b.macro_f1 - catF1 / 3) < 1e-12);
    assert.equal(b.latency_ms_per_item, null);
  });

  test('--split and --teachers choose what is scored; the table names the split', async () => {
    const [train, table] = await Promise.all([
      runScript('eval', ['--db', db, '--teachers', 'teacher-a', '--split', 'train', '--json']),
      runScript('eval', ['--db', db]),
    ]);
    const out = evalJson(train);
    assert.equal(out.evaluations.length, 1);
    assert.equal(out.evaluations[0].gold, N - testIdx.length);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /split "test": 8 items with gold/);
    assert.match(table.stdout, /teacher-a +8\/8 +\d+\.\d\d%/);
  });

  test('--targets: the aggregated target as train builds it, costing both teachers', async () => {
    const out = evalJson(await runScript('eval', ['--db', db, '--targets', '--aggregate', 'mean', '--json']));
    assert.equal(out.evaluations.length, 1);
    const t = out.evaluations[0];
    assert.equal(t.kind, 'targets');
    assert.equal(t.name, 'mean(teacher-a,teacher-b)');
    // mean of A (0.8 on the mentioned label) and B (0.5 on cat): cat wins only where A said cat, else A's label
    // ((0.8 + 0.25) / 2 > (0.1 + 0.5) / 2 for A's label against cat), so the target is A's answer everywhere.
    assert.equal(t.accuracy, testIdx.filter((i) => mentioned(i) === gold(i)).length / testIdx.length);
    assert.ok(Math.abs(t.paid - (2 * N + 1) * REQUEST_COST) < 1e-12, `paid ${t.paid}`);
    // Both teachers and the target in one call.
    const all = evalJson(await runScript('eval', ['--db', db, '--targets', '--teachers', 'teacher-a,teacher-b', '--json']));
    assert.deepEqual(
      all.evaluations.map((e) => e.kind),
      ['teacher', 'teacher', 'targets'],
    );
  });

  test('--student: the trained student, no API cost, its latency, and the trainer report agrees', async () => {
    const out = evalJson(await runScript('eval', ['--db', db, '--student', student, '--backend', 'cpu', '--json']));
    assert.equal(out.evaluations.length, 1);
    const s = out.evaluations[0];
    assert.equal(s.kind, 'student');
    assert.equal(s.n, testIdx.length);
    const trained = JSON.parse(fs.readFileSync(path.join(student, 'metrics.json'), 'utf8')) as { test: TestReport };
    assert.equal(s.accuracy, trained.test.accuracy);
    assert.deepEqual(s.confusion, trained.test.confusion);
    assert.equal(s.teacher_agreement, trained.test.teacher_agreement);
    assert.equal(s.cost_per_1000, 0);
    assert.ok(s.latency_ms_per_item !== null && s.latency_ms_per_item > 0 && Number.isFinite(s.latency_ms_per_item));
    assert.ok(s.nll !== null && s.ece !== null && s.coverage !== null);
  });

  test('bad input: one line, exit 1', async () => {
    const missing = path.join(dir, 'missing.db');
    const [noSplit, noTeacher, noDb] = await Promise.all([
      runScript('eval', ['--db', db, '--split', 'dev']),
      runScript('eval', ['--db', db, '--teachers', 'nobody']),
      runScript('eval', ['--db', missing, '--targets']),
    ]);
    assert.equal(noDb.code, 1);
    assert.equal(noDb.stderr, `error: ${missing}: no such database (create one with import.ts or label.ts)\n`);
    assert.ok(!fs.existsSync(missing));
    assert.equal(noSplit.code, 1);
    assert.equal(noSplit.stderr, 'error: task "animals" has no gold-labelled items in split "dev" (splits: test, train)\n');
    assert.equal(noTeacher.code, 1);
    assert.match(noTeacher.stderr, /^error: --teachers: no teacher "nobody" on task "animals"[^\n]*\n$/);
  });
});
