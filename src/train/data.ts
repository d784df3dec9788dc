import { DistilleryError, SettingError } from '../errors.ts';
import { decodePixels } from '../input/image.ts';
import { decodeSoft, softToProbs } from '../soft/codec.ts';
import { replayLabels, replayParamsOf } from '../store/replay.ts';
import type { Store, TaskRow } from '../store/store.ts';
import { buildTargets, hasTeacherRuns, taskItems, type Targets, type TargetsOptions } from '../targets/from-store.ts';
import { applyHumanTargets, humanGold, type HumanGold } from '../targets/human.ts';
import type { TeacherView } from '../targets/types.ts';
import { augmentImages, augmentImagesSeeded, formatAugment, parseAugment, type AugmentConfig, type AugmentDraw } from './augment.ts';
import { tf } from './backend.ts';
import { featuresKey, textBatch, textFeaturesOf, type StudentInput, type StudentSpec, type TextBatch } from './models/index.ts';

/** How raw inputs become tensors; saved with the model so eval and predict see what training saw. */
export interface Preprocess {
  input: 'image' | 'text';
  /** Images: size and channels (1 when every image is grey), and the train split's pixel mean and std. */
  image?: { height: number; width: number; channels: 1 | 3; mean: number; std: number };
}

export interface Dataset {
  task: TaskRow;
  n: number;
  ids: string[];
  splits: string[];
  /** Gold class per item, −1 where there is none. */
  gold: Int32Array;
  /** The training target per item: the teachers' aggregated distribution (N·C), and its hard label (−1: no target). */
  targetProbs: Float32Array;
  targetHard: Int32Array;
  /** The teachers' own hard label per item (for agreement; built with --supervised too), −1 where none or no teacher run. */
  teacherHard: Int32Array;
  /**
   * Reviewers' decisions in the targets (src/targets/human.ts; absent with humanLabels false): items with human
   * gold, train-split items whose training target is a human label (with --supervised: where no gold was imported),
   * and train-split items whose human gold fitted temperatures or teacher weights.
   */
  human?: { items: number; targets: number; fitted: number };
  /**
   * Each chosen teacher's own distribution next to the aggregated target, so that a distiller can
   * learn one teacher per head: log-probabilities N·T·C (item-major, teachers in `names` order;
   * uniform where the teacher did not label the item) and `present` N·T (1: labeled, with a soft label).
   * Absent when the task has no teacher runs.
   */
  perTeacher?: { names: string[]; logprobs: Float32Array; present: Float32Array };
  /** Images: N·H·W·C normalised pixels. Texts: the text of each item. */
  pixels?: Float32Array;
  texts?: string[];
  preprocess: Preprocess;
  /** The teacher is an augmentation-replay run: its views and per-epoch targets (see targetsForEpoch). */
  replay?: Replay;
}

/**
 * A replay run's stored views (TinyViT's augmentation replay): for each of its E epochs and each item,
 * the seed of the augmented view the teacher saw and the teacher's distribution on that view.
 */
export interface Replay {
  run: number;
  augment: AugmentConfig;
  epochs: number;
  /** E·N: the view's augmentation seed; −1 where the run has no row (items outside the train split). */
  seeds: Int32Array;
  /** E·N·C and E·N: the epoch's target distribution and its hard label (the unaugmented target where no row). */
  probs: Float32Array;
  hard: Int32Array;
}

export interface DatasetOptions {
  targets: Omit<TargetsOptions, 'aggregate'> & { aggregate?: TargetsOptions['aggregate'] };
  /** Train on gold labels (a teacher, or a baseline): the target is the gold one-hot. */
  supervised: boolean;
  /** Use this preprocessing (a saved model's) instead of computing it from the data. */
  preprocess?: Preprocess;
  /** Evaluation: teachers are optional (only for agreement). */
  evaluate?: boolean;
}

/**
 * Everything the trainer needs from the store, in memory: inputs decoded once,
 * targets built by src/targets (the same module the export uses).
 */
