/**
 * Each op in src/train/ops.ts: on the cpu backend its forward and its
 * gradients equal tfjs's reference op (whose kernels, e.g. Conv2DBackpropFilter
 * and UnsortedSegmentSum, exist there) within 1e-4; then on wasm the same op
 * runs forward and backward and matches the cpu numbers within 1e-3. A last
 * group trains one step of a tiny CNN, ViT and embedding-bag model on wasm to
 * prove no kernel is missing anywhere on the path. "wasm" is TRAIN_BACKEND:
 * with DISTILLERY_BACKEND=tensorflow the same checks run on the native backend
 * (where the ops use TensorFlow's kernels instead of their wasm workarounds).
 *
 * Tensors do not carry across backend switches, so every run rebuilds its
 * inputs from plain arrays.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { selectBackend, tf } from '../src/train/backend.ts';
import { TRAIN_BACKEND } from './train-backend.ts';
import {
  avgPool2x2,
  conv2d3x3,
  conv2dPatches,
  dense,
  embeddingBag,
  gelu,
  globalAvgPool,
  im2col3x3,
  im2col3x3T,
  layerNorm,
  matMul2d,
  maxPool2x2,
  relu,
  splitHeads,
  tileBatch,
  type Bag,
} from '../src/train/ops.ts';

interface Arr {
  shape: number[];
  data: Float32Array;
}

/** mulberry32: deterministic inputs, so a failure reproduces. */
function rand(shape: number[], seed: number, scale = 1): Arr {
  let s = seed >>> 0;
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < data.length; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    data[i] = ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * scale;
  }
  return { shape, data };
}

interface Run {
  shape: number[];
  value: Float32Array;
  grads: Float32Array[];
}

type Op = (...xs: tf.Tensor[]) => tf.Tensor;

/**
 * Value of f and the gradients of sum(f(xs)·R) for a fixed random R: a plain
 * sum would feed dy = 1 everywhere and hide transposition mistakes.
 */
function run(f: Op, inputs: Arr[], seed = 99): Run {
  let out!: Run;
  tf.tidy(() => {
    const xs = inputs.map((a) => tf.tensor(a.data, a.shape));
    const y = f(...xs);
    const r = tf.tensor(rand(y.shape, seed).data, y.shape);
    const grads = tf.grads((...ts: tf.Tensor[]) => tf.sum(tf.mul(f(...ts), r)))(xs);
    out = { shape: y.shape, value: y.dataSync() as Float32Array, grads: grads.map((g) => g.dataSync() as Float32Array) };
  });
  return out;
}

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let worst = 0;
  let at = -1;
  for (let i = 0; i < actual.length; i++) {
    const d = Math.abs(actual[i] - expected[i]);
    if (!(d <= worst)) [worst, at] = [d, i];
  }
  assert.ok(worst <= tol, `${what}: |Δ| = ${worst} at ${at} (${actual[at]} vs ${expected[at]}), tolerance ${tol}`);
}

function assertRunsClose(actual: Run, expected: Run, tol: number, what: string): void {
  assert.deepEqual(actual.shape, expected.shape, `${what}: shape`);
  assertClose(actual.value, expected.value, tol, `${what}: value`);
  assert.equal(actual.grads.length, expected.grads.length);
  actual.grads.forEach((g, i) => assertClose(g, expected.grads[i], tol, `${what}: gradient ${i}`));
}

/** The brief's contract for every op: cpu vs reference at 1e-4, then wasm vs cpu at 1e-3. */
async function checkOp(what: string, ours: Op, reference: Op, inputs: Arr[]): Promise<void> {
  await selectBackend('cpu');
  const mine = run(ours, inputs);
  assertRunsClose(mine, run(reference, inputs), 1e-4, `${what} (cpu vs reference)`);
  await selectBackend(TRAIN_BACKEND);
  assertRunsClose(run(ours, inputs), mine, 1e-3, `${what} (${TRAIN_BACKEND} vs cpu)`);
}

