/**
 * What reviewers decided (scripts/review.ts, Label Studio imports), as gold: the one module that turns human
 * labels into the labels calibration, teacher weighting and training targets use. A person's answer is a claim
 * about the item, not a teacher's guess: where the reviewers agree it stands in for gold that was never imported,
 * and the training target becomes that label.
 */
import { humanLabels, type HumanLabel } from '../store/reviews.ts';
import type { Store, TaskRow } from '../store/store.ts';
import type { Labels } from './types.ts';
import { checkClass } from './vector.ts';

/** The task's items as the targets modules hold them (from-store.ts `TaskItems`), as far as human gold needs them. */
interface ItemsOf {
  items: readonly { id: number; split: string }[];
  gold: Labels;
}

export interface HumanGold {
  /** Per item (the task's item order): the reviewers' majority label, null where none reviewed it or they tie. */
  labels: Labels;
  /** Items with at least one live human label, and those where the reviewers tie (no human gold). */
  reviewed: number;
  ties: number;
  reviewers: string[];
}

/**
 * The class most reviewers gave, or null on a tie for the top (two reviewers who disagree settle nothing:
 * the item keeps the teachers' target). Each reviewer has at most one live label per item (reviews.ts refuses
 * a second, different one), so this is one vote per person.
 */
export function majorityLabel(votes: readonly number[]): number | null {
  const counts = new Map<number, number>();
  for (const v of votes) counts.set(v, (counts.get(v) ?? 0) + 1);
  let best: number | null = null;
  let top = 0;
  let tied = false;
  for (const [k, n] of counts) {
    if (n > top) {
      best = k;
      top = n;
      tied = false;
    } else if (n === top) tied = true;
  }
  return tied ? null : best;
}

/** Per item, the majority of the reviewers' live labels on the task (see `majorityLabel`); `decided`: those labels, if read already. */
export function humanGold(
  store: Store,
  task: TaskRow,
  items: ItemsOf,
  decided: readonly HumanLabel[] = humanLabels(store, task.id),
): HumanGold {
  const index = new Map(items.items.map((it, i) => [it.id, i]));
  const votes = new Map<number, number[]>();
  const reviewers = new Set<string>();
  for (const h of decided) {
    const i = index.get(h.itemId);
    const k = task.labels.indexOf(h.label);
    if (i === undefined || k < 0) continue;
    reviewers.add(h.reviewer);
    const v = votes.get(i);
    if (v) v.push(k);
    else votes.set(i, [k]);
  }
  const labels: Labels = new Array<number | null>(items.items.length).fill(null);
  let ties = 0;
  for (const [i, v] of votes) {
    labels[i] = majorityLabel(v);
    if (labels[i] === null) ties++;
  }
  return { labels, reviewed: votes.size, ties, reviewers: [...reviewers].sort() };
}

/**
 * The gold that fits temperatures and teacher weights: the train split's imported gold, and where an item has
 * none, its human gold (`human` null: imported gold alone). Other splits stay out, so the figures measured on
 * them remain honest. `human` counts the items whose gold came from reviewers.
 */
export function fittingGold(items: ItemsOf, human: HumanGold | null): { gold: Labels; human: number } {
  let fromHuman = 0;
  const gold = items.gold.map((g, i) => {
    if (items.items[i].split !== 'train') return null;
    if (g !== null || human === null) return g;
    const h = human.labels[i];
    if (h !== null) fromHuman++;
    return h;
  });
  return { gold, human: fromHuman };
}

/**
 * Training targets with the reviewers' decisions in place of the teachers': where an item has human gold, its
 * target is that label one-hot (`probs` N·C and `hard` N, changed in place). Returns the items changed in
 * `split` (the ones a student trains on), for metrics.json.
 */
export function applyHumanTargets(probs: Float32Array, hard: Int32Array, human: HumanGold, c: number, splits: readonly string[]): number {
  let changed = 0;
  human.labels.forEach((k, i) => {
    if (k === null) return;
    checkClass(k, c, `human gold of item ${i}`);
    probs.fill(0, i * c, (i + 1) * c);
    probs[i * c + k] = 1;
    hard[i] = k;
    if (splits[i] === 'train') changed++;
  });
  return changed;
}
