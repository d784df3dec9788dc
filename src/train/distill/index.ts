/**
 * The registry of distillers: name → definition (its flags and how to create it). Adding a
 * method is one file in this folder and one line here (and its options type in DistillSettings).
 * The trainer composes the chosen distillers with `createDistillers` and knows none by name.
 */
import { DistilleryError, SettingError } from '../../errors.ts';
import { attn, type AttnOptions } from './attn.ts';
import { ce, type CeOptions } from './ce.ts';
import { civt, type CivtOptions } from './civt.ts';
import { dearkd, type DearkdOptions } from './dearkd.ts';
import { deit, type DeitOptions } from './deit.ts';
import { hidden, type HiddenOptions } from './hidden.ts';
import { kd, type KdOptions } from './kd.ts';
import { manifold, type ManifoldOptions } from './manifold.ts';
import { multiKd, type MultiKdOptions } from './multi-kd.ts';
import { onlineKd, type OnlineKdOptions } from './online-kd.ts';
import { tf } from '../backend.ts';
import { loadWeights } from '../io.ts';
import { studentFromWeights, type Student, type StudentSpec } from '../models/index.ts';
import { resolve } from 'node:path';
import type { Distiller, DistillerContext, DistillerDef, Flag, Needs, Progress } from './types.ts';

export type { Batch, Distiller, DistillerContext, DistillerDef, Flag, Needs, Progress, StudentOutput } from './types.ts';
export { parseLayerMap } from './vit-features.ts';
export { PROJ_PREFIX } from './hidden.ts';

/** In this order the terms are summed and logged, whatever the order of --distill. */
export const DISTILLERS: readonly DistillerDef<any>[] = [ce, kd, multiKd, deit, civt, hidden, attn, manifold, dearkd, onlineKd];

/** Every distiller's settings, by flag key (a key shared by two distillers is one setting). */
export type DistillSettings = CeOptions &
  KdOptions &
  MultiKdOptions &
  DeitOptions &
  CivtOptions &
  HiddenOptions &
  AttnOptions &
  ManifoldOptions &
  DearkdOptions &
  OnlineKdOptions;

export function distillerNames(): string[] {
  return DISTILLERS.map((d) => d.name);
}

export function findDistiller(name: string): DistillerDef<any> {
  const d = DISTILLERS.find((x) => x.name === name);
  if (!d) throw new SettingError('distill', name, `unknown distiller (known: ${distillerNames().join(', ')})`);
  return d;
}

/** Every setting once, with the distillers that read it: for the command line and its help. */
export function distillFlags(): Array<{ key: keyof DistillSettings; flag: Flag<unknown>; users: string[] }> {
  const out = new Map<string, { key: keyof DistillSettings; flag: Flag<unknown>; users: string[] }>();
  for (const d of DISTILLERS) {
    for (const [key, flag] of Object.entries(d.flags) as Array<[keyof DistillSettings, Flag<unknown>]>) {
      const seen = out.get(key);
      if (seen && seen.flag !== flag)
        throw new DistilleryError(`distillers ${seen.users.join(', ')} and ${d.name} declare the setting ${key} differently`);
      if (seen) seen.users.push(d.name);
      else out.set(key, { key, flag, users: [d.name] });
    }
  }
  return [...out.values()];
}

/** Settings with every unset one at its flag's default. */
export function distillDefaults(partial: Partial<DistillSettings> = {}): DistillSettings {
  const out: Record<string, unknown> = {};
  for (const { key, flag } of distillFlags()) out[key] = partial[key] !== undefined ? partial[key] : flag.default;
  return out as unknown as DistillSettings;
}

/** `--distill ce,kd`: known names, each once; returned in registry order. */
export function parseDistillList(text: string): string[] {
  const names = text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (names.length === 0) throw new SettingError('distill', text, 'give at least one distiller');
  for (const n of names) findDistiller(n);
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup) throw new SettingError('distill', dup, 'listed twice');
  return distillerNames().filter((n) => names.includes(n));
}

/**
 * The chosen distillers, created for this student (those that are off with these settings,
 * e.g. at weight 0, are left out). On an error, the ones already created are disposed.
 */
export function createDistillers(names: string[], settings: Partial<DistillSettings>, ctx: DistillerContext): Distiller[] {
  const all = distillDefaults(settings);
  const made: Distiller[] = [];
  try {
    const chosen = parseDistillList(names.join(','));
    for (const name of chosen) {
      const def = findDistiller(name);
      const options = Object.fromEntries(Object.keys(def.flags).map((k) => [k, all[k as keyof DistillSettings]]));
      const d = def.create(options, { ...ctx, distill: chosen });
      if (d) made.push(d);
    }
  } catch (e) {
    for (const d of made) d.dispose();
    throw e;
  }
  if (made.length === 0) throw new DistilleryError(`--distill ${names.join(',')}: their weights (all are 0) leave nothing to train on`);
  return made;
}

/** What binds a checkpoint to these distillers (for --resume). */
export function objectiveKey(distillers: Distiller[]): Array<{ name: string; key: unknown }> {
  return distillers.map((d) => ({ name: d.name, key: d.key() }));
}

/** The frozen teacher of the feature distillers (any model saved by this project). */
export async function loadFeatureTeacher(dir: string): Promise<{ dir: string; model: Student }> {
  let loaded: { spec: { student?: StudentSpec }; tensors: Record<string, tf.Tensor> };
  try {
    loaded = await loadWeights<{ student?: StudentSpec }>(dir);
  } catch (e) {
    throw new SettingError('featureTeacher', dir, (e as Error).message);
  }
  try {
    if (!loaded.spec?.student) throw new SettingError('featureTeacher', dir, 'not a distillery model (no student spec)');
    return { dir: resolve(dir), model: studentFromWeights(loaded.spec.student, loaded.tensors) };
  } finally {
    tf.dispose(Object.values(loaded.tensors));
  }
}

/** What the distillers need at all (no progress given), or in this epoch. */
export function unionNeeds(ds: Distiller[], progress?: Progress): Needs {
  const out: Needs = {};
  for (const d of ds)
    for (const [k, v] of Object.entries(progress && d.needsAt ? d.needsAt(progress) : d.needs)) if (v) out[k as keyof Needs] = true;
  return out;
}
