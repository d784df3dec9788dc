/**
 * Students (src/train/models) on the wasm backend, at tiny sizes: output
 * shapes, that each one overfits a small batch with Adam (which needs every
 * gradient on the path to exist on wasm), MiniViT weight sharing, save/load
 * round trips, and fastText hashing.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, test } from 'node:test';
import { selectBackend, tf } from '../src/train/backend.ts';
import { loadWeights, saveWeights } from '../src/train/io.ts';
import { crossEntropy } from '../src/train/losses.ts';
import {
  countParams,
  createStudent,
  hashTokens,
  studentFromWeights,
  textBatch,
  textFeaturesOf,
  type FasttextSpec,
  type Student,
  type StudentInput,
  type StudentSpec,
  type VitSpec,
} from '../src/train/models/index.ts';
import { tmpDir } from './helpers.ts';
import { TRAIN_BACKEND } from './train-backend.ts';
import { mulberry32 as rng } from '../src/random.ts';

const dirs: string[] = [];
before(async () => {
  const { backend } = await selectBackend(TRAIN_BACKEND);
  assert.equal(backend, TRAIN_BACKEND);
});
after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

const B = 16;
const C = 4;
const LABELS = Array.from({ length: B }, (_, i) => i % C);

function images(seed: number, shape = [B, 8, 8, 1]): tf.Tensor4D {
  const r = rng(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  return tf.tensor4d(
    Float32Array.from({ length: n }, () => r()),
    shape as [number, number, number, number],
  );
}

/** 16 texts of 3–6 made-up words each, from a 40-word vocabulary. */
function texts(seed: number): string[] {
  const r = rng(seed);
  const vocab = Array.from({ length: 40 }, (_, i) => `w${i}x${Math.floor(r() * 1000)}`);
  return Array.from({ length: B }, () =>
    Array.from({ length: 3 + Math.floor(r() * 4) }, () => vocab[Math.floor(r() * vocab.length)]).join(' '),
  );
}

const logregSpec: StudentSpec = { kind: 'logreg', numClasses: C, inputShape: [8, 8, 1] };
const mlpSpec: StudentSpec = { kind: 'mlp', numClasses: C, inputShape: [8, 8, 1], hidden: [32, 16] };
const cnnSpec: StudentSpec = { kind: 'cnn', numClasses: C, inputShape: [8, 8, 1], channels: [4, 4, 8], fc: 16 };
/** The lighter layout: conv, pool, conv, pool. */
const cnn2Spec: StudentSpec = { kind: 'cnn', numClasses: C, inputShape: [8, 8, 1], channels: [4, 8], fc: 16 };
const vitSpec: VitSpec = {
  kind: 'vit',
  numClasses: C,
  inputShape: [8, 8, 1],
  patchSize: 4,
  width: 16,
  depth: 2,
  heads: 2,
  mlpRatio: 2,
  distillToken: true,
};
const fasttextSpec: FasttextSpec = { kind: 'fasttext', numClasses: C, buckets: 256, dim: 16, bigrams: true };
const fasttextMlpSpec: FasttextSpec = { ...fasttextSpec, hidden: [16] };
/** logreg and mlp on a text task: the same hashed features as fasttext's. */
const textLogregSpec: StudentSpec = { kind: 'logreg', numClasses: C, buckets: 256, bigrams: true };
const textMlpSpec: StudentSpec = { kind: 'mlp', numClasses: C, buckets: 256, bigrams: true, hidden: [16, 8] };

function inputFor(spec: StudentSpec, seed: number): StudentInput {
  const text = textFeaturesOf(spec);
  return text ? textBatch(texts(seed), text) : images(seed);
}

// ---------------------------------------------------------------------------------------
// Shapes

test('every student maps a batch to [B, C] logits', () => {
  for (const spec of [logregSpec, mlpSpec, cnnSpec, cnn2Spec, vitSpec, fasttextSpec, fasttextMlpSpec, textLogregSpec, textMlpSpec]) {
    const s = createStudent(spec, 1);
    const x = inputFor(spec, 2);
    const logits = tf.tidy(() => s.forward(x).logits);
    assert.deepEqual(logits.shape, [B, C], spec.kind);
    assert.ok(Array.from(logits.dataSync()).every(Number.isFinite), `${spec.kind}: non-finite logits`);
    tf.dispose([logits, ...(x instanceof tf.Tensor ? [x] : [])]);
    s.dispose();
  }
});

