/**
 * AdamW keeps its moments as one flat vector over every weight and updates it
 * with the bias corrections folded into two scalars. These tests hold it to the
 * textbook per-weight formula (written out below in float64), including a
 * weight that gets no gradient at some step (it and its moments stay put), the
 * decay of matrices only, and a checkpoint round trip through state()/load().
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { selectBackend, tf } from '../src/train/backend.ts';
import { AdamW } from '../src/train/optim.ts';
import { TRAIN_BACKEND } from './train-backend.ts';

const SHAPES: Record<string, number[]> = { 'a.w': [3, 4], 'a.b': [4], 'c.w': [2, 2, 3] };
const [B1, B2, EPS, WD, LR] = [0.9, 0.999, 1e-8, 0.1, 0.01];

function values(seed: number, n: number): Float64Array {
  return Float64Array.from({ length: n }, (_, i) => Math.sin(seed * 7.1 + i * 1.3) * (1 + (i % 3)));
}

/** Gradients of step t: 'c.w' has none at step 2. */
function gradsAt(t: number): Record<string, Float64Array> {
  const out: Record<string, Float64Array> = {};
  for (const [name, shape] of Object.entries(SHAPES)) {
    if (name === 'c.w' && t === 2) continue;
    out[name] = values(
      100 * t + name.length,
      shape.reduce((a, b) => a * b, 1),
    );
  }
  return out;
}

/** The textbook update, per weight, in float64. */
function reference(steps: number): Record<string, Float64Array> {
  const p: Record<string, Float64Array> = {};
  const m: Record<string, Float64Array> = {};
  const v: Record<string, Float64Array> = {};
  for (const [name, shape] of Object.entries(SHAPES)) {
    const n = shape.reduce((a, b) => a * b, 1);
    [p[name], m[name], v[name]] = [values(name.length, n), new Float64Array(n), new Float64Array(n)];
  }
  for (let t = 1; t <= steps; t++) {
    for (const [name, g] of Object.entries(gradsAt(t))) {
      const decay = SHAPES[name].length >= 2 ? WD : 0;
      for (let i = 0; i < g.length; i++) {
        m[name][i] = B1 * m[name][i] + (1 - B1) * g[i];
        v[name][i] = B2 * v[name][i] + (1 - B2) * g[i] * g[i];
        const mhat = m[name][i] / (1 - B1 ** t);
        const vhat = v[name][i] / (1 - B2 ** t);
        p[name][i] -= LR * (mhat / (Math.sqrt(vhat) + EPS) + decay * p[name][i]);
      }
    }
  }
  return p;
}

function makeParams(): Record<string, tf.Variable> {
  return Object.fromEntries(
    Object.entries(SHAPES).map(([name, shape]) => [
      name,
      tf.variable(
        tf.tensor(
          Float32Array.from(
            values(
              name.length,
              shape.reduce((a, b) => a * b, 1),
            ),
          ),
          shape,
        ),
      ),
    ]),
  );
}

function stepWith(opt: AdamW, t: number): void {
  const grads = Object.fromEntries(Object.entries(gradsAt(t)).map(([name, g]) => [name, tf.tensor(Float32Array.from(g), SHAPES[name])]));
  opt.apply(grads, LR);
  tf.dispose(Object.values(grads));
}

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++)
    assert.ok(Math.abs(actual[i] - expected[i]) <= tol, `${what}[${i}]: ${actual[i]} vs ${expected[i]}`);
}

for (const backend of ['cpu', TRAIN_BACKEND] as const) {
  test(`AdamW on ${backend} follows the per-weight formula, skips a weight without a gradient, decays matrices only`, async () => {
    await selectBackend(backend);
    const params = makeParams();
    const opt = new AdamW(params, { weightDecay: WD });
    for (let t = 1; t <= 4; t++) stepWith(opt, t);
    const expected = reference(4);
    for (const name of Object.keys(SHAPES)) assertClose(params[name].dataSync(), expected[name], 1e-5, `${backend} ${name}`);
    // The reference leaves 'c.w' and its moments alone at step 2: a zero gradient instead would move it by ~LR.
    assert.equal(opt.step, 4);
    opt.dispose();
    tf.dispose(Object.values(params));
  });

  test(`AdamW on ${backend}: state() and load() continue a run exactly`, async () => {
    await selectBackend(backend);
    const params = makeParams();
    const opt = new AdamW(params, { weightDecay: WD });
    for (let t = 1; t <= 2; t++) stepWith(opt, t);
    const state = opt.state();
    for (const name of Object.keys(SHAPES)) {
      assert.deepEqual(state[`adam.m.${name}`].shape, SHAPES[name]);
      assert.deepEqual(state[`adam.v.${name}`].shape, SHAPES[name]);
    }
    const saved = Object.fromEntries(Object.entries(state).map(([k, t]) => [k, t.clone()]));
    state['adam.step'].dispose();
    const resumedParams = Object.fromEntries(Object.entries(params).map(([k, v]) => [k, tf.variable(v.clone())]));
    const resumed = new AdamW(resumedParams, { weightDecay: WD });
    resumed.load(saved);
    assert.equal(resumed.step, 2);
    for (let t = 3; t <= 4; t++) {
      stepWith(opt, t);
      stepWith(resumed, t);
    }
    for (const name of Object.keys(SHAPES)) assertClose(resumedParams[name].dataSync(), params[name].dataSync(), 0, `${backend} ${name}`);
    const expected = reference(4);
    for (const name of Object.keys(SHAPES))
      assertClose(resumedParams[name].dataSync(), expected[name], 1e-5, `${backend} ${name} vs formula`);
    assert.throws(() => resumed.load({ 'adam.m.a.b': tf.zeros([5]) }), /adam\.m\.a\.b is \[5\], the weight is \[4\]/);
    tf.dispose([...Object.values(saved), ...Object.values(params), ...Object.values(resumedParams)]);
    opt.dispose();
    resumed.dispose();
  });
}
