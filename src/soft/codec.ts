/**
 * The soft-label codec: the one binary format for per-class distributions in
 * the store. Every producer encodes through `encodeSoft` and every consumer
 * decodes through `decodeSoft`/`softToProbs`; no other module reads the bytes.
 *
 * Layout (little-endian):
 *   byte 0      format   1 = dense32 (later parts add dense16 and top-K)
 *   byte 1      kind     0 = probs, 1 = logprobs, 2 = logits
 *   bytes 2-3   reserved (0)
 *   bytes 4-7   C, the number of classes (uint32)
 *   then        C float32 values
 */
export type SoftKind = 'probs' | 'logprobs' | 'logits';

export interface SoftVector {
  kind: SoftKind;
  values: Float32Array;
}

const FORMAT_DENSE32 = 1;
const KINDS: SoftKind[] = ['probs', 'logprobs', 'logits'];
const HEADER = 8;

export class SoftCodecError extends Error {
  override name = 'SoftCodecError';
}

export function encodeSoft(v: SoftVector): Buffer {
  const c = v.values.length;
  const buf = Buffer.alloc(HEADER + 4 * c);
  buf.writeUInt8(FORMAT_DENSE32, 0);
  buf.writeUInt8(KINDS.indexOf(v.kind), 1);
  buf.writeUInt32LE(c, 4);
  for (let i = 0; i < c; i++) buf.writeFloatLE(v.values[i], HEADER + 4 * i);
  return buf;
}

export function decodeSoft(buf: Uint8Array): SoftVector {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < HEADER) throw new SoftCodecError('soft label too short');
  const format = b.readUInt8(0);
  const kind = KINDS[b.readUInt8(1)];
  const c = b.readUInt32LE(4);
  if (format !== FORMAT_DENSE32) throw new SoftCodecError(`unknown soft-label format ${format}`);
  if (!kind) throw new SoftCodecError(`unknown soft-label kind ${b.readUInt8(1)}`);
  if (b.length !== HEADER + 4 * c) throw new SoftCodecError('soft label has the wrong length');
  const values = new Float32Array(c);
  for (let i = 0; i < c; i++) values[i] = b.readFloatLE(HEADER + 4 * i);
  return { kind, values };
}

/** Probabilities, summing to 1, whatever was stored. Logits get temperature 1. */
export function softToProbs(v: SoftVector): number[] {
  const xs = Array.from(v.values);
  if (v.kind === 'probs') return normalise(xs);
  const m = Math.max(...xs);
  return normalise(xs.map((x) => Math.exp(x - m)));
}

/** Log-probabilities kept as such so that a trainer can temper them later (log 0 = -Infinity). */
export function probsToLogprobs(probs: number[]): Float32Array {
  return Float32Array.from(probs, (p) => Math.log(p));
}

function normalise(xs: number[]): number[] {
  const s = xs.reduce((a, b) => a + b, 0);
  return s > 0 ? xs.map((x) => x / s) : xs.map(() => 1 / xs.length);
}
