import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  SoftCodecError,
  decodeSoft,
  defaultSoftFormat,
  encodeSoft,
  floatToHalf,
  formatName,
  halfToFloat,
  parseSoftFormat,
  probsToLogprobs,
  softFormatOf,
  softToProbs,
  type SoftFormat,
  type SoftKind,
  type SoftVector,
} from '../src/soft/codec.ts';

const KINDS: SoftKind[] = ['probs', 'logprobs', 'logits'];
const vec = (kind: SoftKind, xs: number[]): SoftVector => ({ kind, values: Float32Array.from(xs) });
const fp16 = (x: number) => halfToFloat(floatToHalf(x));
const topk = (k: number): SoftFormat => ({ kind: 'topk', k });

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what = ''): void {
  assert.equal(actual.length, expected.length, `${what} length`);
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i];
    const e = expected[i];
    const ok = a === e || Math.abs(a - e) <= tol;
    assert.ok(ok, `${what}[${i}] = ${a}, expected ${e} ± ${tol} (got ${Array.from(actual)})`);
  }
}

/** The class indices a top-K blob keeps, read straight off the documented layout (uint16 indices). */
function storedIndices(buf: Buffer): number[] {
  const k = buf.readUInt32LE(8);
  return Array.from({ length: k }, (_, j) => buf.readUInt16LE(12 + 2 * j));
}

function kl(p: number[], q: number[]): number {
  let s = 0;
  for (let i = 0; i < p.length; i++) if (p[i] > 0) s += p[i] * (Math.log(p[i]) - Math.log(q[i]));
  return s;
}

// ---------------------------------------------------------------------------
// fp16

test('fp16: known bit patterns', () => {
  const cases: [number, number][] = [
    [1.0, 0x3c00],
    [-2, 0xc000],
    [65504, 0x7bff],
    [65519, 0x7bff],
    [65520, 0x7c00], // the midpoint to 2^16 rounds to even: Infinity
    [6.0e-8, 0x0001],
    [2 ** -24, 0x0001],
    [2 ** -25, 0x0000], // tie between 0 and the smallest subnormal: even is 0
    [3 * 2 ** -25, 0x0002], // tie between 1 and 2 steps: even is 2
    [1e-8, 0x0000],
    [1023.5 * 2 ** -24, 0x0400], // the largest subnormal rounds up into the smallest normal
    [2 ** -14, 0x0400],
    [1 + 2 ** -11, 0x3c00], // tie: even mantissa
    [1 + 3 * 2 ** -11, 0x3c02],
    [0.1, 0x2e66],
    [1 / 3, 0x3555],
    [0, 0x0000],
    [-0, 0x8000],
    [Number.POSITIVE_INFINITY, 0x7c00],
    [Number.NEGATIVE_INFINITY, 0xfc00],
    [1e10, 0x7c00],
  ];
  for (const [x, bits] of cases)
    assert.equal(floatToHalf(x), bits, `floatToHalf(${x}) = 0x${floatToHalf(x).toString(16)}, expected 0x${bits.toString(16)}`);
  assert.equal(floatToHalf(Number.NaN), 0x7e00);
  assert.ok(Number.isNaN(halfToFloat(0x7e00)));
  assert.ok(Number.isNaN(halfToFloat(0xfc01)));
  assert.equal(halfToFloat(0x3c00), 1);
  assert.equal(halfToFloat(0x7bff), 65504);
  assert.equal(halfToFloat(0x0001), 2 ** -24);
  assert.equal(halfToFloat(0x03ff), 1023 * 2 ** -24);
  assert.equal(halfToFloat(0x2e66), 0.0999755859375);
  assert.equal(halfToFloat(0xfc00), Number.NEGATIVE_INFINITY);
  assert.ok(Object.is(halfToFloat(0x8000), -0));
});

test('fp16: every half round-trips, and midpoints between neighbours round to even', () => {
  for (let h = 0; h < 0x10000; h++) {
    const x = halfToFloat(h);
    if (Number.isNaN(x)) continue;
    assert.equal(floatToHalf(x), h, `0x${h.toString(16)}`);
  }
  // Neighbouring positive finite halves h, h + 1 (from 0 to 65504).
  for (let h = 0; h < 0x7bff; h++) {
    const lo = halfToFloat(h);
    const hi = halfToFloat(h + 1);
    const mid = (lo + hi) / 2;
    const nudge = (hi - lo) / 1024;
    const even = h % 2 === 0 ? h : h + 1;
    assert.equal(floatToHalf(mid), even, `midpoint after 0x${h.toString(16)}`);
    assert.equal(floatToHalf(-mid), 0x8000 | even);
    assert.equal(floatToHalf(mid - nudge), h);
    assert.equal(floatToHalf(mid + nudge), h + 1);
  }
});

