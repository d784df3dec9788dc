/**
 * What crosses between threads: a batch cut into shares of items (plain typed arrays, so
 * postMessage can transfer them), and the trained weights laid end to end in one Float32Array
 * (the layout), so one SharedArrayBuffer carries the weights out and one per worker the gradients back.
 */
import { DistilleryError } from '../../errors.ts';
import { tf } from '../backend.ts';
import type { Batch } from '../distill/index.ts';

/** A tensor as data: its shape, and its values in row-major order. */
export interface Plain {
  shape: number[];
  dtype: 'float32' | 'int32';
  data: Float32Array | Int32Array;
}

/**
 * A share of a batch: the rows [start, start + size) of each of its tensors, the item axis being
 * 0 except for the per-teacher tensors ([T, B, …]: axis 1). Fields that are neither tensors nor
 * known (e.g. a number a distiller reads) are copied to every share as they are.
 */
export interface Share {
  idx: number[];
  x: Plain;
  hard?: Plain;
  teacherLogits?: Plain;
  perTeacher?: { names: string[]; logits: Plain; present: Plain };
  plain: Record<string, unknown>;
}

/** Sizes of `n` shares of `batch` items, as equal as possible, larger ones first. */
export function shareSizes(batch: number, n: number): number[] {
  const k = Math.min(n, batch);
  return Array.from({ length: k }, (_, i) => Math.floor(batch / k) + (i < batch % k ? 1 : 0));
}

const TENSOR_FIELDS = new Set(['idx', 'x', 'hard', 'teacherLogits', 'perTeacher']);

/** Cut a batch built by the trainer into shares of these sizes (in order: share 0 is the first items). */
export function splitBatch(batch: Batch, sizes: number[]): Share[] {
  if (!(batch.x instanceof tf.Tensor)) throw new DistilleryError('workers: only tensor inputs (images) can be split across threads');
  const plain: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(batch)) {
    if (TENSOR_FIELDS.has(k) || v === undefined) continue;
    if (v instanceof tf.Tensor || (typeof v === 'object' && v !== null && !Array.isArray(v)))
      throw new DistilleryError(`workers: the batch field "${k}" cannot be split across threads`);
    plain[k] = v;
  }
  const shares: Share[] = [];
  let start = 0;
  for (const size of sizes) {
    const rows = (t: tf.Tensor, axis = 0) => sliceRows(t, axis, start, size);
    const share: Share = { idx: batch.idx.slice(start, start + size), x: rows(batch.x), plain };
    if (batch.hard) share.hard = rows(batch.hard);
    if (batch.teacherLogits) share.teacherLogits = rows(batch.teacherLogits);
    if (batch.perTeacher)
      share.perTeacher = {
        names: batch.perTeacher.names,
        logits: rows(batch.perTeacher.logits, 1),
        present: rows(batch.perTeacher.present, 1),
      };
    shares.push(share);
    start += size;
  }
  return shares;
}

function sliceRows(t: tf.Tensor, axis: number, start: number, size: number): Plain {
  const begin = t.shape.map((_, i) => (i === axis ? start : 0));
  const extent = t.shape.map((d, i) => (i === axis ? size : d));
  const part = tf.slice(t, begin, extent);
  // A copy of its own: on the cpu backend dataSync can return a view of the input's storage, which a transfer would detach.
  const data = (part.dataSync() as Float32Array | Int32Array).slice();
  part.dispose();
  return { shape: extent, dtype: t.dtype === 'int32' ? 'int32' : 'float32', data };
}

/** The ArrayBuffers a share can hand over to another thread (postMessage's transfer list). */
export function shareBuffers(s: Share): ArrayBuffer[] {
  const plains = [s.x, s.hard, s.teacherLogits, s.perTeacher?.logits, s.perTeacher?.present].filter((p): p is Plain => !!p);
  return plains.map((p) => p.data.buffer as ArrayBuffer);
}

/** A share as the Batch the distillers read, on this thread's backend (dispose with disposeShareBatch). */
export function shareBatch(s: Share): Batch {
  const t = <T extends tf.Tensor>(p: Plain) => tf.tensor(p.data, p.shape, p.dtype) as T;
  const batch: Batch = { ...s.plain, idx: s.idx, x: t(s.x) };
  if (s.hard) batch.hard = t<tf.Tensor1D>(s.hard);
  if (s.teacherLogits) batch.teacherLogits = t<tf.Tensor2D>(s.teacherLogits);
  if (s.perTeacher)
    batch.perTeacher = {
      names: s.perTeacher.names,
      logits: t<tf.Tensor3D>(s.perTeacher.logits),
      present: t<tf.Tensor2D>(s.perTeacher.present),
    };
  return batch;
}

export function disposeShareBatch(b: Batch): void {
  tf.dispose([b.x, b.hard, b.teacherLogits, b.perTeacher?.logits, b.perTeacher?.present].filter((x) => x !== undefined) as tf.Tensor[]);
}

/** Where each trained weight lives in the flat buffer: in the order of the trained weights' names. */
export interface Slot {
  name: string;
  shape: number[];
  offset: number;
  size: number;
}

export function layoutOf(weights: Record<string, tf.Tensor>): { slots: Slot[]; total: number } {
  let offset = 0;
  const slots = Object.entries(weights).map(([name, w]) => {
    const slot = { name, shape: w.shape, offset, size: w.size };
    offset += w.size;
    return slot;
  });
  return { slots, total: offset };
}

/** Copy tensors (by slot name) into the flat buffer. */
export function writeFlat(into: Float32Array, slots: Slot[], tensors: Record<string, tf.Tensor>): void {
  for (const s of slots) into.set(tensors[s.name].dataSync() as Float32Array, s.offset);
}