test('matMul2d equals tf.matMul, with plain-product gradients', async () => {
  await checkOp(
    'matMul2d',
    (a, b) => matMul2d(a as tf.Tensor2D, b as tf.Tensor2D),
    (a, b) => tf.matMul(a as tf.Tensor2D, b as tf.Tensor2D),
    [rand([5, 7], 1), rand([7, 3], 2)],
  );
});

test('dense folds leading axes and adds the bias', async () => {
  await checkOp(
    'dense',
    (x, w, b) => dense(x, w as tf.Tensor2D, b as tf.Tensor1D),
    // Not tf.matMul(x3d, w2d): tfjs's broadcast matMul gradient returns dw with x's batch axis.
    (x, w, b) => tf.add(tf.reshape(tf.matMul(tf.reshape(x, [6, 4]) as tf.Tensor2D, w as tf.Tensor2D), [2, 3, 5]), b),
    [rand([2, 3, 4], 3), rand([4, 5], 4), rand([5], 5)],
  );
});

test('dense rejects a weight of the wrong shape', async () => {
  await selectBackend('cpu');
  assert.throws(() => dense(tf.zeros([2, 4]), tf.zeros([3, 5]) as tf.Tensor2D), /w must be \[4, n\]/);
});

test("conv2d3x3 equals tf.conv2d (stride 1, 'same')", async () => {
  await checkOp(
    'conv2d3x3 same',
    (x, w, b) => conv2d3x3(x as tf.Tensor4D, w as tf.Tensor4D, b as tf.Tensor1D),
    (x, w, b) => tf.add(tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, 1, 'same'), b),
    [rand([2, 5, 4, 3], 6), rand([3, 3, 3, 4], 7), rand([4], 8)],
  );
});

test("conv2d3x3 equals tf.conv2d (stride 1, 'valid', no bias)", async () => {
  await checkOp(
    'conv2d3x3 valid',
    (x, w) => conv2d3x3(x as tf.Tensor4D, w as tf.Tensor4D, undefined, { padding: 'valid' }),
    (x, w) => tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, 1, 'valid'),
    [rand([1, 6, 5, 2], 9), rand([3, 3, 2, 3], 10)],
  );
});

test("conv2d3x3 with one input channel (a first layer's im2col path), and inputGrad: false", async () => {
  const inputs = [rand([3, 7, 6, 1], 21), rand([3, 3, 1, 5], 22), rand([5], 23)];
  await checkOp(
    'conv2d3x3 same, Cin 1',
    (x, w, b) => conv2d3x3(x as tf.Tensor4D, w as tf.Tensor4D, b as tf.Tensor1D),
    (x, w, b) => tf.add(tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, 1, 'same'), b),
    inputs,
  );
  // inputGrad: false gives the same value and weight gradients, and zeros for x (not computed).
  for (const backend of ['cpu', TRAIN_BACKEND] as const) {
    await selectBackend(backend);
    const full = run((x, w, b) => conv2d3x3(x as tf.Tensor4D, w as tf.Tensor4D, b as tf.Tensor1D), inputs);
    const noDx = run((x, w, b) => conv2d3x3(x as tf.Tensor4D, w as tf.Tensor4D, b as tf.Tensor1D, { inputGrad: false }), inputs);
    assertClose(noDx.value, full.value, 0, `${backend}: value`);
    assert.ok(
      noDx.grads[0].every((v) => v === 0),
      `${backend}: dx is zeros`,
    );
    assertClose(noDx.grads[1], full.grads[1], 0, `${backend}: dw`);
    assertClose(noDx.grads[2], full.grads[2], 0, `${backend}: db`);
  }
});