test('fp16: random float32 values and doubles round to the nearest half, ties to even', () => {
  let seed = 12345;
  const rand = () => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed / 2 ** 32;
  };
  for (let n = 0; n < 200000; n++) {
    const magnitude = 2 ** (rand() * 47 - 30) * (1 + rand());
    const double = (rand() < 0.5 ? -1 : 1) * magnitude;
    const x = n % 2 ? double : Math.fround(double);
    if (Math.abs(x) >= 65520) continue;
    const h = floatToHalf(x);
    const m = h & 0x7fff;
    const a = Math.abs(x);
    const err = Math.abs(halfToFloat(m) - a);
    assert.equal(h & 0x8000 ? -1 : 1, Math.sign(x), `sign of ${x}`);
    if (m > 0) assert.ok(err <= a - halfToFloat(m - 1), `${x} -> 0x${h.toString(16)}: the half below is nearer`);
    if (m < 0x7bff) assert.ok(err <= halfToFloat(m + 1) - a, `${x} -> 0x${h.toString(16)}: the half above is nearer`);
    if ((m > 0 && err === a - halfToFloat(m - 1)) || (m < 0x7bff && err === halfToFloat(m + 1) - a)) assert.equal(m % 2, 0, `tie ${x}`);
  }
});

// ---------------------------------------------------------------------------
// Formats

test('format names parse, print and default by class count', () => {
  assert.deepEqual(parseSoftFormat('dense32'), { kind: 'dense32' });
  assert.deepEqual(parseSoftFormat('dense16'), { kind: 'dense16' });
  assert.deepEqual(parseSoftFormat('topk:20'), { kind: 'topk', k: 20 });
  for (const s of ['dense32', 'dense16', 'topk:1', 'topk:20']) assert.equal(formatName(parseSoftFormat(s)), s);
  for (const bad of ['dense8', 'topk', 'topk:', 'topk:abc', 'topk:1.5', 'topk:-3', '']) {
    assert.throws(() => parseSoftFormat(bad), /unknown soft-label format .*expected dense32, dense16 or topk:K/, bad);
  }
  assert.throws(() => parseSoftFormat('topk:0'), /K must be an integer from 1/);
  assert.deepEqual(defaultSoftFormat(4), { kind: 'dense16' });
  assert.deepEqual(defaultSoftFormat(20), { kind: 'dense16' });
  assert.deepEqual(defaultSoftFormat(21), { kind: 'topk', k: 20 });
  assert.deepEqual(defaultSoftFormat(1000), { kind: 'topk', k: 20 });
});

test('encodeSoft with no format still writes the dense32 bytes of existing databases', () => {
  const v = vec('probs', [0.25, 0.75]);
  const expected = Buffer.from([1, 0, 0, 0, 2, 0, 0, 0, 0x00, 0x00, 0x80, 0x3e, 0x00, 0x00, 0x40, 0x3f]);
  assert.deepEqual(encodeSoft(v), expected);
  assert.deepEqual(encodeSoft(v, { kind: 'dense32' }), expected);
  const lp = encodeSoft({ kind: 'logprobs', values: probsToLogprobs([0.5, 0.5]) });
  assert.equal(lp[1], 1);
  assert.deepEqual(softFormatOf(lp), { kind: 'dense32', numClasses: 2 });
});

// ---------------------------------------------------------------------------
// Round trips

test('dense32 round-trips every kind exactly, dense16 within fp16 rounding', () => {
  const raw: Record<SoftKind, number[]> = {
    probs: [0.6, 0.3, 0.07, 0.02, 0.01, 0],
    logprobs: Array.from(probsToLogprobs([0.6, 0.3, 0.07, 0.02, 0.01, 0])),
    logits: [7.25, -3.1, 0, 12.5, -0.001, 1e-6],
  };
  for (const kind of KINDS) {
    const v = vec(kind, raw[kind]);
    const d32 = decodeSoft(encodeSoft(v, { kind: 'dense32' }));
    assert.equal(d32.kind, kind);
    assert.deepEqual(d32.values, v.values);
    const b16 = encodeSoft(v, { kind: 'dense16' });
    assert.equal(b16.length, 8 + 2 * 6);
    assert.deepEqual(softFormatOf(b16), { kind: 'dense16', numClasses: 6 });
    const d16 = decodeSoft(b16);
    assert.equal(d16.kind, kind);
    v.values.forEach((x, i) => {
      assert.equal(d16.values[i], fp16(x), `${kind}[${i}]`);
      if (Number.isFinite(x) && Math.abs(x) >= 2 ** -14)
        assert.ok(Math.abs(d16.values[i] - x) <= Math.abs(x) * 2 ** -11, `${kind}[${i}] ${x} -> ${d16.values[i]}`);
    });
  }
});

