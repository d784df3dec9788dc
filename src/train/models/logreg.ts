/**
 * Multinomial logistic regression: logits = x · W + b. The floor every other student must beat.
 *
 *   images  x = flatten(pixels)                          W: [H·W·C, classes]
 *   texts   x = the hashed word and bigram counts / total  W: [buckets, classes]
 *           (x · W = mean_{i ∈ bag} W[i]: an embedding bag of width classes; see input-layer.ts)
 */
import type { Forward } from './types.ts';
import { inputLinear, type DenseInput } from './input-layer.ts';
import { lecun, zeros, type ParamFn } from './params.ts';

export interface LogregSpec extends DenseInput {
  kind: 'logreg';
  numClasses: number;
}

export function buildLogreg(spec: LogregSpec, param: ParamFn): Forward {
  // A text table starts at zero, as fastText's output matrix does: a word never seen in training then adds nothing.
  const linear = inputLinear(spec, param, 'head', spec.numClasses, lecun, zeros);
  return (x) => ({ logits: linear(x) });
}
