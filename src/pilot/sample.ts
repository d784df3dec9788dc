/**
 * The pilot's sample: a stratified sample by gold label (proportional allocation, every class present at least once
 * when the sample is large enough), seeded and deterministic. Items are ordered by content hash before the seeded
 * shuffle, so the sample depends on the items and the seed, not on the order of the input file; and each class keeps
 * one shuffled order, so a larger --sample with the same seed contains the smaller one (its answers are reused).
 * Without any gold label, a seeded uniform sample of the items.
 */
import { mulberry32, shuffle } from '../random.ts';

export interface SampleItem {
  id: number;
  hash: string;
  gold: string | null;
}

export interface PilotSample {
  /** Item ids of the sample, in id order. */
  ids: number[];
  /** Whether the sample was drawn from items with gold labels (else: from all items, no gold). */
  gold: boolean;
  /** Items the sample was drawn from: those with gold, or every item. */
  population: number;
  /** Items sampled per gold label, in label order (empty without gold). */
  perClass: Array<{ label: string; items: number; sampled: number }>;
}

export function pilotSample(items: readonly SampleItem[], labels: readonly string[], n: number, seed: number): PilotSample {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`sample size must be a positive integer, got ${n}`);
  const unique = [...new Map(items.map((it) => [it.id, it])).values()];
  const withGold = unique.filter((it) => it.gold !== null);
  if (withGold.length === 0) {
    const picked = seededOrder(unique, seed).slice(0, n);
    return { ids: picked.map((it) => it.id).sort((a, b) => a - b), gold: false, population: unique.length, perClass: [] };
  }
  const classes = labels.map((label) => withGold.filter((it) => it.gold === label));
  const quota = allocate(
    classes.map((c) => c.length),
    n,
  );
  const ids: number[] = [];
  classes.forEach((members, k) =>
    ids.push(
      ...seededOrder(members, seed ^ Math.imul(0x9e3779b1, k + 1))
        .slice(0, quota[k])
        .map((it) => it.id),
    ),
  );
  return {
    ids: ids.sort((a, b) => a - b),
    gold: true,
    population: withGold.length,
    perClass: labels.map((label, k) => ({ label, items: classes[k].length, sampled: quota[k] })),
  };
}

/** A seeded order of items that does not depend on their input order: by content hash, then shuffled. */
function seededOrder<T extends SampleItem>(items: readonly T[], seed: number): T[] {
  const byHash = [...items].sort((a, b) => (a.hash < b.hash ? -1 : a.hash > b.hash ? 1 : a.id - b.id));
  return shuffle(byHash, mulberry32(seed >>> 0));
}

/**
 * Proportional allocation of `n` over strata of these sizes (largest remainder), with at least one item from every
 * non-empty stratum when n allows it (a class missing from the sample would have no recall at all). All of every
 * stratum when n covers the population.
 */
export function allocate(sizes: readonly number[], n: number): number[] {
  const total = sizes.reduce((a, b) => a + b, 0);
  if (n >= total) return [...sizes];
  const exact = sizes.map((s) => (n * s) / total);
  const alloc = exact.map(Math.floor);
  const present = sizes.filter((s) => s > 0).length;
  if (n >= present) sizes.forEach((s, k) => s > 0 && alloc[k] === 0 && (alloc[k] = 1));
  let sum = alloc.reduce((a, b) => a + b, 0);
  // The minimum of one can overshoot n: take back from the strata furthest above their exact share.
  while (sum > n) {
    const k = argBest(alloc, (j) => (alloc[j] > 1 ? alloc[j] - exact[j] : -Infinity));
    alloc[k]--;
    sum--;
  }
  // Largest remainder for what is left; ties go to the larger stratum, then the first.
  while (sum < n) {
    const k = argBest(alloc, (j) => (alloc[j] < sizes[j] ? exact[j] - alloc[j] + sizes[j] * 1e-12 : -Infinity));
    alloc[k]++;
    sum++;
  }
  return alloc;
}

function argBest(xs: readonly number[], score: (k: number) => number): number {
  let best = 0;
  for (let k = 1; k < xs.length; k++) if (score(k) > score(best)) best = k;
  return best;
}