test('topk round-trips the kept values in their kind and fills the tail', () => {
  for (const kind of KINDS) {
    const v = vec(kind, kind === 'probs' ? [0.05, 0.4, 0.05, 0.3, 0.1, 0.1] : [-3, 2, -3, 1.5, 0, 0]);
    const buf = encodeSoft(v, topk(3));
    assert.deepEqual(softFormatOf(buf), { kind: 'topk', k: 3, numClasses: 6 });
    assert.deepEqual(storedIndices(buf), [1, 3, 4]);
    const d = decodeSoft(buf);
    assert.equal(d.kind, kind);
    for (const i of [1, 3, 4]) assert.equal(d.values[i], fp16(v.values[i]));
    assert.equal(d.values[0], d.values[2]);
    assert.equal(d.values[0], d.values[5]);
  }
});

// ---------------------------------------------------------------------------
// Top-K reconstruction, hand-computed (C = 5, K = 2)

test('topk probs: the tail is r / (C - K)', () => {
  const d = decodeSoft(encodeSoft(vec('probs', [0.5, 0.25, 0.125, 0.0625, 0.0625]), topk(2)));
  assert.equal(d.kind, 'probs');
  // r = 1 - (0.5 + 0.25) = 0.25, spread over 3 classes.
  assertClose(d.values, [0.5, 0.25, 0.25 / 3, 0.25 / 3, 0.25 / 3], 1e-7, 'values');
  assertClose(softToProbs(d), [0.5, 0.25, 1 / 12, 1 / 12, 1 / 12], 1e-7, 'probs');
});

test('topk logprobs: the tail is log(r / (C - K))', () => {
  const lp = probsToLogprobs([0.5, 0.25, 0.125, 0.0625, 0.0625]);
  const d = decodeSoft(encodeSoft({ kind: 'logprobs', values: lp }, topk(2)));
  assert.equal(d.kind, 'logprobs');
  assert.equal(d.values[0], fp16(lp[0]));
  assert.equal(d.values[1], fp16(lp[1]));
  assertClose(d.values.slice(2), [-2.4849066497880004, -2.4849066497880004, -2.4849066497880004], 1e-6, 'tail');
  // The kept log-probabilities carry fp16 rounding (|error| <= 2^-11 |x|); the tail is exact.
  assertClose(softToProbs(d), [0.5, 0.25, 1 / 12, 1 / 12, 1 / 12], 5e-4, 'probs');
});

test('topk logits: the tail logit gives the top probabilities and an even tail at T = 1', () => {
  const d = decodeSoft(encodeSoft(vec('logits', [2, 1, 0, 0, -1]), topk(2)));
  assert.equal(d.kind, 'logits');
  // p = softmax(z): Z = 1 + e^-1 + 2e^-2 + e^-3 (shifted by m = 2); r = (2e^-2 + e^-3) / Z;
  // S = 1 + e^-1; tail = m + log(r / 3) + log S - log(1 - r).
  const e = Math.exp;
  const Z = 1 + e(-1) + 2 * e(-2) + e(-3);
  const r = (2 * e(-2) + e(-3)) / Z;
  const tail = 2 + Math.log(r / 3) + Math.log(1 + e(-1)) - Math.log(1 - r);
  assert.ok(Math.abs(tail - -0.23661748460985838) < 1e-12);
  assertClose(d.values, [2, 1, tail, tail, tail], 1e-6, 'logits');
  assertClose(softToProbs(d), [1 / Z, e(-1) / Z, r / 3, r / 3, r / 3], 1e-7, 'probs');
  assertClose(
    softToProbs(d),
    [0.5922987857150971, 0.2178945462953938, 0.0632688893298364, 0.0632688893298364, 0.0632688893298364],
    1e-7,
    'probs (numbers)',
  );
});