test('logreg and mlp also take pre-flattened [B, D] input, with the same result', () => {
  const s = createStudent(mlpSpec, 3);
  const x = images(4);
  const [a, b] = tf.tidy(() => [s.forward(x).logits, s.forward(tf.reshape(x, [B, 64])).logits]);
  assert.deepEqual(a.dataSync(), b.dataSync());
  assert.throws(() => s.forward(tf.zeros([B, 63])), /input must be \[B, 8, 8, 1\] or \[B, 64\]/);
  tf.dispose([a, b, x]);
  s.dispose();
});

test('ViT collect: hidden states, per-block q/k/v, patch tokens and the distillation head', () => {
  const s = createStudent({ ...vitSpec, depth: 3 }, 5);
  const x = images(6, [3, 8, 8, 1]);
  const out = tf.tidy(() => s.forward(x, { collect: true }));
  // 2 prefix tokens (class, distillation) + 4 patches of 4×4.
  assert.deepEqual(out.logits.shape, [3, C]);
  assert.deepEqual(out.distLogits?.shape, [3, C]);
  const f = out.features!;
  const hidden = Object.keys(f).filter((k) => k.endsWith('.hidden'));
  assert.equal(hidden.length, 3);
  for (const k of hidden) assert.deepEqual(f[k].shape, [3, 6, 16]);
  assert.equal(Object.keys(f).filter((k) => k.endsWith('.q')).length, 3);
  for (let b = 0; b < 3; b++) for (const t of ['q', 'k', 'v']) assert.deepEqual(f[`block${b}.${t}`].shape, [3, 2, 6, 8]);
  assert.deepEqual(f.patches?.shape, [3, 4, 16]);
  // The patch tokens are the last block's output past the prefix.
  const tail = tf.slice(f['block2.hidden'], [0, 2, 0], [3, 4, 16]);
  assert.deepEqual(tail.dataSync(), f.patches.dataSync());
  tf.dispose([out, tail, x]);

  const plain = tf.tidy(() => s.forward(images(6, [3, 8, 8, 1])));
  assert.equal(plain.features?.['block0.hidden'], undefined);
  assert.equal(plain.features?.['block0.q'], undefined);
  tf.dispose(plain);
  s.dispose();

  const noCls = createStudent({ ...vitSpec, classToken: false, distillToken: false }, 5);
  const out2 = tf.tidy(() => noCls.forward(images(7, [2, 8, 8, 1]), { collect: true }));
  assert.deepEqual(out2.logits.shape, [2, C]);
  assert.equal(out2.distLogits, undefined);
  assert.deepEqual(out2.features!['block0.hidden'].shape, [2, 4, 16]);
  tf.dispose(out2);
  noCls.dispose();
});

test('dropout is active only when training', () => {
  const s = createStudent({ ...mlpSpec, dropout: 0.5 }, 8);
  const x = images(9);
  const [e1, e2, t1] = tf.tidy(() => [s.forward(x).logits, s.forward(x).logits, s.forward(x, { training: true }).logits]);
  assert.deepEqual(e1.dataSync(), e2.dataSync());
  assert.notDeepEqual(e1.dataSync(), t1.dataSync());
  tf.dispose([e1, e2, t1, x]);
  s.dispose();
});

test('the same seed gives the same weights; another seed does not', () => {
  const [a, b, c] = [createStudent(vitSpec, 11), createStudent(vitSpec, 11), createStudent(vitSpec, 12)];
  for (const name of Object.keys(a.weights)) assert.deepEqual(a.weights[name].dataSync(), b.weights[name].dataSync(), name);
  assert.notDeepEqual(a.weights['blocks.0.attn.qkv.w'].dataSync(), c.weights['blocks.0.attn.qkv.w'].dataSync());
  // Per-name seeds: two blocks' weights of the same shape must not start equal.
  assert.notDeepEqual(a.weights['blocks.0.attn.qkv.w'].dataSync(), a.weights['blocks.1.attn.qkv.w'].dataSync());
  [a, b, c].forEach((s) => s.dispose());
});