export function loadDataset(store: Store, task: TaskRow, o: DatasetOptions): Dataset {
  const items = taskItems(store, task);
  const n = items.items.length;
  if (n === 0) throw new DistilleryError(`${store.path}: task "${task.name}" has no items`);
  const c = task.labels.length;
  const gold = Int32Array.from(items.gold, (g) => (g === null ? -1 : g));
  const targetProbs = new Float32Array(n * c);
  const targetHard = new Int32Array(n).fill(-1);
  const teacherHard = new Int32Array(n).fill(-1);

  const humanOn = o.targets.humanLabels !== false;
  // Reviewers' runs alone make no target: without --supervised, buildTargets says so (naming them) rather than
  // the message for a task nobody labeled.
  const runs = store.runs(task.id);
  const hasRuns = runs.length > 0 && (o.targets.teachers !== undefined || hasTeacherRuns(store, task) || (!o.supervised && !o.evaluate));
  let perTeacher: Dataset['perTeacher'];
  // Supervised runs build the teachers' labels too, for the agreement in the test report.
  let replay: Replay | undefined;
  let human: HumanGold | null = null;
  let fitted = 0;
  if (hasRuns) {
    const t = buildTargets(store, task, { ...o.targets, aggregate: o.targets.aggregate ?? 'mean' });
    human = t.human;
    fitted = t.humanFitted;
    perTeacher = perTeacherOf(t.views, n, c);
    for (let i = 0; i < n; i++) {
      const h = t.hard[i];
      if (h !== null) teacherHard[i] = h;
      if (!o.supervised && t.probs[i] && h !== null) {
        targetProbs.set(t.probs[i]!, i * c);
        targetHard[i] = h;
      }
    }
    if (!o.supervised && !o.evaluate) replay = loadReplay(store, t, o.targets, targetProbs, targetHard, c);
  } else if (!o.supervised && !o.evaluate) {
    throw new DistilleryError(
      `${store.path}: task "${task.name}" has no teacher runs; label or ingest logits first, or train on gold with --supervised`,
    );
  }
  if (humanOn) human ??= humanGold(store, task, items);
  const splits = items.items.map((it) => it.split);
  let humanTargets = 0;
  if (o.supervised) {
    // Gold is the imported gold, and where there is none the reviewers' decision: a person's label is the closest
    // thing to gold a task without it has.
    for (let i = 0; i < n; i++) {
      const fromHuman = gold[i] < 0 && human !== null && human.labels[i] !== null;
      const g = fromHuman ? human!.labels[i]! : gold[i];
      if (g < 0) continue;
      targetProbs[i * c + g] = 1;
      targetHard[i] = g;
      if (fromHuman && splits[i] === 'train') humanTargets++;
    }
  } else if (human !== null) {
    if (replay && human.labels.some((h, i) => h !== null && splits[i] === 'train'))
      throw new SettingError(
        'humanLabels',
        true,
        `run ${replay.run} is an augmentation-replay run: its targets are the teacher's on each replayed view, which reviewers' labels do not replace (train with --no-human-labels)`,
      );
    humanTargets = applyHumanTargets(targetProbs, targetHard, human, c, splits);
  }

  const base = {
    task,
    n,
    ids: items.items.map((it) => it.ext_id),
    splits: items.items.map((it) => it.split),
    gold,
    targetProbs,
    targetHard,
    teacherHard,
    ...(perTeacher ? { perTeacher } : {}),
    ...(replay ? { replay } : {}),
    ...(human ? { human: { items: human.labels.filter((h) => h !== null).length, targets: humanTargets, fitted } } : {}),
  };
  if (task.input_kind === 'text') {
    if (replay) throw new DistilleryError(`run ${replay.run}: augmentation replay is for image tasks`);
    return {
      ...base,
      texts: items.items.map((it) => String((JSON.parse(it.input) as Record<string, unknown>).text ?? '')),
      preprocess: { input: 'text' },
    };
  }
  const images = items.items.map((it) => {
    if (!it.image) throw new DistilleryError(`item ${it.ext_id} has no image`);
    return decodePixels(store.blob(it.image).bytes);
  });
  const pre = o.preprocess?.image ?? imagePreprocess(images, base.splits);
  return { ...base, pixels: toPixels(images, pre, base.ids), preprocess: { input: 'image', image: pre } };
}

/** The teachers' views as stored (uncalibrated), item-major. */
function perTeacherOf(views: TeacherView[], n: number, c: number): NonNullable<Dataset['perTeacher']> {
  const t = views.length;
  const logprobs = new Float32Array(n * t * c).fill(-Math.log(c));
  const present = new Float32Array(n * t);
  views.forEach((v, k) => {
    for (let i = 0; i < n; i++) {
      const lp = v.logprobs[i];
      if (!lp) continue;
      logprobs.set(lp, (i * t + k) * c);
      present[i * t + k] = 1;
    }
  });
  return { names: views.map((v) => v.name), logprobs, present };
}

