import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
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
        { coverage: 0.5, n: 4, accuracy: 0.75 },
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
        { coverage: 0.1, n: 1, accuracy: 0.0 },
        { coverage: 0.2, n: 1, accuracy: 0.0 },
        { coverage: 0.3, n: 2, accuracy: 0.5 },
        { coverage: 0.4, n: 2, accuracy: 0.5 },
        { coverage: 0.5, n: 3, accuracy: 0.3333333333333333 },
        { coverage: 0.6, n: 3, accuracy: 0.3333333333333333 },
        { coverage: 0.7, n: 4, accuracy: 0.25 },
        { coverage: 0.8, n: 4, accuracy: 0.25 },
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

  test('coverageCurve keeps ceil(x·N/100) items, most confident first', () => {
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
    assert.throws(() => coverageCurve([1], [true], [0]), /percentage/);
  });
});
