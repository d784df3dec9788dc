/**
 * The soft-label codec: the one binary format for per-class distributions in
 * the store. Every producer encodes through `encodeSoft` and every consumer
 * decodes through `decodeSoft`/`softToProbs`; no other module reads the bytes.
 *
 * Layout (little-endian):
 *   byte 0      format   1 = dense32, 2 = dense16, 3 = topk
 *   byte 1      kind     0 = probs, 1 = logprobs, 2 = logits
 *   bytes 2-3   reserved (0)
 *   bytes 4-7   C, the number of classes (uint32)
 *   then, by format:
 *     dense32   C float32 values
 *     dense16   C IEEE half floats
 *     topk      K (uint32, 1 <= K < C); K class indices (uint16 when C <= 65535,
 *               else uint32); K half floats (the values, in the vector's kind);
 *               the leftover probability mass r (float32)
 *
 * The kind is kept so that logits stay logits (a trainer applies its own
 * temperature later) and black-box runs keep log-probabilities.
 */
export type SoftKind = 'probs' | 'logprobs' | 'logits';

export interface SoftVector {
  kind: SoftKind;
  values: Float32Array;
}

export type SoftFormat = { kind: 'dense32' } | { kind: 'dense16' } | { kind: 'topk'; k: number };

const FORMAT_DENSE32 = 1;
const FORMAT_DENSE16 = 2;
const FORMAT_TOPK = 3;
const KINDS: SoftKind[] = ['probs', 'logprobs', 'logits'];
const HEADER = 8;
const MAX_UINT16_CLASSES = 0xffff;
/** Above this many classes, top-K beats dense16 by enough to be the default. */
const DEFAULT_TOPK = 20;
/** On a little-endian machine a typed array's bytes are the stored bytes: copy them, whatever the blob's alignment. */
const LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;

export class SoftCodecError extends Error {
  override name = 'SoftCodecError';
}

// ---------------------------------------------------------------------------
// IEEE 754 half floats (Node 20 has no Float16Array)

const HALF_POS_INF = 0x7c00;
const HALF_NAN = 0x7e00;
const HALF_SIGN = 0x8000;
/** Halfway between the largest half (65504) and 2^16: from here on, round-to-nearest-even gives Infinity. */
const HALF_OVERFLOW = 65520;
const HALF_MIN_NORMAL = 2 ** -14;
const HALF_SUBNORMAL_STEP = 2 ** -24;

/** Nearest half float to `x`, as its 16 bits, rounding ties to even. */
export function floatToHalf(x: number): number {
  // A float32 value (every stored value is one) rounds once from its own bits;
  // any other double takes the exact route, so there is never double rounding.
  return Math.fround(x) === x ? float32ToHalf(x) : doubleToHalf(x);
}

export function halfToFloat(h: number): number {
  return HALF_TABLE[h & 0xffff];
}

const F32 = new Float32Array(1);
const F32_BITS = new Uint32Array(F32.buffer);

/** Round-to-nearest-even on the float32 bits: drop 13 mantissa bits (more for subnormals). */
function float32ToHalf(x: number): number {
  F32[0] = x;
  const b = F32_BITS[0];
  const sign = (b >>> 16) & HALF_SIGN;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) return mant ? HALF_NAN : sign | HALF_POS_INF;
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | HALF_POS_INF;
  if (e <= 0) {
    // Below 2^-25 everything rounds to 0 (2^-25 itself is a tie, and 0 is even).
    if (e < -10) return sign;
    return sign | shiftRoundEven(mant | 0x800000, 14 - e);
  }
  // A mantissa that rounds up carries into the exponent, and from 65504 into Infinity: both are right.
  return sign | ((e << 10) + shiftRoundEven(mant, 13));
}

function shiftRoundEven(m: number, shift: number): number {
  const q = m >>> shift;
  const rem = m & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  return rem > half || (rem === half && q & 1) ? q + 1 : q;
}

function doubleToHalf(x: number): number {
  if (Number.isNaN(x)) return HALF_NAN;
  const sign = x < 0 || Object.is(x, -0) ? HALF_SIGN : 0;
  const a = Math.abs(x);
  if (a >= HALF_OVERFLOW) return sign | HALF_POS_INF;
  // A subnormal's bits are its count of 2^-24 steps; a count that rounds up to
  // 1024 is exactly the bits of the smallest normal, so no special case.
  if (a < HALF_MIN_NORMAL) return sign | roundHalfEven(a / HALF_SUBNORMAL_STEP);
  let e = exponentOf(a);
  let m = roundHalfEven((a / 2 ** e - 1) * 1024);
  if (m === 1024) {
    e += 1;
    m = 0;
  }
  return sign | ((e + 15) << 10) | m;
}

