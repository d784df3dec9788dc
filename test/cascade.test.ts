/**
 * The student-first cascade: the bootstrap lower bound, the threshold fit on a synthetic task (the target holds on
 * held-out data), the CLI's refusal of the test split, and predict --cascade end to end against the local fake teacher.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { BootstrapAccuracy, normalQuantile, wilsonLower } from '../src/cascade/bootstrap.ts';
import { coverageOn, fitThresholds, type Scored } from '../src/cascade/fit.ts';
import { readCascade } from '../src/cascade/schema.ts';
import { mulberry32 } from '../src/random.ts';
import { Store } from '../src/store/store.ts';
import { fakeServer, itemText, labelRows, LABELS, runScript, sqlOn, workDir, writeJsonl, writeTask, type ScriptResult } from './helpers.ts';

const show = (r: ScriptResult) => `exit ${r.code}\nstdout: ${r.stdout.slice(-2000)}\nstderr: ${r.stderr.slice(-2000)}`;

describe('bootstrap lower bound', () => {
  test('of a fixed set of 400 items at 90%: the normal approximation 90% − 1.645·σ within a point', () => {
    const boot = new BootstrapAccuracy(2000, 7);
    for (let i = 0; i < 400; i++) boot.add(i % 10 !== 0);
    const sigma = Math.sqrt((0.9 * 0.1) / 400);
    assert.ok(Math.abs(boot.lowerBound(0.95) - (0.9 - 1.645 * sigma)) < 0.01, `lower bound ${boot.lowerBound(0.95)}`);
    assert.ok(boot.lowerBound(0.99) < boot.lowerBound(0.95));
    assert.equal(boot.correct, 360);
  });

  test('a set without errors is not certain: Wilson floors the bootstrap (30 of 30 right: below 92% at 95%)', () => {
    const boot = new BootstrapAccuracy(1000, 1);
    for (let i = 0; i < 30; i++) boot.add(true);
    assert.ok(boot.lowerBound(0.95) < 0.92 && boot.lowerBound(0.95) > 0.9, `${boot.lowerBound(0.95)}`);
    assert.ok(Math.abs(normalQuantile(0.95) - 1.6448536) < 1e-6 && Math.abs(normalQuantile(0.01) + 2.3263479) < 1e-6);
  });
});

/**
 * A simulated student over three classes: its confidence is uniform above chance (in √u), and it is right with
 * probability confidence + bias[class]: the classes differ in calibration, so a single global threshold would serve
 * them unequally.
 */
function simulate(n: number, seed: number, bias = [0.08, 0.04, 0]): Scored[] {
  const rand = mulberry32(seed);
  return Array.from({ length: n }, () => {
    const pred = Math.floor(rand() * 3);
    const confidence = 1 / 3 + (2 / 3) * Math.sqrt(rand());
    return { pred, confidence, correct: rand() < Math.min(1, Math.max(0, confidence + bias[pred])) };
  });
}

/** Share of bootstrap resamples (with replacement, n of n) of `rows` in which the student's answers meet the target. */
function heldOutPassRate(rows: Scored[], thresholds: Array<{ threshold: number | null }>, target: number, resamples: number, seed: number) {
  const rand = mulberry32(seed);
  // Per row: its class if the student answers it, else -1; and whether it is right.
  const cls = Int8Array.from(rows, (r) => {
    const t = thresholds[r.pred].threshold;
    return t !== null && r.confidence >= t ? r.pred : -1;
  });
  const right = Uint8Array.from(rows, (r) => (r.correct ? 1 : 0));
  let overall = 0;
  const perClass = [0, 0, 0];
  const n = new Int32Array(3);
  const ok = new Int32Array(3);
  for (let b = 0; b < resamples; b++) {
    n.fill(0);
    ok.fill(0);
    for (let k = 0; k < rows.length; k++) {
      const i = Math.floor(rand() * rows.length);
      const c = cls[i];
      if (c < 0) continue;
      n[c]++;
      ok[c] += right[i];
    }
    const all = n[0] + n[1] + n[2];
    if (all > 0 && (ok[0] + ok[1] + ok[2]) / all >= target) overall++;
    for (let c = 0; c < 3; c++) if (n[c] === 0 || ok[c] / n[c] >= target) perClass[c]++;
  }
  return { overall: overall / resamples, perClass: perClass.map((x) => x / resamples) };
}

/**
 * The tempting rule this fit does not use: per class, the lowest of all thresholds at which `bound` (of the accepted
 * items' right answers and count) meets the target.
 */
