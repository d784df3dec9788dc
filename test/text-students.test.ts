/**
 * The three text students (logreg, mlp, fasttext) on one small text task, through the CLIs as a
 * user runs them: train.ts on the same stored teachers, then predict.ts, eval.ts --student,
 * report.ts with the three side by side, and relabel's student predictions. Also: the saved
 * folder carries the hashing, ce/kd/multi-kd train them, and image-only distillers and
 * architectures are refused in one line.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { studentPredictions } from '../src/relabel/student.ts';
import { Store } from '../src/store/store.ts';
import { selectBackend } from '../src/train/backend.ts';
import { batchInput, type BatchSource } from '../src/train/data.ts';
import { hashTokens, type StudentSpec, type TextBatch } from '../src/train/models/index.ts';
import { ingestLogits } from '../src/whitebox/ingest.ts';
import { importFile, LABELS, loadTaskFile, runScript, writeJsonl, writeTask, workDir, type ScriptResult } from './helpers.ts';
import { isTensorflowLog, TRAIN_BACKEND } from './train-backend.ts';

const show = (r: ScriptResult) => `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;

function ok(r: ScriptResult): ScriptResult {
  assert.equal(r.code, 0, show(r));
  return r;
}

/** Exit 1 and exactly one `error: ` line on stderr, matching `pattern`. */
function oneLineError(r: ScriptResult, pattern: RegExp): void {
  assert.equal(r.code, 1, show(r));
  const lines = r.stderr.split('\n').filter((l) => l !== '' && !isTensorflowLog(l));
  const errors = lines.filter((l) => l.startsWith('error: '));
  assert.equal(errors.length, 1, `one error line: ${JSON.stringify(r.stderr)}`);
  assert.match(errors[0], pattern);
  assert.ok(!/\n\s+at /.test(r.stderr), 'no stack trace');
}

const FILLERS = ['seen', 'near', 'the', 'old', 'barn', 'yesterday', 'quickly', 'river', 'garden', 'morning', 'green', 'small'];

/** Item i names LABELS[i % 3] among filler words and a unique token; every 5th item is in the test split. */
function rows(n: number): Array<{ id: string; text: string; label: string; split: string }> {
  return Array.from({ length: n }, (_, i) => {
    const k = i % 3;
    const words = [FILLERS[i % 12], FILLERS[(i * 7 + 3) % 12], LABELS[k], FILLERS[(i * 5 + 1) % 12], `n${i}`];
    return { id: `s${i}`, text: words.join(' '), label: LABELS[k], split: i % 5 === 0 ? 'test' : 'train' };
  });
}

interface Metrics {
  trainer: string;
  student: { kind: string; buckets?: number; bigrams?: boolean };
  history: Array<{ terms: Record<string, number> }>;
  test: { n: number; accuracy: number };
}
const metrics = (dir: string) => JSON.parse(fs.readFileSync(path.join(dir, 'metrics.json'), 'utf8')) as Metrics;

