/**
 * m2mKD (src/train/m2mkd/): a ViT cut into modules is the same ViT; the module loss against a plain-JS
 * formula; stitch layers; every phase end to end on 16×16 shapes through the library (a loadable student,
 * resumable by phase); the CLI's errors.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { writeShapes } from '../src/datasets/shapes.ts';
import { evaluateSplit } from '../src/infer/evaluate.ts';
import { loadModel, loadModelForTask } from '../src/infer/model.ts';
import { Store } from '../src/store/store.ts';
import { selectBackend, tf } from '../src/train/backend.ts';
import { loadDataset } from '../src/train/data.ts';
import { saveWeights } from '../src/train/io.ts';
import { m2mkdLoss, m2mkdTerms } from '../src/train/m2mkd/loss.ts';
import { createModularVit, hybridChain, moduleRanges, runChain } from '../src/train/m2mkd/modules.ts';
import { runM2mkd, type M2mkdConfig } from '../src/train/m2mkd/run.ts';
import { stitched } from '../src/train/m2mkd/stitch.ts';
import { createStudent, type VitSpec } from '../src/train/models/index.ts';
import { train } from '../src/train/trainer.ts';
import { importFile, loadTaskFile, REPO_ROOT, runScript, workDir } from './helpers.ts';
import { TRAIN_BACKEND } from './train-backend.ts';

before(async () => {
  await selectBackend(TRAIN_BACKEND);
});

const vit = (o: Partial<VitSpec> = {}): VitSpec => ({
  kind: 'vit',
  numClasses: 3,
  inputShape: [16, 16, 1],
  patchSize: 4,
  width: 8,
  depth: 4,
  heads: 2,
  mlpRatio: 2,
  ...o,
});

const images = (b: number, seed = 3) => tf.randomNormal([b, 16, 16, 1], 0, 1, 'float32', seed);

function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]);
}

describe('m2mkd: modules', () => {
  test('module ranges cover the blocks in order, larger modules first; too many modules is an error', () => {
    assert.deepEqual(moduleRanges(4, 2), [
      [0, 2],
      [2, 4],
    ]);
    assert.deepEqual(moduleRanges(5, 3), [
      [0, 2],
      [2, 4],
      [4, 5],
    ]);
    assert.deepEqual(moduleRanges(3, 1), [[0, 3]]);
    assert.throws(() => moduleRanges(2, 3), /cannot split 2 blocks into 3 modules/);
  });

  test('a ViT split into modules and chained again gives the whole model’s logits; each weight belongs to one module', () => {
    for (const [spec, m] of [
      [vit(), 2],
      [vit({ depth: 5 }), 3],
      [vit({ classToken: false }), 4],
    ] as const) {
      const whole = createStudent(spec, 11);
      const mod = createModularVit(spec, m, 11);
      const x = images(5);
      const a = tf.tidy(() => whole.forward(x).logits);
      const b = tf.tidy(
        () =>
          runChain(
            mod.ranges.map((_, i) => mod.module(i)),
            x,
          ).logits,
      );
      assert.deepEqual(b.shape, [5, 3]);
      assert.ok(maxAbsDiff(a, b) < 1e-5, `depth ${spec.depth}, ${m} modules: ${maxAbsDiff(a, b)}`);
      const owned = mod.ranges.flatMap((_, i) => Object.keys(mod.moduleWeights(i)));
      assert.deepEqual([...owned].sort(), Object.keys(mod.weights).sort(), 'every weight in exactly one module');
      assert.ok('patch.w' in mod.moduleWeights(0) && 'pos_embed' in mod.moduleWeights(0));
      assert.ok('head.w' in mod.moduleWeights(m - 1) && 'norm.g' in mod.moduleWeights(m - 1));
      assert.ok(`blocks.${spec.depth - 1}.mlp.fc2.w` in mod.moduleWeights(m - 1) && !('blocks.0.attn.qkv.w' in mod.moduleWeights(m - 1)));
      tf.dispose([x, a, b]);
      whole.dispose();
      mod.dispose();
    }
  });

  test('a hybrid with a model’s own module is that model; with another model’s module it is not', () => {
    const meta = createModularVit(vit({ depth: 2 }), 2, 1);
    const other = createModularVit(vit({ depth: 4 }), 2, 2);
    const x = images(4);
    const own = tf.tidy(() => runChain(hybridChain(meta, 1, meta.module(1)), x).logits);
    const whole = tf.tidy(() => runChain([meta.module(0), meta.module(1)], x).logits);
    const mixed = tf.tidy(() => runChain(hybridChain(meta, 1, other.module(1)), x).logits);
    assert.ok(maxAbsDiff(own, whole) < 1e-6);
    assert.ok(maxAbsDiff(mixed, whole) > 1e-4);
    tf.dispose([x, own, whole, mixed]);
    meta.dispose();
    other.dispose();
  });

  test('stitch layers bridge a narrower student module (LN + linear in and out); equal widths need none', () => {
    const meta = createModularVit(vit({ width: 16, depth: 3, heads: 4 }), 3, 1);
    const student = createModularVit(vit({ width: 8, depth: 3 }), 3, 2);
    const x = images(2);
    const widths: number[][] = [];
    for (let i = 0; i < 3; i++) {
      const weights: Record<string, tf.Variable> = {};
      const m = stitched(student.module(i), { slot: i, last: 2, studentWidth: 8, metaWidth: 16, seed: 5, weights });
      widths.push(
        Object.keys(weights)
          .filter((k) => k.endsWith('.fc.w'))
          .map((k) => weights[k].shape[1]!),
      );
      const y = tf.tidy(() => runChain(hybridChain(meta, i, m), x).logits);
      assert.deepEqual(y.shape, [2, 3]);
      y.dispose();
      tf.dispose(Object.values(weights));
    }
    // slot 0: only out (8 → 16); the middle: in (16 → 8) and out; the last: only in.
    assert.deepEqual(widths, [[16], [8, 16], [8]]);
    const none: Record<string, tf.Variable> = {};
    const same = student.module(1);
    assert.equal(stitched(same, { slot: 1, last: 2, studentWidth: 8, metaWidth: 8, seed: 5, weights: none }), same);
    assert.equal(Object.keys(none).length, 0);
    x.dispose();
    meta.dispose();
    student.dispose();
  });
});

/** log softmax of a row, in float64. */
function logSoftmax(z: number[]): number[] {
  const m = Math.max(...z);
  const lse = m + Math.log(z.reduce((s, v) => s + Math.exp(v - m), 0));
  return z.map((v) => v - lse);
}

