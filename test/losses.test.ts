import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { selectBackend, tf } from '../src/train/backend.ts';
import {
  attentionRelationLoss,
  crossEntropy,
  deitHardDistill,
  deitPredict,
  deitSoftDistill,
  hiddenMse,
  kdLoss,
  kdLossFromLogprobs,
  manifoldLoss,
  manifoldTerms,
  softCrossEntropy,
  termValues,
  weightedSum,
  type Qkv,
} from '../src/train/losses.ts';

before(async () => {
  await selectBackend('cpu');
});

// Plain-JS references, written straight from the formulas, independent of tfjs.
const softmax = (z: number[]): number[] => {
  const m = Math.max(...z);
  const e = z.map((x) => Math.exp(x - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
};
const kl = (p: number[], q: number[]): number => p.reduce((acc, pi, i) => acc + (pi === 0 ? 0 : pi * Math.log(pi / q[i])), 0);
const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;

function value(t: tf.Tensor): number {
  const v = t.dataSync()[0];
  t.dispose();
  return v;
}

function close(actual: number, expected: number, tol = 1e-5, msg = ''): void {
  assert.ok(Number.isFinite(actual), `${msg} not finite: ${actual}`);
  assert.ok(Math.abs(actual - expected) <= tol * Math.max(1, Math.abs(expected)), `${msg} ${actual} != ${expected}`);
}

const S = [
  [1, 2, 3],
  [0.5, -1, 2],
];
const Tch = [
  [3, 1, 0.2],
  [0, 2.5, 1],
];

test('cross-entropy: batch mean of −log softmax at the target', () => {
  const expected = mean([-Math.log(softmax(S[0])[2]), -Math.log(softmax(S[1])[0])]);
  close(value(crossEntropy(tf.tensor2d(S), tf.tensor1d([2, 0], 'int32'))), expected, 1e-6, 'CE');
  const probs = [
    [0.2, 0.3, 0.5],
    [1, 0, 0],
  ];
  const soft = mean(probs.map((p, b) => -p.reduce((a, pi, c) => a + pi * Math.log(softmax(S[b])[c]), 0)));
  close(value(softCrossEntropy(tf.tensor2d(S), tf.tensor2d(probs))), soft, 1e-6, 'soft CE');
  assert.throws(() => crossEntropy(tf.tensor2d(S), tf.tensor1d([1], 'int32')), /targets must be \[2\]/);
});

test('KD at T = 1 and T = 4 is T² times the hand-computed KL(teacher ‖ student)', () => {
  for (const T of [1, 4]) {
    const klHand = mean(S.map((s, b) => kl(softmax(Tch[b].map((x) => x / T)), softmax(s.map((x) => x / T)))));
    const kd = value(kdLoss(tf.tensor2d(S), tf.tensor2d(Tch), T));
    close(kd, T * T * klHand, 1e-5, `KD(T=${T})`);
    if (T === 4) assert.ok(Math.abs(kd - klHand) > 1e-3, 'the T² factor is applied');
  }
  close(value(kdLoss(tf.tensor2d(Tch), tf.tensor2d(Tch), 4)), 0, 1e-6, 'KD(self)');
  assert.throws(() => kdLoss(tf.tensor2d(S), tf.tensor2d(Tch), 0), /temperature/);
});

test('KD with a −Infinity teacher log-prob is finite and treats it as probability 0', () => {
  const teacherLogprobs = [[Math.log(0.7), Math.log(0.3), -Infinity]];
  const student = [[0.1, 0.2, 0.3]];
  for (const T of [1, 2, 100]) {
    // p^(1/T), renormalised: the zero stays zero at every temperature.
    const pT = softmax([Math.log(0.7) / T, Math.log(0.3) / T, -Infinity]);
    assert.equal(pT[2], 0);
    const expected = T * T * kl(pT, softmax(student[0].map((x) => x / T)));
    close(value(kdLossFromLogprobs(tf.tensor2d(student), tf.tensor2d(teacherLogprobs), T)), expected, 1e-5, `T=${T}`);
  }
  const g = tf.grad((s: tf.Tensor) => kdLoss(s, tf.tensor2d(teacherLogprobs), 2))(tf.tensor2d(student));
  assert.ok(Array.from(g.dataSync()).every(Number.isFinite));
});

test('DeiT: hard = CE against the teacher argmax, soft = KD on the dist head, predict = mean of softmaxes', () => {
  const hard = mean([-Math.log(softmax(S[0])[0]), -Math.log(softmax(S[1])[1])]);
  close(value(deitHardDistill(tf.tensor2d(S), tf.tensor2d(Tch))), hard, 1e-6, 'hard');
  const T = 3;
  const soft = T * T * mean(S.map((s, b) => kl(softmax(Tch[b].map((x) => x / T)), softmax(s.map((x) => x / T)))));
  close(value(deitSoftDistill(tf.tensor2d(S), tf.tensor2d(Tch), T)), soft, 1e-5, 'soft');
  const pred = deitPredict(tf.tensor2d(S), tf.tensor2d(Tch)).arraySync() as number[][];
  pred.forEach((row, b) => row.forEach((p, c) => close(p, (softmax(S[b])[c] + softmax(Tch[b])[c]) / 2, 1e-6, 'predict')));
});

test('hidden MSE is the mean of squared differences', () => {
  const a = [
    [1, 2],
    [3, 4],
  ];
  const b = [
    [1, 0],
    [5, 4],
  ];
  close(value(hiddenMse(tf.tensor2d(a), tf.tensor2d(b))), (0 + 4 + 4 + 0) / 4, 1e-7, 'mse');
  assert.throws(() => hiddenMse(tf.tensor2d(a), tf.tensor2d([[1, 2, 3]])), /shapes differ/);
});

/** One head, two tokens: Q, K, V given as [N][d] for batch 1. */
function qkv(q: number[][], k: number[][], v: number[][]): Qkv {
  return { q: tf.tensor4d([[q]]), k: tf.tensor4d([[k]]), v: tf.tensor4d([[v]]) };
}
function relation(x: number[][]): number[][] {
  const d = x[0].length;
  return x.map((xi) => softmax(x.map((xj) => xi.reduce((a, xik, k) => a + xik * xj[k], 0) / Math.sqrt(d))));
}

test('attention relation loss: 0 for identical inputs, hand value on 1 head × 2 tokens, head dims may differ', () => {
  // Student head dim 2, teacher head dim 1: relation matrices are 2×2 either way.
  const s = {
    q: [
      [1, 0],
      [0.5, 1],
    ],
    k: [
      [0, 1],
      [1, 1],
    ],
    v: [
      [2, 0],
      [0, -1],
    ],
  };
  const t = { q: [[1], [-1]], k: [[0.5], [2]], v: [[1], [1.5]] };
  const hand = mean(
    (['q', 'k', 'v'] as const).map((m) => {
      const rt = relation(t[m]);
      const rs = relation(s[m]);
      return mean([kl(rt[0], rs[0]), kl(rt[1], rs[1])]);
    }),
  );
  assert.ok(hand > 0);
  close(value(attentionRelationLoss(qkv(s.q, s.k, s.v), qkv(t.q, t.k, t.v))), hand, 1e-5, 'relation');
  close(value(attentionRelationLoss(qkv(s.q, s.k, s.v), qkv(s.q, s.k, s.v))), 0, 1e-6, 'identical');
  close(value(attentionRelationLoss(qkv(s.q, s.k, s.v), qkv(s.q, s.k, s.v), { pairs: 'all' })), 0, 1e-6, 'identical, 9 pairs');
  assert.ok(value(attentionRelationLoss(qkv(s.q, s.k, s.v), qkv(t.q, t.k, t.v), { pairs: 'all' })) > 0);
});

test('attention relation loss: different head counts need relationHeads', () => {
  const rand = (shape: [number, number, number, number], seed: number) => tf.randomNormal(shape, 0, 1, 'float32', seed);
  const student: Qkv = { q: rand([2, 1, 3, 4], 1), k: rand([2, 1, 3, 4], 2), v: rand([2, 1, 3, 4], 3) };
  const teacher: Qkv = { q: rand([2, 2, 3, 4], 4), k: rand([2, 2, 3, 4], 5), v: rand([2, 2, 3, 4], 6) };
  assert.throws(() => attentionRelationLoss(student, teacher), /relationHeads/);
  assert.ok(value(attentionRelationLoss(student, teacher, { relationHeads: 1 })) > 0);
  // Regrouping a tensor against itself changes nothing: still exactly the same relations.
  close(value(attentionRelationLoss(teacher, teacher, { relationHeads: 4 })), 0, 1e-6, 'regrouped self');
  assert.throws(() => attentionRelationLoss(student, teacher, { relationHeads: 3 }), /not divisible/);
});

/** Reference: mean squared difference of batched Gram matrices of L2-normalised rows. */
function gramMseRef(groupsS: number[][][], groupsT: number[][][]): number {
  const norm = (v: number[]) => {
    const n = Math.hypot(...v);
    return v.map((x) => x / n);
  };
  const diffs: number[] = [];
  groupsS.forEach((gs, g) => {
    const a = gs.map(norm);
    const b = groupsT[g].map(norm);
    a.forEach((ai, i) =>
      a.forEach((aj, j) => {
        const ms = ai.reduce((acc, x, k) => acc + x * aj[k], 0);
        const mt = b[i].reduce((acc, x, k) => acc + x * b[j][k], 0);
        diffs.push((ms - mt) ** 2);
      }),
    );
  });
  return mean(diffs);
}

test('manifold loss: 0 for features equal up to scale (and width), intra + inter match the hand value', () => {
  const fs = [
    [
      [1, 2],
      [0, 1],
      [3, -1],
    ],
    [
      [-1, 1],
      [2, 2],
      [0.5, 0],
    ],
  ]; // [B=2, N=3, D=2]
  const ft = [
    [
      [2, 0, 1],
      [1, 1, 0],
      [0, 1, 1],
    ],
    [
      [1, -1, 2],
      [0, 2, 2],
      [1, 0, 0],
    ],
  ]; // D=3
  const scaled = fs.map((img) => img.map((p, n) => [...p.map((x) => x * (n + 2)), 0])); // other scale, padded to D=3
  close(value(manifoldLoss(tf.tensor3d(fs), tf.tensor3d(scaled))), 0, 1e-6, 'up to scale');

  const intra = gramMseRef(fs, ft);
  const inter = gramMseRef(
    [0, 1, 2].map((n) => fs.map((img) => img[n])),
    [0, 1, 2].map((n) => ft.map((img) => img[n])),
  );
  const terms = manifoldTerms(tf.tensor3d(fs), tf.tensor3d(ft));
  const got = termValues(terms);
  close(got.intra, intra, 1e-5, 'intra');
  close(got.inter, inter, 1e-5, 'inter');
  close(
    value(manifoldLoss(tf.tensor3d(fs), tf.tensor3d(ft), { weights: { intra: 2, inter: 0.5 } })),
    2 * intra + 0.5 * inter,
    1e-5,
    'weighted',
  );
  // The sampled term over all B·N patches is the Gram MSE of every patch against every other.
  const all = manifoldTerms(tf.tensor3d(fs), tf.tensor3d(ft), { randomK: 100 });
  close(termValues(all).random, gramMseRef([fs.flat()], [ft.flat()]), 1e-5, 'random (all patches)');
});

test('weightedSum: total of weighted terms, terms kept, unknown weights rejected', () => {
  const terms = { ce: tf.scalar(2), kd: tf.scalar(3) };
  close(value(weightedSum(terms, { kd: 0.5 })), 2 + 1.5, 1e-7, 'total');
  assert.deepEqual(termValues(terms), { ce: 2, kd: 3 });
  assert.throws(() => weightedSum(terms, { kdd: 1 }), /unknown loss terms: kdd/);
  close(value(weightedSum({})), 0, 0, 'empty');
});

test('every loss has finite, non-zero gradients with respect to the student', () => {
  const teacher = tf.tensor2d(Tch);
  const cases: Array<[string, tf.Tensor, (s: tf.Tensor) => tf.Scalar]> = [
    ['crossEntropy', tf.tensor2d(S), (s) => crossEntropy(s, tf.tensor1d([2, 0], 'int32'))],
    ['softCrossEntropy', tf.tensor2d(S), (s) => softCrossEntropy(s, tf.softmax(teacher))],
    ['kdLoss', tf.tensor2d(S), (s) => kdLoss(s, teacher, 4)],
    ['deitHardDistill', tf.tensor2d(S), (s) => deitHardDistill(s, teacher)],
    ['deitSoftDistill', tf.tensor2d(S), (s) => deitSoftDistill(s, teacher, 2)],
    ['hiddenMse', tf.tensor2d(S), (s) => hiddenMse(s, teacher)],
    [
      'attentionRelationLoss',
      tf.randomNormal([2, 2, 3, 4], 0, 1, 'float32', 7),
      (q) =>
        attentionRelationLoss(
          { q, k: tf.mul(q, 0.5), v: tf.neg(q) },
          {
            q: tf.ones([2, 2, 3, 8]),
            k: tf.randomNormal([2, 2, 3, 8], 0, 1, 'float32', 8),
            v: tf.randomNormal([2, 2, 3, 8], 0, 1, 'float32', 9),
          },
          { pairs: 'all' },
        ),
    ],
    [
      'manifoldLoss',
      tf.randomNormal([2, 3, 4], 0, 1, 'float32', 10),
      (s) => manifoldLoss(s, tf.randomNormal([2, 3, 6], 0, 1, 'float32', 11), { randomK: 4, rand: () => 0.5 }),
    ],
  ];
  for (const [name, x, f] of cases) {
    const g = tf.grad(f)(x);
    const values = Array.from(g.dataSync());
    assert.ok(values.every(Number.isFinite), `${name}: gradient not finite`);
    assert.ok(
      values.some((v) => v !== 0),
      `${name}: gradient is all zero`,
    );
  }
});