test('bad specs are rejected with a message naming the field', () => {
  assert.throws(() => createStudent({ ...vitSpec, width: 15 }, 1), /width 15 is not divisible by heads 2/);
  assert.throws(() => createStudent({ ...vitSpec, inputShape: [10, 8, 1] }, 1), /not a whole number of 4×4 patches/);
  assert.throws(() => createStudent({ ...mlpSpec, hidden: [0] }, 1), /mlp hidden\[0\] must be a positive integer/);
  assert.throws(() => createStudent({ ...logregSpec, numClasses: 0 }, 1), /numClasses must be a positive integer/);
  assert.throws(() => createStudent({ kind: 'rnn', numClasses: 2 } as unknown as StudentSpec, 1), /unknown student kind "rnn"/);
  assert.throws(() => createStudent({ ...textLogregSpec, inputShape: [8, 8, 1] }, 1), /logreg: give inputShape \(images\) or buckets/);
  assert.throws(() => createStudent({ ...textMlpSpec, buckets: 0 }, 1), /mlp buckets must be a positive integer/);
  assert.throws(() => createStudent({ kind: 'logreg', numClasses: C }, 1), /logreg inputShape must be a non-empty array/);
  assert.throws(
    () => createStudent({ ...cnnSpec, channels: [4] } as unknown as StudentSpec, 1),
    /cnn channels must list 2 or 3 channel counts/,
  );
});

// ---------------------------------------------------------------------------------------
// Training: each student overfits 16 items with 4 random labels

/**
 * CE (plus the distillation head's CE when there is one, so that head trains
 * too). First checks every weight receives a non-zero gradient, then runs Adam
 * until the loss is below 10% of its start.
 */
async function overfit(s: Student, x: StudentInput, lr: number, maxSteps: number): Promise<{ start: number; end: number; steps: number }> {
  const labels = tf.tensor1d(LABELS, 'int32');
  const loss = (): tf.Scalar => {
    const out = s.forward(x, { training: true });
    const ce = crossEntropy(out.logits, labels);
    return out.distLogits ? tf.add(ce, crossEntropy(out.distLogits, labels)) : ce;
  };
  const vars = Object.values(s.weights);
  const { value, grads } = tf.variableGrads(loss, vars);
  for (const [name, v] of Object.entries(s.weights)) {
    const g = grads[v.name];
    assert.ok(g, `${s.spec.kind}: no gradient for ${name}`);
    assert.ok(
      g.dataSync().some((e) => e !== 0),
      `${s.spec.kind}: ${name} gets a zero gradient`,
    );
  }
  const start = value.dataSync()[0];
  tf.dispose([value, grads]);

  const optimizer = tf.train.adam(lr);
  let end = start;
  let steps = 0;
  while (steps < maxSteps && end >= 0.1 * start) {
    const cost = optimizer.minimize(loss, true, vars)!;
    end = cost.dataSync()[0];
    cost.dispose();
    steps++;
  }
  optimizer.dispose();
  labels.dispose();
  return { start, end, steps };
}

for (const [name, spec, lr, maxSteps] of [
  ['logreg', logregSpec, 0.05, 200],
  ['mlp', mlpSpec, 0.01, 200],
  ['cnn', cnnSpec, 0.01, 300],
  ['cnn (two convolutions)', cnn2Spec, 0.01, 300],
  ['vit (class + distillation tokens)', vitSpec, 0.01, 300],
  [
    'vit (MiniViT sharing, no class token)',
    { ...vitSpec, depth: 4, shareEvery: 2, classToken: false, distillToken: false } as StudentSpec,
    0.01,
    300,
  ],
  ['fasttext (linear head)', fasttextSpec, 0.05, 300],
  ['fasttext (MLP head)', fasttextMlpSpec, 0.02, 300],
  ['logreg (text)', textLogregSpec, 0.05, 300],
  ['mlp (text)', textMlpSpec, 0.02, 300],
] as const) {
  test(`${name} overfits 16 items on wasm`, async (t) => {
    const s = createStudent(spec, 21);
    // A text logreg's table starts at zero: with balanced labels its bias's first gradient is exactly zero, so start it off zero.
    if (spec === textLogregSpec)
      tf.tidy(() => s.weights['head.w'].assign(tf.randomNormal(s.weights['head.w'].shape, 0, 0.1, 'float32', 5)));
    const x = inputFor(spec, 22);
    const tensorsBefore = tf.memory().numTensors;
    const { start, end, steps } = await overfit(s, x, lr, maxSteps);
    assert.ok(end < 0.1 * start, `${name}: cross-entropy ${start.toFixed(3)} → ${end.toFixed(3)} after ${steps} steps`);
    t.diagnostic(`${name}: cross-entropy ${start.toFixed(3)} → ${end.toFixed(3)} in ${steps} Adam steps`);
    assert.equal(tf.memory().numTensors, tensorsBefore, `${name}: tensors leaked while training`);
    if (x instanceof tf.Tensor) x.dispose();
    s.dispose();
  });
}

