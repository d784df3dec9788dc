/**
 * m2mKD end to end (Lo et al. 2024, "m2mKD: Module-to-Module Knowledge Distillation for Modular
 * Transformers"; the official code kamanphoebe/m2mKD, built on Deep Incubation), for a ViT teacher trained
 * by this project and a ViT student, both cut into M modules (modules.ts):
 *
 *   1. meta      a small meta model, one block per module (the teacher's shape at depth M), trained end to
 *                end with CE (Deep Incubation's PT phase; the trainer, so it resumes from its checkpoint);
 *   2. teacher   the teacher's test accuracy, and each hybrid teacher's (the meta model with teacher module
 *                i in slot i): the hybrid teacher is the target of module i, so it must be a good model;
 *   3. incubate  (--incubate-epochs > 0) Deep Incubation's module training: teacher module i, started from
 *                the teacher's weights, trained with CE inside the frozen meta model, so that it speaks the
 *                meta model's language (the official teachers are incubated this way); accuracies again;
 *   4. module i  student module i (with stitch layers when its width differs) in slot i of the frozen meta
 *                model, distilled from the hybrid teacher: 0.5·CE + 0.5·τ²·KL, τ = 1 (loss.ts);
 *   5. assemble  the student modules, stitches dropped, as one plain ViT (saved: eval and predict load it);
 *   6. e2e       the assembled student trained end to end by the trainer with the usual distillers
 *                (ce, kd from the stored teachers' logits), into the output folder.
 *
 * Each phase writes its folder under OUT/m2mkd/ and a phase.json when done; a rerun skips finished phases
 * (and the trainer's phases continue from their checkpoints), so an interrupted run resumes by phase.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DistilleryError, SettingError } from '../../errors.ts';
import { canonicalJson } from '../../input/canonical.ts';
import { loadModel, type SavedModelSpec } from '../../infer/model.ts';
import { tf } from '../backend.ts';
import type { Dataset } from '../data.ts';
import type { DistillSettings } from '../distill/index.ts';
import { loadWeights, saveWeights } from '../io.ts';
import { crossEntropy } from '../losses.ts';
import type { ForwardOut, VitSpec } from '../models/index.ts';
import { splitIndices, train, type EpochRecord, type TestReport, type TrainHooks } from '../trainer.ts';
import { fit, testAccuracy, type FitConfig, type ModuleEpoch } from './fit.ts';
import { m2mkdTerms, type M2mkdLossOptions } from './loss.ts';
import {
  createModularVit,
  hybridChain,
  modularVitFromWeights,
  outputOf,
  runChain,
  type ModularVit,
  type ModuleFn,
  type ModuleIO,
} from './modules.ts';
import { stitched } from './stitch.ts';

export interface M2mkdConfig {
  /** M: modules per model. */
  modules: number;
  /** The student: a plain ViT (its patches, tokens and input those of the teacher). */
  student: VitSpec;
  /** The teacher ViT's folder (trained by this project), run frozen inside the hybrid teachers. */
  featureTeacher: string;
  metaEpochs: number;
  /** Deep Incubation of the teacher modules (0: the teacher's modules as they are). */
  incubateEpochs: number;
  moduleEpochs: number;
  /** End-to-end epochs of the assembled student. */
  epochs: number;
  batchSize: number;
  lr: number;
  weightDecay: number;
  clip: number;
  seed: number;
  loss: M2mkdLossOptions;
  /** The end-to-end phase's distillers and their settings (as train.ts's --distill). */
  distill: string[];
  settings?: Partial<DistillSettings>;
}

/** What each phase recorded (also OUT/m2mkd/<phase>/phase.json). */
export interface M2mkdRecord {
  teacher: { accuracy: number | null; params: number };
  meta: { accuracy: number | null; history: EpochRecord[] };
  /** Test accuracy of the hybrid teacher in each slot: the plain teacher module, and after incubation. */
  hybrid_teacher: { plain: Array<number | null>; incubated: Array<number | null> | null };
  incubate: Array<{ history: ModuleEpoch[] }>;
  /** Per module: its training, and the hybrid student's final test accuracy. */
  modules: Array<{ history: ModuleEpoch[]; hybrid_accuracy: number | null }>;
  /** The assembled student before end-to-end training. */
  assembled: { accuracy: number | null };
  e2e: { history: EpochRecord[]; test: TestReport; best_epoch: number; params: number };
}

export interface M2mkdHooks {
  /** A line for people, per phase and epoch. */
  log?: (line: string) => void;
  /** The end-to-end phase's trainer hooks. */
  train?: TrainHooks;
}

