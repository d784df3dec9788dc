import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { accuracy, agreement, ece, nll } from '../src/eval/metrics.ts';
import { softmaxT } from '../src/targets/softmax.ts';
import { calibrationReport, fitTemperature } from '../src/targets/calibrate.ts';
import { aggregate, type AggregateResult } from '../src/targets/aggregate.ts';
import { TargetsError, type Labels, type TeacherView } from '../src/targets/types.ts';
import { gaussian, mulberry32 as rng } from '../src/random.ts';

// ---------- helpers ----------

function lp(...probs: number[]): Float64Array {
  return Float64Array.from(probs, Math.log);
}

/** A teacher from per-item probabilities (hard = argmax), a bare hard label (number), or null. */
function teacher(name: string, items: (number[] | number | null)[]): TeacherView {
  return {
    name,
    logprobs: items.map((it) => (Array.isArray(it) ? lp(...it) : null)),
    hard: items.map((it) => (it === null ? null : Array.isArray(it) ? it.indexOf(Math.max(...it)) : it)),
  };
}

function hardOnly(name: string, labels: Labels): TeacherView {
  return { name, logprobs: labels.map(() => null), hard: labels };
}

function assertClose(actual: number, expected: number, tol = 1e-12, what = ''): void {
  assert.ok(Math.abs(actual - expected) <= tol, `${what} ${actual} is not within ${tol} of ${expected}`);
}

function assertVec(actual: Float64Array | null, expected: number[] | null, tol = 1e-12): void {
  if (expected === null) return assert.equal(actual, null);
  assert.ok(actual !== null, `expected ${expected}, got null`);
  assert.equal(actual.length, expected.length);
  expected.forEach((e, k) => assertClose(actual[k], e, tol, `[${k}] of ${Array.from(actual)}:`));
}

// ---------- metrics ----------

describe('metrics', () => {
  // Four scored items (2 classes) plus one without a prediction and one without gold, which are skipped.
  //   item  probs         gold  top  conf  correct  bin (15 bins, ((m-1)/15, m/15])
  //   0     [0.90, 0.10]  0     0    0.90  yes      ceil(13.5)-1  = 13
  //   1     [0.92, 0.08]  1     0    0.92  no       ceil(13.8)-1  = 13
  //   2     [0.30, 0.70]  1     1    0.70  yes      ceil(10.5)-1  = 10
  //   3     [0.55, 0.45]  1     0    0.55  no       ceil(8.25)-1  = 8
  // bin 13: acc 1/2, conf (0.90+0.92)/2 = 0.91, |0.5-0.91| = 0.41, weight 2/4 -> 0.205
  // bin 10: acc 1,   conf 0.70,                 |1-0.70|   = 0.30, weight 1/4 -> 0.075
  // bin 8:  acc 0,   conf 0.55,                 |0-0.55|   = 0.55, weight 1/4 -> 0.1375
  // ECE = 0.205 + 0.075 + 0.1375 = 0.4175
  // accuracy = 2/4; NLL = -(ln 0.90 + ln 0.08 + ln 0.70 + ln 0.45) / 4
  const probs = [[0.9, 0.1], [0.92, 0.08], [0.3, 0.7], [0.55, 0.45], null, [0.5, 0.5]].map((p) => (p ? Float64Array.from(p) : null));
  const gold: Labels = [0, 1, 1, 1, 0, null];
  const pred: Labels = [0, 0, 1, 0, null, 0];

  test('accuracy skips items without a prediction or gold', () => {
    assert.deepEqual(accuracy(pred, gold), { n: 4, value: 0.5 });
    assert.ok(Number.isNaN(accuracy([null], [1]).value));
    assert.equal(accuracy([null], [1]).n, 0);
  });

  test('nll is the mean -log p(gold), clamped at 1e-15 (sklearn log_loss eps before 1.5)', () => {
    const r = nll(probs, gold);
    assert.equal(r.n, 4);
    assertClose(r.value, -(Math.log(0.9) + Math.log(0.08) + Math.log(0.7) + Math.log(0.45)) / 4);
    assertClose(nll([Float64Array.from([1, 0])], [1]).value, -Math.log(1e-15));
  });

  test('ece by hand', () => {
    const r = ece(probs, gold);
    assert.equal(r.n, 4);
    assertClose(r.value, 0.4175);
    // One bin: |mean correctness - mean confidence| = |2/4 - (0.9+0.92+0.7+0.55)/4| = |0.5 - 0.7675|.
    assertClose(ece(probs, gold, 1).value, 0.2675);
  });

  test('softmaxT with T = 2 is p^(1/2) renormalised; zero mass stays 0', () => {
    // sqrt([0.5, 0.25, 0.25, 0]) = [1/√2, 1/2, 1/2, 0], sum 1 + 1/√2 -> [√2-1, (2-√2)/2, (2-√2)/2, 0]
    const p = softmaxT(lp(0.5, 0.25, 0.25, 0), 2);
    assertVec(p, [Math.SQRT2 - 1, (2 - Math.SQRT2) / 2, (2 - Math.SQRT2) / 2, 0]);
    assert.equal(p[3], 0);
    assertVec(softmaxT(Float64Array.from([1000, 1000]), 1), [0.5, 0.5]); // no overflow on raw logits
    assert.throws(() => softmaxT(lp(0.5, 0.5), 0), TargetsError);
    assert.throws(() => softmaxT(Float64Array.from([-Infinity, -Infinity]), 1), /no class has any mass/);
  });

  test('agreement over the items both labeled', () => {
    assert.deepEqual(agreement([0, 1, 2, null, 1], [0, 2, 2, 1, null]), { n: 3, rate: 2 / 3 });
  });
});

