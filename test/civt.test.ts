/**
 * CivT (Ren et al. 2022): the involution op and student (forward against plain JS, gradients
 * against finite differences and against cpu), the ViT with one distillation token per teacher
 * (save/load, old one-token models unchanged), the civt loss against a plain-JS formula, its
 * refusal of a token count that is not the teacher count, and a real train() with two teachers.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { before, test } from 'node:test';
import { writeShapes } from '../src/datasets/shapes.ts';
import { SettingError } from '../src/errors.ts';
import { loadModel } from '../src/infer/model.ts';
import { predictBatches, ruleOf } from '../src/infer/predict.ts';
import { mulberry32 } from '../src/random.ts';
import { Store } from '../src/store/store.ts';
import { selectBackend, tf } from '../src/train/backend.ts';
import { loadDataset } from '../src/train/data.ts';
import { civtPredict } from '../src/train/distill/civt.ts';
import { createDistillers, distillerNames, type Batch } from '../src/train/distill/index.ts';
import { loadWeights, saveWeights } from '../src/train/io.ts';
import { deitPredict } from '../src/train/losses.ts';
import { involution2d } from '../src/train/models/involution.ts';
import {
  countParams,
  createStudent,
  studentFromWeights,
  type InvolutionSpec,
  type StudentSpec,
  type VitSpec,
} from '../src/train/models/index.ts';
import { train } from '../src/train/trainer.ts';
import { ingestLogits } from '../src/whitebox/ingest.ts';
import { importFile, loadTaskFile, REPO_ROOT, tmpDir, workDir, writeJsonl } from './helpers.ts';
import { TRAIN_BACKEND } from './train-backend.ts';

before(async () => {
  await selectBackend(TRAIN_BACKEND);
});

const rand = (n: number, seed: number) => {
  const r = mulberry32(seed);
  return Float32Array.from({ length: n }, () => 2 * r() - 1);
};

/** Involution in plain JS, straight from the formula (zero padding, g(c) = ⌊c / (C/G)⌋). */
function involutionJs(x: Float32Array, ker: Float32Array, [b, h, w, c]: number[], k: number, groups: number): Float64Array {
  const out = new Float64Array(b * h * w * c);
  const p = (k - 1) / 2;
  const gc = c / groups;
  for (let n = 0; n < b; n++)
    for (let i = 0; i < h; i++)
      for (let j = 0; j < w; j++)
        for (let ch = 0; ch < c; ch++) {
          const g = Math.floor(ch / gc);
          let s = 0;
          for (let u = 0; u < k; u++)
            for (let v = 0; v < k; v++) {
              const [ii, jj] = [i + u - p, j + v - p];
              if (ii < 0 || ii >= h || jj < 0 || jj >= w) continue;
              s += ker[((n * h + i) * w + j) * groups * k * k + g * k * k + u * k + v] * x[((n * h + ii) * w + jj) * c + ch];
            }
          out[((n * h + i) * w + j) * c + ch] = s;
        }
  return out;
}

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

test(`involution2d on ${TRAIN_BACKEND}: the plain-JS formula, for K = 3 and 5, one and several groups`, () => {
  for (const [shape, k, groups] of [
    [[2, 5, 6, 4], 3, 2],
    [[1, 4, 4, 3], 3, 1],
    [[1, 6, 5, 4], 5, 4],
  ] as Array<[number[], number, number]>) {
    const [b, h, w, c] = shape;
    const x = rand(b * h * w * c, 1);
    const ker = rand(b * h * w * groups * k * k, 2);
    const got = tf.tidy(() =>
      involution2d(
        tf.tensor4d(x, shape as [number, number, number, number]),
        tf.tensor4d(ker, [b, h, w, groups * k * k]),
        k,
        groups,
      ).dataSync(),
    );
    const diff = maxAbsDiff(got, involutionJs(x, ker, shape, k, groups));
    assert.ok(diff < 1e-5, `K ${k}, G ${groups}: differs from the formula by ${diff}`);
  }
});