const PHASE_FILE = 'phase.json';

interface PhaseFile<T> {
  /** What the phase was run with: a rerun with other settings must not reuse it. */
  key: unknown;
  result: T;
}

/** A finished phase's result, or undefined; a phase finished with other settings is an error (use a new folder). */
function finished<T>(dir: string, key: unknown): T | undefined {
  const file = join(dir, PHASE_FILE);
  if (!existsSync(file)) return undefined;
  const saved = JSON.parse(readFileSync(file, 'utf8')) as PhaseFile<T>;
  if (canonicalJson(saved.key) !== canonicalJson(key)) {
    throw new DistilleryError(`${file}: this phase was run with other settings (${canonicalJson(saved.key)}); use a new --out folder`);
  }
  return saved.result;
}

function finish<T>(dir: string, key: unknown, result: T): T {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, PHASE_FILE), `${JSON.stringify({ key, result } satisfies PhaseFile<T>, null, 2)}\n`);
  return result;
}

/** The meta model: the teacher's shape (width, heads, patches, tokens) with one block per module. */
export function metaSpec(teacher: VitSpec, modules: number): VitSpec {
  return { ...teacher, depth: modules, shareEvery: 1 };
}

function checkPair(teacher: VitSpec, student: VitSpec, modules: number): void {
  if (teacher.kind !== 'vit') throw new SettingError('featureTeacher', undefined, `m2mkd needs a ViT teacher, this is a ${teacher.kind}`);
  if (teacher.distillToken || student.distillToken) {
    throw new SettingError('featureTeacher', undefined, 'm2mkd: ViTs with a DeiT distillation token are not supported');
  }
  const tokens = (s: VitSpec) => canonicalJson([s.inputShape, s.patchSize, s.classToken ?? true, s.numClasses]);
  if (tokens(teacher) !== tokens(student)) {
    throw new SettingError(
      'featureTeacher',
      undefined,
      `m2mkd: the student's input, patches, class token and classes must be the teacher's (${tokens(teacher)}, student ${tokens(student)})`,
    );
  }
  if (modules > Math.min(teacher.depth, student.depth)) {
    throw new SettingError('modules', modules, `more modules than blocks (teacher ${teacher.depth}, student ${student.depth})`);
  }
}

const pct = (x: number | null) => (x === null ? '-' : `${(100 * x).toFixed(2)}%`);

/** Set variables from saved tensors (a finished phase's weights), then free the tensors. */
function assignAll(vars: Record<string, tf.Variable>, tensors: Record<string, tf.Tensor>, dir: string): void {
  for (const [name, v] of Object.entries(vars)) {
    const t = tensors[name];
    if (!t) throw new DistilleryError(`${dir}: saved weights lack "${name}"`);
    v.assign(t);
  }
  tf.dispose(Object.values(tensors));
}

