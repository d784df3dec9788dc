/**
 * A ViT as M modules (m2mKD, Lo et al. 2024 §3; Deep Incubation, Ni et al. 2023): consecutive groups of
 * blocks, module 0 also owning the patch embedding and the class/position tokens, the last module the final
 * norm and head. A model is then a chain of modules, and a hybrid model is the chain with one module swapped
 * for another model's (stitch layers bridging a width mismatch, see stitch.ts).
 *
 * The modules run the ViT's own parts (buildVit(...).parts): there is one ViT, here only sliced.
 */
import { DistilleryError } from '../../errors.ts';
import { tf } from '../backend.ts';
import { loadedParams, seededParams, type ParamFn } from '../models/params.ts';
import type { ForwardOut, VitSpec } from '../models/index.ts';
import { buildVit, type VitParts } from '../models/vit.ts';

/** What flows between modules: images into module 0, tokens [B, N, D] between, the head's output out of the last. */
export type ModuleIO = tf.Tensor | ForwardOut;

/** One module of a chain: x → y (tokens, or the head's output for the last). */
export type ModuleFn = (x: ModuleIO) => ModuleIO;

/** [start, end) block ranges of M modules over `depth` blocks, as equal as possible, the larger ones first. */
export function moduleRanges(depth: number, modules: number): Array<[number, number]> {
  if (!Number.isInteger(modules) || modules < 1 || modules > depth) {
    throw new DistilleryError(`m2mkd: cannot split ${depth} blocks into ${modules} modules (need 1 ≤ modules ≤ depth)`);
  }
  const out: Array<[number, number]> = [];
  let start = 0;
  for (let i = 0; i < modules; i++) {
    const size = Math.floor(depth / modules) + (i < depth % modules ? 1 : 0);
    out.push([start, start + size]);
    start += size;
  }
  return out;
}

/** A ViT's weights, built once, run as modules. */
export interface ModularVit {
  spec: VitSpec;
  weights: Record<string, tf.Variable>;
  ranges: Array<[number, number]>;
  parts: VitParts;
  /** Module i as a chain link. */
  module(i: number): ModuleFn;
  /** The names of the weights module i owns (and only it). */
  moduleWeights(i: number): Record<string, tf.Variable>;
  dispose(): void;
}

function checkModular(spec: VitSpec): void {
  if (spec.kind !== 'vit') throw new DistilleryError(`m2mkd: modules are cut out of ViTs, got a ${(spec as { kind: string }).kind}`);
  if ((spec.shareEvery ?? 1) !== 1) {
    throw new DistilleryError('m2mkd: a ViT with MiniViT weight sharing (shareEvery > 1) shares weights across modules');
  }
}

function modular(spec: VitSpec, modules: number, weights: Record<string, tf.Variable>, param: ParamFn): ModularVit {
  checkModular(spec);
  const ranges = moduleRanges(spec.depth, modules);
  const { parts } = buildVit(spec, param);
  const last = ranges.length - 1;
  const owner = (name: string): number => {
    const block = /^blocks\.(\d+)\./.exec(name);
    if (block) return ranges.findIndex(([s, e]) => Number(block[1]) >= s && Number(block[1]) < e);
    return /^(norm|head|head_dist)\./.test(name) ? last : 0; // patch.*, cls_token, dist_token, pos_embed
  };
  return {
    spec,
    weights,
    ranges,
    parts,
    module: (i) => {
      const [s, e] = ranges[i];
      return (input) => {
        let x = i === 0 ? parts.embed(input as tf.Tensor) : tokensOf(input);
        for (let b = s; b < e; b++) x = parts.block(b, x);
        return i === last ? parts.head(x) : x;
      };
    },
    moduleWeights: (i) => Object.fromEntries(Object.entries(weights).filter(([name]) => owner(name) === i)),
    dispose: () => tf.dispose(Object.values(weights)),
  };
}

/** A fresh ViT as `modules` modules; the same weights as createStudent(spec, seed). */
export function createModularVit(spec: VitSpec, modules: number, seed: number): ModularVit {
  const weights: Record<string, tf.Variable> = {};
  try {
    return modular(spec, modules, weights, seededParams(seed, weights));
  } catch (e) {
    tf.dispose(Object.values(weights));
    throw e;
  }
}

/** A saved ViT (its tensors are copied: the caller still owns them) as `modules` modules. */
export function modularVitFromWeights(spec: VitSpec, modules: number, tensors: Record<string, tf.Tensor>): ModularVit {
  const weights: Record<string, tf.Variable> = {};
  try {
    const m = modular(spec, modules, weights, loadedParams(tensors, weights, 'm2mkd vit'));
    const extra = Object.keys(tensors).filter((name) => !(name in weights));
    if (extra.length > 0) throw new DistilleryError(`m2mkd vit: saved weights hold tensors the spec does not use: ${extra.join(', ')}`);
    return m;
  } catch (e) {
    tf.dispose(Object.values(weights));
    throw e;
  }
}

export function tokensOf(x: ModuleIO): tf.Tensor3D {
  if (!(x instanceof tf.Tensor) || x.rank !== 3) throw new DistilleryError('m2mkd: a module after the first takes tokens [B, N, D]');
  return x as tf.Tensor3D;
}

export function outputOf(x: ModuleIO): ForwardOut {
  if (x instanceof tf.Tensor) throw new DistilleryError('m2mkd: the last module must end in a head');
  return x;
}

/** Images through a chain of modules: the model's output. */
export function runChain(chain: readonly ModuleFn[], images: tf.Tensor): ForwardOut {
  return outputOf(chain.reduce<ModuleIO>((x, m) => m(x), images));
}

/** A model's modules with module `slot` replaced: the hybrid model of Deep Incubation and m2mKD. */
export function hybridChain(meta: ModularVit, slot: number, replacement: ModuleFn): ModuleFn[] {
  return meta.ranges.map((_, i) => (i === slot ? replacement : meta.module(i)));
}