test(`involution2d on ${TRAIN_BACKEND}: gradients of x and of the kernels equal central finite differences`, () => {
  const shape: [number, number, number, number] = [1, 4, 5, 4];
  const [b, h, w, c] = shape;
  const [k, groups] = [3, 2];
  const x0 = rand(b * h * w * c, 3);
  const ker0 = rand(b * h * w * groups * k * k, 4);
  const r = tf.tensor4d(rand(b * h * w * c, 5), shape);
  // L = Σ r ⊙ involution(x, H): bilinear, so a central difference is exact up to float32 rounding.
  const loss = (x: tf.Tensor, ker: tf.Tensor) =>
    tf.sum(tf.mul(r, involution2d(x as tf.Tensor4D, ker as tf.Tensor4D, k, groups))) as tf.Scalar;
  const [dx, dk] = tf.tidy(() =>
    tf
      .grads(loss)([tf.tensor4d(x0, shape), tf.tensor4d(ker0, [b, h, w, groups * k * k])])
      .map((g) => g.dataSync()),
  );
  const eps = 0.05;
  const fd = (which: 0 | 1, i: number) => {
    const at = (delta: number) =>
      tf.tidy(() => {
        const x = Float32Array.from(x0);
        const ker = Float32Array.from(ker0);
        (which === 0 ? x : ker)[i] += delta;
        return loss(tf.tensor4d(x, shape), tf.tensor4d(ker, [b, h, w, groups * k * k])).dataSync()[0];
      });
    return (at(eps) - at(-eps)) / (2 * eps);
  };
  for (let i = 0; i < x0.length; i += 7) assert.ok(Math.abs(dx[i] - fd(0, i)) < 2e-3, `dL/dx[${i}] ${dx[i]} vs ${fd(0, i)}`);
  for (let i = 0; i < ker0.length; i += 11) assert.ok(Math.abs(dk[i] - fd(1, i)) < 2e-3, `dL/dH[${i}] ${dk[i]} vs ${fd(1, i)}`);
  r.dispose();
});

const invSpec: InvolutionSpec = {
  kind: 'involution',
  numClasses: 3,
  inputShape: [16, 16, 1],
  stem: 8,
  channels: [8, 16],
  groupChannels: 4,
};

test(`the involution student on ${TRAIN_BACKEND}: the same loss and gradients as on cpu, and finite differences agree`, async (t) => {
  const x = rand(4 * 16 * 16, 6);
  const y = [0, 1, 2, 1];
  const gradsOn = async (backend: 'cpu' | typeof TRAIN_BACKEND) => {
    await selectBackend(backend);
    const s = createStudent(invSpec, 7);
    const xs = tf.tensor4d(x, [4, 16, 16, 1]);
    const labels = tf.oneHot(tf.tensor1d(y, 'int32'), 3);
    const f = () => tf.losses.softmaxCrossEntropy(labels, s.forward(xs).logits) as tf.Scalar;
    const { value, grads } = tf.variableGrads(f);
    const out = {
      loss: value.dataSync()[0],
      grads: Object.fromEntries(Object.entries(s.weights).map(([n, v]) => [n, grads[v.name].dataSync()])),
      // Every weight nudged along its gradient g: (L(θ + εg) − L(θ − εg)) / 2ε ≈ |g|², a derivative
      // large enough to survive float32 and the ReLU/max-pool kinks that a single coordinate can sit on.
      directional: (() => {
        const base = Object.fromEntries(Object.entries(s.weights).map(([n, v]) => [n, v.clone()]));
        const sq = Object.values(s.weights).reduce((a, v) => a + tf.tidy(() => tf.sum(tf.square(grads[v.name])).dataSync()[0]), 0);
        const eps = 1e-3 / Math.sqrt(sq);
        const at = (d: number) => {
          for (const [n, v] of Object.entries(s.weights)) v.assign(tf.tidy(() => tf.add(base[n], tf.mul(grads[v.name], d))));
          return tf.tidy(() => f().dataSync()[0]);
        };
        const fd = (at(eps) - at(-eps)) / (2 * eps);
        for (const [n, v] of Object.entries(s.weights)) v.assign(base[n]);
        tf.dispose(Object.values(base));
        return { fd, analytic: sq };
      })(),
    };
    tf.dispose([value, ...Object.values(grads), xs, labels]);
    s.dispose();
    return out;
  };
  const ref = await gradsOn('cpu');
  const got = await gradsOn(TRAIN_BACKEND);
  await selectBackend(TRAIN_BACKEND);
  assert.ok(Math.abs(ref.loss - got.loss) < 1e-4, `loss ${got.loss} vs cpu ${ref.loss}`);
  assert.deepEqual(Object.keys(got.grads).sort(), Object.keys(ref.grads).sort());
  for (const [name, g] of Object.entries(ref.grads)) {
    const scale = Math.max(1e-3, ...Array.from(g, Math.abs));
    const diff = maxAbsDiff(got.grads[name], g);
    assert.ok(diff < 1e-3 * scale, `${name}: gradient differs from cpu's by ${diff} (scale ${scale})`);
    assert.ok(
      Array.from(g).some((v) => v !== 0),
      `${name}: no gradient reaches it`,
    );
  }
  const { fd, analytic } = got.directional;
  assert.ok(Math.abs(analytic - fd) < 0.02 * analytic, `along the gradient: |g|² ${analytic}, finite difference ${fd}`);
  t.diagnostic(`along the gradient: |g|² ${analytic.toExponential(4)}, finite difference ${fd.toExponential(4)}`);
});

