/**
 * Multinomial logistic regression: logits = flatten(x) · W + b.
 * The floor every other student must beat.
 */
import { DistilleryError } from '../../errors.ts';
import { tf } from '../backend.ts';
import { dense } from '../ops.ts';
import type { Forward } from './types.ts';
import { flattenBatch, lecun, shapeOf, zeros, type ParamFn } from './params.ts';

export interface LogregSpec {
  kind: 'logreg';
  numClasses: number;
  /** One item's shape, e.g. [28, 28, 1] or [784]; inputs are flattened. */
  inputShape: number[];
}

export function buildLogreg(spec: LogregSpec, param: ParamFn): Forward {
  const inputShape = shapeOf('logreg inputShape', spec.inputShape);
  const d = inputShape.reduce((a, b) => a * b, 1);
  const w = param('head.w', [d, spec.numClasses], lecun(d));
  const b = param('head.b', [spec.numClasses], zeros);

  return (x) => {
    if (!(x instanceof tf.Tensor)) throw new DistilleryError('logreg: input must be a tensor [B, ...inputShape]');
    const flat = flattenBatch('logreg', x, inputShape);
    return { logits: dense(flat, w as tf.Tensor2D, b as tf.Tensor1D) as tf.Tensor2D };
  };
}