describe('text students: logreg, mlp and fasttext on the same labels, through the CLIs', () => {
  const dir = workDir();
  const db = path.join(dir, 'text.db');
  const data = rows(150);
  const out = (name: string) => path.join(dir, name);
  // Small and quick: a 1,024-row table, 3 epochs of batches of 8.
  const common = ['--db', db, '--buckets', '1024', '--epochs', '3', '--batch-size', '8', '--backend', TRAIN_BACKEND];

  before(async () => {
    const taskFile = writeTask(dir, { name: 'animals' });
    const task = loadTaskFile(taskFile);
    const input = writeJsonl(dir, 'animals.jsonl', data);
    // Two white-box teachers: one follows the keyword; the other too, but is wrong on every 7th item (multi-kd learns each).
    const logits = (name: string, wrong: (i: number) => boolean) =>
      writeJsonl(
        dir,
        `${name}.jsonl`,
        data.map((r, i) => ({ id: r.id, logits: LABELS.map((_, k) => (k === (wrong(i) ? (i + 1) % 3 : i % 3) ? 2.5 : 0)) })),
      );
    const store = Store.open(db);
    try {
      await importFile(store, task, input);
      await ingestLogits({ store, task, teacher: 'keyword', input: logits('keyword', () => false), format: { kind: 'dense16' } });
      await ingestLogits({ store, task, teacher: 'noisy', input: logits('noisy', (i) => i % 7 === 0), format: { kind: 'dense16' } });
    } finally {
      store.close();
    }
  });

  test('logreg (ce,kd), mlp (ce,multi-kd) and fasttext train on the same teachers, beat chance, and keep their hashing', async () => {
    const [lr, mlp, ft] = await Promise.all([
      runScript('train', [...common, '--arch', 'logreg', '--lr', '0.02', '--out', out('logreg')]),
      runScript('train', [...common, '--arch', 'mlp', '--hidden', '16', '--distill', 'ce,multi-kd', '--lr', '0.02', '--out', out('mlp')]),
      runScript('train', [...common, '--arch', 'fasttext', '--dim', '16', '--out', out('fasttext')]),
    ]);
    [lr, mlp, ft].forEach(ok);
    const testItems = data.filter((r) => r.split === 'test').length;
    for (const name of ['logreg', 'mlp', 'fasttext']) {
      const m = metrics(out(name));
      assert.equal(m.student.kind, name);
      assert.equal(m.student.buckets, 1024, `${name}: the hashing is in its spec`);
      assert.equal(m.test.n, testItems);
      // Chance is 1/3; the keyword decides the class. Measured: 100% for each.
      assert.ok(m.test.accuracy >= 0.8, `${name}: test accuracy ${m.test.accuracy}`);
      const saved = JSON.parse(fs.readFileSync(path.join(out(name), 'model.json'), 'utf8')) as {
        spec: { student: { buckets: number; bigrams?: boolean }; preprocess: { input: string } };
      };
      assert.equal(saved.spec.student.buckets, 1024);
      assert.equal(saved.spec.preprocess.input, 'text');
    }
    assert.equal(metrics(out('logreg')).student.bigrams, true);
    assert.equal(metrics(out('logreg')).trainer, 'tfjs');
    assert.deepEqual(Object.keys(metrics(out('logreg')).history[0].terms).sort(), ['ce', 'kd']);
    assert.deepEqual(Object.keys(metrics(out('mlp')).history[0].terms).sort(), ['ce', 'multi-kd']);
    assert.equal(metrics(out('fasttext')).trainer, 'fast');
  });

  test("--distill ce alone weighs CE 1 (at the default 0.1 the fast trainer's hard-label twin did not learn)", async () => {
    const r = ok(await runScript('train', [...common, '--arch', 'fasttext', '--dim', '16', '--distill', 'ce', '--out', out('ft-hard')]));
    const m = JSON.parse(fs.readFileSync(path.join(out('ft-hard'), 'metrics.json'), 'utf8')) as Metrics & {
      config: { settings: { ceWeight?: number } };
    };
    assert.equal(m.config.settings.ceWeight, 1, r.stderr);
    assert.equal(m.trainer, 'fast');
    assert.ok(m.test.accuracy >= 0.8, `test accuracy ${m.test.accuracy}`);
  });

  test('predict.ts and eval.ts --student run on the text logreg and mlp', async () => {
    // New texts: the keyword next to a word never seen in training (a mean of bags: each of the 3 features weighs a third).
    const fresh = LABELS.flatMap((label, k) => [0, 1, 2].map((j) => ({ id: `new${k}${j}`, text: `unseen${j} ${label}` })));
    const input = writeJsonl(dir, 'fresh.jsonl', fresh);
    for (const name of ['logreg', 'mlp']) {
      const [pred, ev] = await Promise.all([
        runScript('predict', ['--student', out(name), '--input', input, '--backend', TRAIN_BACKEND]),
        runScript('eval', ['--db', db, '--student', out(name), '--backend', TRAIN_BACKEND, '--json']),
      ]);
      ok(pred);
      ok(ev);
      const lines = pred.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { id: string; label: string; probs: number[] });
      assert.deepEqual(
        lines.map((l) => l.id),
        fresh.map((f) => f.id),
      );
      for (const l of lines) assert.ok(Math.abs(l.probs.reduce((a, b) => a + b, 0) - 1) < 1e-4, `${name}: probs sum to 1`);
      const right = lines.filter((l, i) => l.label === LABELS[Math.floor(i / 3)]).length;
      assert.ok(right >= 7, `${name}: ${right}/9 new texts labeled by their keyword`);
      const e = (JSON.parse(ev.stdout.trim().split('\n').at(-1)!) as { evaluations: Array<{ n: number; accuracy: number }> })
        .evaluations[0];
      const m = metrics(out(name));
      assert.equal(e.n, m.test.n);
      assert.equal(e.accuracy, m.test.accuracy, `${name}: eval.ts agrees with train.ts's test report`);
    }
  });

  test("report.ts shows the three side by side; relabel's student predictions work on a text student", async () => {
    const r = ok(
      await runScript('report', [
        '--db',
        db,
        '--student',
        out('logreg'),
        out('mlp'),
        out('fasttext'),
        '--out',
        out('report'),
        '--backend',
        TRAIN_BACKEND,
      ]),
    );
    const html = fs.readFileSync(path.join(out('report'), 'report.html'), 'utf8');
    for (const name of ['logreg', 'mlp', 'fasttext']) assert.ok(html.includes(out(name)) || html.includes(name), `${name} in the report`);
    assert.equal(r.code, 0);

    await selectBackend(TRAIN_BACKEND);
    const store = Store.open(db);
    try {
      const taskRow = store.findTask('animals')!;
      const task = loadTaskFile(path.join(dir, 'animals.md'));
      const preds = await studentPredictions(store, taskRow, task, out('mlp'), TRAIN_BACKEND);
      assert.equal(preds.size, data.length);
      const agree = [...preds.values()].filter((p, i) => p.hard === i % 3).length;
      assert.ok(agree >= 0.8 * data.length, `relabel's view of the student: ${agree}/${data.length} items on their keyword`);
    } finally {
      store.close();
    }
  });

  // --arch vit and --augment on a text task: test/train.test.ts ('bad input').
  test('refused in one line, nothing written: image-only distillers, the fast trainer for logreg', async () => {
    const refusals: Array<[string[], RegExp]> = [
      [['--arch', 'logreg', '--distill', 'ce,deit'], /--distill deit: needs a ViT/],
      [['--arch', 'mlp', '--distill', 'ce,hidden', '--feature-teacher', out('mlp')], /needs a ViT student/],
      [['--arch', 'logreg', '--trainer', 'fast'], /--trainer fast: it trains the fasttext student only \(got logreg\)/],
    ];
    const results = await Promise.all(refusals.map(([args], i) => runScript('train', [...common, ...args, '--out', out(`refused${i}`)])));
    results.forEach((r, i) => {
      oneLineError(r, refusals[i][1]);
      assert.ok(!fs.existsSync(path.join(out(`refused${i}`), 'model.json')), `no model written for ${refusals[i][0].join(' ')}`);
    });
  });

  test('the three read the same bags for the same settings, and a dataset hashed for one bucket count is not reused for another', () => {
    const ds: BatchSource = { n: 3, texts: ['a cat sat', 'A CAT, sat!', ''], preprocess: { input: 'text' } };
    const bags = (spec: StudentSpec) => (batchInput(ds, spec, [0, 1, 2]) as TextBatch).bags.map((b) => Array.from(b));
    const ft = bags({ kind: 'fasttext', numClasses: 3, buckets: 1024, dim: 4 });
    assert.deepEqual(bags({ kind: 'logreg', numClasses: 3, buckets: 1024, bigrams: true }), ft);
    assert.deepEqual(bags({ kind: 'mlp', numClasses: 3, buckets: 1024, bigrams: true, hidden: [4] }), ft);
    assert.deepEqual(ft, [hashTokens('a cat sat', 1024), hashTokens('a cat sat', 1024), []]);
    assert.deepEqual(bags({ kind: 'logreg', numClasses: 3, buckets: 64, bigrams: true })[0], hashTokens('a cat sat', 64));
    assert.deepEqual(
      bags({ kind: 'logreg', numClasses: 3, buckets: 1024, bigrams: false })[0],
      hashTokens('a cat sat', 1024, { bigrams: false }),
    );
    assert.throws(() => batchInput(ds, { kind: 'logreg', numClasses: 3, inputShape: [4] }, [0]), /a text task needs a text student/);
  });
});
