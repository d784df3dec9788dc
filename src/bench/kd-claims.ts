/**
 * The claims table of issue 12: each ViT-distillation paper's central claim, checked at a size two CPU
 * cores can train, 3 seeds per row. One function per claim; each trains its own teachers (once, shared by
 * the seeds and by the other claims) and its students with the trainer as train.ts uses it, so every row
 * has a train.ts command (docs/BENCHMARKS.md lists them).
 *
 * A run's result is kept in WORK/runs/<row>-s<seed>.json: a rerun with the same --keep folder skips what is
 * done, so a long table can be stopped and resumed. Teachers are kept in WORK/models/<name>.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DistilleryError } from '../errors.ts';
import { canonicalJson } from '../input/canonical.ts';
import { loadModelForTask, modelFiles } from '../infer/model.ts';
import { modelLogitsRows } from '../infer/predict.ts';
import { parseSoftFormat } from '../soft/codec.ts';
import type { Store } from '../store/store.ts';
import type { Task } from '../task/task.ts';
import type { TaskRow } from '../store/store.ts';
import { parseAugment, type AugmentConfig } from '../train/augment.ts';
import { loadDataset, type Dataset } from '../train/data.ts';
import type { DistillSettings } from '../train/distill/index.ts';
import { runM2mkd } from '../train/m2mkd/run.ts';
import type { StudentSpec, VitSpec } from '../train/models/index.ts';
import { train, type EpochRecord, type TrainConfig } from '../train/trainer.ts';
import { ingestLogits } from '../whitebox/ingest.ts';
import { modelReplay } from '../whitebox/replay.ts';

export const CLAIMS = ['deit', 'dearkd', 'civt', 'm2mkd', 'replay'] as const;
export type Claim = (typeof CLAIMS)[number];

export interface VitShape {
  patch: number;
  width: number;
  depth: number;
  heads: number;
  mlpRatio: number;
}

export interface ClaimsConfig {
  claims: Claim[];
  seeds: number[];
  /** Folder of the teachers, students and per-run results. */
  work: string;
  vit: VitShape;
  /** Epochs of every ViT student (DearKD's fractions too: the paper keeps the epochs and halves the data). */
  epochs: number;
  batchSize: number;
  lr: number;
  weightDecay: number;
  /** Epochs of the CNN and involution teachers (trained on gold, every train image). */
  teacherEpochs: number;
  /** DearKD: the fractions of the train images the students see (the teacher saw them all). */
  fractions: number[];
  /** TinyViT replay: the augmentation of the stored views and of the independent and online rows. */
  augment: string;
  m2mkd: {
    /** The ViT teacher (supervised): its depth, heads and epochs; the student is --vit with this depth. */
    teacherDepth: number;
    teacherHeads: number;
    teacherEpochs: number;
    studentDepth: number;
    metaEpochs: number;
    incubateEpochs: number;
    moduleEpochs: number;
    /** End-to-end epochs; the KD row gets moduleEpochs + this (equal student epochs). */
    e2eEpochs: number;
  };
}

export interface ClaimRow {
  claim: Claim;
  /** Short key, unique in the table (also the runs/ file name). */
  key: string;
  /** What the row trains, for people. */
  row: string;
  /** The train.ts (or m2mkd.ts) flags of the row, for the docs. */
  flags: string;
  seeds: number[];
  accuracies: number[];
  mean: number;
  std: number;
  seconds: number[];
}

export interface ClaimTeacher {
  name: string;
  kind: string;
  seed: number;
  epochs: number;
  augment: string | null;
  test_accuracy: number | null;
}

export interface ClaimsResult {
  teachers: ClaimTeacher[];
  rows: ClaimRow[];
  /** Per claim: other figures the claim needs (replay check, m2mKD's hybrid teacher). */
  extra: Record<string, unknown>;
}

type Log = (line: string) => void;

interface Ctx {
  store: Store;
  task: Task;
  taskRow: TaskRow;
  c: ClaimsConfig;
  log: Log;
  datasets: Map<string, Dataset>;
  teachers: Map<string, ClaimTeacher>;
  result: ClaimsResult;
}