test("conv2d3x3 with activation 'relu' equals relu(tf.conv2d + b), with and without padding and input gradient", async () => {
  const inputs = [rand([2, 6, 5, 3], 40), rand([3, 3, 3, 4], 41), rand([4], 42)];
  for (const padding of ['same', 'valid'] as const) {
    await checkOp(
      `conv2d3x3 ${padding} + relu`,
      (x, w, b) => conv2d3x3(x as tf.Tensor4D, w as tf.Tensor4D, b as tf.Tensor1D, { padding, activation: 'relu' }),
      (x, w, b) => tf.relu(tf.add(tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, 1, padding), b)),
      inputs,
    );
  }
  await checkOp(
    'conv2d3x3 + relu, no bias',
    (x, w) => conv2d3x3(x as tf.Tensor4D, w as tf.Tensor4D, undefined, { activation: 'relu' }),
    (x, w) => tf.relu(tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, 1, 'same')),
    inputs.slice(0, 2),
  );
  for (const backend of ['cpu', TRAIN_BACKEND] as const) {
    await selectBackend(backend);
    const fused = (inputGrad: boolean) => (x: tf.Tensor, w: tf.Tensor, b: tf.Tensor) =>
      conv2d3x3(x as tf.Tensor4D, w as tf.Tensor4D, b as tf.Tensor1D, { inputGrad, activation: 'relu' });
    const [full, noDx] = [run(fused(true), inputs), run(fused(false), inputs)];
    assert.ok(
      noDx.grads[0].every((v) => v === 0),
      `${backend}: dx is zeros`,
    );
    full.grads.slice(1).forEach((g, i) => assertClose(noDx.grads[i + 1], g, 0, `${backend}: gradient ${i + 1}`));
  }
});

test('relu equals tf.relu, value and gradient', async () => {
  const x = rand([3, 7], 43);
  x.data[4] = 0; // the kink: both give gradient 0 there
  await checkOp(
    'relu',
    (t) => relu(t),
    (t) => tf.relu(t),
    [x],
  );
});

test('tileBatch repeats a [1, ...] tensor over the batch; its gradient sums over it', async () => {
  await checkOp(
    'tileBatch',
    (t) => tileBatch(t, 5),
    (t) => tf.broadcastTo(t, [5, 2, 3]),
    [rand([1, 2, 3], 44)],
  );
  await selectBackend('cpu');
  assert.throws(() => tileBatch(tf.zeros([2, 3]), 4), /leading axis of 1/);
});

test('im2col3x3T is the transpose of im2col3x3 (the conv weight gradient reads it)', async () => {
  const x = rand([2, 5, 4, 3], 24);
  for (const backend of ['cpu', TRAIN_BACKEND] as const) {
    await selectBackend(backend);
    for (const pad of [0, 1]) {
      const t = tf.tensor4d(x.data, x.shape as [number, number, number, number]);
      const [cols, colsT] = [im2col3x3(t, pad), im2col3x3T(t, pad)];
      assert.deepEqual(colsT.shape, [cols.shape[1], cols.shape[0]]);
      assertClose(colsT.dataSync(), tf.transpose(cols).dataSync(), 0, `${backend}, pad ${pad}`);
    }
  }
});

test('conv2dPatches equals tf.conv2d with kernel = stride (patch embedding)', async () => {
  await checkOp(
    'conv2dPatches',
    (x, w, b) => conv2dPatches(x as tf.Tensor4D, w as tf.Tensor4D, 2, 2, b as tf.Tensor1D),
    (x, w, b) => tf.add(tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, 2, 'valid'), b),
    [rand([2, 4, 6, 3], 11), rand([2, 2, 3, 5], 12), rand([5], 13)],
  );
});

test("conv2dPatches drops a partial patch as 'valid' does", async () => {
  await checkOp(
    'conv2dPatches cropped',
    (x, w) => conv2dPatches(x as tf.Tensor4D, w as tf.Tensor4D, 3, 3),
    (x, w) => tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, 3, 'valid'),
    [rand([1, 7, 8, 2], 14), rand([3, 3, 2, 4], 15)],
  );
});

test('conv2dPatches refuses overlapping patches', async () => {
  await selectBackend('cpu');
  assert.throws(() => conv2dPatches(tf.zeros([1, 4, 4, 1]) as tf.Tensor4D, tf.zeros([2, 2, 1, 1]) as tf.Tensor4D, 2, 1), /kernel = stride/);
});

