/**
 * DearKD (src/train/distill/dearkd.ts) and the ViT's relative-position bias (MHCA, models/vit.ts):
 * the stage-1 terms against a plain-JS computation of their formula, the stage switch, the bias
 * against a plain-JS table lookup, and a real train() on shapes with a CNN feature teacher.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { writeShapes } from '../src/datasets/shapes.ts';
import { DistilleryError, SettingError } from '../src/errors.ts';
import { loadModel } from '../src/infer/model.ts';
import { Store } from '../src/store/store.ts';
import { selectBackend, tf } from '../src/train/backend.ts';
import { loadDataset } from '../src/train/data.ts';
import { mapToGrid, stage1Epochs } from '../src/train/distill/dearkd.ts';
import { createDistillers, distillFlags, type Batch, type Distiller } from '../src/train/distill/index.ts';
import { loadWeights, saveWeights } from '../src/train/io.ts';
import { crossEntropy } from '../src/train/losses.ts';
import { createStudent, studentFromWeights, type CnnSpec, type Student, type VitSpec } from '../src/train/models/index.ts';
import { relativePositionBias } from '../src/train/models/vit.ts';
import { train } from '../src/train/trainer.ts';
import { ingestLogits } from '../src/whitebox/ingest.ts';
import { importFile, loadTaskFile, REPO_ROOT, workDir, writeJsonl } from './helpers.ts';
import { TRAIN_BACKEND } from './train-backend.ts';

before(async () => {
  await selectBackend(TRAIN_BACKEND);
});

const vit = (o: Partial<VitSpec> = {}): VitSpec => ({
  kind: 'vit',
  numClasses: 3,
  inputShape: [8, 8, 1],
  patchSize: 4,
  width: 4,
  depth: 2,
  heads: 2,
  mlpRatio: 2,
  ...o,
});
// On 8×8: stage0 8×8×3, stage1 4×4×3 (after the first pool), stage2 2×2×5 (the token grid of patch 4).
const cnn = (o: Partial<CnnSpec> = {}): CnnSpec => ({
  kind: 'cnn',
  numClasses: 3,
  inputShape: [8, 8, 1],
  channels: [3, 3, 5],
  fc: 8,
  ...o,
});

const close = (a: number, b: number, tol = 1e-5) => Math.abs(a - b) <= tol * Math.max(1, Math.abs(b));

describe('relative-position bias (MHCA)', () => {
  test('B[h, i, j] is the table entry of patch i′s offset from patch j, 0 next to the prefix tokens', () => {
    const [gh, gw, prefix, heads] = [2, 3, 1, 2];
    const r = (2 * gh - 1) * (2 * gw - 1);
    const table = Array.from({ length: heads }, (_, h) => Array.from({ length: r }, (_, k) => h * 100 + k + 1));
    const bias = tf.tidy(() => relativePositionBias(tf.tensor2d(table), gh, gw, prefix).arraySync());
    const n = prefix + gh * gw;
    assert.deepEqual([bias.length, bias[0].length, bias[0][0].length], [heads, n, n]);
    for (let h = 0; h < heads; h++)
      for (let a = 0; a < n; a++)
        for (let b = 0; b < n; b++) {
          let want = 0;
          if (a >= prefix && b >= prefix) {
            const [i, j] = [a - prefix, b - prefix];
            const [dy, dx] = [Math.floor(i / gw) - Math.floor(j / gw), (i % gw) - (j % gw)];
            want = table[h][(dy + gh - 1) * (2 * gw - 1) + dx + gw - 1];
          }
          assert.equal(bias[h][a][b], want, `head ${h}, tokens ${a}, ${b}`);
        }
    // Its gradient: d Σ(B ⊙ R) / d table[h, r] is the sum of R over the patch pairs at offset r.
    const R = Array.from({ length: heads }, (_, h) =>
      Array.from({ length: n }, (_, a) => Array.from({ length: n }, (_, b) => h + a * 0.1 + b * 0.01)),
    );
    const grad = tf.tidy(() => {
      const t = tf.tensor2d(table);
      return tf
        .grad((x: tf.Tensor) => tf.sum(tf.mul(relativePositionBias(x as tf.Tensor2D, gh, gw, prefix), tf.tensor3d(R))))(t)
        .arraySync() as number[][];
    });
    const want = table.map((row) => row.map(() => 0));
    for (let h = 0; h < heads; h++)
      for (let i = 0; i < gh * gw; i++)
        for (let j = 0; j < gh * gw; j++) {
          const [dy, dx] = [Math.floor(i / gw) - Math.floor(j / gw), (i % gw) - (j % gw)];
          want[h][(dy + gh - 1) * (2 * gw - 1) + dx + gw - 1] += R[h][prefix + i][prefix + j];
        }
    for (let h = 0; h < heads; h++) for (let k = 0; k < r; k++) assert.ok(close(grad[h][k], want[h][k]), `gradient of table[${h}, ${k}]`);
  });

  test('its tables: shape, zero start = plain attention, a gradient, saved and loaded; bad k refused', async () => {
    const spec = vit({ inputShape: [16, 16, 1], depth: 3, relPosBlocks: 2 });
    const withBias = createStudent(spec, 5);
    const plain = createStudent(vit({ inputShape: [16, 16, 1], depth: 3 }), 5);
    const names = Object.keys(withBias.weights).filter((k) => k.includes('rel_pos'));
    assert.deepEqual(names.sort(), ['blocks.0.attn.rel_pos', 'blocks.1.attn.rel_pos'], 'only the first k blocks');
    assert.deepEqual(withBias.weights['blocks.0.attn.rel_pos'].shape, [2, 7 * 7], '[heads, (2·4−1)²] on a 4×4 grid');
    assert.equal(Object.keys(withBias.weights).length, Object.keys(plain.weights).length + 2, 'nothing else is added');

    // At timm's initialisation (σ 0.02) attention barely reaches the logits: scale it up in both, so that a change shows.
    for (const s of [withBias, plain])
      for (const [k, v] of Object.entries(s.weights)) if (/attn\.(qkv|proj)\.w$|^head\.w$/.test(k)) v.assign(tf.mul(v, 20));
    const x = tf.randomNormal([4, 16, 16, 1], 0, 1, 'float32', 3) as tf.Tensor4D;
    const logits = (s: Student) => tf.tidy(() => Array.from(s.forward(x).logits.dataSync()));
    const [a, b] = [logits(withBias), logits(plain)];
    assert.deepEqual(a, b, 'zero-initialised tables leave the attention as it was');

    const table = withBias.weights['blocks.1.attn.rel_pos'];
    const { value, grads } = tf.variableGrads(
      () => crossEntropy(withBias.forward(x, { training: true }).logits, tf.tensor1d([0, 1, 2, 0], 'int32')),
      [table],
    );
    const g = tf.tidy(() => tf.sum(tf.abs(grads[table.name])).dataSync()[0]);
    assert.ok(g > 0, `the table gets a gradient (|g| = ${g})`);
    tf.dispose([value, ...Object.values(grads)]);

    table.assign(tf.randomNormal(table.shape, 0, 1, 'float32', 9));
    const moved = logits(withBias);
    const change = Math.max(...moved.map((v, i) => Math.abs(v - a[i])));
    assert.ok(change > 1e-2, `a non-zero table changes the logits (by up to ${change})`);
    const dir = workDir();
    await saveWeights(dir, { student: spec, task: 'shapes', labels: ['a', 'b', 'c'] }, withBias.weights);
    const loaded = await loadWeights<{ student: VitSpec }>(dir);
    assert.equal(loaded.spec.student.relPosBlocks, 2);
    const again = studentFromWeights(loaded.spec.student, loaded.tensors);
    tf.dispose(Object.values(loaded.tensors));
    assert.deepEqual(logits(again), moved, 'the saved model loads its tables back');
    tf.dispose(x);
    for (const s of [withBias, plain, again]) s.dispose();

    assert.throws(() => createStudent(vit({ relPosBlocks: 3 }), 1), /vit relPosBlocks must be a whole number from 0 to depth 2, got 3/);
  });
});

/** A plain-JS LayerNorm over the last axis, γ = g, β = b. */
function layerNormJs(v: number[], g: number[], b: number[]): number[] {
  const mu = v.reduce((s, x) => s + x, 0) / v.length;
  const varr = v.reduce((s, x) => s + (x - mu) ** 2, 0) / v.length;
  return v.map((x, i) => ((x - mu) / Math.sqrt(varr + 1e-5)) * g[i] + b[i]);
}