test('topk logits: large shifts and values that are not exact in fp16 still give 1 - r to the top', () => {
  const z = [101.3, 99.7, 98.1, 95, 97.2, 90, 99.9];
  const p = softToProbs(vec('logits', z));
  const d = decodeSoft(encodeSoft(vec('logits', z), topk(3)));
  const q = softToProbs(d);
  const top = [0, 6, 1];
  const r = 1 - top.reduce((s, i) => s + p[i], 0);
  const topMass = top.reduce((s, i) => s + q[i], 0);
  assert.ok(Math.abs(topMass - (1 - r)) < 1e-6, `${topMass} vs ${1 - r}`);
  for (const i of [2, 3, 4, 5]) assert.ok(Math.abs(q[i] - r / 4) < 1e-6);
});

test('topk with K >= C is stored as dense16', () => {
  for (const kind of KINDS) {
    const v = vec(kind, kind === 'probs' ? [0.7, 0.2, 0.1] : [1, 0.5, -2]);
    for (const k of [3, 4, 100]) {
      const buf = encodeSoft(v, topk(k));
      assert.deepEqual(buf, encodeSoft(v, { kind: 'dense16' }));
      assert.deepEqual(softFormatOf(buf), { kind: 'dense16', numClasses: 3 });
    }
  }
  assert.throws(() => encodeSoft(vec('probs', [1, 0]), topk(0)), SoftCodecError);
  assert.throws(() => encodeSoft(vec('probs', [1, 0]), topk(1.5)), /K must be an integer >= 1/);
});

test('ties in the top K go to the lower class index', () => {
  const b = encodeSoft(vec('probs', [0.1, 0.3, 0.3, 0.3]), topk(2));
  assert.deepEqual(storedIndices(b), [1, 2]);
  // Class 3 had 0.3 too but is in the tail: it gets r / 2 = 0.4 / 2.
  assertClose(decodeSoft(b).values, [0.2, fp16(0.3), fp16(0.3), 0.2], 1e-7, 'values');
  assert.deepEqual(storedIndices(encodeSoft(vec('logits', [0, 0, 0, 0, 0]), topk(3))), [0, 1, 2]);
  assert.deepEqual(storedIndices(encodeSoft(vec('logits', [1, 5, 1, 5, 1]), topk(3))), [1, 3, 0]);
  const lp = encodeSoft(vec('logprobs', [-Infinity, 0, -Infinity, -Infinity]), topk(2));
  assert.deepEqual(storedIndices(lp), [1, 0]);
  // The same vector always gives the same bytes.
  assert.deepEqual(
    encodeSoft(vec('probs', [0.25, 0.25, 0.25, 0.25]), topk(2)),
    encodeSoft(vec('probs', [0.25, 0.25, 0.25, 0.25]), topk(2)),
  );
});

test('all mass in one class', () => {
  const probs = decodeSoft(encodeSoft(vec('probs', [0, 0, 1, 0, 0]), topk(2)));
  assert.deepEqual(Array.from(probs.values), [0, 0, 1, 0, 0]);
  assert.deepEqual(softToProbs(probs), [0, 0, 1, 0, 0]);

  const lp = decodeSoft(encodeSoft({ kind: 'logprobs', values: probsToLogprobs([0, 0, 1, 0, 0]) }, topk(2)));
  assert.deepEqual(Array.from(lp.values), [-Infinity, -Infinity, 0, -Infinity, -Infinity]);
  assert.deepEqual(softToProbs(lp), [0, 0, 1, 0, 0]);

  // exp(-1000) is 0 even in float64: r = 0 and the tail logits are -Infinity.
  const hard = decodeSoft(encodeSoft(vec('logits', [0, 0, 1000, 0, 0]), topk(2)));
  assert.equal(hard.values[2], 1000);
  for (const i of [1, 3, 4]) assert.equal(hard.values[i], -Infinity);
  assert.deepEqual(softToProbs(hard), [0, 0, 1, 0, 0]);

  // r = 3e^-100 / Z survives as a float32 subnormal: the tail logits come back near 0.
  const peaked = decodeSoft(encodeSoft(vec('logits', [0, 0, 100, 0, 0]), topk(2)));
  for (const i of [1, 3, 4]) assert.ok(Math.abs(peaked.values[i]) < 0.01, `${peaked.values[i]}`);
  for (const kind of KINDS) {
    const one = decodeSoft(encodeSoft(vec(kind, kind === 'probs' ? [1] : [3]), topk(1)));
    assert.deepEqual(softToProbs(one), [1]);
  }
});

