/**
 * Multi-layer perceptron: flatten → (dense → GELU|ReLU → dropout) × len(hidden) → dense.
 * GELU (Hendrycks & Gimpel 2016) by default, as in transformer MLPs.
 *
 * On a text task the input is the text's hashed word and bigram counts divided by their total,
 * so the first layer is an embedding bag of width hidden[0] plus a bias (input-layer.ts): fastText
 * with a bias and a non-linearity after the bag.
 */
import { DistilleryError } from '../../errors.ts';
import { tf } from '../backend.ts';
import { dense, gelu } from '../ops.ts';
import type { Features, Forward } from './types.ts';
import { inputLinear, type DenseInput } from './input-layer.ts';
import { he, lecun, positiveInt, rate, zeros, type ParamFn } from './params.ts';

export interface MlpSpec extends DenseInput {
  kind: 'mlp';
  numClasses: number;
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
  if (!Array.isArray(spec.hidden))
    throw new DistilleryError(`mlp hidden must be an array of layer widths, got ${JSON.stringify(spec.hidden)}`);
  const act = activationFn('mlp', spec.activation);
  const dropout = rate('mlp dropout', spec.dropout);
  spec.hidden.forEach((h, i) => positiveInt(`mlp hidden[${i}]`, h));

  // The first layer reads the input (pixels, or a text's bag); with no hidden layer it is the head itself.
  const [first, ...rest] = spec.hidden;
  // A text table starts as fastText's input matrix does, uniform in ±1/width (its rows must differ to break symmetry).
  const input =
    first === undefined
      ? inputLinear(spec, param, 'head', spec.numClasses, lecun, zeros)
      : inputLinear(spec, param, 'fc.0', first, he, { kind: 'uniform', limit: 1 / first });
  let width = first ?? spec.numClasses;
  const layers = rest.map((h, j) => {
    const i = j + 1;
    const layer = { w: param(`fc.${i}.w`, [width, h], he(width)) as tf.Tensor2D, b: param(`fc.${i}.b`, [h], zeros) as tf.Tensor1D };
    width = h;
    return layer;
  });
  const head =
    first === undefined
      ? undefined
      : {
          w: param('head.w', [width, spec.numClasses], lecun(width)) as tf.Tensor2D,
          b: param('head.b', [spec.numClasses], zeros) as tf.Tensor1D,
        };

  return (x, opts = {}) => {
    const features: Features = {};
    let h: tf.Tensor = input(x); // the first hidden layer's pre-activation; the logits when there is none
    if (head) {
      [undefined, ...layers].forEach((layer, i) => {
        if (layer) h = dense(h, layer.w, layer.b);
        h = act(h);
        if (opts.training && dropout > 0) h = tf.dropout(h, dropout);
        features[`layer${i}`] = h;
      });
      h = dense(h, head.w, head.b);
    }
    return { logits: h as tf.Tensor2D, ...(opts.collect ? { features } : {}) };
  };
}