// ---------- mean and weighted ----------

describe('mean and weighted', () => {
  // A is missing item 2; B is hard-only (label 2) on item 1.
  const A = teacher('A', [[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], null]);
  const B = teacher('B', [[0.2, 0.6, 0.2], 2, [0.1, 0.1, 0.8]]);
  const gold: Labels = [0, 2, 2];

  test('mean averages over the teachers that labeled each item; hard-only is one-hot', () => {
    const r = aggregate([A, B], { method: 'mean', numClasses: 3 });
    assertVec(r.probs[0], [0.4, 0.45, 0.15]);
    assertVec(r.probs[1], [0.1, 0.1, 0.8]);
    assertVec(r.probs[2], [0.1, 0.1, 0.8]);
    assert.deepEqual(r.hard, [1, 2, 2]);
  });

  test('fitted weights are the accuracies on gold', () => {
    // A: right on 0 and 1 (item 2 unlabeled) -> 1. B: wrong on 0 (says 1), right on 1 and 2 -> 2/3.
    const r = aggregate([A, B], { method: 'weighted', gold, numClasses: 3 });
    assert.deepEqual(r.weights, [1, 2 / 3]);
    // shares 1/(5/3) = 3/5 and 2/5
    assertVec(r.probs[0], [0.44, 0.42, 0.14]);
    assertVec(r.probs[1], [0.12, 0.12, 0.76]);
    assertVec(r.probs[2], [0.1, 0.1, 0.8]);
    assert.deepEqual(r.hard, [0, 2, 2]);
  });

  test('given weights', () => {
    const r = aggregate([A, B], { method: 'weighted', weights: [3, 1], numClasses: 3 });
    assert.deepEqual(r.weights, [3, 1]);
    assertVec(r.probs[0], [0.5, 0.375, 0.125]);
    // A zero weight drops that teacher; an item only it labeled has no target.
    const z = aggregate([A, B], { method: 'weighted', weights: [1, 0], numClasses: 3 });
    assertVec(z.probs[0], [0.6, 0.3, 0.1]);
    assert.equal(z.probs[2], null);
  });

  test('a teacher without gold items gets the mean weight of the others, or 1', () => {
    const C = hardOnly('C', [1, null, null]); // right on item 0 (gold 1)
    const D = hardOnly('D', [0, null, null]); // wrong on item 0
    const E = hardOnly('E', [null, 0, 1]); // no gold on its items
    const r = aggregate([C, D, E], { method: 'weighted', gold: [1, null, null], numClasses: 2 });
    assert.deepEqual(r.weights, [1, 0, 0.5]);
    const none = aggregate([C, D, E], { method: 'weighted', numClasses: 2 });
    assert.deepEqual(none.weights, [1, 1, 1]);
  });

  test('bad weights throw', () => {
    const run = (weights: number[]) => () => aggregate([A, B], { method: 'weighted', weights, numClasses: 3 });
    assert.throws(run([1]), /1 weights for 2 teachers/);
    assert.throws(run([1, -1]), /weight 1 is -1/);
    assert.throws(run([0, 0]), /all teacher weights are 0/);
    assert.throws(run([1, NaN]), TargetsError);
    assert.throws(() => aggregate([A, B], { method: 'weighted', gold: [2, 0, 0], numClasses: 3 }), /fitted weights are all 0/);
    assert.throws(() => aggregate([A, B], { method: 'weighted', gold: [0, 3, null], numClasses: 3 }), /gold\[1\] is 3/);
  });

  test('temperatures are applied per teacher before averaging', () => {
    const r = aggregate([A, B], { method: 'mean', temperatures: [2, 1], numClasses: 3 });
    const a = softmaxT(lp(0.6, 0.3, 0.1), 2);
    assertVec(
      r.probs[0],
      [0, 1, 2].map((k) => (a[k] + [0.2, 0.6, 0.2][k]) / 2),
    );
  });
});

