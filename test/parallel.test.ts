/**
 * Data-parallel training (train --workers N, src/train/parallel): the batch's shares computed on
 * worker threads give the single-thread step's gradients and weights up to float rounding, and a
 * short training learns as well. On tiny in-memory image data (12×12 blobs), on TRAIN_BACKEND.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { SettingError } from '../src/errors.ts';
import { mulberry32 } from '../src/random.ts';
import { selectBackend, tf } from '../src/train/backend.ts';
import type { Dataset } from '../src/train/data.ts';
import { createDistillers, type Distiller } from '../src/train/distill/index.ts';
import { loadWeights } from '../src/train/io.ts';
import type { StudentSpec } from '../src/train/models/index.ts';
import { parallelUnsupported } from '../src/train/parallel/index.ts';
import { shareSizes } from '../src/train/parallel/shares.ts';
import { train, type TrainConfig } from '../src/train/trainer.ts';
import { workDir } from './helpers.ts';
import { TRAIN_BACKEND } from './train-backend.ts';

const S = 12;
const C = 3;

/**
 * n grey S×S images: a bright 3×3 blob in column band k (the class) at a random row, on noise.
 * Targets: the teachers' mean 0.8 on the class; two teachers' own distributions, the second
 * missing on every fifth item (multi-kd's `present`).
 */
function blobs(n: number, seed: number): Dataset {
  const r = mulberry32(seed);
  const pixels = new Float32Array(n * S * S);
  const gold = new Int32Array(n);
  const targetProbs = new Float32Array(n * C);
  const T = 2;
  const logprobs = new Float32Array(n * T * C);
  const present = new Float32Array(n * T);
  for (let i = 0; i < n; i++) {
    const k = i % C;
    gold[i] = k;
    const cx = 2 + 4 * k;
    const cy = 2 + Math.floor(r() * 8);
    for (let p = 0; p < S * S; p++) {
      const onBlob = Math.abs((p % S) - cx) <= 1 && Math.abs(Math.floor(p / S) - cy) <= 1;
      pixels[i * S * S + p] = r() * 0.5 + (onBlob ? 1 : 0);
    }
    for (let c = 0; c < C; c++) targetProbs[i * C + c] = c === k ? 0.8 : 0.1;
    for (let t = 0; t < T; t++) {
      present[i * T + t] = t === 1 && i % 5 === 0 ? 0 : 1;
      for (let c = 0; c < C; c++) logprobs[(i * T + t) * C + c] = Math.log(c === k ? 0.7 - 0.1 * t : 0.15 + 0.05 * t);
    }
  }
  return {
    task: { id: 1, name: 'blobs', labels: ['left', 'middle', 'right'], input_kind: 'image' },
    n,
    ids: Array.from({ length: n }, (_, i) => `b${i}`),
    splits: Array.from({ length: n }, (_, i) => (i % 4 === 3 ? 'test' : 'train')),
    gold,
    targetProbs,
    targetHard: gold,
    teacherHard: gold,
    perTeacher: { names: ['t1', 't2'], logprobs, present },
    pixels,
    preprocess: { input: 'image', image: { height: S, width: S, channels: 1, mean: 0, std: 1 } },
  };
}

const VIT: StudentSpec = {
  kind: 'vit',
  numClasses: C,
  inputShape: [S, S, 1],
  patchSize: 4,
  width: 16,
  depth: 1,
  heads: 2,
  mlpRatio: 2,
  distillToken: true,
};

const base: TrainConfig = {
  epochs: 1,
  batchSize: 32,
  lr: 1e-3,
  weightDecay: 0.05,
  seed: 3,
  clip: 1,
  patience: 0,
  distill: ['ce', 'kd'],
  testEachEpoch: false,
  trainAccuracySample: 20,
};

const parallelBackend = TRAIN_BACKEND !== 'tensorflow';

before(async () => {
  await selectBackend(TRAIN_BACKEND);
});