/** What one row trains: the dataset's teachers (or gold), the fraction of train items, the spec and the objective. */
interface RowPlan {
  key: string;
  row: string;
  flags: string;
  /** Teacher names as --teachers, or 'gold' for --supervised. */
  targets: string;
  fraction?: number;
  spec?: Partial<VitSpec>;
  distill: string[];
  settings?: Partial<DistillSettings>;
  featureTeacher?: string;
  augment?: string;
  epochs?: number;
}

/**
 * Train the claims' teachers and students; `data` names the images (set and sizes): a kept folder holds the results of
 * one setting only, and a rerun with another is refused rather than mixing them.
 */
export async function runClaims(
  store: Store,
  task: Task,
  taskRow: TaskRow,
  c: ClaimsConfig,
  data: Record<string, unknown>,
  log: Log,
): Promise<ClaimsResult> {
  for (const f of c.fractions) if (!(f > 0 && f <= 1)) throw new DistilleryError(`--fractions: ${f} is not in (0, 1]`);
  checkClaimsSetting(c, data);
  const ctx: Ctx = {
    store,
    task,
    taskRow,
    c,
    log,
    datasets: new Map(),
    teachers: new Map(),
    result: { teachers: [], rows: [], extra: {} },
  };
  for (const claim of c.claims) {
    log(`---- claim: ${claim}`);
    await CLAIM_RUNNERS[claim](ctx);
  }
  ctx.result.teachers = [...ctx.teachers.values()];
  return ctx.result;
}

/** What every run's result depends on (not the claims or seeds chosen: those only add runs). */
export function checkClaimsSetting(c: ClaimsConfig, data: Record<string, unknown>): void {
  mkdirSync(join(c.work, 'runs'), { recursive: true });
  const { claims: _claims, seeds: _seeds, work: _work, ...setting } = c;
  const text = canonicalJson({ data, setting });
  const file = join(c.work, 'claims-setting.json');
  if (existsSync(file) && readFileSync(file, 'utf8').trim() !== text)
    throw new DistilleryError(
      `${file}: this folder holds runs of another setting (${readFileSync(file, 'utf8').trim()}); use a new --keep folder`,
    );
  writeFileSync(file, `${text}\n`);
}

