/**
 * How the reviewers agree: with each other (Cohen's κ and raw agreement per pair, on the items both decided),
 * with the teachers' aggregated target (human runs left out of it, so a reviewer is not compared with themself),
 * and with imported gold. What status.ts, teachers.ts and the report show next to the human runs.
 */
import { agreement, cohenKappa } from '../eval/metrics.ts';
import { humanLabels } from '../store/reviews.ts';
import type { Store, TaskRow } from '../store/store.ts';
import { buildTargets, hasTeacherRuns, taskItems } from '../targets/from-store.ts';
import { humanGold } from '../targets/human.ts';
import type { Labels } from '../targets/types.ts';

/** Agreement over `n` items (rate NaN when n = 0: nothing to compare; JSON shows it as null). */
export interface Rate {
  n: number;
  rate: number;
}

export interface ReviewerRow {
  reviewer: string;
  /** The human run (`human:<reviewer>`) holding their labels. */
  run: number;
  /** Items with a live label of this reviewer. */
  items: number;
  /** Against the teachers' aggregated target (mean of every non-human teacher); null when the task has no teacher run. */
  target: Rate | null;
  /** Against imported gold. */
  gold: Rate;
}

export interface ReviewerPair {
  a: string;
  b: string;
  /** Items both decided. */
  n: number;
  agreement: number;
  /** Cohen's κ; null when undefined (no common item, or both gave one same class throughout). */
  kappa: number | null;
}

export interface ReviewerAgreement {
  task: string;
  reviewers: ReviewerRow[];
  pairs: ReviewerPair[];
  /** Items with a human label, with human gold (a majority), and where the reviewers tie. */
  reviewed: number;
  humanGold: number;
  ties: number;
}

/** Every reviewer of a task against each other, the teachers' target and gold; no reviewer: an empty list. */
export function reviewerAgreement(store: Store, task: TaskRow): ReviewerAgreement {
  const decided = humanLabels(store, task.id);
  // Nobody reviewed: nothing to load (status.ts asks this of every task).
  if (decided.length === 0) return { task: task.name, reviewers: [], pairs: [], reviewed: 0, humanGold: 0, ties: 0 };
  const items = taskItems(store, task);
  const index = new Map(items.items.map((it, i) => [it.id, i]));
  const byReviewer = new Map<string, { run: number; labels: Labels }>();
  for (const h of decided) {
    const i = index.get(h.itemId);
    const k = task.labels.indexOf(h.label);
    if (i === undefined || k < 0) continue;
    let r = byReviewer.get(h.reviewer);
    if (!r) byReviewer.set(h.reviewer, (r = { run: h.runId, labels: new Array<number | null>(items.items.length).fill(null) }));
    r.labels[i] = k;
  }
  const names = [...byReviewer.keys()].sort();
  // The target the page suggests: the teachers' mean, without any reviewer in it or in its fitting.
  const target =
    names.length && hasTeacherRuns(store, task)
      ? buildTargets(store, task, { aggregate: 'mean', calibrate: false, humanLabels: false }).hard
      : null;
  const reviewers = names.map((reviewer): ReviewerRow => {
    const { run, labels } = byReviewer.get(reviewer)!;
    return {
      reviewer,
      run,
      items: labels.filter((l) => l !== null).length,
      target: target ? agreement(labels, target) : null,
      gold: agreement(labels, items.gold),
    };
  });
  const pairs: ReviewerPair[] = [];
  for (let a = 0; a < names.length; a++) {
    for (let b = a + 1; b < names.length; b++) {
      const x = byReviewer.get(names[a])!.labels;
      const y = byReviewer.get(names[b])!.labels;
      const kappa = cohenKappa(x, y);
      pairs.push({
        a: names[a],
        b: names[b],
        n: kappa.n,
        agreement: agreement(x, y).rate,
        kappa: Number.isNaN(kappa.value) ? null : kappa.value,
      });
    }
  }
  const gold = humanGold(store, task, items, decided);
  return {
    task: task.name,
    reviewers,
    pairs,
    reviewed: gold.reviewed,
    humanGold: gold.labels.filter((g) => g !== null).length,
    ties: gold.ties,
  };
}

const pct = (x: number) => (Number.isFinite(x) ? `${(100 * x).toFixed(1)}%` : '-');

/** The reviewers in a few lines for people (status.ts, teachers.ts); none when the task has no reviewer. */
export function agreementLines(a: ReviewerAgreement): string[] {
  if (a.reviewers.length === 0) return [];
  const lines = [
    `reviewers of task ${a.task}: ${a.reviewed} item(s) reviewed, ${a.humanGold} with human gold (the reviewers' majority)` +
      (a.ties ? `, ${a.ties} tied` : ''),
  ];
  for (const r of a.reviewers) {
    const target = r.target ? `${pct(r.target.rate)} of ${r.target.n}` : '- (no teacher)';
    lines.push(
      `  ${r.reviewer} (run ${r.run}): ${r.items} item(s); agrees with the teachers' target ${target}, with gold ${pct(r.gold.rate)} of ${r.gold.n}`,
    );
  }
  for (const p of a.pairs) {
    const kappa = p.kappa === null ? '-' : p.kappa.toFixed(3);
    lines.push(`  ${p.a} ~ ${p.b}: κ ${kappa}, agreement ${pct(p.agreement)} on ${p.n} common item(s)`);
  }
  return lines;
}
