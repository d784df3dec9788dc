/**
 * How a student gets its weights. Every model is written once as
 * `build(spec, param)`: it asks `param(name, shape, init)` for each weight and
 * closes over what it gets back. Two kinds of `param` exist:
 * - seededParams: a fresh variable from a seeded initialiser (training from scratch);
 * - loadedParams: the tensor of that name from a saved model (shape checked).
 * Asking twice for the same name returns the same variable, which is how
 * MiniViT's weight sharing is expressed (blocks of a group ask for the group's names).
 */
import { DistilleryError } from '../../errors.ts';
import { tf } from '../backend.ts';

export type Init =
  | { kind: 'normal'; std: number } // truncated at 2σ, as timm's trunc_normal_
  | { kind: 'uniform'; limit: number }
  | { kind: 'zeros' }
  | { kind: 'ones' };

export type ParamFn = (name: string, shape: number[], init: Init) => tf.Variable;

export const zeros: Init = { kind: 'zeros' };
export const ones: Init = { kind: 'ones' };
export const normal = (std: number): Init => ({ kind: 'normal', std });
/** He/Kaiming normal, std √(2/fan_in): keeps activation variance through ReLU/GELU layers. */
export const he = (fanIn: number): Init => normal(Math.sqrt(2 / fanIn));
/** LeCun normal, std √(1/fan_in): for layers not followed by a rectifier (heads, logreg). */
export const lecun = (fanIn: number): Init => normal(Math.sqrt(1 / fanIn));

/** 32-bit FNV-1a of a string's UTF-8 bytes. Also used by fastText's hashing. */
export function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (const byte of Buffer.from(text, 'utf8')) {
    h ^= byte;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** Returns the same variable when a name is asked for again (weight sharing), after checking the shape agrees. */
function cached(weights: Record<string, tf.Variable>, make: (name: string, shape: number[], init: Init) => tf.Variable): ParamFn {
  return (name, shape, init) => {
    const existing = weights[name];
    if (existing) {
      if (!sameShape(existing.shape, shape)) throw new Error(`weight "${name}" asked for as [${shape}] and as [${existing.shape}]`);
      return existing;
    }
    const v = make(name, shape, init);
    weights[name] = v;
    return v;
  };
}

/**
 * Each weight's seed is derived from (seed, name), not from creation order, so
 * that adding a weight to a model does not change how the others are initialised.
 */
export function seededParams(seed: number, weights: Record<string, tf.Variable>): ParamFn {
  return cached(weights, (name, shape, init) =>
    tf.tidy(() => {
      const s = (Math.imul(seed >>> 0, 0x9e3779b1) ^ fnv1a(name)) >>> 0;
      switch (init.kind) {
        case 'zeros':
          return tf.variable(tf.zeros(shape));
        case 'ones':
          return tf.variable(tf.ones(shape));
        case 'normal':
          return tf.variable(tf.truncatedNormal(shape, 0, init.std, 'float32', s));
        case 'uniform':
          return tf.variable(tf.randomUniform(shape, -init.limit, init.limit, 'float32', s));
      }
    }),
  );
}

/** Weights from saved tensors (copied into new variables: the caller keeps ownership of `tensors`). */
export function loadedParams(tensors: Record<string, tf.Tensor>, weights: Record<string, tf.Variable>, what: string): ParamFn {
  return cached(weights, (name, shape) => {
    const t = tensors[name];
    if (!t) throw new DistilleryError(`${what}: saved weights lack "${name}"`);
    if (!sameShape(t.shape, shape)) throw new DistilleryError(`${what}: weight "${name}" is [${t.shape}], the spec needs [${shape}]`);
    if (t.dtype !== 'float32') throw new DistilleryError(`${what}: weight "${name}" is ${t.dtype}, expected float32`);
    return tf.variable(t.clone());
  });
}

// ---------------------------------------------------------------------------------------
// Spec checks shared by the models

export function positiveInt(what: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
    throw new DistilleryError(`${what} must be a positive integer, got ${JSON.stringify(value)}`);
  }
  return value;
}

export function rate(what: string, value: number | undefined): number {
  const r = value ?? 0;
  if (!(r >= 0 && r < 1)) throw new DistilleryError(`${what} must be in [0, 1), got ${JSON.stringify(value)}`);
  return r;
}

export function shapeOf(what: string, value: unknown): number[] {
  if (!Array.isArray(value) || value.length === 0)
    throw new DistilleryError(`${what} must be a non-empty array of positive integers, got ${JSON.stringify(value)}`);
  return value.map((d, i) => positiveInt(`${what}[${i}]`, d));
}

/**
 * [B, ...inputShape] (or already [B, D]) → [B, D]: image models that flatten
 * accept either, so a caller may pre-flatten its batches.
 */
export function flattenBatch(what: string, x: tf.Tensor, inputShape: readonly number[]): tf.Tensor2D {
  const d = inputShape.reduce((a, b) => a * b, 1);
  const rest = x.shape.slice(1);
  const ok = x.rank >= 2 && (sameShape(rest, inputShape) || (x.rank === 2 && x.shape[1] === d));
  if (!ok) throw new DistilleryError(`${what}: input must be [B, ${inputShape.join(', ')}] or [B, ${d}], got [${x.shape}]`);
  return (x.rank === 2 ? x : tf.reshape(x, [x.shape[0], d])) as tf.Tensor2D;
}

/** [B, H, W, C] exactly as the spec says (a [B, H, W] batch gets its channel axis when C = 1). */
export function imageBatch(what: string, x: tf.Tensor, [h, w, c]: readonly number[]): tf.Tensor4D {
  if (x.rank === 3 && c === 1 && x.shape[1] === h && x.shape[2] === w) return tf.expandDims(x, 3) as tf.Tensor4D;
  if (x.rank !== 4 || x.shape[1] !== h || x.shape[2] !== w || x.shape[3] !== c) {
    throw new DistilleryError(`${what}: input must be [B, ${h}, ${w}, ${c}], got [${x.shape}]`);
  }
  return x as tf.Tensor4D;
}