test('fp16 underflow: a positive probability never decodes to 0; log-probabilities and logits keep small masses', () => {
  const probs = [1 - 4e-8, 1e-8, 1e-8, 1e-8, 1e-8];
  assert.equal(floatToHalf(1e-8), 0);
  for (const format of [{ kind: 'dense16' }, topk(2)] as SoftFormat[]) {
    const q = softToProbs(decodeSoft(encodeSoft(vec('probs', probs), format)));
    assert.ok(
      q.every((x) => x > 0),
      `${formatName(format)}: ${q}`,
    );
    assert.ok(kl(probs, q) < 1e-6, `${formatName(format)}: KL ${kl(probs, q)}`);
  }
  const d = decodeSoft(encodeSoft(vec('probs', probs), topk(2)));
  assert.equal(d.values[1], 2 ** -24); // kept, raised to the smallest subnormal
  assertClose(d.values.slice(2), [1e-8, 1e-8, 1e-8], 1e-14, 'tail');

  for (const kind of ['logprobs', 'logits'] as SoftKind[]) {
    const v = { kind, values: probsToLogprobs(probs) };
    for (const format of [{ kind: 'dense16' }, topk(2)] as SoftFormat[]) {
      const q = softToProbs(decodeSoft(encodeSoft(v, format)));
      q.slice(1).forEach((x, i) => assert.ok(Math.abs(x / 1e-8 - 1) < 0.01, `${kind} ${formatName(format)}[${i + 1}] = ${x}`));
    }
  }
  // Log-probabilities beyond fp16's range are probability 0 anyway; logits there are refused.
  assert.equal(decodeSoft(encodeSoft(vec('logprobs', [0, -70000]), { kind: 'dense16' })).values[1], -Infinity);
  assert.throws(
    () => encodeSoft(vec('logits', [70000, 0]), { kind: 'dense16' }),
    (e) => e instanceof SoftCodecError && /outside the fp16 range/.test(e.message),
  );
  assert.throws(() => encodeSoft(vec('logits', [70000, 0, 1]), topk(1)), SoftCodecError);
  assert.throws(() => encodeSoft(vec('logits', [Number.NaN, 0, 1]), topk(1)), /cannot be ranked/);
});

// ---------------------------------------------------------------------------
// softToProbs

test('softToProbs tempers logits and log-probabilities as softmax(x / T), probabilities through their logs', () => {
  const softmax = (xs: number[]) => {
    const e = xs.map((x) => Math.exp(x));
    const s = e.reduce((a, b) => a + b, 0);
    return e.map((x) => x / s);
  };
  assertClose(softToProbs(vec('logits', [2, 1, 0])), softmax([2, 1, 0]), 1e-12);
  assertClose(softToProbs(vec('logits', [2, 1, 0]), 2), softmax([1, 0.5, 0]), 1e-12);
  assertClose(softToProbs(vec('logits', [2, 1, 0]), 0.5), softmax([4, 2, 0]), 1e-12);
  const lp = probsToLogprobs([0.5, 0.25, 0.25]);
  assertClose(softToProbs({ kind: 'logprobs', values: lp }, 2), softmax(Array.from(lp, (x) => x / 2)), 1e-12);
  // p^(1/T) renormalised: sqrt at T = 2.
  const s = Math.SQRT1_2 + 0.5 + 0.5;
  assertClose(softToProbs(vec('probs', [0.5, 0.25, 0.25]), 2), [Math.SQRT1_2 / s, 0.5 / s, 0.5 / s], 1e-12);
  assert.deepEqual(softToProbs(vec('probs', [0.25, 0.75])), [0.25, 0.75]);
  assertClose(softToProbs(vec('probs', [0.5, 0, 0.5]), 0.25), [0.5, 0, 0.5], 1e-12);
  assert.deepEqual(softToProbs(vec('probs', [0.8, 0.2]), 1e-3), [1, 0]);
  assert.throws(() => softToProbs(vec('logits', [1, 2]), 0), /temperature must be a positive number/);
  assert.throws(() => softToProbs(vec('logits', [1, 2]), -1), RangeError);
  // Many classes: no spread of the values onto the stack.
  const big = softToProbs({ kind: 'logits', values: new Float32Array(300000) });
  assert.equal(big.length, 300000);
  assert.ok(Math.abs(big[0] - 1 / 300000) < 1e-15);
});

