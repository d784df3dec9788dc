/**
 * Augmentation replay (TinyViT, Wu et al. 2022, microsoft/Cream TinyViT/save_logits.py): stored teacher
 * logits are only right for the image the teacher saw. So per epoch and item, draw an augmentation seed,
 * run the teacher on that augmented view and store the seed with the teacher's output; the trainer later
 * rebuilds the same view from the seed (src/train/augment.ts draws everything from it) and trains the
 * student on it against that output. TinyViT stores 4 + 4K bytes per sample and epoch (int32 seed, K int16
 * indices, K fp16 probabilities); here the seed is a column and the output goes through the soft-label codec
 * (`--store topk:K` is TinyViT's layout plus the leftover mass).
 *
 * The check (`ingest-logits --check-replay`, TinyViT's --check-saved-logits) runs the teacher again on the
 * replayed views and compares with what was stored; the same on independently drawn views shows what the
 * stored targets are worth when the view is not replayed.
 */
import { DistilleryError } from '../errors.ts';
import type { LoadedModel } from '../infer/model.ts';
import { ruleOf } from '../infer/predict.ts';
import { decodeSoft, encodeSoft, softFormatOf, softToProbs, type SoftFormat } from '../soft/codec.ts';
import { replayLabels, replayParamsOf, type ReplayParams } from '../store/replay.ts';
import type { RunRow, Store, TaskRow } from '../store/store.ts';
import { augmentSeed, formatAugment, parseAugment, type AugmentConfig } from '../train/augment.ts';
import { tf } from '../train/backend.ts';
import { batchInput, disposeInput, type Dataset } from '../train/data.ts';
import type { IngestOptions, ReplayLogitsRow } from './ingest.ts';

export interface ReplaySettings {
  augment: AugmentConfig;
  /** How many epochs of views to store. */
  epochs: number;
  /** The base seed: item and epoch seeds derive from it (augmentSeed). */
  seed: number;
}

/** One item's view in one epoch, with the teacher's log-probabilities on it. */
export interface ViewRow {
  /** Dataset index and store id of the item. */
  index: number;
  itemId: number;
  seed: number;
  logprobs: Float32Array;
}

/** The items a replay run stores views of: the train split (only training batches are augmented). */
export function replayItems(store: Store, task: TaskRow, ds: Dataset): Array<{ index: number; itemId: number }> {
  const rows = store.taskItemRows(task.id);
  if (rows.length !== ds.n) throw new DistilleryError(`task "${task.name}": ${rows.length} items in the store, ${ds.n} in the dataset`);
  return rows.flatMap((r, index) => (ds.splits[index] === 'train' ? [{ index, itemId: r.id }] : []));
}

/** The seeds of epoch `epoch`, one per item, from the base seed. */
export function epochSeeds(items: Array<{ index: number; itemId: number }>, s: ReplaySettings, epoch: number) {
  return items.map((it) => ({ ...it, seed: augmentSeed(s.seed, it.itemId, epoch) }));
}

/** The teacher's log-probabilities (its prediction rule, logged, as modelLogitsRows) on each item's view, by batches. */
export async function* modelViewRows(
  m: LoadedModel,
  ds: Dataset,
  views: Array<{ index: number; itemId: number; seed: number }>,
  augment: AugmentConfig,
  batchSize = 256,
): AsyncGenerator<ViewRow> {
  const rule = ruleOf(m.spec);
  const c = m.spec.labels.length;
  for (let s = 0; s < views.length; s += batchSize) {
    const part = views.slice(s, s + batchSize);
    const seedOf = new Map(part.map((v) => [v.index, v.seed]));
    const x = batchInput(
      ds,
      m.student.spec,
      part.map((v) => v.index),
      { config: augment, seedOf: (i) => seedOf.get(i)! },
    );
    const probs = tf.tidy(() => rule(m.student.forward(x, { training: false })));
    const p = await probs.data();
    probs.dispose();
    disposeInput(x);
    for (let k = 0; k < part.length; k++) {
      const logprobs = new Float32Array(c);
      for (let j = 0; j < c; j++) logprobs[j] = Math.log(Math.max(p[k * c + j], 1e-30));
      yield { ...part[k], logprobs };
    }
  }
}

/** What ingestLogits needs to store a model's replayed views: the run's replay params and each epoch's rows. */
export function modelReplay(
  store: Store,
  task: TaskRow,
  m: LoadedModel,
  ds: Dataset,
  s: ReplaySettings,
): NonNullable<IngestOptions['replay']> {
  if (!ds.pixels) throw new DistilleryError('--augment: only image tasks can be augmented');
  const items = replayItems(store, task, ds);
  async function* rows(epoch: number): AsyncGenerator<ReplayLogitsRow> {
    for await (const v of modelViewRows(m, ds, epochSeeds(items, s, epoch), s.augment))
      yield { itemId: v.itemId, seed: v.seed, logits: v.logprobs, file: m.dir, line: epoch * ds.n + v.index + 1 };
  }
  return { params: { augment: formatAugment(s.augment), epochs: s.epochs, seed: s.seed }, rows };
}

