/**
 * The pilot's sample: a stratified sample by gold label (close to proportional, every class present at least once
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
 * Allocation of `n` items over strata of these sizes, one item at a time by the Huntington–Hill rule (the next item
 * goes to the stratum with the largest size / sqrt(a·(a+1)), a its items so far): close to proportional, every
 * non-empty stratum first gets one (a class missing from the sample would have no recall at all), and house
 * monotone, unlike rounding each share: allocate(n + 1) only adds an item to allocate(n), so a larger sample with
 * the same seed contains the smaller one. All of every stratum when n covers the population.
 */
export function allocate(sizes: readonly number[], n: number): number[] {
  const alloc = sizes.map(() => 0);
  const priority = (k: number) => (alloc[k] >= sizes[k] ? -1 : alloc[k] === 0 ? Infinity : sizes[k] / Math.sqrt(alloc[k] * (alloc[k] + 1)));
  for (let m = 0; m < n; m++) {
    let best = -1;
    for (let k = 0; k < sizes.length; k++) {
      const pk = priority(k);
      if (pk < 0) continue;
      // Ties (the first round: every stratum at Infinity) go to the larger stratum, then the first.
      if (best < 0 || pk > priority(best) || (pk === priority(best) && sizes[k] > sizes[best])) best = k;
    }
    if (best < 0) break; // every stratum taken whole
    alloc[best]++;
  }
  return alloc;
}