// ---------------------------------------------------------------------------
// Sizes and corrupt blobs

test('byte sizes: C = 1000, K = 20 is under 5% of dense32; uint32 indices above 65535 classes', () => {
  const z = new Float32Array(1000).map((_, i) => Math.sin(i) * 4);
  const d32 = encodeSoft({ kind: 'logits', values: z });
  const d16 = encodeSoft({ kind: 'logits', values: z }, { kind: 'dense16' });
  const t20 = encodeSoft({ kind: 'logits', values: z }, topk(20));
  assert.equal(d32.length, 8 + 4000);
  assert.equal(d16.length, 8 + 2000);
  assert.equal(t20.length, 8 + 4 + 20 * 2 + 20 * 2 + 4);
  assert.ok(t20.length / d32.length < 0.05, `${t20.length / d32.length}`);

  const c = 70000;
  const probs = new Float32Array(c).fill(0.5 / (c - 1));
  probs[c - 1] = 0.5;
  const wide = encodeSoft({ kind: 'probs', values: probs }, topk(20));
  assert.equal(wide.length, 8 + 4 + 20 * 4 + 20 * 2 + 4);
  assert.equal(wide.readUInt32LE(12), c - 1);
  const back = decodeSoft(wide);
  assert.equal(back.values[c - 1], 0.5);
  // Classes 0..18 tie and are kept (as fp16 subnormals); the tail gets exactly its even share.
  assert.equal(back.values[0], fp16(0.5 / (c - 1)));
  assert.ok(Math.abs(back.values[c - 2] - 0.5 / (c - 1)) < 1e-12);
});

test('corrupt blobs throw SoftCodecError with a clear message', () => {
  const good = encodeSoft(vec('probs', [0.5, 0.25, 0.125, 0.0625, 0.0625]), topk(2));
  const patched = (f: (b: Buffer) => void) => {
    const b = Buffer.from(good);
    f(b);
    return b;
  };
  const cases: [Uint8Array, RegExp][] = [
    [Buffer.from([1, 0, 0]), /too short/],
    [Buffer.from([9, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]), /unknown soft-label format 9/],
    [Buffer.from([1, 7, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]), /unknown soft-label kind 7/],
    [Buffer.from([2, 0, 0, 0, 2, 0, 0, 0, 0, 0]), /wrong length: 10 bytes, dense16 with C = 2 takes 12/],
    [Buffer.from([1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]), /wrong length/],
    [Buffer.from([3, 0, 0, 0, 5, 0, 0, 0, 2]), /topk blob ends before its K/],
    [good.subarray(0, good.length - 1), /wrong length: 23 bytes, topk:2 with C = 5 takes 24/],
    [Buffer.concat([good, Buffer.from([0])]), /wrong length/],
    [patched((b) => b.writeUInt16LE(5, 14)), /class index 5 >= C = 5/],
    [patched((b) => b.writeUInt16LE(0, 14)), /class index 0 appears twice/],
    [patched((b) => b.writeUInt32LE(0, 8)), /K = 0 with C = 5/],
    [patched((b) => b.writeUInt32LE(5, 8)), /K = 5 with C = 5/],
    [patched((b) => b.writeFloatLE(Number.NaN, 20)), /leftover mass NaN is not in \[0, 1\]/],
    [patched((b) => b.writeFloatLE(1.5, 20)), /leftover mass 1.5/],
  ];
  for (const [blob, message] of cases) {
    assert.throws(
      () => decodeSoft(blob),
      (e) => e instanceof SoftCodecError && message.test(e.message),
      `${message}`,
    );
  }
  // The header-only reader rejects what it can see without the body.
  assert.throws(() => softFormatOf(Buffer.from([9, 0, 0, 0, 1, 0, 0, 0])), SoftCodecError);
  assert.throws(() => softFormatOf(good.subarray(0, 20)), SoftCodecError);
  // An untouched blob still decodes, at an offset inside a larger buffer too.
  const unaligned = (b: Buffer) => Buffer.concat([Buffer.from([0xff, 0xff, 0xff]), b]).subarray(3);
  assert.deepEqual(decodeSoft(unaligned(good)), decodeSoft(good));
  for (const format of [{ kind: 'dense32' }, { kind: 'dense16' }] as SoftFormat[]) {
    const b = encodeSoft(vec('logits', [1.5, -2, 0.25]), format);
    assert.deepEqual(Array.from(decodeSoft(unaligned(b)).values), [1.5, -2, 0.25]);
  }
});