test('maxPool2x2 equals tf.maxPool, including odd sizes', async () => {
  const maxRef: Op = (t) => tf.maxPool(t as tf.Tensor4D, 2, 2, 'valid');
  await checkOp('maxPool2x2', (t) => maxPool2x2(t as tf.Tensor4D), maxRef, [rand([2, 4, 6, 3], 16)]);
  await checkOp('maxPool2x2 odd', (t) => maxPool2x2(t as tf.Tensor4D), maxRef, [rand([1, 5, 7, 2], 17)]);
});

test('maxPool2x2 splits the gradient of tied maxima evenly, on both backends', async () => {
  // One window per channel: c0 all tied, c1 two tied, c2 a single max.
  const x: Arr = { shape: [1, 2, 2, 3], data: Float32Array.from([1, 5, 0, 1, 2, 3, 1, 5, 0, 1, 0, 0]) };
  const split = [0.25, 0.5, 0, 0.25, 0, 1, 0.25, 0.5, 0, 0.25, 0, 0];
  for (const backend of ['cpu', TRAIN_BACKEND] as const) {
    await selectBackend(backend);
    const r = run((t) => maxPool2x2(t as tf.Tensor4D), [x]);
    assert.deepEqual(Array.from(r.value), [1, 5, 3]);
    const dy = rand([1, 1, 1, 3], 99).data; // run's R
    assertClose(
      r.grads[0],
      split.map((v, i) => v * dy[i % 3]),
      1e-6,
      `${backend}: tie split`,
    );
  }
});

test('avgPool2x2 and globalAvgPool equal their reshape + mean definitions', async () => {
  const x = rand([2, 4, 6, 3], 19);
  const blockMean: Op = (t) => tf.mean(tf.reshape(t, [2, 2, 2, 3, 2, 3]), [2, 4]);
  await checkOp('avgPool2x2', (t) => avgPool2x2(t as tf.Tensor4D), blockMean, [x]);
  await checkOp(
    'globalAvgPool',
    (t) => globalAvgPool(t as tf.Tensor4D),
    (t) => tf.mean(tf.reshape(t, [2, 24, 3]), 1),
    [x],
  );
});

/** Reference from a float64 JS function: its value, and sum(f·R) differentiated by central differences. */
function jsReference(f: (xs: Float64Array[]) => Float64Array, shape: number[], inputs: Arr[], seed = 99): Op {
  const xs = inputs.map((a) => Float64Array.from(a.data));
  const value = f(xs);
  const r = rand(shape, seed).data;
  const objective = (): number => f(xs).reduce((s, v, i) => s + v * r[i], 0);
  const grads = xs.map((x) =>
    Float32Array.from(x, (_, i) => {
      const h = 1e-5;
      const keep = x[i];
      x[i] = keep + h;
      const up = objective();
      x[i] = keep - h;
      const down = objective();
      x[i] = keep;
      return (up - down) / (2 * h);
    }),
  );
  // Feed the precomputed numbers through tf so checkOp can compare them like an op.
  return tf.customGrad(() => ({
    value: tf.tensor(Float32Array.from(value), shape),
    gradFunc: () => grads.map((g, i) => tf.tensor(g, inputs[i].shape)),
  })) as Op;
}

function geluJs([x]: Float64Array[]): Float64Array {
  const c = Math.sqrt(2 / Math.PI);
  return x.map((v) => 0.5 * v * (1 + Math.tanh(c * (v + 0.044715 * v ** 3))));
}

function layerNormJs([x, gamma, beta]: Float64Array[]): Float64Array {
  const d = gamma.length;
  const out = new Float64Array(x.length);
  for (let row = 0; row < x.length; row += d) {
    const v = x.subarray(row, row + d);
    const mean = v.reduce((s, a) => s + a, 0) / d;
    const variance = v.reduce((s, a) => s + (a - mean) ** 2, 0) / d;
    for (let j = 0; j < d; j++) out[row + j] = ((v[j] - mean) / Math.sqrt(variance + 1e-5)) * gamma[j] + beta[j];
  }
  return out;
}

test('gelu (tanh approximation) matches its formula and derivative', async () => {
  const x = rand([3, 4], 17, 3);
  await checkOp('gelu', (t) => gelu(t), jsReference(geluJs, [3, 4], [x]), [x]);
});