// ---------------------------------------------------------------------------------------
// MiniViT weight sharing

test('MiniViT sharing: depth 4, shareEvery 2 shares attention + MLP per pair, keeps every LayerNorm', () => {
  const base: VitSpec = { kind: 'vit', numClasses: 4, inputShape: [8, 8, 1], patchSize: 4, width: 8, depth: 4, heads: 2, mlpRatio: 2 };
  const plain = createStudent(base, 1);
  const shared = createStudent({ ...base, shareEvery: 2 }, 1);
  // By hand, D = 8, 4 patches + class token = 5 tokens, MLP 16:
  const embed = 4 * 4 * 1 * 8 + 8 + 8 + 5 * 8; // patch.w, patch.b, cls_token, pos_embed = 184
  const attnMlp = 8 * 24 + 24 + (8 * 8 + 8) + (8 * 16 + 16) + (16 * 8 + 8); // qkv, proj, fc1, fc2 = 568
  const norms = 2 * (8 + 8); // norm1, norm2 = 32
  const tail = 8 + 8 + (8 * 4 + 4); // final norm, head = 52
  assert.equal(countParams(plain), embed + 4 * (attnMlp + norms) + tail); // 2636
  assert.equal(countParams(shared), embed + 2 * attnMlp + 4 * norms + tail); // 1500
  assert.equal(countParams(plain), 2636);
  assert.equal(countParams(shared), 1500);

  for (let i = 0; i < 4; i++) {
    for (const ln of ['norm1', 'norm2']) assert.ok(shared.weights[`blocks.${i}.${ln}.g`], `blocks.${i}.${ln} is its own`);
    const owner = i % 2 === 0;
    assert.equal(`blocks.${i}.attn.qkv.w` in shared.weights, owner, `blocks.${i}.attn`);
    assert.equal(`blocks.${i}.mlp.fc1.w` in shared.weights, owner, `blocks.${i}.mlp`);
  }
  plain.dispose();
  shared.dispose();
});

test('MiniViT sharing: the second block of a group projects with the qkv weight of the first', () => {
  const spec: VitSpec = { ...vitSpec, depth: 2, shareEvery: 2, distillToken: false };
  const s = createStudent(spec, 3);
  const x = images(4, [2, 8, 8, 1]);
  const out = tf.tidy(() => s.forward(x, { collect: true }));
  // Equal weights give equal projections: q of block 1 is LN₁⁽¹⁾(h₀)·W, the same map as block 0 applies.
  const w = s.weights['blocks.0.attn.qkv.w'];
  const [q1FromShared] = tf.tidy(() => {
    const [bq, n, d] = [2, 5, 16];
    const ln = s.weights['blocks.1.norm1.g'];
    const lb = s.weights['blocks.1.norm1.b'];
    const h = out.features!['block0.hidden'];
    const mean = tf.mean(h, -1, true);
    const c = tf.sub(h, mean);
    const normed = tf.add(tf.mul(tf.mul(c, tf.rsqrt(tf.add(tf.mean(tf.square(c), -1, true), 1e-5))), ln), lb);
    const qkv = tf.add(tf.matMul(tf.reshape(normed, [bq * n, d]), w), s.weights['blocks.0.attn.qkv.b']);
    const q = tf.transpose(tf.reshape(tf.slice(qkv, [0, 0], [bq * n, d]), [bq, n, 2, 8]), [0, 2, 1, 3]);
    return [q];
  });
  const diff = tf.tidy(() => tf.max(tf.abs(tf.sub(q1FromShared, out.features!['block1.q']))).dataSync()[0]);
  assert.ok(diff < 1e-5, `block 1's q differs from the shared projection by ${diff}`);
  tf.dispose([out, q1FromShared, x]);
  s.dispose();
});

test('text logreg is logistic regression on L1-normalised counts of the hashed words and bigrams (x·W + b, computed as a bag)', () => {
  const s = createStudent(textLogregSpec, 7);
  const batch = textBatch(['red red fox', 'fox', ''], { buckets: 256 });
  // The dense reference: x[v] = count of v in the bag / bag size (an empty text: x = 0, logits = b).
  const x = new Float32Array(3 * 256);
  batch.bags.forEach((bag, b) => {
    for (const v of Array.from(bag)) x[b * 256 + v] += 1 / bag.length;
  });
  const [got, want] = tf.tidy(() => [
    s.forward(batch).logits,
    tf.add(tf.matMul(tf.tensor2d(x, [3, 256]), s.weights['head.w']), s.weights['head.b']),
  ]);
  const diff = tf.tidy(() => tf.max(tf.abs(tf.sub(got, want))).dataSync()[0]);
  assert.ok(diff < 1e-6, `the bag and the dense product differ by ${diff}`);
  assert.deepEqual(batch.bags[0].length, 5, '3 words and 2 bigrams');
  tf.dispose([got, want]);
  s.dispose();
});