/** How far freshly computed teacher outputs are from the stored ones (TinyViT's check_logits_one_epoch). */
export interface ReplayAgreement {
  /** Mean |p_stored − p_fresh| over the K largest probabilities of each, in rank order (TinyViT's "error"). */
  meanAbsDiff: number;
  /** Fraction of the top-K rank positions whose class differs (TinyViT's "diff_rate"). */
  indexMismatch: number;
  /** Fraction of rows whose top class differs. */
  top1Mismatch: number;
  /** Fraction of rows whose fresh output, through the same codec, is byte-identical to the stored one. */
  identical: number;
}

export interface ReplayCheck {
  run: number;
  augment: string;
  epochs: number;
  rows: number;
  /** K of the comparison: the stored top-K's, or min(5, C) for a dense format. */
  k: number;
  /** The teacher on the replayed views (each from its stored seed). */
  replayed: ReplayAgreement;
  /** The teacher on views drawn independently (other seeds): the stored targets against views they were not made for. */
  independent: ReplayAgreement;
}

/** The replay settings a run was ingested with (undefined: an ordinary run). */
export function replaySettingsOf(run: RunRow): ReplaySettings & { spec: ReplayParams } {
  const p = replayParamsOf(run);
  if (!p) throw new DistilleryError(`run ${run.id} was not ingested with --augment (no replayed views to check)`);
  const augment = parseAugment(p.augment);
  if (!augment) throw new DistilleryError(`run ${run.id}: a replay run without augmentation (${p.augment})`);
  return { augment, epochs: p.epochs, seed: p.seed, spec: p };
}

/** Run the teacher again on every stored view (and on independently drawn ones) and compare with what was stored. */
export async function checkReplay(store: Store, run: RunRow, m: LoadedModel, ds: Dataset): Promise<ReplayCheck> {
  const s = replaySettingsOf(run);
  const index = new Map(store.taskItemRows(run.task_id).map((r, i) => [r.id, i]));
  const byEpoch: Array<Array<{ index: number; itemId: number; seed: number; soft: Buffer }>> = Array.from({ length: s.epochs }, () => []);
  for (const r of replayLabels(store, run.id)) {
    const i = index.get(r.item_id);
    if (i === undefined) throw new DistilleryError(`run ${run.id}: item ${r.item_id} is not in the task`);
    byEpoch[r.epoch].push({ index: i, itemId: r.item_id, seed: r.aug_seed, soft: r.soft });
  }
  const rows = byEpoch.reduce((a, e) => a + e.length, 0);
  if (rows === 0) throw new DistilleryError(`run ${run.id}: no replayed views stored`);
  const first = byEpoch.find((e) => e.length)![0].soft;
  const format = softFormatOf(first);
  const k = format.kind === 'topk' ? format.k : Math.min(5, format.numClasses);
  const replayed = new Agreement(k, format);
  const independent = new Agreement(k, format);
  for (let e = 0; e < s.epochs; e++) {
    const stored = byEpoch[e];
    let j = 0;
    for await (const v of modelViewRows(m, ds, stored, s.augment)) replayed.add(stored[j++].soft, v.logprobs);
    // Other seeds for the same items: a base seed no ingest uses with these (item, epoch) pairs by accident.
    const other = stored.map((v) => ({ ...v, seed: augmentSeed(s.seed ^ 0x5eed1e55, v.itemId, e) }));
    j = 0;
    for await (const v of modelViewRows(m, ds, other, s.augment)) independent.add(stored[j++].soft, v.logprobs);
  }
  return {
    run: run.id,
    augment: s.spec.augment,
    epochs: s.epochs,
    rows,
    k,
    replayed: replayed.result(),
    independent: independent.result(),
  };
}

class Agreement {
  private n = 0;
  private absDiff = 0;
  private mismatched = 0;
  private top1 = 0;
  private same = 0;

  constructor(
    private readonly k: number,
    private readonly format: SoftFormat,
  ) {}

  add(stored: Buffer, logprobs: Float32Array): void {
    const fresh = encodeSoft({ kind: 'logits', values: logprobs }, this.format);
    if (fresh.equals(stored)) this.same++;
    const ps = softToProbs(decodeSoft(stored));
    const pf = softToProbs({ kind: 'logits', values: logprobs });
    // Ranks from the stored precision on both sides, so that fp16 rounding alone never reorders.
    const rs = topK(ps, this.k);
    const rf = topK(softToProbs(decodeSoft(fresh)), this.k);
    const vf = topK(pf, this.k);
    for (let j = 0; j < this.k; j++) {
      this.absDiff += Math.abs(ps[rs[j]] - pf[vf[j]]);
      if (rs[j] !== rf[j]) this.mismatched++;
    }
    if (rs[0] !== rf[0]) this.top1++;
    this.n++;
  }

  result(): ReplayAgreement {
    const n = Math.max(1, this.n);
    return {
      meanAbsDiff: this.absDiff / (n * this.k),
      indexMismatch: this.mismatched / (n * this.k),
      top1Mismatch: this.top1 / n,
      identical: this.same / n,
    };
  }
}

/** Indices of the k largest values, largest first (ties: the lower index first). */
function topK(p: number[], k: number): number[] {
  return p
    .map((v, i) => i)
    .sort((a, b) => p[b] - p[a] || a - b)
    .slice(0, k);
}
