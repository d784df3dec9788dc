/**
 * Fitting a cascade: per class the student predicts, the lowest confidence threshold at which its answers meet a
 * target accuracy, with a bootstrap lower bound, on held-out labeled data.
 *
 * Which thresholds are tried is fixed before any answer is looked at: the sets of the top n most confident items for
 * n on a geometric ladder (minItems, 1.5·minItems, 1.5²·minItems, … up to the class's size; a set takes in whole tie
 * groups). Each of these K candidates is tested at confidence 1 − (1 − confidence)/K (Bonferroni), and the lowest
 * passing threshold is chosen: with probability at least `confidence`, none of the K tests passed a set whose true
 * accuracy is below the target, whichever is chosen. Simply taking the lowest threshold whose lower bound at
 * `confidence` passes, over every possible threshold, picks the one where the noise happened to favour the student:
 * on a synthetic task its held-out accuracy fell below the target in more than half of the resamples (see
 * test/cascade.test.ts). Sets under minItems are not tried (a bootstrap of five items says nothing), so a class needs
 * at least minItems confident, accurate answers before the student may answer it alone.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { DistilleryError, SettingError } from '../errors.ts';
import type { LoadedModel } from '../infer/model.ts';
import { argmaxRow, predictAll, ruleOf } from '../infer/predict.ts';
import type { Store, TaskRow } from '../store/store.ts';
import { loadDataset, type Dataset } from '../train/data.ts';
import { splitIndices, validationFingerprint } from '../train/trainer.ts';
import { BootstrapAccuracy } from './bootstrap.ts';
import { CASCADE_FORMAT, recordedDir, weightsHash, type CascadeData, type CascadeFile, type ClassThreshold } from './schema.ts';

/** One held-out item as the fit sees it: the student's class, its confidence (top probability), and whether it is right. */
export interface Scored {
  pred: number;
  confidence: number;
  correct: boolean;
}

export interface FitSettings {
  /** The accuracy the student's answers must reach, per class. */
  target: number;
  /** The lower bound's confidence level (0.95: the 5th percentile of the resamples). */
  confidence: number;
  resamples: number;
  seed: number;
  /** The fewest accepted items at which a threshold is tested. */
  minItems: number;
}

export const DEFAULT_FIT = { confidence: 0.95, resamples: 1000, seed: 1, minItems: 30 } as const;

/** Settings a user gave, checked (the CLI's parsers check ranges too; the library does not rely on them). */
export function checkFitSettings(s: FitSettings): void {
  if (!(s.target > 0 && s.target <= 1)) throw new SettingError('target', s.target, 'the target accuracy is a number in (0, 1]');
  if (!(s.confidence > 0 && s.confidence < 1)) throw new SettingError('confidence', s.confidence, 'a confidence level is in (0, 1)');
  if (!Number.isInteger(s.resamples) || s.resamples < 100) throw new SettingError('resamples', s.resamples, 'at least 100 resamples');
  if (!Number.isInteger(s.minItems) || s.minItems < 1) throw new SettingError('minItems', s.minItems, 'at least 1');
}

/** The candidate set sizes: minItems·1.5^j, rounded up, up to n (none when n < minItems). */
export function ladder(n: number, minItems: number): number[] {
  const sizes: number[] = [];
  for (let m = minItems; m <= n; m = Math.max(m + 1, Math.ceil(m * LADDER_RATIO))) sizes.push(m);
  return sizes;
}

export const LADDER_RATIO = 1.5;

/** Per class, the lowest candidate threshold whose accepted items' lower bound meets the target (null: none does). */
export function fitThresholds(rows: Scored[], labels: string[], s: FitSettings): ClassThreshold[] {
  checkFitSettings(s);
  return labels.map((label, k) => {
    const mine = rows.filter((r) => r.pred === k).sort((a, b) => b.confidence - a.confidence);
    const sizes = ladder(mine.length, s.minItems);
    const level = 1 - (1 - s.confidence) / Math.max(1, sizes.length);
    const boot = new BootstrapAccuracy(s.resamples, (s.seed * 0x9e3779b1 + k * 0x85ebca6b) >>> 0);
    const out: ClassThreshold = {
      label,
      threshold: null,
      predicted: mine.length,
      accepted: 0,
      accuracy: null,
      lower_bound: null,
      candidates: sizes.length,
    };
    let next = 0;
    for (let i = 0; i < mine.length && next < sizes.length;) {
      const conf = mine[i].confidence;
      for (; i < mine.length && mine[i].confidence === conf; i++) boot.add(mine[i].correct); // ties enter together
      if (boot.n < sizes[next]) continue;
      while (next < sizes.length && boot.n >= sizes[next]) next++; // a tie group may cross several sizes: one test
      const lb = boot.lowerBound(level);
      if (lb >= s.target) Object.assign(out, { threshold: conf, accepted: boot.n, accuracy: boot.correct / boot.n, lower_bound: lb });
    }
    return out;
  });
}

