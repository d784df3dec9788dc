/**
 * Multi-layer perceptron: flatten → (dense → GELU|ReLU → dropout) × len(hidden) → dense.
 * GELU (Hendrycks & Gimpel 2016) by default, as in transformer MLPs.
 */
import { DistilleryError } from '../../errors.ts';
import { tf } from '../backend.ts';
import { dense, gelu } from '../ops.ts';
import type { Features, Forward } from './types.ts';
import { flattenBatch, he, lecun, positiveInt, rate, shapeOf, zeros, type ParamFn } from './params.ts';

export interface MlpSpec {
  kind: 'mlp';
  numClasses: number;
  /** One item's shape, e.g. [28, 28, 1] or [784]; inputs are flattened. */
  inputShape: number[];
  /** Width of each hidden layer, e.g. [256, 128]; [] is logistic regression. */
  hidden: number[];
  /** Default 'gelu'. */
  activation?: 'gelu' | 'relu';
  /** Dropout rate after each hidden activation, when training. Default 0. */
  dropout?: number;
}

export function activationFn(what: string, name: 'gelu' | 'relu' | undefined): (x: tf.Tensor) => tf.Tensor {
  if (name === undefined || name === 'gelu') return gelu;
  if (name === 'relu') return tf.relu;
  throw new DistilleryError(`${what} activation must be "gelu" or "relu", got ${JSON.stringify(name)}`);
}

export function buildMlp(spec: MlpSpec, param: ParamFn): Forward {
  const inputShape = shapeOf('mlp inputShape', spec.inputShape);
  if (!Array.isArray(spec.hidden))
    throw new DistilleryError(`mlp hidden must be an array of layer widths, got ${JSON.stringify(spec.hidden)}`);
  const act = activationFn('mlp', spec.activation);
  const dropout = rate('mlp dropout', spec.dropout);

  let width = inputShape.reduce((a, b) => a * b, 1);
  const layers = spec.hidden.map((h, i) => {
    positiveInt(`mlp hidden[${i}]`, h);
    const layer = { w: param(`fc.${i}.w`, [width, h], he(width)) as tf.Tensor2D, b: param(`fc.${i}.b`, [h], zeros) as tf.Tensor1D };
    width = h;
    return layer;
  });
  const headW = param('head.w', [width, spec.numClasses], lecun(width)) as tf.Tensor2D;
  const headB = param('head.b', [spec.numClasses], zeros) as tf.Tensor1D;

  return (x, opts = {}) => {
    if (!(x instanceof tf.Tensor)) throw new DistilleryError('mlp: input must be a tensor [B, ...inputShape]');
    let h: tf.Tensor = flattenBatch('mlp', x, inputShape);
    const features: Features = {};
    layers.forEach(({ w, b }, i) => {
      h = act(dense(h, w, b));
      if (opts.training && dropout > 0) h = tf.dropout(h, dropout);
      features[`layer${i}`] = h;
    });
    return { logits: dense(h, headW, headB) as tf.Tensor2D, ...(opts.collect ? { features } : {}) };
  };
}