describe('m2mkd: the module loss', () => {
  test('(1 − α)·CE + α·τ²·KL(teacher ‖ student), batch means, against plain JS', () => {
    const zs = [
      [1.5, -0.3, 0.2],
      [0.1, 0.4, -2],
      [-1, 2, 0.5],
    ];
    const zt = [
      [2, 0, -1],
      [0.3, 0.3, 0.1],
      [-3, 1, 1.2],
    ];
    const y = [0, 2, 1];
    for (const [alpha, tau] of [
      [0.5, 1],
      [0.3, 2],
    ]) {
      let ce = 0;
      let kl = 0;
      zs.forEach((row, b) => {
        ce -= logSoftmax(row)[y[b]];
        const lq = logSoftmax(row.map((v) => v / tau));
        const lp = logSoftmax(zt[b].map((v) => v / tau));
        kl += lp.reduce((s, l, c) => s + Math.exp(l) * (l - lq[c]), 0);
      });
      const want = (1 - alpha) * (ce / 3) + alpha * tau * tau * (kl / 3);
      const s = tf.tensor2d(zs);
      const t = tf.tensor2d(zt);
      const labels = tf.tensor1d(y, 'int32');
      const got = m2mkdLoss(s, t, labels, { alpha, tau });
      const terms = m2mkdTerms(s, t, labels, { alpha, tau });
      assert.ok(Math.abs(got.dataSync()[0] - want) < 1e-5, `α ${alpha} τ ${tau}: ${got.dataSync()[0]} vs ${want}`);
      assert.ok(Math.abs(terms.ce.dataSync()[0] - (1 - alpha) * (ce / 3)) < 1e-5);
      tf.dispose([s, t, labels, got, terms.ce, terms.kd]);
    }
  });
});

async function shapesDb(): Promise<{ dir: string; db: string }> {
  const dir = workDir();
  writeShapes(dir, 20, 16);
  const file = path.join(dir, 'shapes.jsonl');
  const rows = fs
    .readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  fs.writeFileSync(file, rows.map((r, i) => JSON.stringify({ ...r, split: i % 4 === 0 ? 'test' : 'train' })).join('\n') + '\n');
  const db = path.join(dir, 'distill.db');
  const store = Store.open(db);
  try {
    await importFile(store, loadTaskFile(path.join(REPO_ROOT, 'prompts', 'shapes.md')), file);
  } finally {
    store.close();
  }
  return { dir, db };
}