describe('shares and refusals', () => {
  test('a batch is cut into shares as equal as possible, never an empty one', () => {
    assert.deepEqual(shareSizes(64, 2), [32, 32]);
    assert.deepEqual(shareSizes(53, 2), [27, 26]);
    assert.deepEqual(shareSizes(10, 3), [4, 3, 3]);
    assert.deepEqual(shareSizes(1, 2), [1]);
  });

  test('refused: the native backend, the fasttext student, distillers with feature maps or weights of their own', () => {
    const ceKd = createDistillers(['ce', 'kd'], {}, { student: VIT, seed: 1 });
    assert.equal(parallelUnsupported('wasm', VIT, ceKd), null);
    assert.equal(parallelUnsupported('cpu', VIT, ceKd), null);
    assert.match(parallelUnsupported('tensorflow', VIT, ceKd)!, /thread pool/);
    const text: StudentSpec = { kind: 'fasttext', numClasses: C, buckets: 64, dim: 4, hidden: [] };
    assert.match(parallelUnsupported('wasm', text, ceKd)!, /fasttext/);
    const feature = { name: 'hidden', needs: { featureTeacher: true, studentFeatures: true }, weights: {} } as unknown as Distiller;
    assert.match(parallelUnsupported('wasm', VIT, [...ceKd, feature])!, /the hidden distiller uses feature maps/);
    for (const d of ceKd) d.dispose();
  });

  test('train() refuses --workers 2 where it cannot apply, naming the setting, before writing anything', async () => {
    const dir = path.join(workDir(), 'never');
    const spec: StudentSpec = parallelBackend ? { kind: 'fasttext', numClasses: C, buckets: 64, dim: 4, hidden: [] } : VIT;
    await assert.rejects(
      () => train(blobs(30, 1), spec, { ...base, workers: 2 }, dir),
      (e: unknown) => e instanceof SettingError && e.setting === 'workers' && e.value === 2,
    );
    assert.equal(fs.existsSync(dir), false);
  });
});

describe('two threads train as one', { skip: parallelBackend ? false : `the ${TRAIN_BACKEND} backend refuses --workers > 1` }, () => {
  test('an epoch of two steps (53 items in shares of 27 and 26, then 1) gives the same gradients and weights', async () => {
    // Every kind of target crosses to the worker: hard labels (ce), teacher logits (kd, deit), each teacher's (multi-kd).
    const ds = blobs(80, 1);
    const c: TrainConfig = { ...base, batchSize: 53, distill: ['ce', 'kd', 'multi-kd', 'deit'], augment: { shift: 1, flip: false } };
    const [one, two] = [workDir(), workDir()];
    const r1 = await train(ds, VIT, c, one);
    const r2 = await train(ds, VIT, { ...c, workers: 2 }, two);
    const close = (a: number, b: number) => Math.abs(a - b) <= 1e-5 * Math.abs(a);
    assert.ok(close(r1.history[0].loss, r2.history[0].loss), `loss ${r1.history[0].loss} vs ${r2.history[0].loss}`);
    for (const [k, v] of Object.entries(r1.history[0].terms))
      assert.ok(close(v, r2.history[0].terms[k]), `${k}: ${v} vs ${r2.history[0].terms[k]}`);

    const a = (await loadWeights(path.join(one, 'checkpoint'))).tensors;
    const b = (await loadWeights(path.join(two, 'checkpoint'))).tensors;
    assert.deepEqual(Object.keys(b).sort(), Object.keys(a).sort());
    const weightNames = Object.keys(a).filter((k) => !k.startsWith('adam.'));
    const scale = Math.max(...weightNames.map((k) => tf.max(tf.abs(a[k])).dataSync()[0]));
    for (const [k, x] of Object.entries(a)) {
      const y = b[k];
      if (k.startsWith('adam.m.')) {
        // The first moments are the (clipped) gradients' running mean: within 1e-5 of each tensor's norm.
        const rel = tf.norm(tf.sub(x, y)).dataSync()[0] / Math.max(tf.norm(x).dataSync()[0], 1e-20);
        assert.ok(rel <= 1e-5, `${k}: gradients differ by ${rel} of their norm`);
      } else if (!k.startsWith('adam.')) {
        // Weights on the model's scale: the key bias's gradient is 0 in exact arithmetic (softmax ignores a constant
        // added to every key), so AdamW's normalised step turns its rounding noise into steps of its own.
        const diff = tf.max(tf.abs(tf.sub(x, y))).dataSync()[0];
        assert.ok(diff <= 1e-5 * scale, `${k}: weights differ by ${diff} (largest weight ${scale})`);
      }
    }
    tf.dispose([...Object.values(a), ...Object.values(b)]);
  });

  test('a short training (MLP with dropout, 3 epochs) with two workers reaches the accuracy of one', async () => {
    const ds = blobs(240, 2);
    const spec: StudentSpec = { kind: 'mlp', numClasses: C, inputShape: [S, S, 1], hidden: [32], dropout: 0.2 };
    const c: TrainConfig = { ...base, epochs: 3, lr: 3e-3, testEachEpoch: true };
    const r1 = await train(ds, spec, c, workDir());
    const r2 = await train(ds, spec, { ...c, workers: 2 }, workDir());
    const acc = (r: typeof r1) => r.test.accuracy ?? 0;
    assert.ok(acc(r1) >= 0.9, `one thread: ${acc(r1)}`);
    assert.ok(acc(r2) >= 0.9, `two threads: ${acc(r2)}`);
    assert.ok(Math.abs(acc(r1) - acc(r2)) <= 0.1, `${acc(r1)} vs ${acc(r2)}`);
    assert.ok(r2.history.at(-1)!.loss < r2.history[0].loss, 'the loss falls');
  });
});