const CLAIM_RUNNERS: Record<Claim, (ctx: Ctx) => Promise<void>> = {
  /** DeiT (Touvron et al. 2021, Table 3): hard distillation through the distillation token beats soft, and both beat none. */
  async deit(ctx) {
    await teacher(ctx, 'cnn', 'cnn', 1);
    await rows(ctx, 'deit', [
      ceRow(1),
      kdRow(1),
      deitRow('soft', 'CE + T²·KL on the token'),
      deitRow('hard', 'CE + CE(token, argmax teacher)'),
    ]);
  },

  /** DearKD (Chen et al. 2022): CNN-feature + KD stage, then CE; its gain over KD and CE grows as the data shrinks. */
  async dearkd(ctx) {
    await teacher(ctx, 'cnn', 'cnn', 1);
    const plans: RowPlan[] = [];
    for (const f of ctx.c.fractions) {
      plans.push(ceRow(f), kdRow(f), {
        key: `dearkd-f${f}`,
        row: `DearKD + MHCA(2), ${pctOf(f)} of train`,
        flags: `--rel-pos-blocks 2 --distill ce,dearkd --ce-weight 1 --feature-teacher models/cnn`,
        targets: 'cnn',
        fraction: f,
        spec: { relPosBlocks: 2 },
        distill: ['ce', 'dearkd'],
        settings: { ceWeight: 1 },
        featureTeacher: teacherDir(ctx, 'cnn'),
      });
    }
    await rows(ctx, 'dearkd', plans);
  },

  /** CivT (Ren et al. 2022): teachers of different inductive biases (conv + involution) beat a same-bias pair or one teacher. */
  async civt(ctx) {
    await teacher(ctx, 'cnn', 'cnn', 1);
    await teacher(ctx, 'cnn-s2', 'cnn', 2);
    await teacher(ctx, 'inv', 'involution', 1);
    const civt = (key: string, teachers: string, tokens: number, row: string): RowPlan => ({
      key,
      row,
      flags: `--teachers ${teachers} --distill-tokens ${tokens} --distill civt`,
      targets: teachers,
      spec: tokens > 1 ? { distillTokens: tokens } : { distillToken: true },
      distill: ['civt'],
    });
    await rows(ctx, 'civt', [
      civt('civt-cnn-inv', 'cnn,inv', 2, 'CivT: conv + involution teachers (2 tokens)'),
      civt('civt-cnn-cnn', 'cnn,cnn-s2', 2, 'two conv teachers, seeds 1 and 2 (2 tokens)'),
      civt('civt-cnn', 'cnn', 1, 'one conv teacher (1 token)'),
    ]);
  },

  /** m2mKD (Lo et al. 2024): module-by-module distillation, then end to end, beats end-to-end KD at equal student epochs. */
  async m2mkd(ctx) {
    const m = ctx.c.m2mkd;
    await teacher(ctx, 'vit-teacher', 'vit', 1);
    const student = vitSpec(ctx, { depth: m.studentDepth });
    const kdEpochs = m.moduleEpochs + m.e2eEpochs;
    await rows(ctx, 'm2mkd', [
      {
        key: 'm2mkd-kd',
        row: `end-to-end KD, ${kdEpochs} epochs (= module + e2e epochs)`,
        flags: `--teachers vit-teacher --depth ${m.studentDepth} --distill ce,kd --epochs ${kdEpochs}`,
        targets: 'vit-teacher',
        spec: { depth: m.studentDepth },
        distill: ['ce', 'kd'],
        epochs: kdEpochs,
      },
    ]);
    const key = 'm2mkd';
    const row = emptyRow(
      'm2mkd',
      key,
      `m2mKD: ${ctx.c.m2mkd.studentDepth} modules, meta ${m.metaEpochs} ep, incubation ${m.incubateEpochs}, modules ${m.moduleEpochs}, e2e ${m.e2eEpochs}`,
      `m2mkd.ts --feature-teacher models/vit-teacher --modules ${m.studentDepth} --depth ${m.studentDepth} --meta-epochs ${m.metaEpochs} ` +
        `--incubate-epochs ${m.incubateEpochs} --module-epochs ${m.moduleEpochs} --epochs ${m.e2eEpochs}`,
    );
    const phases: Record<string, unknown>[] = [];
    for (const seed of ctx.c.seeds) {
      const r =
        cached<M2mkdRun>(ctx, key, seed) ??
        save(ctx, key, seed, await m2mkdRun(ctx, student, seed, join(ctx.c.work, 'models', `${key}-s${seed}`)));
      addSeed(row, seed, r.accuracy, r.seconds);
      phases.push({ seed, ...r.phases });
      ctx.log(`  ${key} seed ${seed}: test ${pct(r.accuracy)}`);
    }
    ctx.result.rows.push(finishRow(row));
    ctx.result.extra.m2mkd_phases = phases;
  },

  /** TinyViT (Wu et al. 2022): stored teacher outputs need the view they were made on; replaying it matches online KD. */
  async replay(ctx) {
    const aug = ctx.c.augment;
    await teacher(ctx, 'cnn-aug', 'cnn', 1, aug);
    await replayRun(ctx, 'cnn-aug', 'cnn-aug-replay', parseAugment(aug)!, ctx.c.epochs);
    const kd = { distill: ['ce', 'kd'] };
    await rows(ctx, 'replay', [
      {
        key: 'replay-stored',
        row: `stored logits with replay (${aug})`,
        flags: '--teachers cnn-aug-replay --distill ce,kd',
        targets: 'cnn-aug-replay',
        ...kd,
      },
      {
        key: 'replay-independent',
        row: `stored logits, independently drawn ${aug}`,
        flags: `--teachers cnn-aug --augment ${aug} --distill ce,kd`,
        targets: 'cnn-aug',
        augment: aug,
        ...kd,
      },
      {
        key: 'replay-online',
        row: `online KD: the teacher on each ${aug} batch`,
        flags: `--teachers cnn-aug --augment ${aug} --distill ce,online-kd --feature-teacher models/cnn-aug`,
        targets: 'cnn-aug',
        augment: aug,
        distill: ['ce', 'online-kd'],
        featureTeacher: teacherDir(ctx, 'cnn-aug'),
      },
      {
        key: 'replay-none',
        row: 'stored logits, no augmentation',
        flags: '--teachers cnn-aug --distill ce,kd',
        targets: 'cnn-aug',
        ...kd,
      },
    ]);
  },
};