/**
 * The chosen teacher's replay rows, when it is a replay run: one run alone (per-epoch targets of several
 * teachers would need aggregating per epoch, which is not done), uncalibrated. Every item with a training
 * target in the train split must have a row in every epoch (a run ingested before items were added has not).
 */
function loadReplay(
  store: Store,
  t: Targets,
  o: DatasetOptions['targets'],
  baseProbs: Float32Array,
  baseHard: Int32Array,
  c: number,
): Replay | undefined {
  const runs = t.teachers.flatMap((s) => s.runs);
  const replaying = runs.filter((r) => replayParamsOf(r));
  if (replaying.length === 0) return undefined;
  const run = replaying[0];
  if (runs.length > 1)
    throw new SettingError(
      'teachers',
      o.teachers,
      `run ${run.id} is an augmentation-replay run: train on it alone (--teachers ${run.id}); its per-epoch targets are not aggregated with other runs`,
    );
  if (o.calibrate)
    throw new SettingError('calibrate', true, `run ${run.id} is an augmentation-replay run: its per-epoch targets are not calibrated`);
  const params = replayParamsOf(run)!;
  const augment = parseAugment(params.augment);
  if (!augment) throw new DistilleryError(`run ${run.id}: a replay run without augmentation (${params.augment})`);
  const n = baseHard.length;
  const index = new Map(t.items.items.map((it, i) => [it.id, i]));
  const e = params.epochs;
  const seeds = new Int32Array(e * n).fill(-1);
  const probs = new Float32Array(e * n * c);
  const hard = new Int32Array(e * n);
  for (let k = 0; k < e; k++) {
    probs.set(baseProbs, k * n * c);
    hard.set(baseHard, k * n);
  }
  for (const r of replayLabels(store, run.id)) {
    const i = index.get(r.item_id);
    if (i === undefined || r.epoch >= e) continue;
    const at = r.epoch * n + i;
    seeds[at] = r.aug_seed;
    probs.set(softToProbs(decodeSoft(r.soft)), at * c);
    hard[at] = argmaxOf(probs, at, c);
  }
  for (let i = 0; i < n; i++) {
    if (t.items.items[i].split !== 'train' || baseHard[i] < 0) continue;
    for (let k = 0; k < e; k++)
      if (seeds[k * n + i] < 0)
        throw new DistilleryError(
          `run ${run.id}: item ${t.items.items[i].ext_id} has no replayed view in epoch ${k} (added after the ingest? ingest the run again)`,
        );
  }
  return { run: run.id, augment, epochs: e, seeds, probs, hard };
}

function argmaxOf(p: Float32Array, row: number, c: number): number {
  let best = 0;
  for (let k = 1; k < c; k++) if (p[row * c + k] > p[row * c + best]) best = k;
  return best;
}

/**
 * The dataset as training epoch `epoch` sees it: with a replay teacher, that epoch's stored targets
 * (epoch mod E when training runs longer than the E stored epochs: the views and targets repeat);
 * otherwise the dataset itself.
 */
export function targetsForEpoch(ds: Dataset, epoch: number): Dataset {
  const r = ds.replay;
  if (!r) return ds;
  const c = ds.task.labels.length;
  const e = epoch % r.epochs;
  const targetProbs = r.probs.subarray(e * ds.n * c, (e + 1) * ds.n * c);
  const out: Dataset = { ...ds, targetProbs, targetHard: r.hard.subarray(e * ds.n, (e + 1) * ds.n) };
  // One teacher: its own distribution is the target.
  if (ds.perTeacher) out.perTeacher = { ...ds.perTeacher, logprobs: targetProbs.map((p) => Math.log(p)) };
  return out;
}

/** How training epoch `epoch` augments with a replay teacher: each item from its stored seed (undefined: no replay). */
export function replayAugment(ds: Dataset, epoch: number): AugmentDraw | undefined {
  const r = ds.replay;
  if (!r) return undefined;
  const e = epoch % r.epochs;
  return { config: r.augment, seedOf: (i) => r.seeds[e * ds.n + i] };
}

/** One line for the log: what a replay teacher's training replays. */
export function describeReplay(r: Replay, epochs: number): string {
  const cycle = epochs > r.epochs ? `; beyond them epoch e replays stored epoch e mod ${r.epochs}` : '';
  return `teacher run ${r.run}: replaying its ${formatAugment(r.augment)} views and their targets, ${r.epochs} stored epochs${cycle}`;
}