function kdJs(student: number[][], teacher: number[][], T: number): number {
  const softmax = (z: number[]) => {
    const m = Math.max(...z);
    const e = z.map((x) => Math.exp(x - m));
    const s = e.reduce((a, x) => a + x, 0);
    return e.map((x) => x / s);
  };
  const kl = student.map((zs, r) => {
    const p = softmax(teacher[r].map((x) => x / T));
    const q = softmax(zs.map((x) => x / T));
    return p.reduce((a, pi, i) => a + pi * Math.log(pi / q[i]), 0);
  });
  return (T * T * kl.reduce((a, x) => a + x, 0)) / kl.length;
}

describe('dearkd: terms', () => {
  const teacher = { dir: '/teachers/cnn', model: createStudent(cnn(), 11) };

  test('stage 1: w_kd·T²·KL + β·MSE(LN(H_s W + b), pooled CNN map), against plain JS; stage 2: nothing', () => {
    const spec = vit();
    const [beta, wKd, T] = [0.7, 0.3, 2];
    const distillers = createDistillers(
      ['ce', 'dearkd'],
      { ceWeight: 1, dearkdWeight: beta, dearkdKdWeight: wKd, kdTemperature: T, dearkdBlock: 1, dearkdTeacherStage: 1 },
      { student: spec, seed: 1, featureTeacher: teacher },
    );
    const d = distillers.find((x) => x.name === 'dearkd')!;
    assert.deepEqual(Object.keys(d.weights).sort(), ['proj.dearkd.b', 'proj.dearkd.ln.b', 'proj.dearkd.ln.g', 'proj.dearkd.w']);
    assert.deepEqual(d.weights['proj.dearkd.w'].shape, [4, 3], 'student width → the map’s channels');
    // Move the aligner off its initialisation, so that every part of the formula counts.
    for (const [k, v] of Object.entries(d.weights)) v.assign(tf.randomNormal(v.shape, k.endsWith('.g') ? 1 : 0, 0.5, 'float32', k.length));

    const student = createStudent(spec, 2);
    const x = tf.randomNormal([3, 8, 8, 1], 0, 1, 'float32', 4);
    const teacherLogits = [
      [1, 0, -1],
      [0, 2, 0.5],
      [-1, 0, 3],
    ];
    const batch: Batch = {
      idx: [0, 1, 2],
      x,
      teacherLogits: tf.tensor2d(teacherLogits),
      featureTeacher: tf.tidy(() => teacher.model.forward(x, { collect: true })),
      epoch: 1,
      epochs: 4,
    };
    assert.deepEqual(d.needsAt!({ epoch: 1, epochs: 4 }), { teacherLogits: true, featureTeacher: true, studentFeatures: true });
    const prepared = d.prepare!(batch) as tf.Tensor;
    const got = tf.tidy(() => {
      const out = student.forward(x, { collect: true });
      const terms = d.terms(out, batch, prepared);
      return {
        names: Object.keys(terms),
        kd: terms['dearkd-kd'].dataSync()[0],
        feature: terms['dearkd-feature'].dataSync()[0],
        logits: out.logits.arraySync() as number[][],
        hidden: out.features!['block1.hidden'].arraySync() as number[][][],
      };
    });
    assert.deepEqual(got.names, ['dearkd-kd', 'dearkd-feature']);

    // The reference: the 4×4 map averaged over 2×2 cells to the 2×2 token grid, read row by row.
    const map = batch.featureTeacher!.features!.stage1.arraySync() as number[][][][];
    const [W, b, g, lb] = ['w', 'b', 'ln.g', 'ln.b'].map((k) => d.weights[`proj.dearkd.${k}`].arraySync()) as [
      number[][],
      number[],
      number[],
      number[],
    ];
    let se = 0;
    let count = 0;
    for (let n = 0; n < 3; n++)
      for (let p = 0; p < 4; p++) {
        const [gy, gx] = [Math.floor(p / 2), p % 2];
        const target = [0, 1, 2].map(
          (c) =>
            (map[n][2 * gy][2 * gx][c] +
              map[n][2 * gy][2 * gx + 1][c] +
              map[n][2 * gy + 1][2 * gx][c] +
              map[n][2 * gy + 1][2 * gx + 1][c]) /
            4,
        );
        const h = got.hidden[n][1 + p]; // after the class token
        const lin = [0, 1, 2].map((c) => h.reduce((s, hv, k) => s + hv * W[k][c], 0) + b[c]);
        const aligned = layerNormJs(lin, g, lb);
        for (let c = 0; c < 3; c++) {
          se += (aligned[c] - target[c]) ** 2;
          count++;
        }
      }
    assert.ok(close(got.feature, (beta * se) / count), `feature ${got.feature} vs ${(beta * se) / count}`);
    assert.ok(close(got.kd, wKd * kdJs(got.logits, teacherLogits, T)), `kd ${got.kd} vs ${wKd * kdJs(got.logits, teacherLogits, T)}`);

    // Stage 2 (epochs 2, 3 of 4 with r = 0.5): no terms, no teacher, no features, nothing prepared.
    const late: Batch = { idx: [0, 1, 2], x, epoch: 2, epochs: 4 };
    assert.deepEqual(d.needsAt!({ epoch: 2, epochs: 4 }), {});
    assert.equal(d.prepare!(late), undefined);
    assert.deepEqual(
      tf.tidy(() => Object.keys(d.terms(student.forward(x), late, undefined))),
      [],
    );
    assert.throws(() => d.terms({ logits: tf.zeros([3, 3]) as tf.Tensor2D }, { idx: [], x }, undefined), /no training progress/);

    tf.dispose([x, prepared, batch.teacherLogits!, batch.featureTeacher!]);
    student.dispose();
    for (const z of distillers) z.dispose();
  });

  test('the map reaches the token grid: exact by default, mean over whole cells, else bilinear', () => {
    const spec = vit();
    const [d] = createDistillers(['ce', 'dearkd'], { ceWeight: 0 }, { student: spec, seed: 1, featureTeacher: teacher });
    assert.equal((d.key() as { teacherStage: number }).teacherStage, 2, 'stage2 is 2×2, the token grid');
    assert.deepEqual(d.weights['proj.dearkd.w'].shape, [4, 5]);
    assert.equal((d.key() as { block: number }).block, 0, 'the middle block ⌊(depth − 1)/2⌋');
    d.dispose();

    const f = tf.tensor4d(
      Array.from({ length: 36 }, (_, i) => i),
      [1, 6, 6, 1],
    );
    const cells = tf.tidy(() => Array.from(mapToGrid(f, 3, 3).dataSync()));
    assert.deepEqual(cells, [3.5, 5.5, 7.5, 15.5, 17.5, 19.5, 27.5, 29.5, 31.5]);
    const resized = tf.tidy(() => mapToGrid(f, 4, 4).shape);
    assert.deepEqual(resized, [1, 16, 1]);
    f.dispose();

    assert.deepEqual(
      [stage1Epochs(0.5, 4), stage1Epochs(0.1, 4), stage1Epochs(0, 4), stage1Epochs(1, 3), stage1Epochs(0.5, 3)],
      [2, 1, 0, 3, 2],
    );
  });

  test('errors: no or non-convolutional teacher, a CNN student, ce missing, kd alongside, bad indices and fractions', async () => {
    const ctx = { student: vit(), seed: 1, featureTeacher: teacher };
    assert.throws(() => createDistillers(['ce', 'dearkd'], {}, { student: vit(), seed: 1 }), /dearkd: needs --feature-teacher DIR, a CNN/);
    const vitTeacher = { dir: '/teachers/vit', model: createStudent(vit(), 3) };
    assert.throws(
      () => createDistillers(['ce', 'dearkd'], {}, { ...ctx, featureTeacher: vitTeacher }),
      (e: Error) => e instanceof DistilleryError && /dearkd needs a CNN's feature maps, and this vit has none/.test(e.message),
    );
    vitTeacher.model.dispose();
    const wide = { dir: '/teachers/wide', model: createStudent(cnn({ inputShape: [16, 16, 1] }), 3) };
    assert.throws(() => createDistillers(['ce', 'dearkd'], {}, { ...ctx, featureTeacher: wide }), /on the student's 8×8×1 images/);
    wide.model.dispose();
    assert.throws(() => createDistillers(['ce', 'dearkd'], {}, { ...ctx, student: cnn() }), /needs a ViT student, not cnn/);
    assert.throws(
      () => createDistillers(['dearkd'], {}, ctx),
      (e: Error) => e instanceof SettingError && e.setting === 'distill' && /stage 2 trains on CE alone; add ce/.test(e.message),
    );
    assert.throws(() => createDistillers(['ce', 'kd', 'dearkd'], {}, ctx), /dearkd has its own KD/);
    assert.throws(
      () => createDistillers(['ce', 'dearkd'], { dearkdTeacherStage: 7 }, ctx),
      (e: Error) => e instanceof SettingError && e.setting === 'dearkdTeacherStage' && /stage0, stage1, stage2/.test(e.message),
    );
    assert.throws(
      () => createDistillers(['ce', 'dearkd'], { dearkdBlock: 2 }, ctx),
      (e: Error) => e instanceof SettingError && e.setting === 'dearkdBlock' && /blocks 0\.\.1/.test(e.message),
    );
    // β = 0: KD in stage 1 only, no teacher needed; r = 0: off.
    const [, kdOnly] = createDistillers(['ce', 'dearkd'], { dearkdWeight: 0 }, { student: vit(), seed: 1 });
    assert.deepEqual(kdOnly.needs, { teacherLogits: true, featureTeacher: false, studentFeatures: false });
    assert.deepEqual(
      createDistillers(['ce', 'dearkd'], { dearkdStage1: 0 }, ctx).map((x: Distiller) => x.name),
      ['ce'],
    );
    const stage1 = distillFlags().find((f) => f.key === 'dearkdStage1')!.flag;
    assert.equal(stage1.parse('0.25'), 0.25);
    assert.throws(() => stage1.parse('1.5'), /a fraction from 0 to 1/);
    assert.throws(
      () =>
        distillFlags()
          .find((f) => f.key === 'dearkdBlock')!
          .flag.parse('-1'),
      /a block index/,
    );
  });
});

describe('dearkd: train()', () => {
  test('a ViT with MHCA learns from stored logits and a CNN map in stage 1, from CE alone in stage 2', async () => {
    const dir = workDir();
    writeShapes(dir, 10, 16);
    const store = Store.open(path.join(dir, 'distill.db'));
    const task = loadTaskFile(path.join(REPO_ROOT, 'prompts', 'shapes.md'));
    const rows = (await import('node:fs')).readFileSync(path.join(dir, 'shapes.jsonl'), 'utf8').trim().split('\n');
    const items = rows.map((l) => JSON.parse(l) as { id: string; label: string });
    const cnnSpec = cnn({ inputShape: [16, 16, 1], channels: [4, 4, 6] });
    const teacherDir = path.join(dir, 'cnn');
    const t = createStudent(cnnSpec, 1);
    await saveWeights(teacherDir, { student: cnnSpec, task: 'shapes', labels: task.labels }, t.weights);
    t.dispose();
    try {
      await importFile(store, task, path.join(dir, 'shapes.jsonl'));
      // A keyword teacher: right on every item, with some spread.
      const logits = items.map((r) => ({ id: r.id, logits: task.labels.map((l) => (l === r.label ? 2 : 0)) }));
      await ingestLogits({ store, task, teacher: 'oracle', input: writeJsonl(dir, 'logits.jsonl', logits), format: { kind: 'dense32' } });
      const ds = loadDataset(store, store.findTask('shapes')!, { supervised: false, targets: { calibrate: false } });
      const spec = vit({ inputShape: [16, 16, 1], width: 8, relPosBlocks: 1 });
      const out = path.join(dir, 'student');
      const res = await train(
        ds,
        spec,
        {
          epochs: 2,
          batchSize: 8,
          lr: 0.005,
          weightDecay: 0,
          warmup: 0,
          seed: 1,
          clip: 1,
          patience: 0,
          distill: ['ce', 'dearkd'],
          settings: { ceWeight: 1, dearkdStage1: 0.5 },
          featureTeacher: teacherDir,
        },
        out,
      );
      assert.deepEqual(Object.keys(res.history[0].terms), ['ce', 'dearkd-kd', 'dearkd-feature'], 'stage 1');
      assert.deepEqual(Object.keys(res.history[1].terms), ['ce'], 'stage 2: CE alone');
      for (const h of res.history) {
        const sum = Object.values(h.terms).reduce((a, x) => a + x, 0);
        assert.ok(Math.abs(h.loss - sum) < 1e-5, `epoch ${h.epoch}: the terms sum to the loss (${h.loss} vs ${sum})`);
      }
      assert.ok(res.history[0].terms['dearkd-feature'] > 0);
      const saved = await loadModel(out);
      assert.equal((saved.spec.student as VitSpec).relPosBlocks, 1);
      assert.ok(saved.student.weights['blocks.0.attn.rel_pos'], 'the MHCA table is part of the model');
      assert.ok(!Object.keys(saved.student.weights).some((k) => k.startsWith('proj.')), 'the aligner is not');
      saved.student.dispose();
      const ck = await loadWeights(path.join(out, 'checkpoint'));
      assert.ok(ck.tensors['proj.dearkd.w'], 'the checkpoint keeps the aligner');
      tf.dispose(Object.values(ck.tensors));
    } finally {
      store.close();
    }
  });
});