test('layerNorm matches its formula and derivative', async () => {
  const inputs = [rand([2, 3, 5], 18, 2), rand([5], 19), rand([5], 20)];
  await checkOp(
    'layerNorm',
    (x, g, b) => layerNorm(x, g as tf.Tensor1D, b as tf.Tensor1D),
    jsReference(layerNormJs, [2, 3, 5], inputs),
    inputs,
  );
});

test('splitHeads equals a split by columns and a [B, heads, N, dh] transpose of each part', async () => {
  // B = 2, N = 3, parts = 3, heads = 2, dh = 2: columns (part, head, dh).
  const x = rand([6, 12], 21);
  const reference: Op = (t) => tf.stack(tf.split(t, 3, 1).map((part) => tf.transpose(tf.reshape(part, [2, 3, 2, 2]), [0, 2, 1, 3])));
  await checkOp('splitHeads', (t) => tf.stack(splitHeads(t as tf.Tensor2D, 2, 3, 2)), reference, [x]);
  assert.throws(() => splitHeads(tf.zeros([6, 12]) as tf.Tensor2D, 4, 3, 2), /is not \[B·N, 3·heads·dh\]/);
});

const BAGS: Bag[] = [[1, 4, 4], [], [0], [7, 2, 1, 4, 6], [3]];

/** tfjs's own route: gather + mean per bag (its gradient is UnsortedSegmentSum). */
function bagReference(bags: Bag[]): Op {
  return (table) =>
    tf.stack(
      bags.map((bag) =>
        bag.length === 0 ? tf.zeros([table.shape[1]!]) : tf.mean(tf.gather(table, tf.tensor1d(Array.from(bag), 'int32')), 0),
      ),
    );
}

test('embeddingBag equals gather + mean per bag, empty bag → zeros', async () => {
  await checkOp('embeddingBag', (t) => embeddingBag(t as tf.Tensor2D, BAGS), bagReference(BAGS), [rand([8, 3], 21)]);
  await selectBackend('cpu');
  const y = embeddingBag(tf.tensor2d(rand([8, 3], 21).data, [8, 3]), BAGS);
  assert.deepEqual(Array.from(y.dataSync().slice(3, 6)), [0, 0, 0]);
});

test('embeddingBag with only empty bags is zero with a zero gradient', async () => {
  await selectBackend(TRAIN_BACKEND);
  const r = run((t) => embeddingBag(t as tf.Tensor2D, [[], []]), [rand([4, 2], 22)]);
  assert.deepEqual(r.shape, [2, 2]);
  assert.ok(r.value.every((v) => v === 0) && r.grads[0].every((v) => v === 0));
});

test(`embeddingBag over 2^18 hashed buckets on ${TRAIN_BACKEND} touches only the named rows`, async () => {
  await selectBackend(TRAIN_BACKEND);
  const vocab = 2 ** 18;
  const bags: Bag[] = [[5, vocab - 1, 5], [123_456]];
  const table = tf.variable(tf.randomUniform([vocab, 4], -1, 1) as tf.Tensor2D);
  tf.tidy(() => {
    const { grads } = tf.variableGrads(() => tf.sum(embeddingBag(table, bags)), [table]);
    const g = grads[table.name].dataSync();
    const touched = new Set<number>();
    for (let i = 0; i < g.length; i++) if (g[i] !== 0) touched.add(Math.floor(i / 4));
    assert.deepEqual(
      [...touched].sort((a, b) => a - b),
      [5, 123_456, vocab - 1],
    );
    assertClose(g.slice(5 * 4, 6 * 4), [2 / 3, 2 / 3, 2 / 3, 2 / 3], 1e-6, 'row 5 counted twice');
    assertClose(g.slice(123_456 * 4, 123_457 * 4), [1, 1, 1, 1], 1e-6, 'row 123456');
  });
  table.dispose();
});

test('embeddingBag rejects ids outside the table', async () => {
  await selectBackend('cpu');
  assert.throws(() => embeddingBag(tf.zeros([4, 2]) as tf.Tensor2D, [[4]]), RangeError);
  assert.throws(() => embeddingBag(tf.zeros([4, 2]) as tf.Tensor2D, [[1.5]]), RangeError);
});