/** A replay teacher brings its augmentation: --augment may repeat it, not contradict it. */
export function checkReplayAugment(ds: Dataset, augment: AugmentConfig | undefined): void {
  const r = ds.replay;
  if (!r || !augment || formatAugment(augment) === formatAugment(r.augment)) return;
  throw new SettingError(
    'augment',
    formatAugment(augment),
    `the teacher, run ${r.run}, is an augmentation-replay run of ${formatAugment(r.augment)}: its views are replayed from their seeds (leave --augment out)`,
  );
}

/** The student's input for a batch of item indices; `augment` (training batches only) transforms the images. */
export function batchInput(ds: BatchSource, spec: StudentSpec, idx: number[], augment?: AugmentDraw): StudentInput {
  if (ds.texts) {
    const features = textFeaturesOf(spec);
    if (!features)
      throw new DistilleryError(
        `a text task needs a text student (logreg, mlp or fasttext on hashed features; got ${spec.kind} on images)`,
      );
    // Texts are hashed once per dataset and hashing (a feature teacher may hash otherwise), not once per batch and epoch.
    let byKey = hashedBags.get(ds);
    if (!byKey) hashedBags.set(ds, (byKey = new Map()));
    const key = featuresKey(features);
    let bags = byKey.get(key);
    if (!bags) byKey.set(key, (bags = textBatch(ds.texts, features).bags));
    return { bags: idx.map((i) => bags![i]) };
  }
  if (textFeaturesOf(spec)) throw new DistilleryError(`an image task needs an image student (got ${spec.kind} on hashed text features)`);
  const im = ds.preprocess.image!;
  const per = im.height * im.width * im.channels;
  const buf = new Float32Array(idx.length * per);
  idx.forEach((i, k) => buf.set(ds.pixels!.subarray(i * per, (i + 1) * per), k * per));
  if (augment) {
    const black = -im.mean / im.std; // crop's padding: black before normalisation, as torchvision's fill 0
    if ('seedOf' in augment)
      augmentImagesSeeded(buf, idx.length, im.height, im.width, im.channels, augment.config, idx.map(augment.seedOf), black);
    else augmentImages(buf, idx.length, im.height, im.width, im.channels, augment.config, augment.rand, black);
  }
  return tf.tensor4d(buf, [idx.length, im.height, im.width, im.channels]);
}

/** What batchInput reads: a Dataset, or just the inputs of new items (predict). */
export type BatchSource = Pick<Dataset, 'pixels' | 'texts' | 'preprocess' | 'n'>;

const hashedBags = new WeakMap<BatchSource, Map<string, TextBatch['bags']>>();

export function disposeInput(x: StudentInput): void {
  if (x instanceof tf.Tensor) x.dispose();
}

type Rgba = { width: number; height: number; rgba: Uint8Array };

function imagePreprocess(images: Rgba[], splits: string[]): NonNullable<Preprocess['image']> {
  const { width, height } = images[0];
  const grey = images.slice(0, 64).every(isGrey);
  const channels = grey ? 1 : 3;
  let sum = 0;
  let sumSq = 0;
  let count = 0;
  images.forEach((img, i) => {
    if (splits[i] !== 'train') return;
    for (let p = 0; p < img.rgba.length; p += 4) {
      for (let ch = 0; ch < channels; ch++) {
        const x = img.rgba[p + ch] / 255;
        sum += x;
        sumSq += x * x;
        count++;
      }
    }
  });
  const mean = count ? sum / count : 0.5;
  const std = count ? Math.sqrt(Math.max(1e-6, sumSq / count - mean * mean)) : 0.5;
  return { height, width, channels, mean, std };
}

function isGrey(img: Rgba): boolean {
  for (let p = 0; p < img.rgba.length; p += 4) if (img.rgba[p] !== img.rgba[p + 1] || img.rgba[p] !== img.rgba[p + 2]) return false;
  return true;
}

/** Normalised pixels, N·H·W·C. Every image must have the training size. */
export function toPixels(images: Rgba[], pre: NonNullable<Preprocess['image']>, ids: string[]): Float32Array {
  const { height, width, channels, mean, std } = pre;
  const per = height * width * channels;
  const out = new Float32Array(images.length * per);
  images.forEach((img, i) => {
    if (img.width !== width || img.height !== height) {
      throw new DistilleryError(
        `item ${ids[i]}: image is ${img.width}×${img.height}, the model takes ${width}×${height} (resize the images to one size)`,
      );
    }
    let o = i * per;
    for (let p = 0; p < img.rgba.length; p += 4) for (let ch = 0; ch < channels; ch++) out[o++] = (img.rgba[p + ch] / 255 - mean) / std;
  });
  return out;
}