interface M2mkdRun {
  accuracy: number;
  seconds: number;
  phases: Record<string, unknown>;
}

async function m2mkdRun(ctx: Ctx, student: VitSpec, seed: number, out: string): Promise<M2mkdRun> {
  const m = ctx.c.m2mkd;
  const { value: rec, seconds } = await timed(() =>
    runM2mkd(
      dataset(ctx, 'vit-teacher'),
      {
        modules: m.studentDepth,
        student,
        featureTeacher: teacherDir(ctx, 'vit-teacher'),
        metaEpochs: m.metaEpochs,
        incubateEpochs: m.incubateEpochs,
        moduleEpochs: m.moduleEpochs,
        epochs: m.e2eEpochs,
        batchSize: ctx.c.batchSize,
        lr: ctx.c.lr,
        weightDecay: ctx.c.weightDecay,
        clip: 1,
        seed,
        // The paper's module loss: 0.5 · CE + 0.5 · τ² · KL, τ = 1.
        loss: { alpha: 0.5, tau: 1 },
        distill: ['ce', 'kd'],
      },
      out,
      { log: (l) => ctx.log(`  m2mkd seed ${seed}: ${l}`) },
    ),
  );
  return {
    accuracy: rec.e2e.test.accuracy ?? NaN,
    seconds,
    phases: {
      teacher: rec.teacher.accuracy,
      meta: rec.meta.accuracy,
      hybrid_teacher: rec.hybrid_teacher,
      hybrid_student: rec.modules.map((x) => x.hybrid_accuracy),
      assembled: rec.assembled.accuracy,
    },
  };
}

/** DeiT's distillation token from the CNN teacher; CE (to the teacher's hard label) and the token's loss weigh 1 each. */
function deitRow(mode: 'hard' | 'soft', loss: string): RowPlan {
  return {
    key: `deit-${mode}`,
    row: `DeiT token, ${mode} (${loss})`,
    flags: `--distill-token --distill ce,deit --deit-mode ${mode} --ce-weight 1`,
    targets: 'cnn',
    spec: { distillToken: true },
    distill: ['ce', 'deit'],
    settings: { ceWeight: 1, deitWeight: 1, deitMode: mode },
  };
}

function ceRow(f: number): RowPlan {
  return {
    key: `ce-f${f}`,
    row: `CE on gold, no teacher${f < 1 ? `, ${pctOf(f)} of train` : ''}`,
    flags: '--supervised',
    targets: 'gold',
    fraction: f,
    distill: ['ce'],
    settings: { ceWeight: 1 },
  };
}

function kdRow(f: number): RowPlan {
  return {
    key: `kd-f${f}`,
    row: `KD (0.1 CE + 0.9 T²·KL, T 4)${f < 1 ? `, ${pctOf(f)} of train` : ''}`,
    flags: '--teachers cnn --distill ce,kd',
    targets: 'cnn',
    fraction: f,
    distill: ['ce', 'kd'],
  };
}

/** Train each plan for each seed (seeds outer, so a stopped table has whole seeds), then one row per plan. */
async function rows(ctx: Ctx, claim: Claim, plans: RowPlan[]): Promise<void> {
  const out = plans.map((p) => emptyRow(claim, p.key, p.row, p.flags));
  for (const seed of ctx.c.seeds) {
    for (const [i, p] of plans.entries()) {
      const r = cached<{ accuracy: number; seconds: number }>(ctx, p.key, seed) ?? (await trainRow(ctx, p, seed));
      addSeed(out[i], seed, r.accuracy, r.seconds);
      ctx.log(`  ${p.key} seed ${seed}: test ${pct(r.accuracy)} (${r.seconds.toFixed(0)} s)`);
    }
  }
  // A row two claims share (CE and KD on all the data) trains once (its runs/ file) and is listed under both.
  for (const r of out) ctx.result.rows.push(finishRow(r));
}