function lowestOfAll(rows: Scored[], target: number, bound: (right: number, n: number) => number): Array<{ threshold: number | null }> {
  return [0, 1, 2].map((k) => {
    const mine = rows.filter((r) => r.pred === k).sort((a, b) => b.confidence - a.confidence);
    let right = 0;
    let threshold: number | null = null;
    mine.forEach((r, i) => {
      right += r.correct ? 1 : 0;
      if (i + 1 >= 30 && bound(right, i + 1) >= target) threshold = r.confidence;
    });
    return { threshold };
  });
}

describe('fitting thresholds on a synthetic task', () => {
  const target = 0.9;
  const fitRows = simulate(3000, 1);
  const heldOut = simulate(20_000, 2);
  const settings = { target, confidence: 0.95, resamples: 1000, seed: 1, minItems: 30 };

  test('the fitted thresholds meet the target on held-out data in at least 95% of its bootstrap resamples, overall and per class', () => {
    const thresholds = fitThresholds(fitRows, ['a', 'b', 'c'], settings);
    for (const t of thresholds) {
      assert.ok(t.threshold !== null, `class ${t.label} got a threshold`);
      assert.ok(t.lower_bound! >= target && t.accuracy! >= t.lower_bound!, JSON.stringify(t));
    }
    // Per class: the overconfident class needs the highest threshold.
    assert.ok(thresholds[2].threshold! > thresholds[0].threshold!, JSON.stringify(thresholds));
    const rate = heldOutPassRate(heldOut, thresholds, target, 1000, 3);
    assert.ok(rate.overall >= 0.95, `overall: ${rate.overall}`);
    rate.perClass.forEach((r, c) => assert.ok(r >= 0.95, `class ${c}: ${r}`));
    const onHeldOut = coverageOn(heldOut, thresholds);
    assert.ok(onHeldOut.coverage > 0.2 && onHeldOut.accuracy! >= target, JSON.stringify(onHeldOut));
  });

  test('the check is not vacuous: the lowest of all thresholds whose point estimate meets the target fails it', () => {
    const pointEstimate = heldOutPassRate(
      heldOut,
      lowestOfAll(fitRows, target, (r, n) => r / n),
      target,
      500,
      3,
    );
    assert.ok(Math.min(...pointEstimate.perClass) < 0.95, JSON.stringify(pointEstimate));
  });

  test('a borderline class (right at most 94% of the time): a 95% bound at every threshold fails it, the ladder holds', () => {
    const borderline = [0.05, 0, -0.06];
    const fit = simulate(3000, 5, borderline);
    const held = simulate(20_000, 6, borderline);
    const each95 = heldOutPassRate(
      held,
      lowestOfAll(fit, target, (r, n) => wilsonLower(r, n, 1.645)),
      target,
      500,
      3,
    );
    assert.ok(each95.perClass[2] < 0.95, JSON.stringify(each95));
    const thresholds = fitThresholds(fit, ['a', 'b', 'c'], settings);
    const rate = heldOutPassRate(held, thresholds, target, 500, 3);
    assert.ok(Math.min(rate.overall, ...rate.perClass) >= 0.95, JSON.stringify({ rate, thresholds }));
  });

  test('a class with fewer than min-items confident right answers is left to the teacher (threshold null)', () => {
    const rows: Scored[] = [...simulate(600, 4).filter((r) => r.pred !== 1), { pred: 1, confidence: 0.99, correct: true }];
    const thresholds = fitThresholds(rows, ['a', 'b', 'c'], settings);
    assert.equal(thresholds[1].threshold, null);
    assert.equal(thresholds[1].predicted, 1);
    // An unreachable target leaves every class to the teacher.
    assert.ok(fitThresholds(fitRows, ['a', 'b', 'c'], { ...settings, target: 1 }).every((t) => t.threshold === null));
  });
});