test(`the involution student overfits 16 items on ${TRAIN_BACKEND}`, async () => {
  const s = createStudent(invSpec, 8);
  const xs = tf.tensor4d(rand(16 * 16 * 16, 9), [16, 16, 16, 1]);
  const labels = tf.oneHot(
    tf.tensor1d(
      Array.from({ length: 16 }, (_, i) => i % 3),
      'int32',
    ),
    3,
  );
  const opt = tf.train.adam(0.01);
  const ce = () => tf.losses.softmaxCrossEntropy(labels, s.forward(xs, { training: true }).logits) as tf.Scalar;
  const start = tf.tidy(() => ce().dataSync()[0]);
  let end = start;
  for (let step = 1; step <= 200 && end >= 0.1 * start; step++) {
    const loss = opt.minimize(ce, true, Object.values(s.weights))!;
    if (step % 10 === 0) end = loss.dataSync()[0];
    loss.dispose();
  }
  assert.ok(end < 0.1 * start, `cross-entropy ${start} → ${end}`);
  opt.dispose();
  tf.dispose([xs, labels]);
  s.dispose();
});

const vit: VitSpec = { kind: 'vit', numClasses: 3, inputShape: [8, 8, 1], patchSize: 4, width: 8, depth: 1, heads: 2, mlpRatio: 2 };