describe('m2mkd: every phase', () => {
  test('meta model, hybrid teachers, incubation, module distillation, assembly, end to end: a loadable ViT; a rerun resumes', async () => {
    const { dir, db } = await shapesDb();
    const store = Store.open(db);
    const ds = loadDataset(store, store.findTask('shapes')!, { supervised: true, targets: { calibrate: false } });
    store.close();
    const base = { batchSize: 8, lr: 0.005, weightDecay: 0.05, clip: 1, seed: 1, patience: 0 };
    const teacherDir = path.join(dir, 'teacher');
    await train(ds, vit({ width: 16, heads: 4 }), { ...base, epochs: 2, distill: ['ce'], settings: { ceWeight: 1 } }, teacherDir);

    const out = path.join(dir, 'student');
    const config: M2mkdConfig = {
      modules: 2,
      student: vit({ width: 8, depth: 2 }),
      featureTeacher: teacherDir,
      metaEpochs: 1,
      incubateEpochs: 1,
      moduleEpochs: 1,
      epochs: 1,
      ...base,
      loss: { alpha: 0.5, tau: 1 },
      distill: ['ce', 'kd'],
    };
    const lines: string[] = [];
    const r = await runM2mkd(ds, config, out, { log: (l) => lines.push(l) });

    const acc = (x: number | null) => x !== null && x >= 0 && x <= 1;
    assert.ok(acc(r.teacher.accuracy) && acc(r.meta.accuracy) && acc(r.assembled.accuracy) && acc(r.e2e.test.accuracy));
    assert.equal(r.hybrid_teacher.plain.length, 2);
    assert.ok(r.hybrid_teacher.plain.every(acc) && r.hybrid_teacher.incubated!.every(acc));
    assert.equal(r.incubate.length, 2);
    assert.equal(r.modules.length, 2);
    for (const m of r.modules) {
      assert.equal(m.history.length, 1);
      assert.deepEqual(Object.keys(m.history[0].terms).sort(), ['ce', 'kd']);
      assert.ok(Number.isFinite(m.history[0].loss) && m.history[0].loss > 0);
    }
    assert.equal(r.e2e.history.length, 1);
    assert.ok(
      lines.some((l) => /hybrid teacher \(meta \+ teacher module i\): [\d.]+%, [\d.]+%/.test(l)),
      lines.join('\n'),
    );
    for (const phase of ['meta', 'teacher', 'incubate-0', 'incubate-1', 'module-0', 'module-1']) {
      assert.ok(fs.existsSync(path.join(out, 'm2mkd', phase, 'phase.json')), phase);
    }

    // The student is a plain saved ViT: load it, evaluate it as eval.ts does.
    const loaded = await loadModel(out);
    assert.deepEqual(loaded.spec.student, config.student);
    assert.ok(!Object.keys(loaded.student.weights).some((k) => k.startsWith('stitch')), 'no stitch layers in the student');
    loaded.student.dispose();
    const s2 = Store.open(db);
    try {
      const m = await loadModelForTask(s2, out);
      const report = await evaluateSplit(m, 'test');
      m.model.student.dispose();
      assert.equal(report.accuracy, r.e2e.test.accuracy);
    } finally {
      s2.close();
    }

    // A rerun skips the finished phases (their records come back unchanged) and other settings are refused.
    const again = await runM2mkd(ds, config, out, {});
    assert.deepEqual(again.modules, r.modules);
    assert.deepEqual(again.meta, r.meta);
    assert.deepEqual(again.e2e.history, r.e2e.history);
    await assert.rejects(
      runM2mkd(ds, { ...config, moduleEpochs: 2 }, out, {}),
      /module-0.*phase\.json: this phase was run with other settings/,
    );
  });
});

describe('m2mkd: CLI', () => {
  test('a missing database, and a teacher that is not a ViT, are one-line errors', async () => {
    const dir = workDir();
    const missing = await runScript('m2mkd', ['--db', path.join(dir, 'none.db'), '--feature-teacher', dir, '--out', path.join(dir, 'o')]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^error: .*none\.db: no such database/);
    assert.ok(!fs.existsSync(path.join(dir, 'none.db')));

    const { db } = await shapesDb();
    const cnnDir = path.join(dir, 'cnn');
    const s = createStudent({ kind: 'mlp', numClasses: 3, inputShape: [16, 16, 1], hidden: [4] }, 1);
    await saveWeights(
      cnnDir,
      {
        student: s.spec,
        task: 'shapes',
        labels: ['circle', 'square', 'triangle'],
        preprocess: { input: 'image', image: { height: 16, width: 16, channels: 1, mean: 0, std: 1 } },
      },
      s.weights,
    );
    s.dispose();
    const r = await runScript('m2mkd', ['--db', db, '--feature-teacher', cnnDir, '--out', path.join(dir, 'o'), '--backend', TRAIN_BACKEND]);
    assert.equal(r.code, 1, r.stderr);
    const errors = r.stderr.split('\n').filter((l) => l.startsWith('error: '));
    assert.deepEqual(errors, ['error: --feature-teacher: m2mkd needs a ViT, this is a mlp']);
    assert.ok(!fs.existsSync(path.join(dir, 'o')), 'nothing written');
  });
});