describe('cascade.ts fit and predict.ts --cascade', () => {
  /**
   * A text task whose items either name their animal (easy: the student learns them) or do not (the student cannot
   * know; its confidence stays low): a fasttext student trained on gold, a dev split to fit on, a test split.
   */
  function rowsOf(n: number, prefix: string, split: string | undefined, seed: number) {
    const rand = mulberry32(seed);
    return Array.from({ length: n }, (_, i) => {
      const label = LABELS[Math.floor(rand() * 3)];
      const named = i % 3 !== 0;
      const text = named ? `${prefix} ${i} is about a ${label}` : `${prefix} ${i} is about something w${Math.floor(rand() * 1e6)}`;
      return { id: `${prefix}${i}`, text, label, ...(split ? { split } : {}) };
    });
  }

  /** One student for the tests below, trained once (they run in order: the second adds items and spoils the weights). */
  let trained: Promise<{ dir: string; task: string; db: string; student: string }> | undefined;
  function trainedStudent() {
    trained ??= (async () => {
      const dir = workDir();
      const task = writeTask(dir);
      const db = path.join(dir, 'distill.db');
      const input = writeJsonl(dir, 'animals.jsonl', [
        ...rowsOf(300, 'train', 'train', 1),
        ...rowsOf(300, 'dev', 'dev', 2),
        ...rowsOf(30, 'test', 'test', 3),
      ]);
      const imported = await runScript('import', ['--db', db, '--task', task, '--input', input]);
      assert.equal(imported.code, 0, show(imported));
      const student = path.join(dir, 'student');
      const args = ['--db', db, '--arch', 'fasttext', '--supervised', '--epochs', '5', '--buckets', '4096', '--dim', '16'];
      const r = await runScript('train', [...args, '--backend', 'cpu', '--out', student]);
      assert.equal(r.code, 0, show(r));
      return { dir, task, db, student };
    })();
    return trained;
  }

  test('fit refuses the test split (and train) in one line and writes nothing; then fits on dev', async () => {
    const { db, student } = await trainedStudent();
    const splits = ['test', 'train'];
    const refused = await Promise.all(
      splits.map((split) => runScript('cascade', ['fit', '--db', db, '--student', student, '--target', '0.9', '--split', split])),
    );
    for (const [i, split] of splits.entries()) {
      const r = refused[i];
      assert.equal(r.code, 1, show(r));
      assert.match(r.stderr, new RegExp(`^error: --split: "${split}" is .*\\n$`));
      assert.equal(r.stderr.split('\n').length, 2, 'one line');
    }
    assert.ok(!fs.existsSync(path.join(student, 'cascade.json')));
    const missing = path.join(path.dirname(db), 'missing.db');
    const noDb = await runScript('cascade', ['fit', '--db', missing, '--student', student, '--target', '0.9', '--split', 'dev']);
    assert.equal(noDb.stderr, `error: ${missing}: no such database (create one with import.ts or label.ts)\n`);
    assert.ok(!fs.existsSync(missing));
    const fit = await runScript('cascade', [
      'fit',
      '--db',
      db,
      '--student',
      student,
      '--target',
      '0.9',
      '--split',
      'dev',
      '--json',
      '--backend',
      'cpu',
    ]);
    assert.equal(fit.code, 0, show(fit));
    const { file: written, ...printed } = JSON.parse(fit.stdout.trim().split('\n').at(-1)!);
    assert.equal(written, path.join(student, 'cascade.json'));
    const file = readCascade(written);
    assert.deepEqual(printed, file);
    assert.equal(file.data.split, 'dev');
    assert.equal(file.data.reference, 'gold');
    assert.equal(file.data.n, 300);
    assert.equal(file.student.dir, '.');

    // The default, val: the data has no split of that name, so the validation slice train.ts held out (10% of 300).
    const val = await runScript('cascade', [
      'fit',
      '--db',
      db,
      '--student',
      student,
      '--target',
      '0.9',
      '--backend',
      'cpu',
      '--out',
      path.join(student, 'val'),
    ]);
    assert.equal(val.code, 0, show(val));
    const onVal = readCascade(path.join(student, 'val', 'cascade.json'));
    assert.match(onVal.data.split, /^val \(the student's validation slice/);
    assert.equal(onVal.data.n, 30);
    assert.equal(onVal.student.dir, '..');
  });

  test('predict --cascade asks the fake teacher only for the low-confidence items, stores its answers, and asks nothing new the second time', async () => {
    const { dir, task, db, student } = await trainedStudent();
    const fit = await runScript('cascade', [
      'fit',
      '--db',
      db,
      '--student',
      student,
      '--target',
      '0.9',
      '--split',
      'dev',
      '--out',
      dir,
      '--backend',
      'cpu',
    ]);
    assert.equal(fit.code, 0, show(fit));
    const cascadeFile = path.join(dir, 'cascade.json');
    const cascade = readCascade(cascadeFile);
    assert.equal(cascade.student.dir, 'student');

    const fake = await fakeServer();
    const input = writeJsonl(dir, 'new.jsonl', rowsOf(60, 'new', undefined, 4));
    const args = [
      '--cascade',
      cascadeFile,
      '--db',
      db,
      '--task',
      task,
      '--input',
      input,
      '--backend',
      'cpu',
      '--json',
      '--model',
      'fake-teacher',
      '--base-url',
      fake.url,
      '--price-in',
      '2',
      '--price-out',
      '10',
      '--progress-interval',
      '60',
    ];
    const first = await runScript('predict', args, { OPENAI_API_KEY: 'sk-test' });
    assert.equal(first.code, 0, show(first));
    const lines = first.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    const report = lines.pop();
    assert.equal(lines.length, 60);

    // The routing is the cascade's rule, and both sides are used.
    const threshold = (label: string) => cascade.thresholds[cascade.labels.indexOf(label)].threshold;
    for (const r of lines) {
      const t = threshold(r.student_label);
      assert.equal(r.by === 'student', t !== null && r.student_confidence >= t, JSON.stringify(r));
    }
    const byStudent = lines.filter((r) => r.by === 'student');
    const byTeacher = lines.filter((r) => r.by === 'teacher');
    assert.ok(byStudent.length > 0 && byTeacher.length > 0, `student ${byStudent.length}, teacher ${byTeacher.length}`);
    assert.equal(byStudent.length + byTeacher.length, 60);

    // The teacher was asked exactly for the deferred items, once each.
    const textOf = new Map(rowsOf(60, 'new', undefined, 4).map((r) => [r.id, r.text]));
    const asked = fake.requests.map(itemText).sort();
    assert.deepEqual(asked, byTeacher.map((r) => textOf.get(r.id)!).sort());

    // Its answers are labels in the store, the ones predict printed.
    const store = Store.open(db);
    let paid: { n: number; c: number };
    try {
      const stored = new Map(
        labelRows(store)
          .filter((l) => l.status === 'ok')
          .map((l) => [l.text, l.label]),
      );
      for (const r of byTeacher) assert.equal(stored.get(textOf.get(r.id)!), r.label);
      for (const r of byStudent) assert.ok(!stored.has(textOf.get(r.id)!), 'the student answered it: no teacher label');
      paid = sqlOn(store, (d) => d.prepare('SELECT count(*) AS n, sum(cost) AS c FROM responses').get() as { n: number; c: number });
    } finally {
      store.close();
    }

    // The report's figures are the counts.
    assert.equal(report.items, 60);
    assert.deepEqual(report.answered, { student: byStudent.length, teacher: byTeacher.length, none: 0 });
    assert.equal(report.coverage, byStudent.length / 60);
    assert.equal(report.calls_avoided, byStudent.length);
    assert.equal(report.calls_avoided_per_1000, (1000 * byStudent.length) / 60);
    assert.equal(report.teacher.requests, byTeacher.length);
    assert.equal(paid.n, byTeacher.length);
    assert.equal(report.cost_per_call_from, 'measured');
    assert.ok(Math.abs(report.cost_per_call - paid.c / paid.n) < 1e-12);
    assert.ok(Math.abs(report.money_saved - (paid.c / paid.n) * byStudent.length) < 1e-12);
    const gold = new Map(rowsOf(60, 'new', undefined, 4).map((r) => [r.id, r.label]));
    const right = lines.filter((r) => r.label === gold.get(r.id)).length;
    assert.equal(report.accuracy.all.n, 60);
    assert.equal(report.accuracy.all.accuracy, right / 60);
    assert.match(first.stderr, /calls avoided: \d+ \([\d.]+ per 1,000 items\)/);

    // Again: the request keys find every answer; nothing new is sent, the same rows come out.
    const second = await runScript('predict', args, { OPENAI_API_KEY: 'sk-test' });
    assert.equal(second.code, 0, show(second));
    assert.equal(fake.requests.length, byTeacher.length);
    const again = second.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    const report2 = again.pop();
    assert.deepEqual(again, lines);
    assert.equal(report2.teacher.requests, 0);
    assert.equal(report2.teacher.already_labeled, byTeacher.length);
    assert.equal(report2.coverage, report.coverage);

    // predict imported new items into the train split: the validation slice is no longer the one training held out.
    const moved = await runScript('cascade', [
      'fit',
      '--db',
      db,
      '--student',
      student,
      '--target',
      '0.9',
      '--backend',
      'cpu',
      '--out',
      dir,
    ]);
    assert.equal(moved.code, 1, show(moved));
    assert.match(moved.stderr, /(^|\n)error: --split: [^\n]*changed since training[^\n]*\n$/);

    // A student retrained since the fit is refused.
    fs.appendFileSync(path.join(student, 'weights.bin'), Buffer.alloc(4));
    const stale = await runScript('predict', args, { OPENAI_API_KEY: 'sk-test' });
    assert.equal(stale.code, 1, show(stale));
    assert.match(stale.stderr, /^error: .*not those the cascade was fitted for/);
    assert.equal(fake.requests.length, byTeacher.length);
  });
});

test('predict.ts without --cascade refuses every teacher flag in one line (it would silently do nothing)', async () => {
  for (const flag of [['--max-cost', '1'], ['--model', 'm'], ['--no-poll']]) {
    const r = await runScript('predict', ['--student', 'nowhere', '--input', 'nothing.jsonl', ...flag]);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.stderr.trim(), `error: ${flag[0]} is for --cascade (the student alone needs no teacher)`);
  }
});
