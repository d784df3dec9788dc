/**
 * Students: small models trained (distilled) on the wasm backend. One file per
 * model, each a `build(spec, param)` that reads top to bottom; this file holds
 * the common shapes and the two ways to make a student (fresh, or from saved weights).
 *
 *   const s = createStudent({ kind: 'vit', numClasses: 10, inputShape: [28, 28, 1], ... }, 42);
 *   const { logits } = tf.tidy(() => s.forward(x, { training: true }));
 *   await saveWeights(dir, s.spec, s.weights);
 *   const { spec, tensors } = await loadWeights<StudentSpec>(dir);
 *   const again = studentFromWeights(spec, tensors);
 *
 * Memory: forward allocates freely; call it inside tf.tidy (or optimizer.minimize /
 * tf.variableGrads, which tidy for you). ForwardOut is a tensor container, so tidy can return it whole.
 */
import { DistilleryError } from '../../errors.ts';
import { tf } from '../backend.ts';
import { buildCnn, type CnnSpec } from './cnn.ts';
import { buildFasttext, type FasttextSpec } from './fasttext.ts';
import { buildInvolution, type InvolutionSpec } from './involution.ts';
import { buildLogreg, type LogregSpec } from './logreg.ts';
import { buildMlp, type MlpSpec } from './mlp.ts';
import { loadedParams, positiveInt, seededParams, type ParamFn } from './params.ts';
import { buildVit, type VitSpec } from './vit.ts';

export type { CnnSpec, FasttextSpec, InvolutionSpec, LogregSpec, MlpSpec, VitSpec };
export { featuresKey, hashTokens, textBatch, textFeaturesOf, words, type HashOptions, type TextFeatures } from './text-features.ts';
export { vitDistillTokens, vitTokenCounts } from './vit.ts';

/** Every student's spec: JSON-serialisable, stored as model.json's `spec` by saveWeights. */
export type StudentSpec = LogregSpec | MlpSpec | CnnSpec | InvolutionSpec | VitSpec | FasttextSpec;
export type StudentKind = StudentSpec['kind'];

export type { Features, Forward, ForwardOptions, ForwardOut, StudentInput, TextBatch } from './types.ts';
import type { Forward } from './types.ts';

export interface Student {
  spec: StudentSpec;
  /** Trainable variables by explicit name ('blocks.0.attn.qkv.w'); a shared weight appears once. */
  weights: Record<string, tf.Variable>;
  forward: Forward;
  /** Frees the variables. */
  dispose(): void;
}

function build(spec: StudentSpec, param: ParamFn): Forward {
  if (spec === null || typeof spec !== 'object') throw new DistilleryError(`student spec must be an object, got ${JSON.stringify(spec)}`);
  positiveInt(`${spec.kind} numClasses`, spec.numClasses);
  switch (spec.kind) {
    case 'logreg':
      return buildLogreg(spec, param);
    case 'mlp':
      return buildMlp(spec, param);
    case 'cnn':
      return buildCnn(spec, param);
    case 'involution':
      return buildInvolution(spec, param);
    case 'vit':
      return buildVit(spec, param);
    case 'fasttext':
      return buildFasttext(spec, param);
    default:
      throw new DistilleryError(
        `unknown student kind ${JSON.stringify((spec as { kind?: unknown }).kind)} (expected logreg, mlp, cnn, involution, vit or fasttext)`,
      );
  }
}

function student(spec: StudentSpec, weights: Record<string, tf.Variable>, forward: Forward): Student {
  return { spec, weights, forward, dispose: () => tf.dispose(Object.values(weights)) };
}

/** A fresh student; the same (spec, seed) gives the same initial weights. */
export function createStudent(spec: StudentSpec, seed: number): Student {
  const weights: Record<string, tf.Variable> = {};
  try {
    return student(spec, weights, build(spec, seededParams(seed, weights)));
  } catch (err) {
    tf.dispose(Object.values(weights));
    throw err;
  }
}

/**
 * A student from saved tensors (e.g. loadWeights' output). The tensors are
 * copied: the caller still owns (and may dispose) them. Missing, extra or
 * wrongly shaped tensors are an error, so a spec that does not match its
 * weights is caught here rather than producing garbage.
 */
export function studentFromWeights(spec: StudentSpec, tensors: Record<string, tf.Tensor>): Student {
  const weights: Record<string, tf.Variable> = {};
  try {
    const forward = build(spec, loadedParams(tensors, weights, `${spec?.kind} student`));
    const extra = Object.keys(tensors).filter((name) => !(name in weights));
    if (extra.length > 0)
      throw new DistilleryError(`${spec.kind} student: saved weights hold tensors the spec does not use: ${extra.join(', ')}`);
    return student(spec, weights, forward);
  } catch (err) {
    tf.dispose(Object.values(weights));
    throw err;
  }
}

/** Number of trainable scalars; a shared weight counts once. */
export function countParams(s: Student): number {
  return Object.values(s.weights).reduce((n, v) => n + v.size, 0);
}