async function trainRow(ctx: Ctx, p: RowPlan, seed: number): Promise<{ accuracy: number; seconds: number }> {
  const ds = trainPrefix(dataset(ctx, p.targets), p.fraction ?? 1);
  const config: TrainConfig = {
    epochs: p.epochs ?? ctx.c.epochs,
    batchSize: ctx.c.batchSize,
    lr: ctx.c.lr,
    weightDecay: ctx.c.weightDecay,
    clip: 1,
    patience: 0,
    seed,
    testEachEpoch: false,
    distill: p.distill,
    ...(p.settings ? { settings: p.settings } : {}),
    ...(p.featureTeacher ? { featureTeacher: p.featureTeacher } : {}),
    ...(p.augment ? { augment: parseAugment(p.augment) } : {}),
  };
  const { value, seconds } = await timed(() =>
    train(ds, vitSpec(ctx, p.spec ?? {}), config, join(ctx.c.work, 'models', `${p.key}-s${seed}`), {
      hooks: { onEpoch: epochLog(ctx.log, `${p.key} s${seed}`) },
    }),
  );
  return save(ctx, p.key, seed, { accuracy: value.test.accuracy ?? NaN, seconds });
}

/** A supervised teacher (CNN, involution or ViT) on every train image, and its logits ingested as teacher `name`. */
async function teacher(ctx: Ctx, name: string, kind: 'cnn' | 'involution' | 'vit', seed: number, augment?: string): Promise<void> {
  if (ctx.teachers.has(name)) return;
  const dir = teacherDir(ctx, name);
  const m2m = ctx.c.m2mkd;
  const epochs = kind === 'vit' ? m2m.teacherEpochs : augment ? ctx.c.teacherEpochs + 1 : ctx.c.teacherEpochs;
  let accuracy: number | null;
  const saved = cached<{ accuracy: number | null }>(ctx, `teacher-${name}`, seed);
  if (saved && existsSync(join(dir, 'model.json'))) accuracy = saved.accuracy;
  else {
    const gold = dataset(ctx, 'gold');
    const im = gold.preprocess.image!;
    const inputShape: [number, number, number] = [im.height, im.width, im.channels];
    const numClasses = ctx.task.labels.length;
    const spec: StudentSpec =
      kind === 'vit'
        ? vitSpec(ctx, { depth: m2m.teacherDepth, heads: m2m.teacherHeads })
        : kind === 'cnn'
          ? { kind, numClasses, inputShape }
          : { kind, numClasses, inputShape };
    ctx.log(`teacher ${name}: ${kind}, seed ${seed}, ${epochs} epochs on gold${augment ? `, --augment ${augment}` : ''}`);
    const res = await train(
      gold,
      spec,
      {
        epochs,
        batchSize: ctx.c.batchSize,
        lr: ctx.c.lr,
        weightDecay: ctx.c.weightDecay,
        clip: 1,
        patience: 0,
        seed,
        testEachEpoch: false,
        distill: ['ce'],
        settings: { ceWeight: 1 },
        ...(augment ? { augment: parseAugment(augment) } : {}),
      },
      dir,
      { hooks: { onEpoch: epochLog(ctx.log, `teacher ${name}`) } },
    );
    accuracy = res.test.accuracy;
    save(ctx, `teacher-${name}`, seed, { accuracy });
  }
  ctx.log(`teacher ${name}: test ${accuracy === null ? '-' : pct(accuracy)}`);
  await ingestModel(ctx, name, dir);
  ctx.teachers.set(name, { name, kind, seed, epochs, augment: augment ?? null, test_accuracy: accuracy });
}

async function ingestModel(ctx: Ctx, name: string, dir: string, replay?: { augment: AugmentConfig; epochs: number; seed: number }) {
  const { model, ds } = await loadModelForTask(ctx.store, dir, { task: ctx.taskRow });
  try {
    const res = await ingestLogits({
      store: ctx.store,
      task: ctx.task,
      teacher: name,
      input: dir,
      format: parseSoftFormat('dense32'),
      sourceFiles: modelFiles(dir),
      rows: () => modelLogitsRows(model, ds),
      ...(replay ? { replay: modelReplay(ctx.store, ctx.taskRow, model, ds, replay) } : {}),
    });
    ctx.log(
      `  ingested teacher "${name}": ${res.alreadyIngested ? 'already there' : `${res.rows} rows`}${replay ? ` + ${replay.epochs} epochs of views` : ''}`,
    );
  } finally {
    model.student.dispose();
  }
  // A dataset built before this ingest would not see the new run.
  ctx.datasets.clear();
}