// ---------- vote ----------

describe('vote', () => {
  test('majority, ties by confidence then lowest index, all abstain -> null', () => {
    const views = [
      teacher('A', [[0.8, 0.1, 0.1], [0.05, 0.9, 0.05], [0.5, 0.3, 0.2], null]),
      teacher('B', [[0.7, 0.2, 0.1], [0.2, 0.6, 0.2], 1, null]),
      teacher('C', [[0.1, 0.6, 0.3], [0.1, 0.1, 0.8], null, null]),
      teacher('D', [null, [0.1, 0.1, 0.8], null, null]),
    ];
    const r = aggregate(views, { method: 'vote', numClasses: 3 });
    // item 0: 0,0,1 -> 0 with share 2/3
    assertVec(r.probs[0], [2 / 3, 1 / 3, 0]);
    assert.equal(r.hard[0], 0);
    // item 1: 1,1 vs 2,2; confidence 0.9+0.6 = 1.5 < 0.8+0.8 = 1.6 -> 2, not the lowest index
    assertVec(r.probs[1], [0, 0.5, 0.5]);
    assert.equal(r.hard[1], 2);
    // item 2: 0 (conf 0.5) vs hard-only 1 (conf 1) -> 1
    assert.equal(r.hard[2], 1);
    // item 3: nobody voted
    assert.equal(r.probs[3], null);
    assert.equal(r.hard[3], null);
  });

  test('equal confidence falls back to the lowest class index', () => {
    const r = aggregate([hardOnly('A', [2]), hardOnly('B', [1])], { method: 'vote', numClasses: 3 });
    assert.equal(r.hard[0], 1);
  });

  test('the stated hard label votes, not the argmax', () => {
    const llm: TeacherView = { name: 'llm', logprobs: [lp(0.6, 0.4)], hard: [1] };
    const r = aggregate([llm], { method: 'vote', numClasses: 2 });
    assert.equal(r.hard[0], 1);
  });
});

// ---------- Dawid-Skene ----------

/** Truth uniform over 3 classes; `accurate` teachers are right with their accuracy, else uniformly wrong; plus a 0<->1 flipper. */
function flipperWorld(seed: number, n: number, accuracies: number[]): { views: TeacherView[]; truth: number[] } {
  const rand = rng(seed);
  const truth = Array.from({ length: n }, () => Math.floor(rand() * 3));
  const noisy = accuracies.map((acc, t) =>
    hardOnly(
      `good${t}`,
      truth.map((y) => (rand() < acc ? y : (y + 1 + Math.floor(rand() * 2)) % 3)),
    ),
  );
  const flipper = hardOnly(
    'flipper',
    truth.map((y) => [1, 0, 2][y]),
  );
  return { views: [...noisy, flipper], truth };
}