// ---------------------------------------------------------------------------------------
// Save / load

test('studentFromWeights after saveWeights/loadWeights gives the same logits', async () => {
  const specs: StudentSpec[] = [
    logregSpec,
    mlpSpec,
    cnnSpec,
    { ...vitSpec, depth: 4, shareEvery: 2 },
    fasttextMlpSpec,
    textLogregSpec,
    textMlpSpec,
  ];
  for (const spec of specs) {
    const s = createStudent(spec, 31);
    const dir = tmpDir();
    dirs.push(dir);
    await saveWeights(dir, s.spec, s.weights);
    const { spec: loadedSpec, tensors } = await loadWeights<StudentSpec>(dir);
    assert.deepEqual(loadedSpec, spec);
    const again = studentFromWeights(loadedSpec, tensors);
    tf.dispose(Object.values(tensors)); // studentFromWeights copies them
    assert.equal(countParams(again), countParams(s));

    const x = inputFor(spec, 32);
    const [a, b] = tf.tidy(() => {
      const o1 = s.forward(x);
      const o2 = again.forward(x);
      return [
        o1.distLogits ? tf.concat([o1.logits, o1.distLogits], 1) : o1.logits,
        o2.distLogits ? tf.concat([o2.logits, o2.distLogits], 1) : o2.logits,
      ];
    });
    const diff = tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]);
    assert.ok(diff <= 1e-6, `${spec.kind}: logits differ by ${diff} after a save/load round trip`);
    tf.dispose([a, b, ...(x instanceof tf.Tensor ? [x] : [])]);
    s.dispose();
    again.dispose();
  }
});

test('studentFromWeights rejects missing, extra and misshaped tensors', () => {
  const s = createStudent(mlpSpec, 1);
  const { ['head.b']: _dropped, ...missing } = s.weights;
  assert.throws(() => studentFromWeights(mlpSpec, missing), /saved weights lack "head.b"/);
  const extra = tf.zeros([3]);
  assert.throws(() => studentFromWeights(mlpSpec, { ...s.weights, 'bogus.w': extra }), /does not use: bogus\.w/);
  assert.throws(
    () => studentFromWeights({ ...mlpSpec, numClasses: 5 } as StudentSpec, s.weights),
    /"head.w" is \[16,4\], the spec needs \[16,5\]/,
  );
  extra.dispose();
  s.dispose();
});

// ---------------------------------------------------------------------------------------
// fastText hashing

test('hashTokens: deterministic FNV-1a, same word same bucket, bigrams after words', () => {
  // FNV-1a("a") = 0xe40c292c: pins the hash, so ids stay valid across versions.
  assert.deepEqual(hashTokens('a', 2 ** 32), [0xe40c292c]);
  const buckets = 1000;
  const a = hashTokens('The cat sat.', buckets);
  assert.deepEqual(hashTokens('The cat sat.', buckets), a);
  assert.equal(a.length, 3 + 2); // 3 words, 2 bigrams
  assert.ok(a.every((id) => Number.isInteger(id) && id >= 0 && id < buckets));
  // Lowercased and split on anything not a letter or digit: "CAT!" is "cat".
  const cat = hashTokens('cat', buckets, { bigrams: false })[0];
  assert.equal(a[1], cat);
  assert.equal(hashTokens('--CAT!', buckets, { bigrams: false })[0], cat);
  assert.deepEqual(hashTokens('a dog, a CAT', buckets, { bigrams: false }).slice(2), hashTokens('a cat', buckets, { bigrams: false }));
  // A bigram is hashed as "w1 w2" (one space), whatever separated the words.
  assert.equal(hashTokens('the, cat', buckets)[2], hashTokens('THE   cat', buckets)[2]);
  assert.notEqual(hashTokens('the cat', buckets)[2], hashTokens('cat the', buckets)[2]);
  assert.deepEqual(hashTokens('', buckets), []);
  assert.deepEqual(hashTokens('Ünïcode 42', buckets, { bigrams: false }).length, 2);
  assert.deepEqual(textBatch(['The cat sat.'], { buckets, bigrams: true }).bags, [a]);
});