// ---------------------------------------------------------------------------
// Probe: each kind of student, end to end on wasm: its loss and every
// parameter's gradient match cpu, and one Adam step runs and moves every
// parameter. A missing kernel throws here; a wrong one shows as a mismatch.
// ---------------------------------------------------------------------------

type Loss = (params: tf.Tensor[]) => tf.Scalar;

async function probe(what: string, paramShapes: number[][], seed: number, loss: Loss): Promise<void> {
  const params = paramShapes.map((shape, i) => rand(shape, seed + i, 0.5));
  await selectBackend('cpu');
  const onCpu = run((...p) => loss(p), params);
  await selectBackend(TRAIN_BACKEND);
  const onWasm = run((...p) => loss(p), params);
  assertRunsClose(onWasm, onCpu, 1e-3, `${what} (${TRAIN_BACKEND} vs cpu)`);
  onCpu.grads.forEach((g, i) =>
    assert.ok(
      g.some((v) => v !== 0),
      `${what}: parameter ${i} gets no gradient`,
    ),
  );

  const vars = params.map((a) => tf.variable(tf.tensor(a.data, a.shape)));
  const optimizer = tf.train.adam(0.01);
  tf.tidy(() => {
    optimizer.minimize(() => loss(vars));
  });
  vars.forEach((v, i) => assert.notDeepEqual(v.dataSync(), params[i].data, `${what}: parameter ${i} did not move`));
  optimizer.dispose();
  tf.dispose(vars);
}

function oneHot(labels: number[], classes: number): tf.Tensor2D {
  return tf.oneHot(tf.tensor1d(labels, 'int32'), classes).toFloat() as tf.Tensor2D;
}

test(`probe: a tiny CNN (conv, relu, both pools, dense) trains on ${TRAIN_BACKEND}`, async () => {
  const shapes = [[3, 3, 1, 4], [4], [3, 3, 4, 4], [4], [4, 3], [3]];
  await probe('CNN', shapes, 30, ([w1, b1, w2, b2, wo, bo]) => {
    const x = tf.tensor4d(rand([2, 8, 8, 1], 36).data, [2, 8, 8, 1]);
    let h = maxPool2x2(conv2d3x3(x, w1 as tf.Tensor4D, b1 as tf.Tensor1D, { activation: 'relu' }));
    h = avgPool2x2(relu(conv2d3x3(h, w2 as tf.Tensor4D, b2 as tf.Tensor1D)));
    const logits = dense(globalAvgPool(h), wo as tf.Tensor2D, bo as tf.Tensor1D);
    return tf.losses.softmaxCrossEntropy(oneHot([0, 2], 3), logits) as tf.Scalar;
  });
});

test(`probe: a tiny ViT block (patches, layerNorm, attention, gelu MLP) trains on ${TRAIN_BACKEND}`, async () => {
  const [batch, tokens, dim, heads] = [2, 4, 8, 2]; // 4×4 images, 2×2 patches
  const dh = dim / heads;
  const shapes = [
    [2, 2, 1, dim],
    [dim],
    [1, tokens, dim],
    [dim],
    [dim],
    [dim, 3 * dim],
    [dim, dim],
    [dim],
    [dim],
    [dim, 2 * dim],
    [2 * dim, dim],
    [dim, 3],
  ];
  // Heads via rank-4 transposes; attention uses tfjs's batched matMul (slow on wasm, but it has every kernel).
  const splitHeads = (t: tf.Tensor): tf.Tensor3D =>
    tf.reshape(tf.transpose(tf.reshape(t, [batch, tokens, heads, dh]), [0, 2, 1, 3]), [batch * heads, tokens, dh]);
  const mergeHeads = (t: tf.Tensor): tf.Tensor =>
    tf.reshape(tf.transpose(tf.reshape(t, [batch, heads, tokens, dh]), [0, 2, 1, 3]), [batch, tokens, dim]);
  await probe('ViT', shapes, 40, ([patch, patchB, pos, ln1g, ln1b, qkv, proj, ln2g, ln2b, fc1, fc2, head]) => {
    const x = tf.tensor4d(rand([batch, 4, 4, 1], 37).data, [batch, 4, 4, 1]);
    const patches = conv2dPatches(x, patch as tf.Tensor4D, 2, 2, patchB as tf.Tensor1D);
    let h = tf.add(tf.reshape(patches, [batch, tokens, dim]), pos);
    const [q, k, v] = tf.split(dense(layerNorm(h, ln1g as tf.Tensor1D, ln1b as tf.Tensor1D), qkv as tf.Tensor2D), 3, 2).map(splitHeads);
    const attn = tf.softmax(tf.div(tf.matMul(q, k, false, true), Math.sqrt(dh)));
    h = tf.add(h, dense(mergeHeads(tf.matMul(attn, v)), proj as tf.Tensor2D));
    h = tf.add(h, dense(gelu(dense(layerNorm(h, ln2g as tf.Tensor1D, ln2b as tf.Tensor1D), fc1 as tf.Tensor2D)), fc2 as tf.Tensor2D));
    return tf.losses.softmaxCrossEntropy(oneHot([1, 0], 3), dense(tf.mean(h, 1), head as tf.Tensor2D)) as tf.Scalar;
  });
});