function argmaxAccuracy(r: AggregateResult, truth: number[]): number {
  return accuracy(r.hard, truth).value;
}

describe('dawid-skene', () => {
  test('recovers a teacher that always swaps classes 0 and 1', () => {
    const { views, truth } = flipperWorld(7, 300, [0.8, 0.8, 0.8]);
    const ds = aggregate(views, { method: 'dawid-skene', numClasses: 3 });
    const vote = aggregate(views, { method: 'vote', numClasses: 3 });
    const flip = ds.confusions![3];
    assert.ok(flip[0][1] > 0.9, `flipper P(says 1 | truth 0) = ${flip[0][1]}`);
    assert.ok(flip[1][0] > 0.9, `flipper P(says 0 | truth 1) = ${flip[1][0]}`);
    assert.ok(flip[2][2] > 0.9, `flipper P(says 2 | truth 2) = ${flip[2][2]}`);
    for (const row of flip)
      assertClose(
        row.reduce((a, b) => a + b, 0),
        1,
        1e-9,
        'confusion row sum',
      );
    assertClose(
      ds.priors!.reduce((a, b) => a + b, 0),
      1,
      1e-9,
      'prior sum',
    );
    assert.ok(ds.iterations! >= 1 && ds.iterations! <= 100);
    const dsAcc = argmaxAccuracy(ds, truth);
    const voteAcc = argmaxAccuracy(vote, truth);
    assert.ok(dsAcc >= voteAcc, `DS ${dsAcc} < vote ${voteAcc}`);
    for (const p of ds.probs)
      assertClose(
        p!.reduce((a, b) => a + b, 0),
        1,
        1e-9,
        'posterior sum',
      );
  });

  test('beats the vote when the flipper sits with two mediocre teachers', () => {
    const { views, truth } = flipperWorld(11, 300, [0.65, 0.65]);
    const dsAcc = argmaxAccuracy(aggregate(views, { method: 'dawid-skene', numClasses: 3 }), truth);
    const voteAcc = argmaxAccuracy(aggregate(views, { method: 'vote', numClasses: 3 }), truth);
    assert.ok(dsAcc > voteAcc, `DS ${dsAcc} should beat vote ${voteAcc}`);
  });

  test('items nobody labeled get null; partial coverage is fine', () => {
    const { views } = flipperWorld(3, 60, [0.8, 0.8, 0.8]);
    // Knock out each teacher on a different stretch of items, and everyone on item 0.
    views.forEach((v, t) => {
      for (let i = 0; i < 60; i++) if (i === 0 || (i >= 10 * t + 1 && i < 10 * t + 11)) v.hard[i] = null;
    });
    const ds = aggregate(views, { method: 'dawid-skene', numClasses: 3 });
    assert.equal(ds.probs[0], null);
    assert.equal(ds.hard[0], null);
    for (let i = 1; i < 60; i++) assert.ok(ds.probs[i] !== null);
  });
});

// ---------- calibration ----------

/**
 * A perfectly calibrated 4-class teacher: draw logits, then draw the true class
 * from softmax(logits). Scaling the logits by `scale` makes it over-confident
 * by exactly that factor, so the right temperature is `scale`.
 */
function calibratedWorld(seed: number, n: number, scale: number): { view: TeacherView; gold: number[] } {
  const rand = rng(seed);
  const logprobs: Float64Array[] = [];
  const gold: number[] = [];
  for (let i = 0; i < n; i++) {
    const z = Float64Array.from({ length: 4 }, () => 2.2 * gaussian(rand));
    const p = softmaxT(z, 1);
    let u = rand();
    let y = 0;
    while (y < 3 && u >= p[y]) u -= p[y++];
    gold.push(y);
    logprobs.push(z.map((x) => x * scale));
  }
  return { view: { name: `x${scale}`, logprobs, hard: logprobs.map(() => null) }, gold };
}