function halfBitsToNumber(h: number): number {
  const sign = h & HALF_SIGN ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * HALF_SUBNORMAL_STEP;
  if (e === 0x1f) return m ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

/** Every half is a float32, so 256 KiB turn decoding into a table look-up. */
const HALF_TABLE = Float32Array.from({ length: 0x10000 }, (_, h) => halfBitsToNumber(h));

/** floor(log2(a)) for a normal positive a; Math.log2 can be off by one next to powers of two. */
function exponentOf(a: number): number {
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e -= 1;
  else if (2 ** (e + 1) <= a) e += 1;
  return e;
}

function roundHalfEven(y: number): number {
  const f = Math.floor(y);
  const d = y - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

// ---------------------------------------------------------------------------
// Formats

export function parseSoftFormat(s: string): SoftFormat {
  const t = s.trim();
  if (t === 'dense32' || t === 'dense16') return { kind: t };
  const m = /^topk:(\d+)$/.exec(t);
  if (m) {
    const k = Number(m[1]);
    if (Number.isSafeInteger(k) && k >= 1 && k <= 0xffffffff) return { kind: 'topk', k };
    throw new Error(`soft-label format "${s}": K must be an integer from 1 to ${0xffffffff}`);
  }
  throw new Error(`unknown soft-label format "${s}": expected dense32, dense16 or topk:K (K >= 1, e.g. topk:20)`);
}

export function formatName(f: SoftFormat): string {
  return f.kind === 'topk' ? `topk:${f.k}` : f.kind;
}

/** Dense16 costs 2 bytes a class; top-20 costs ~8 bytes a kept class, so it only pays above 20 classes. */
export function defaultSoftFormat(numClasses: number): SoftFormat {
  return numClasses > DEFAULT_TOPK ? { kind: 'topk', k: DEFAULT_TOPK } : { kind: 'dense16' };
}

// ---------------------------------------------------------------------------
// Encoding

/**
 * With no format, dense32: the bytes every database written before the other
 * formats holds. `topk:K` with K >= C is stored as dense16 (fewer bytes than K
 * = C pairs, and exact up to fp16 rounding); `softFormatOf` then says dense16.
 */
export function encodeSoft(v: SoftVector, format: SoftFormat = { kind: 'dense32' }): Buffer {
  switch (format.kind) {
    case 'dense32':
      return encodeDense32(v);
    case 'dense16':
      return encodeDense16(v);
    case 'topk':
      checkK(format.k);
      return format.k >= v.values.length ? encodeDense16(v) : encodeTopK(v, format.k);
    default:
      throw new SoftCodecError(`unknown soft-label format ${JSON.stringify(format)}`);
  }
}

function checkK(k: number): void {
  if (!Number.isSafeInteger(k) || k < 1 || k > 0xffffffff) throw new SoftCodecError(`topk: K must be an integer >= 1, got ${k}`);
}

function writeHeader(format: number, v: SoftVector, bodyBytes: number): { buf: Buffer; dv: DataView } {
  const kind = KINDS.indexOf(v.kind);
  if (kind < 0) throw new SoftCodecError(`unknown soft-label kind ${JSON.stringify(v.kind)}`);
  const buf = Buffer.alloc(HEADER + bodyBytes);
  const dv = dataView(buf);
  dv.setUint8(0, format);
  dv.setUint8(1, kind);
  dv.setUint32(4, v.values.length, true);
  return { buf, dv };
}

function encodeDense32(v: SoftVector): Buffer {
  const c = v.values.length;
  const { buf, dv } = writeHeader(FORMAT_DENSE32, v, 4 * c);
  if (LITTLE_ENDIAN) buf.set(bytesOf(v.values), HEADER);
  else for (let i = 0; i < c; i++) dv.setFloat32(HEADER + 4 * i, v.values[i], true);
  return buf;
}

function encodeDense16(v: SoftVector): Buffer {
  const c = v.values.length;
  const { buf, dv } = writeHeader(FORMAT_DENSE16, v, 2 * c);
  const halves = new Uint16Array(c);
  for (let i = 0; i < c; i++) halves[i] = halfFor(v.kind, v.values[i], i);
  if (LITTLE_ENDIAN) buf.set(bytesOf(halves), HEADER);
  else for (let i = 0; i < c; i++) dv.setUint16(HEADER + 2 * i, halves[i], true);
  return buf;
}

function encodeTopK(v: SoftVector, k: number): Buffer {
  const c = v.values.length;
  checkRankable(v);
  const top = selectTopK(v.values, k);
  const width = indexWidth(c);
  const { buf, dv } = writeHeader(FORMAT_TOPK, v, topKBodyBytes(k, width));
  dv.setUint32(HEADER, k, true);
  const idxAt = HEADER + 4;
  const valAt = idxAt + k * width;
  for (let j = 0; j < k; j++) {
    const i = top[j];
    if (width === 2) dv.setUint16(idxAt + 2 * j, i, true);
    else dv.setUint32(idxAt + 4 * j, i, true);
    dv.setUint16(valAt + 2 * j, halfFor(v.kind, v.values[i], i), true);
  }
  dv.setFloat32(valAt + 2 * k, leftoverMass(v, top), true);
  return buf;
}

/**
 * The half float stored for one value. A positive probability that would
 * underflow to 0 is kept as the smallest subnormal (6e-8): a class the teacher
 * gave mass must not decode to probability 0 (KL(teacher || decoded) would be
 * infinite, and its log-probability -Infinity). Log-probabilities below -65504
 * become -Infinity, which is what exp() makes of them anyway; any other value
 * beyond fp16's range is refused rather than silently saturated.
 */
function halfFor(kind: SoftKind, x: number, classIndex: number): number {
  const h = floatToHalf(x);
  if (kind === 'probs' && x > 0 && (h & 0x7fff) === 0) return 1;
  if (Number.isFinite(x) && (h & 0x7fff) === HALF_POS_INF && !(kind === 'logprobs' && x < 0)) {
    throw new SoftCodecError(`value ${x} (class ${classIndex}) is outside the fp16 range (±65504); store ${kind} as dense32`);
  }
  return h;
}

/** NaN has no rank and +Infinity no probability; dense formats store them as they are, top-K cannot. */
function checkRankable(v: SoftVector): void {
  for (let i = 0; i < v.values.length; i++) {
    const x = v.values[i];
    if (Number.isNaN(x) || x === Number.POSITIVE_INFINITY) throw new SoftCodecError(`topk: value ${x} at class ${i} cannot be ranked`);
  }
}

/**
 * Indices of the K largest values, largest first; ties go to the lower class
 * index so that the same vector always gives the same bytes. For all three
 * kinds the order by value is the order by probability. One pass with a small
 * sorted buffer: most values fail the test against the K-th and cost one compare.
 */
function selectTopK(values: Float32Array, k: number): number[] {
  const top: number[] = [];
  for (let i = 0; i < values.length; i++) {
    const x = values[i];
    if (top.length === k && !(x > values[top[k - 1]])) continue;
    // Scanning in index order, an equal value already kept has the lower index and stays ahead.
    let j = top.length === k ? k - 1 : top.length;
    while (j > 0 && x > values[top[j - 1]]) {
      top[j] = top[j - 1];
      j--;
    }
    top[j] = i;
  }
  return top;
}

/**
 * r = 1 - (mass of the top K) at temperature 1, of the distribution softToProbs
 * gives. It is computed as the mass of the other classes, which is the same
 * number without the cancellation of 1 - 0.9999…: a tiny r still gives finite
 * tail log-probabilities and logits.
 */
function leftoverMass(v: SoftVector, top: number[]): number {
  const xs = v.values;
  const inTop = new Uint8Array(xs.length);
  for (const i of top) inTop[i] = 1;
  const isLog = v.kind !== 'probs';
  const m = xs[top[0]]; // the maximum: the top is sorted
  let all = 0;
  let rest = 0;
  if (!(isLog && m === Number.NEGATIVE_INFINITY)) {
    for (let i = 0; i < xs.length; i++) {
      const w = isLog ? Math.exp(xs[i] - m) : xs[i];
      all += w;
      if (!inTop[i]) rest += w;
    }
  }
  // All zeros (or all -Infinity) is read by softToProbs as uniform.
  const r = all > 0 ? rest / all : (xs.length - top.length) / xs.length;
  return Math.min(1, Math.max(0, r));
}

/** exp(x - m) for each value, m being the maximum (so the largest weight is 1). */
function expShifted(values: ArrayLike<number>, m: number): Float64Array {
  const out = new Float64Array(values.length);
  if (m === Number.NEGATIVE_INFINITY) return out;
  for (let i = 0; i < values.length; i++) out[i] = Math.exp(values[i] - m);
  return out;
}

function indexWidth(c: number): 2 | 4 {
  return c <= MAX_UINT16_CLASSES ? 2 : 4;
}

function topKBodyBytes(k: number, width: number): number {
  return 4 + k * width + 2 * k + 4;
}

// ---------------------------------------------------------------------------
// Decoding

interface Layout {
  format: SoftFormat;
  kind: SoftKind;
  c: number;
}

/** The format, kind and number of classes of a blob, from its header; the length is checked too (it is O(1)). */
export function softFormatOf(buf: Uint8Array): SoftFormat & { numClasses: number } {
  const { format, c } = readLayout(buf);
  return { ...format, numClasses: c };
}

/** A dense vector of the stored kind; a top-K blob comes back with its tail filled in (see tailValue). */
export function decodeSoft(buf: Uint8Array): SoftVector {
  const layout = readLayout(buf);
  const dv = dataView(buf);
  switch (layout.format.kind) {
    case 'dense32':
      return { kind: layout.kind, values: decodeDense32(buf, dv, layout.c) };
    case 'dense16':
      return { kind: layout.kind, values: decodeDense16(buf, dv, layout.c) };
    case 'topk':
      return { kind: layout.kind, values: decodeTopK(dv, layout.kind, layout.c, layout.format.k) };
  }
}

function readLayout(buf: Uint8Array): Layout {
  if (buf.byteLength < HEADER) throw new SoftCodecError(`soft label too short: ${buf.byteLength} bytes, the header alone is ${HEADER}`);
  const dv = dataView(buf);
  const code = dv.getUint8(0);
  const kind = KINDS[dv.getUint8(1)];
  const c = dv.getUint32(4, true);
  if (code !== FORMAT_DENSE32 && code !== FORMAT_DENSE16 && code !== FORMAT_TOPK)
    throw new SoftCodecError(`unknown soft-label format ${code}`);
  if (!kind) throw new SoftCodecError(`unknown soft-label kind ${dv.getUint8(1)}`);
  const format = readFormat(dv, code, c);
  const expected = HEADER + bodyBytes(format, c);
  if (buf.byteLength !== expected) {
    throw new SoftCodecError(
      `soft label has the wrong length: ${buf.byteLength} bytes, ${formatName(format)} with C = ${c} takes ${expected}`,
    );
  }
  return { format, kind, c };
}

function readFormat(dv: DataView, code: number, c: number): SoftFormat {
  if (code === FORMAT_DENSE32) return { kind: 'dense32' };
  if (code === FORMAT_DENSE16) return { kind: 'dense16' };
  if (dv.byteLength < HEADER + 4) throw new SoftCodecError('soft label has the wrong length: a topk blob ends before its K');
  const k = dv.getUint32(HEADER, true);
  if (k < 1 || k >= c) throw new SoftCodecError(`corrupt topk soft label: K = ${k} with C = ${c} (need 1 <= K < C)`);
  return { kind: 'topk', k };
}

function bodyBytes(format: SoftFormat, c: number): number {
  if (format.kind === 'dense32') return 4 * c;
  if (format.kind === 'dense16') return 2 * c;
  return topKBodyBytes(format.k, indexWidth(c));
}

function decodeDense32(buf: Uint8Array, dv: DataView, c: number): Float32Array {
  const values = new Float32Array(c);
  if (LITTLE_ENDIAN) bytesOf(values).set(buf.subarray(HEADER, HEADER + 4 * c));
  else for (let i = 0; i < c; i++) values[i] = dv.getFloat32(HEADER + 4 * i, true);
  return values;
}

function decodeDense16(buf: Uint8Array, dv: DataView, c: number): Float32Array {
  const halves = new Uint16Array(c);
  if (LITTLE_ENDIAN) bytesOf(halves).set(buf.subarray(HEADER, HEADER + 2 * c));
  else for (let i = 0; i < c; i++) halves[i] = dv.getUint16(HEADER + 2 * i, true);
  const values = new Float32Array(c);
  for (let i = 0; i < c; i++) values[i] = HALF_TABLE[halves[i]];
  return values;
}

function decodeTopK(dv: DataView, kind: SoftKind, c: number, k: number): Float32Array {
  const width = indexWidth(c);
  const idxAt = HEADER + 4;
  const valAt = idxAt + k * width;
  const r = dv.getFloat32(valAt + 2 * k, true);
  if (!(r >= 0 && r <= 1)) throw new SoftCodecError(`corrupt topk soft label: leftover mass ${r} is not in [0, 1]`);
  const index = new Uint32Array(k);
  const top = new Float64Array(k);
  const seen = new Uint8Array(c);
  for (let j = 0; j < k; j++) {
    const i = width === 2 ? dv.getUint16(idxAt + 2 * j, true) : dv.getUint32(idxAt + 4 * j, true);
    if (i >= c) throw new SoftCodecError(`corrupt topk soft label: class index ${i} >= C = ${c}`);
    if (seen[i]) throw new SoftCodecError(`corrupt topk soft label: class index ${i} appears twice`);
    seen[i] = 1;
    index[j] = i;
    top[j] = halfToFloat(dv.getUint16(valAt + 2 * j, true));
  }
  const values = new Float32Array(c).fill(tailValue(kind, top, r, c - k));
  for (let j = 0; j < k; j++) values[index[j]] = top[j];
  return values;
}

/**
 * The value of each of the n classes outside the top K: the leftover mass r
 * spread evenly over them, as TinyViT does with its stored sparse teacher
 * logits (Wu et al. 2022, "TinyViT: Fast Pretraining Distillation for Small
 * Vision Transformers"), written in the vector's own kind:
 *   probs      r / n
 *   logprobs   log(r / n)
 *   logits     m + log(r / n) + log S - log(1 - r),  m = max top logit, S = Σ_top exp(z_i - m)
 * The logit makes softmax at temperature 1 give the top classes 1 - r in their
 * own proportions and each other class r / n: with t the tail logit,
 * n·exp(t - m) = r·S / (1 - r), so the normaliser is S / (1 - r).
 * r = 0 gives probability 0 (log 0 = -Infinity). r rounds to 1 only when the top K
 * carry less than float32's resolution (absurdly many classes); the tail classes
 * cannot outrank the smallest top logit, so they get that.
 */
function tailValue(kind: SoftKind, top: Float64Array, r: number, n: number): number {
  if (kind === 'probs') return r / n;
  if (r === 0) return Number.NEGATIVE_INFINITY;
  if (kind === 'logprobs') return Math.log(r / n);
  const m = max(top);
  if (r >= 1 || m === Number.NEGATIVE_INFINITY) return min(top);
  let s = 0;
  for (const z of top) s += Math.exp(z - m);
  return m + Math.log(r / n) + Math.log(s) - Math.log1p(-r);
}

// ---------------------------------------------------------------------------
// Reading distributions

/**
 * Probabilities summing to 1, whatever was stored: softmax(x / T) of logits and
 * log-probabilities. Probabilities are tempered through their logs (p^(1/T),
 * renormalised), never scaled directly; at T = 1 they are only renormalised.
 */
export function softToProbs(v: SoftVector, temperature = 1): number[] {
  if (!(temperature > 0 && Number.isFinite(temperature))) throw new RangeError(`temperature must be a positive number, got ${temperature}`);
  const xs = Array.from(v.values);
  if (v.kind === 'probs') {
    if (temperature === 1) return normalise(xs);
    return softmax(xs.map((p) => Math.log(p) / temperature));
  }
  return softmax(temperature === 1 ? xs : xs.map((x) => x / temperature));
}

/** Log-probabilities kept as such so that a trainer can temper them later (log 0 = -Infinity). */
export function probsToLogprobs(probs: number[]): Float32Array {
  return Float32Array.from(probs, (p) => Math.log(p));
}

function softmax(xs: number[]): number[] {
  const m = max(xs);
  // All +Infinity maxima share the mass; all -Infinity is no information: uniform (by normalise).
  if (m === Number.POSITIVE_INFINITY) return normalise(xs.map((x) => (x === m ? 1 : 0)));
  return normalise(Array.from(expShifted(xs, m)));
}

function normalise(xs: number[]): number[] {
  const s = xs.reduce((a, b) => a + b, 0);
  return s > 0 ? xs.map((x) => x / s) : xs.map(() => 1 / xs.length);
}

/** Loops, not Math.max(...xs): spreading 100k classes onto the stack overflows it. */
function max(xs: ArrayLike<number>): number {
  let m = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < xs.length; i++) if (xs[i] > m) m = xs[i];
  return m;
}

function min(xs: ArrayLike<number>): number {
  let m = Number.POSITIVE_INFINITY;
  for (let i = 0; i < xs.length; i++) if (xs[i] < m) m = xs[i];
  return m;
}

function bytesOf(a: Float32Array | Uint16Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function dataView(buf: Uint8Array): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}