async function replayRun(ctx: Ctx, from: string, name: string, augment: AugmentConfig, epochs: number): Promise<void> {
  await ingestModel(ctx, name, teacherDir(ctx, from), { augment, epochs, seed: 1 });
}

function teacherDir(ctx: Ctx, name: string): string {
  return join(ctx.c.work, 'models', name);
}

function vitSpec(ctx: Ctx, extra: Partial<VitSpec>): VitSpec {
  const gold = dataset(ctx, 'gold');
  const im = gold.preprocess.image!;
  const v = ctx.c.vit;
  return {
    kind: 'vit',
    numClasses: ctx.task.labels.length,
    inputShape: [im.height, im.width, im.channels],
    patchSize: v.patch,
    width: v.width,
    depth: v.depth,
    heads: v.heads,
    mlpRatio: v.mlpRatio,
    shareEvery: 1,
    ...extra,
  };
}

/** The task's dataset with these teachers' targets (or gold), built once. */
function dataset(ctx: Ctx, targets: string): Dataset {
  let ds = ctx.datasets.get(targets);
  if (!ds) {
    ds =
      targets === 'gold'
        ? loadDataset(ctx.store, ctx.taskRow, { supervised: true, targets: { calibrate: false } })
        : loadDataset(ctx.store, ctx.taskRow, { supervised: false, targets: { teachers: targets, calibrate: false } });
    ctx.datasets.set(targets, ds);
  }
  return ds;
}

/** Training targets on the first ⌈f·n⌉ train-split items only (the trainer skips items without one); f = 1: unchanged. */
export function trainPrefix(ds: Dataset, f: number): Dataset {
  if (f >= 1) return ds;
  const total = ds.splits.reduce((a, s) => a + (s === 'train' ? 1 : 0), 0);
  const keep = Math.ceil(f * total);
  const targetHard = Int32Array.from(ds.targetHard);
  let seen = 0;
  for (let i = 0; i < ds.n; i++) if (ds.splits[i] === 'train' && seen++ >= keep) targetHard[i] = -1;
  return { ...ds, targetHard };
}

function cached<T>(ctx: Ctx, key: string, seed: number): T | undefined {
  const f = runFile(ctx, key, seed);
  return existsSync(f) ? (JSON.parse(readFileSync(f, 'utf8')) as T) : undefined;
}

function save<T>(ctx: Ctx, key: string, seed: number, r: T): T {
  writeFileSync(runFile(ctx, key, seed), `${JSON.stringify(r)}\n`);
  return r;
}

function runFile(ctx: Ctx, key: string, seed: number): string {
  return join(ctx.c.work, 'runs', `${key}-s${seed}.json`);
}

async function timed<T>(f: () => Promise<T>): Promise<{ value: T; seconds: number }> {
  const t = performance.now();
  const value = await f();
  return { value, seconds: (performance.now() - t) / 1000 };
}

function emptyRow(claim: Claim, key: string, row: string, flags: string): ClaimRow {
  return { claim, key, row, flags, seeds: [], accuracies: [], mean: NaN, std: NaN, seconds: [] };
}

function addSeed(r: ClaimRow, seed: number, accuracy: number, seconds: number): void {
  r.seeds.push(seed);
  r.accuracies.push(accuracy);
  r.seconds.push(Math.round(seconds * 10) / 10);
}

function finishRow(r: ClaimRow): ClaimRow {
  return { ...r, ...meanStd(r.accuracies) };
}

export function meanStd(xs: number[]): { mean: number; std: number } {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const std = xs.length > 1 ? Math.sqrt(xs.reduce((a, x) => a + (x - mean) ** 2, 0) / (xs.length - 1)) : 0;
  return { mean, std };
}

function epochLog(log: Log, label: string) {
  return (r: EpochRecord) =>
    log(
      `    ${label} epoch ${r.epoch + 1}: loss ${r.loss.toFixed(4)} train ${pct(r.train_accuracy)} val ${r.val_accuracy === null ? '-' : pct(r.val_accuracy)} ${r.seconds.toFixed(1)} s`,
    );
}

const pct = (x: number): string => (Number.isFinite(x) ? `${(100 * x).toFixed(2)}%` : '-');
const pctOf = (f: number): string => `${Math.round(100 * f)}%`;