test('save/load round trip: the involution student and a ViT with two distillation tokens give the same outputs', async () => {
  for (const spec of [invSpec, { ...vit, distillTokens: 2 }] as StudentSpec[]) {
    const s = createStudent(spec, 11);
    const dir = tmpDir();
    await saveWeights(dir, s.spec, s.weights);
    const { spec: loaded, tensors } = await loadWeights<StudentSpec>(dir);
    assert.deepEqual(loaded, spec);
    const again = studentFromWeights(loaded, tensors);
    tf.dispose(Object.values(tensors));
    assert.equal(countParams(again), countParams(s));
    const [h, w, c] = (spec as InvolutionSpec | VitSpec).inputShape;
    const x = tf.tensor4d(rand(2 * h * w * c, 12), [2, h, w, c]);
    const [a, b] = tf.tidy(() =>
      [s, again].map((m) => {
        const o = m.forward(x);
        return tf.concat([o.logits, ...(o.distLogitsAll ?? [])], 1);
      }),
    );
    assert.equal(a.shape[1], spec.kind === 'vit' ? 9 : 3, 'a class head and one head per token');
    assert.ok(tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]) <= 1e-6, `${spec.kind}: outputs differ after a round trip`);
    tf.dispose([a, b, x]);
    s.dispose();
    again.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a one-token ViT keeps DeiT’s spec and weights (dist_token [1,1,D], head_dist), and distillTokens 1 is the same model', () => {
  const old = createStudent({ ...vit, distillToken: true }, 13);
  const shapes = Object.fromEntries(Object.entries(old.weights).map(([n, v]) => [n, v.shape]));
  assert.deepEqual(shapes.dist_token, [1, 1, 8]);
  assert.deepEqual(shapes['head_dist.w'], [8, 3]);
  assert.ok(!Object.keys(shapes).some((n) => n.startsWith('head_dist.0')), 'no per-token names for one token');
  const two = createStudent({ ...vit, distillTokens: 2 }, 13);
  assert.deepEqual(two.weights.dist_token.shape, [1, 2, 8]);
  assert.ok('head_dist.0.w' in two.weights && 'head_dist.1.w' in two.weights && !('head_dist.w' in two.weights));
  // Weights saved by a one-token model load into distillTokens: 1 and give the same outputs.
  const same = studentFromWeights({ ...vit, distillTokens: 1 }, old.weights);
  const x = tf.tensor4d(rand(2 * 64, 14), [2, 8, 8, 1]);
  const diff = tf.tidy(() => {
    const [o1, o2] = [old.forward(x), same.forward(x)];
    assert.equal(o1.distLogitsAll!.length, 1);
    assert.equal(o1.distLogits, o1.distLogitsAll![0]);
    return tf.max(tf.abs(tf.sub(tf.concat([o1.logits, o1.distLogits!], 1), tf.concat([o2.logits, o2.distLogits!], 1)))).dataSync()[0];
  });
  assert.ok(diff <= 1e-6);
  // A model saved before the prediction rule was recorded predicts with DeiT's mean, as it was trained.
  const rule = ruleOf({ student: { ...vit, distillToken: true }, task: 't', labels: ['a', 'b', 'c'], preprocess: { input: 'image' } });
  const [p1, p2] = tf.tidy(() => {
    const o = old.forward(x);
    return [rule(o), deitPredict(o.logits, o.distLogits!)];
  });
  assert.ok(tf.tidy(() => tf.max(tf.abs(tf.sub(p1, p2))).dataSync()[0]) < 1e-7);
  assert.throws(() => createStudent({ ...vit, distillToken: true, distillTokens: 0 }, 1), /contradict/);
  assert.throws(() => createStudent({ ...vit, distillTokens: 1.5 }, 1), /distillTokens must be a whole number/);
  assert.throws(() => createStudent({ ...vit, classToken: false, distillTokens: 2 }, 1), /needs the class token/);
  tf.dispose([x, p1, p2]);
  [old, two, same].forEach((m) => m.dispose());
});

// ---------------------------------------------------------------------------------------
// The civt distiller