/** Coverage and accuracy of the student's answers on scored items under these thresholds (accuracy null: none answered). */
export function coverageOn(rows: Scored[], thresholds: ClassThreshold[]): { coverage: number; accuracy: number | null } {
  let answered = 0;
  let right = 0;
  for (const r of rows) {
    const t = thresholds[r.pred].threshold;
    if (t === null || r.confidence < t) continue;
    answered++;
    if (r.correct) right++;
  }
  return { coverage: rows.length ? answered / rows.length : 0, accuracy: answered ? right / answered : null };
}

/** What train.ts records in metrics.json that the fit needs to find the student's validation slice. */
const TrainMetrics = z.object({
  seed: z.number().int(),
  targets: z.union([
    z.literal('gold'),
    z.object({ teachers: z.string(), aggregate: z.enum(['mean', 'weighted', 'vote', 'dawid-skene']), calibrate: z.boolean() }),
  ]),
  history: z.array(z.object({ val_accuracy: z.number().nullable() })),
  best_epoch: z.number().int(),
  /** The validation slice's size and the sha256 of its item ids (absent in students trained before it was recorded). */
  validation: z.object({ n: z.number().int(), ids_sha256: z.string() }).optional(),
  /** Whether the reviewers' labels were in its targets (absent: trained before there were any, so no). */
  human_labels: z.object({ used: z.boolean() }).optional(),
});
type TrainMetrics = z.infer<typeof TrainMetrics>;

function trainMetrics(dir: string): TrainMetrics | undefined {
  const file = join(dir, 'metrics.json');
  if (!existsSync(file)) return undefined;
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new DistilleryError(`${file}: not JSON (${(e as Error).message})`);
  }
  const parsed = TrainMetrics.safeParse(json);
  return parsed.success ? parsed.data : undefined;
}

/** The split the fit may never use, and the one the student trained on. */
export const TEST_SPLIT = 'test';
/** The default: a split of that name if the data has one, else the student's validation slice. */
export const VAL_SPLIT = 'val';

export interface FitDataOptions {
  split: string;
}

/** The held-out items the fit scores: which, against which labels, and the student's answers on them. */
export interface FitData {
  rows: Scored[];
  data: CascadeData;
}

/** Refuse the splits a fit must not use, before anything is loaded. */
export function checkFitSplit(split: string): void {
  if (split === TEST_SPLIT)
    throw new SettingError(
      'split',
      split,
      '"test" is never used to fit a cascade (it would no longer be a test); use val or a held-out split',
    );
  if (split === 'train')
    throw new SettingError('split', split, '"train" is what the student trained on; fit on held-out data (val, or a split of your own)');
}

/**
 * The student's answers on held-out labeled items: the items of `split` (or, for `val` when the data has no such
 * split, the validation slice the trainer held out, rebuilt from metrics.json), scored against gold where the split
 * has gold, else against the teachers' aggregated target (the argmax).
 */