test(`probe: an embedding-bag classifier trains on ${TRAIN_BACKEND}`, async () => {
  const bags: Bag[] = [[1, 2, 3], [15], [], [2, 2]];
  await probe(
    'embedding bag',
    [[16, 4], [4, 2], [2]],
    50,
    ([table, w, b]) =>
      tf.losses.softmaxCrossEntropy(
        oneHot([0, 1, 0, 1], 2),
        dense(embeddingBag(table as tf.Tensor2D, bags), w as tf.Tensor2D, b as tf.Tensor1D),
      ) as tf.Scalar,
  );
});

/**
 * Not a check of our code: reports whether the wasm gaps the ops work around
 * are still there, so a tfjs upgrade that closes one shows up in the test log.
 */
test('diagnostic: wasm kernel gaps behind these ops', async (t) => {
  await selectBackend('wasm');
  const gap = (what: string, f: () => tf.Tensor): void => {
    try {
      tf.tidy(() => void f().dataSync());
      t.diagnostic(`${what}: works on wasm now`);
    } catch (e) {
      t.diagnostic(`${what}: ${(e as Error).message.split('\n')[0]}`);
    }
  };
  const x = (): tf.Tensor4D => tf.ones([1, 4, 4, 2]);
  gap('tf.conv2d filter gradient', () =>
    tf.grad((w: tf.Tensor) => tf.sum(tf.conv2d(x(), w as tf.Tensor4D, 1, 'same')))(tf.ones([3, 3, 2, 2])),
  );
  gap('tf.depthwiseConv2d filter gradient', () =>
    tf.grad((w: tf.Tensor) => tf.sum(tf.depthwiseConv2d(x(), w as tf.Tensor4D, 1, 'same')))(tf.ones([3, 3, 2, 1])),
  );
  gap('tf.gather table gradient', () => tf.grad((tb: tf.Tensor) => tf.sum(tf.gather(tb, tf.tensor1d([0, 2], 'int32'))))(tf.ones([3, 2])));
  const data = Float32Array.from({ length: 16 }, (_, i) => Math.sin(i * 12.9898)); // an input it got wrong in 4.22
  const poolGrad = (): Float32Array =>
    tf.tidy(
      () =>
        tf
          .grad((v: tf.Tensor) => tf.sum(tf.mul(tf.maxPool(v as tf.Tensor4D, 2, 2, 'valid'), tf.tensor4d([1, 2, 3, 4], [1, 2, 2, 1]))))(
            tf.tensor4d(data, [1, 4, 4, 1]),
          )
          .dataSync() as Float32Array,
    );
  const onWasm = poolGrad();
  await selectBackend('cpu');
  const same = poolGrad().every((v, i) => v === onWasm[i]);
  t.diagnostic(`tf.maxPool gradient: wasm ${same ? 'now agrees' : 'disagrees'} with cpu`);
});