const softmax = (z: number[]) => {
  const m = Math.max(...z);
  const e = z.map((v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
};
const kl = (t: number[], s: number[], T: number) => {
  const p = softmax(t.map((v) => v / T));
  const q = softmax(s.map((v) => v / T));
  return p.reduce((a, pi, i) => a + pi * Math.log(pi / q[i]), 0);
};

test('civt: w_ce·CE(cls) + Σ_t w_t·T²·KL(teacher t ‖ head t), against a plain-JS formula; predicts the mean of the heads', () => {
  assert.ok(distillerNames().includes('civt'));
  const ctx = { student: { ...vit, distillTokens: 2 } as StudentSpec, seed: 1, teachers: ['conv', 'inv'] };
  const cls = [
    [1, 0, -1],
    [0.5, 0.5, 0],
  ];
  const heads = [
    [
      [0, 1, 0],
      [2, 0, 1],
    ],
    [
      [-1, 0, 1],
      [0, 0.3, 0],
    ],
  ];
  // Teacher conv labels both items, inv only the first (its second row is a placeholder).
  const teachers = [
    [
      [2, 0, 0],
      [0, 3, 0],
    ],
    [
      [0, 0, 2],
      [9, 0, 0],
    ],
  ];
  const present = [
    [1, 1],
    [1, 0],
  ];
  const hard = [0, 1];
  const [T, wCe, w] = [2, 0.5, [1, 3]];
  const [d] = createDistillers(['civt'], { civtCeWeight: wCe, civtTeacherWeights: w, civtTemperature: T }, ctx);
  const batch: Batch = {
    idx: [0, 1],
    x: tf.zeros([2, 2]),
    hard: tf.tensor1d(hard, 'int32'),
    perTeacher: { names: ['conv', 'inv'], logits: tf.tensor3d(teachers), present: tf.tensor2d(present) },
  };
  const got = tf.tidy(() => {
    const terms = d.terms({ logits: tf.tensor2d(cls), distLogitsAll: heads.map((h) => tf.tensor2d(h)) }, batch, undefined);
    return Object.fromEntries(Object.entries(terms).map(([k, v]) => [k, v.dataSync()[0]]));
  });
  assert.deepEqual(Object.keys(got), ['civt.ce', 'civt.conv', 'civt.inv']);
  const ce = -(Math.log(softmax(cls[0])[hard[0]]) + Math.log(softmax(cls[1])[hard[1]])) / 2;
  const want = {
    'civt.ce': wCe * ce,
    'civt.conv': w[0] * T * T * ((kl(teachers[0][0], heads[0][0], T) + kl(teachers[0][1], heads[0][1], T)) / 2),
    // Item 1 is not labeled by inv: it adds 0 (the batch mean still divides by B).
    'civt.inv': w[1] * T * T * (kl(teachers[1][0], heads[1][0], T) / 2),
  };
  for (const [k, v] of Object.entries(want)) assert.ok(Math.abs(got[k] - v) < 1e-5, `${k}: ${got[k]} vs ${v}`);
  assert.deepEqual(d.key(), { ceWeight: wCe, teacherWeights: w, temperature: T });

  // Late fusion: (softmax z_cls + Σ_t softmax z_dist_t) / (N + 1); with one head it is DeiT's rule.
  const p = tf.tidy(() =>
    civtPredict(
      tf.tensor2d(cls),
      heads.map((h) => tf.tensor2d(h)),
    ).arraySync(),
  );
  for (let b = 0; b < 2; b++) {
    const mean = [0, 1, 2].map((c) => (softmax(cls[b])[c] + softmax(heads[0][b])[c] + softmax(heads[1][b])[c]) / 3);
    assert.ok(maxAbsDiff(p[b], mean) < 1e-6);
  }
  const one = tf.tidy(
    () =>
      tf
        .max(tf.abs(tf.sub(civtPredict(tf.tensor2d(cls), [tf.tensor2d(heads[0])]), deitPredict(tf.tensor2d(cls), tf.tensor2d(heads[0])))))
        .dataSync()[0],
  );
  assert.ok(one < 1e-7);
  tf.dispose([batch.x as tf.Tensor, batch.hard!, batch.perTeacher!.logits, batch.perTeacher!.present]);
});

test('civt refuses a token count other than the teacher count, a student without tokens, and a wrong weight list', () => {
  const three = { student: { ...vit, distillTokens: 3 } as StudentSpec, seed: 1, teachers: ['conv', 'inv'] };
  assert.throws(
    () => createDistillers(['civt'], {}, three),
    (e: Error) =>
      e instanceof SettingError && e.setting === 'distillTokens' && /the ViT has 3, --teachers gives 2 \(conv, inv\)/.test(e.message),
  );
  assert.throws(() => createDistillers(['civt'], {}, { student: vit, seed: 1 }), /needs a ViT with one distillation token per teacher/);
  assert.throws(() => createDistillers(['civt'], {}, { student: invSpec, seed: 1 }), /needs a ViT/);
  assert.throws(
    () => createDistillers(['civt'], { civtTeacherWeights: [1] }, { ...three, student: { ...vit, distillTokens: 2 } }),
    (e: Error) => e instanceof SettingError && e.setting === 'civtTeacherWeights',
  );
  // DeiT trains one token: several are refused rather than left untrained.
  assert.throws(() => createDistillers(['deit'], {}, three), /use --distill civt/);
});

// ---------------------------------------------------------------------------------------
// A real training run

/** 16×16 shapes (12 per class), every third in the test split, and two teachers' logits: conv on every item, inv on the even ones. */
async function shapesWithTwoTeachers(): Promise<{ dir: string; store: Store }> {
  const dir = workDir();
  writeShapes(dir, 12, 16);
  const file = path.join(dir, 'shapes.jsonl');
  const rows = fs
    .readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { id: string; label: string });
  fs.writeFileSync(file, rows.map((r, i) => JSON.stringify({ ...r, split: i % 3 === 0 ? 'test' : 'train' })).join('\n') + '\n');
  const task = loadTaskFile(path.join(REPO_ROOT, 'prompts', 'shapes.md'));
  const store = Store.open(path.join(dir, 'distill.db'));
  await importFile(store, task, file);
  const labels = task.labels;
  const logits = (label: string, sharp: number) => labels.map((l) => (l === label ? sharp : 0));
  for (const [teacher, keep, sharp] of [
    ['conv', () => true, 3],
    ['inv', (i: number) => i % 2 === 0, 1.5],
  ] as const) {
    const input = writeJsonl(
      dir,
      `${teacher}.jsonl`,
      rows.filter((_, i) => keep(i)).map((r) => ({ id: r.id, logits: logits(r.label, sharp) })),
    );
    await ingestLogits({ store, task, teacher, input, format: { kind: 'dense32' } });
  }
  return { dir, store };
}

test(`train(): a ViT with two distillation tokens learns two teachers with civt on ${TRAIN_BACKEND}; the saved model predicts with every head`, async () => {
  const { dir, store } = await shapesWithTwoTeachers();
  try {
    const ds = loadDataset(store, store.findTask('shapes')!, { supervised: false, targets: { calibrate: false } });
    assert.deepEqual(ds.perTeacher!.names, ['conv', 'inv']);
    const spec: VitSpec = {
      kind: 'vit',
      numClasses: 3,
      inputShape: [16, 16, 1],
      patchSize: 4,
      width: 16,
      depth: 1,
      heads: 2,
      mlpRatio: 2,
      distillTokens: 2,
    };
    const config = { epochs: 3, batchSize: 8, lr: 3e-3, weightDecay: 0, warmup: 0, seed: 1, clip: 1, patience: 0, distill: ['civt'] };
    const out = path.join(dir, 'civt');
    const res = await train(ds, spec, config, out);
    assert.deepEqual(Object.keys(res.history[0].terms), ['civt.ce', 'civt.conv', 'civt.inv']);
    for (const h of res.history) {
      const sum = h.terms['civt.ce'] + h.terms['civt.conv'] + h.terms['civt.inv'];
      assert.ok(Math.abs(h.loss - sum) < 1e-5, 'the terms sum to the loss');
    }
    const last = res.history[res.history.length - 1];
    assert.ok(
      last.terms['civt.conv'] < res.history[0].terms['civt.conv'],
      `civt.conv goes down: ${res.history.map((h) => h.terms['civt.conv'])}`,
    );
    assert.ok(
      last.terms['civt.inv'] < res.history[0].terms['civt.inv'],
      `civt.inv goes down: ${res.history.map((h) => h.terms['civt.inv'])}`,
    );

    // The saved model names its rule; eval/predict/ingest-logits use the mean of all three heads.
    const m = await loadModel(out);
    assert.equal(m.spec.predict, 'civt');
    assert.deepEqual(m.spec.student, spec);
    const { value: first } = await predictBatches(m, ds, 8).next();
    const idx = Array.from({ length: 8 }, (_, i) => i);
    const { batchInput } = await import('../src/train/data.ts');
    const x = batchInput(ds, m.student.spec, idx);
    const want = tf.tidy(() => {
      const o = m.student.forward(x);
      return civtPredict(o.logits, o.distLogitsAll!).dataSync();
    });
    assert.ok(maxAbsDiff(first!.probs, want) < 1e-6);
    tf.dispose(x as tf.Tensor);
    m.student.dispose();

    // Three tokens for two teachers: refused before anything is written.
    const bad = path.join(dir, 'three');
    await assert.rejects(
      train(ds, { ...spec, distillTokens: 3 }, config, bad),
      (e: Error) => e instanceof SettingError && e.setting === 'distillTokens',
    );
    assert.ok(!fs.existsSync(bad), 'nothing written for a refused run');
  } finally {
    store.close();
  }
});