describe('calibration', () => {
  test('an over-confident teacher gets T > 1 and lower NLL and ECE', () => {
    const { view, gold } = calibratedWorld(42, 1000, 4);
    const T = fitTemperature(view.logprobs, gold);
    assert.ok(T > 3 && T < 5, `T = ${T}`);
    const r = calibrationReport(view, gold, T);
    assert.equal(r.before.n, 1000);
    assert.ok(r.before.accuracy > 0.6 && r.before.accuracy < 0.8, `accuracy ${r.before.accuracy}`);
    assert.equal(r.after.accuracy, r.before.accuracy);
    assert.ok(r.after.nll < r.before.nll, `NLL ${r.before.nll} -> ${r.after.nll}`);
    assert.ok(r.after.ece < r.before.ece, `ECE ${r.before.ece} -> ${r.after.ece}`);
  });

  test('an already calibrated teacher gets T close to 1', () => {
    const { view, gold } = calibratedWorld(43, 1000, 1);
    const T = fitTemperature(view.logprobs, gold);
    assert.ok(Math.abs(T - 1) < 0.2, `T = ${T}`);
  });

  test('missing items and missing gold are skipped; nothing to fit gives T = 1', () => {
    const { view, gold } = calibratedWorld(44, 400, 4);
    const holey = view.logprobs.map((z, i) => (i % 3 === 0 ? null : z));
    const partialGold = gold.map((g, i) => (i % 5 === 0 ? null : g));
    const T = fitTemperature(holey, partialGold);
    assert.ok(T > 2.5 && T < 6, `T = ${T}`);
    assert.equal(calibrationReport({ ...view, logprobs: holey }, partialGold, T).before.n, 400 - 134 - 80 + 27);
    assert.equal(fitTemperature([null, null], [0, 1]), 1);
    assert.equal(fitTemperature([], []), 1);
  });

  test('fitTemperature finds the NLL minimum to 1e-4', () => {
    const { view, gold } = calibratedWorld(45, 300, 2.5);
    const T = fitTemperature(view.logprobs, gold);
    const at = (t: number) =>
      nll(
        view.logprobs.map((z) => softmaxT(z!, t)),
        gold,
      ).value;
    assert.ok(at(T) <= at(T * 1.001) && at(T) <= at(T / 1.001), 'a local minimum');
  });
});

// ---------- shape checks ----------

describe('input checks', () => {
  test('mismatched teachers and bad labels throw clear errors', () => {
    const A = teacher('A', [
      [0.5, 0.5],
      [0.5, 0.5],
    ]);
    assert.throws(() => aggregate([A, teacher('B', [[0.5, 0.5]])], { method: 'mean', numClasses: 2 }), /teacher B has 1/);
    assert.throws(() => aggregate([A], { method: 'mean', numClasses: 3 }), /teacher A, item 0: 2 log-probabilities, expected 3/);
    assert.throws(() => aggregate([hardOnly('H', [5])], { method: 'vote', numClasses: 2 }), /hard label is 5/);
    assert.throws(() => aggregate([A], { method: 'mean', temperatures: [1, 1], numClasses: 2 }), /2 temperatures for 1 teachers/);
    assert.throws(() => aggregate([], { method: 'mean', numClasses: 2 }), /no teachers/);
  });

  test('an item no teacher labeled is null for every method', () => {
    const views = [teacher('A', [[0.7, 0.3], null]), hardOnly('B', [1, null])];
    for (const method of ['mean', 'weighted', 'vote', 'dawid-skene'] as const) {
      const r = aggregate(views, { method, numClasses: 2 });
      assert.equal(r.probs[1], null, method);
      assert.equal(r.hard[1], null, method);
      assert.ok(r.probs[0] !== null, method);
    }
  });
});