export async function fitData(store: Store, task: TaskRow, model: LoadedModel, o: FitDataOptions): Promise<FitData> {
  checkFitSplit(o.split);
  const metrics = trainMetrics(model.dir);
  const ds = loadDataset(store, task, {
    supervised: metrics?.targets === 'gold',
    evaluate: true,
    preprocess: model.spec.preprocess,
    targets:
      metrics && metrics.targets !== 'gold'
        ? {
            teachers: metrics.targets.teachers === 'all' ? undefined : metrics.targets.teachers,
            aggregate: metrics.targets.aggregate,
            calibrate: metrics.targets.calibrate,
            humanLabels: metrics.human_labels?.used ?? false,
          }
        : { calibrate: false, humanLabels: metrics?.human_labels?.used ?? false },
  });
  const rule = ruleOf(model.spec);
  let idx = Array.from({ length: ds.n }, (_, i) => i).filter((i) => ds.splits[i] === o.split);
  let splitName = o.split;
  if (idx.length === 0 && o.split === VAL_SPLIT) {
    idx = await validationSlice(ds, model, metrics, rule);
    splitName = "val (the student's validation slice of the train split)";
  }
  if (idx.length === 0) throw new SettingError('split', o.split, `task "${task.name}" has no items in split "${o.split}"`);

  const withGold = idx.filter((i) => ds.gold[i] >= 0);
  const reference = withGold.length > 0 ? 'gold' : 'teacher';
  // The teachers' label: the target the student was trained on, or (a student trained on gold) the teachers' aggregate.
  const teacher = metrics?.targets === 'gold' ? ds.teacherHard : ds.targetHard;
  const truth = reference === 'gold' ? ds.gold : teacher;
  const scored = reference === 'gold' ? withGold : idx.filter((i) => teacher[i] >= 0);
  if (scored.length === 0)
    throw new SettingError('split', o.split, `split "${o.split}" has neither gold labels nor teacher labels to fit against`);
  const c = task.labels.length;
  const probs = await predictAll(model.student, ds, scored, rule);
  const rows = scored.map((item, k) => {
    const pred = argmaxRow(probs, k, c);
    return { pred, confidence: probs[k * c + pred], correct: pred === truth[item] };
  });
  return { rows, data: { split: splitName, n: rows.length, reference, of: idx.length } };
}

/**
 * The trainer's validation slice, rebuilt with its own splitIndices from the seed in metrics.json, and checked against
 * the fingerprint train.ts recorded (its size and the sha256 of its item ids). Labels added to or changed in the train
 * split since training move the slice onto trained-on items: the check refuses that rather than fit on them. Students
 * trained before the fingerprint was recorded get a weaker check: the student's accuracy on the rebuilt slice must be
 * the val accuracy recorded for the saved (best) epoch.
 */
async function validationSlice(
  ds: Dataset,
  model: LoadedModel,
  metrics: TrainMetrics | undefined,
  rule: ReturnType<typeof ruleOf>,
): Promise<number[]> {
  const why = (s: string) =>
    new SettingError('split', VAL_SPLIT, `${model.dir}: ${s}; name a held-out split of the data with --split (never test)`);
  if (!metrics) throw why('no metrics.json from train.ts, so its validation slice is unknown');
  const recorded = metrics.history[metrics.best_epoch]?.val_accuracy ?? null;
  if (recorded === null) throw why('training held out no validation slice (fewer than 50 train items)');
  let val: number[];
  try {
    val = splitIndices(ds, metrics.seed).val;
  } catch {
    throw why('the train split has no training targets now');
  }
  const changed = "the train split's items or labels changed since training, so the validation slice is not the one it held out";
  if (metrics.validation) {
    const now = validationFingerprint(ds, metrics.seed);
    if (now.n !== metrics.validation.n || now.ids_sha256 !== metrics.validation.ids_sha256) throw why(changed);
    return val;
  }
  const c = ds.task.labels.length;
  const probs = await predictAll(model.student, ds, val, rule);
  const right = val.filter((item, k) => argmaxRow(probs, k, c) === ds.targetHard[item]).length;
  // One item's argmax may flip between backends on a near tie; a different slice differs by more (or by chance not).
  if (val.length === 0 || Math.abs(right / val.length - recorded) > 1.5 / val.length) throw why(changed);
  return val;
}
export interface FitCascadeOptions extends FitSettings {
  split: string;
  /** Where the cascade file will be written (the student folder is recorded relative to it). */
  file: string;
}

/** A fitted cascade for a loaded student on its task's held-out data, ready for writeCascade. */
export async function fitCascade(store: Store, task: TaskRow, model: LoadedModel, o: FitCascadeOptions): Promise<CascadeFile> {
  checkFitSettings(o);
  const { rows, data } = await fitData(store, task, model, { split: o.split });
  const thresholds = fitThresholds(rows, task.labels, o);
  return {
    format: CASCADE_FORMAT,
    version: 1,
    student: { dir: recordedDir(o.file, model.dir), weights_sha256: weightsHash(model.dir) },
    task: task.name,
    labels: task.labels,
    target: o.target,
    bootstrap: { confidence: o.confidence, resamples: o.resamples, seed: o.seed, min_items: o.minItems },
    data,
    thresholds,
    expected: coverageOn(rows, thresholds),
  };
}