export async function runM2mkd(ds: Dataset, c: M2mkdConfig, outDir: string, hooks: M2mkdHooks = {}): Promise<M2mkdRecord> {
  const say = hooks.log ?? (() => {});
  const root = join(outDir, 'm2mkd');
  const teacherModel = await loadModel(c.featureTeacher);
  const tSpec = teacherModel.spec.student as VitSpec;
  const tParams = Object.values(teacherModel.student.weights).reduce((n, v) => n + v.size, 0);
  teacherModel.student.dispose();
  checkPair(tSpec, c.student, c.modules);
  if (JSON.stringify(teacherModel.spec.labels) !== JSON.stringify(ds.task.labels)) {
    throw new SettingError('featureTeacher', c.featureTeacher, `the teacher's labels differ from task "${ds.task.name}"'s`);
  }
  const M = c.modules;
  const last = M - 1;
  const split = splitIndices(ds, c.seed);
  const idx = { train: split.train, test: split.test };
  const fitConfig = (epochs: number): FitConfig => ({ ...pick(c), epochs });
  const saved = (spec: VitSpec): SavedModelSpec => ({
    student: spec,
    task: ds.task.name,
    labels: ds.task.labels,
    preprocess: ds.preprocess,
    predict: null,
  });

  // ---- 1. meta model ---------------------------------------------------------------------
  const mSpec = metaSpec(tSpec, M);
  const metaDir = join(root, 'meta');
  const metaKey = { spec: mSpec, epochs: c.metaEpochs, ...pick(c) };
  const meta =
    finished<M2mkdRecord['meta']>(metaDir, metaKey) ??
    (await (async () => {
      say(`m2mkd meta: ${M} blocks of width ${mSpec.width}, ${c.metaEpochs} epochs`);
      const r = await train(
        ds,
        mSpec,
        { ...pick(c), epochs: c.metaEpochs, patience: 0, distill: ['ce'], settings: { ceWeight: 1 }, testEachEpoch: true },
        metaDir,
        {
          resume: existsSync(join(metaDir, 'checkpoint', 'model.json')),
          hooks: { onEpoch: (e) => say(`  meta epoch ${e.epoch + 1}: test ${pct(e.test_accuracy)}`) },
        },
      );
      return finish(metaDir, metaKey, { accuracy: r.test.accuracy, history: r.history });
    })());
  say(`m2mkd meta model: test ${pct(meta.accuracy)}`);

  const metaLoaded = await loadWeights<SavedModelSpec>(metaDir);
  const metaVit = modularVitFromWeights(mSpec, M, metaLoaded.tensors);
  tf.dispose(Object.values(metaLoaded.tensors));
  const teacherLoaded = await loadWeights<SavedModelSpec>(c.featureTeacher);
  let teacher: ModularVit;
  try {
    teacher = modularVitFromWeights(tSpec, M, teacherLoaded.tensors);
  } finally {
    tf.dispose(Object.values(teacherLoaded.tensors));
  }
  const student = createModularVit(c.student, M, c.seed);
  const toFree: Array<{ dispose(): void }> = [metaVit, teacher, student];
  try {
    const hybridTeacher = (i: number) => hybridChain(metaVit, i, teacher.module(i));
    const hybridAccuracies = async () => {
      const out: Array<number | null> = [];
      for (let i = 0; i < M; i++) out.push(await testAccuracy(ds, idx.test, mSpec, (x) => runChain(hybridTeacher(i), x as tf.Tensor)));
      return out;
    };

    // ---- 2. the teacher and its hybrids ----------------------------------------------------
    const teacherDir = join(root, 'teacher');
    const teacherKey = { teacher: c.featureTeacher, meta: metaKey };
    const teacherRec =
      finished<{ accuracy: number | null; plain: Array<number | null> }>(teacherDir, teacherKey) ??
      finish(teacherDir, teacherKey, {
        accuracy: await testAccuracy(ds, idx.test, tSpec, (x) =>
          runChain(
            teacher.ranges.map((_, i) => teacher.module(i)),
            x as tf.Tensor,
          ),
        ),
        plain: await hybridAccuracies(),
      });
    say(
      `m2mkd teacher: test ${pct(teacherRec.accuracy)}; hybrid teacher (meta + teacher module i): ${teacherRec.plain.map(pct).join(', ')}`,
    );

    // ---- 3. Deep Incubation of the teacher modules ----------------------------------------
    const incubate: M2mkdRecord['incubate'] = [];
    let incubated: Array<number | null> | null = null;
    if (c.incubateEpochs > 0) {
      for (let i = 0; i < M; i++) {
        const dir = join(root, `incubate-${i}`);
        const key = { teacherKey, slot: i, epochs: c.incubateEpochs, ...pick(c) };
        const vars = teacher.moduleWeights(i);
        let done = finished<{ history: ModuleEpoch[] }>(dir, key);
        if (done) assignAll(vars, (await loadWeights(dir)).tensors, dir);
        else {
          say(`m2mkd incubate teacher module ${i}: ${c.incubateEpochs} epochs`);
          const chain = hybridTeacher(i);
          const history = await fit(
            ds,
            idx,
            mSpec,
            {
              vars,
              prepare: (x) => prefixTokens(metaVit, i, x),
              terms: (x, hard, pre) => ({ ce: crossEntropy(runFrom(chain, i, pre).logits, hard) }),
              forward: (x) => runChain(chain, x as tf.Tensor),
            },
            fitConfig(c.incubateEpochs),
            (e) => say(`  incubate ${i} epoch ${e.epoch + 1}: loss ${e.loss.toFixed(4)} hybrid test ${pct(e.test_accuracy)}`),
          );
          await saveWeights(dir, { m2mkd: 'incubated teacher module', slot: i, ranges: teacher.ranges }, vars);
          done = finish(dir, key, { history });
        }
        incubate.push(done);
      }
      incubated = await hybridAccuracies();
      say(`m2mkd incubated hybrid teacher: ${incubated.map(pct).join(', ')}`);
    }

    // ---- 4. module-to-module distillation -------------------------------------------------
    const modules: M2mkdRecord['modules'] = [];
    for (let i = 0; i < M; i++) {
      const dir = join(root, `module-${i}`);
      const key = {
        slot: i,
        teacher: teacherKey,
        incubate: c.incubateEpochs,
        student: c.student,
        epochs: c.moduleEpochs,
        loss: c.loss,
        ...pick(c),
      };
      const stitches: Record<string, tf.Variable> = {};
      toFree.push({ dispose: () => tf.dispose(Object.values(stitches)) });
      const slotModule = stitched(student.module(i), {
        slot: i,
        last,
        studentWidth: c.student.width,
        metaWidth: mSpec.width,
        seed: c.seed + i,
        weights: stitches,
      });
      const vars = { ...student.moduleWeights(i), ...stitches };
      const chain = hybridChain(metaVit, i, slotModule);
      const forward = (x: unknown) => runChain(chain, x as tf.Tensor);
      let done = finished<M2mkdRecord['modules'][number]>(dir, key);
      if (done) assignAll(vars, (await loadWeights(dir)).tensors, dir);
      else {
        say(`m2mkd student module ${i} (${blockNames(student.ranges[i])}): ${c.moduleEpochs} epochs`);
        const tChain = hybridTeacher(i);
        const history = await fit(
          ds,
          idx,
          mSpec,
          {
            vars,
            prepare: (x) => ({ tokens: prefixTokens(metaVit, i, x), teacher: runChain(tChain, x).logits }),
            terms: (x, hard, pre) => m2mkdTerms(runFrom(chain, i, pre.tokens).logits, pre.teacher, hard, c.loss),
            forward,
          },
          fitConfig(c.moduleEpochs),
          (e) => say(`  module ${i} epoch ${e.epoch + 1}: loss ${e.loss.toFixed(4)} hybrid student test ${pct(e.test_accuracy)}`),
        );
        await saveWeights(dir, { m2mkd: 'student module', slot: i, ranges: student.ranges }, vars);
        done = finish(dir, key, { history, hybrid_accuracy: history.at(-1)?.test_accuracy ?? null });
      }
      modules.push(done);
    }

    // ---- 5. assembly -----------------------------------------------------------------------
    const assembledDir = join(root, 'assembled');
    await saveWeights(assembledDir, saved(c.student), student.weights);
    const assembled = {
      accuracy: await testAccuracy(ds, idx.test, c.student, (x) =>
        runChain(
          student.ranges.map((_, i) => student.module(i)),
          x as tf.Tensor,
        ),
      ),
    };
    say(`m2mkd assembled student (stitches dropped): test ${pct(assembled.accuracy)}`);
    for (const f of toFree.splice(0)) f.dispose();

    // ---- 6. end to end ---------------------------------------------------------------------
    say(`m2mkd end to end: ${c.epochs} epochs, --distill ${c.distill.join(',')}`);
    const resume = existsSync(join(outDir, 'checkpoint', 'model.json'));
    const r = await train(
      ds,
      c.student,
      {
        ...pick(c),
        epochs: c.epochs,
        patience: 0,
        distill: c.distill,
        ...(c.settings ? { settings: c.settings } : {}),
        ...(resume ? {} : { initFrom: assembledDir }),
      },
      outDir,
      { resume, ...(hooks.train ? { hooks: hooks.train } : {}) },
    );
    return {
      teacher: { accuracy: teacherRec.accuracy, params: tParams },
      meta,
      hybrid_teacher: { plain: teacherRec.plain, incubated },
      incubate,
      modules,
      assembled,
      e2e: { history: r.history, test: r.test, best_epoch: r.best_epoch, params: r.params },
    };
  } finally {
    for (const f of toFree) f.dispose();
  }
}

/** [start, end) as people read it: "block 2", "blocks 0–1". */
function blockNames([s, e]: [number, number]): string {
  return e - s === 1 ? `block ${s}` : `blocks ${s}–${e - 1}`;
}

/** The optimisation settings every phase shares. */
function pick(c: M2mkdConfig): Omit<FitConfig, 'epochs'> {
  return { batchSize: c.batchSize, lr: c.lr, weightDecay: c.weightDecay, clip: c.clip, seed: c.seed };
}

/** The frozen meta modules before slot i on images (the images themselves for slot 0). */
function prefixTokens(meta: ModularVit, slot: number, images: tf.Tensor): tf.Tensor {
  let x: tf.Tensor = images;
  for (let j = 0; j < slot; j++) x = meta.module(j)(x) as tf.Tensor;
  return x === images ? images.clone() : x;
}

/** The chain from slot i on, given the frozen prefix's output. */
function runFrom(chain: readonly ModuleFn[], slot: number, prefix: tf.Tensor): ForwardOut {
  return outputOf(chain.slice(slot).reduce<ModuleIO>((x, m) => m(x), prefix));
}
