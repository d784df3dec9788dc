/**
 * The review queue: which items a person should look at, most doubtful first.
 *
 * Everything the page needs is computed once per task (`buildReviewContext`: the chosen teachers' views, the
 * aggregated target, the student's predictions), and each policy orders the items once (`buildQueue`); the
 * server then walks the queue with a cursor and builds each item's view from the context (./item-view.ts), so
 * the next item costs O(classes × teachers), not a pass over the task.
 *
 * Policies (the lead's design, §4):
 * - `disagree`: the reviewers gave the item different labels (first: a third person settles them), or the
 *   chosen teachers give it different labels, or the student predicts another class than the aggregated
 *   target; the weakest evidence first (the share of teachers behind the most common label, or the
 *   student's probability of the target's label, whichever is lower), as relabel's `disagree`;
 * - `low-confidence`: the aggregated target's top probability, lowest first;
 * - `label-issues`: cleanlab's self-confidence (./label-issues.ts) of the target's label under the student's
 *   out-of-fold prediction where `DIR/out-of-fold.json` has the item, else under the student's own
 *   prediction, else under the target itself; lowest first.
 *
 * Human runs (the reviewers' own labels) are never teachers here, whatever `--teachers` says: the page
 * compares a reviewer with the teachers, and a reviewer's earlier answer is not evidence about the item.
 * Items with no target are not in any queue.
 */
import { DistilleryError, SettingError } from '../errors.ts';
import { humanLabels, isHumanRun } from '../store/reviews.ts';
import type { Store, TaskRow } from '../store/store.ts';
import type { AggregateMethod } from '../targets/aggregate.ts';
import { buildTargets, resolveTeachers, type Targets } from '../targets/from-store.ts';
import { argmax } from '../targets/vector.ts';
import { teacherLabel } from '../targets/views.ts';
import { readOutOfFold } from '../train/out-of-fold.ts';
import { selfConfidence } from './label-issues.ts';

export type ReviewPolicy = 'disagree' | 'low-confidence' | 'label-issues';
export const REVIEW_POLICIES: readonly ReviewPolicy[] = ['disagree', 'low-confidence', 'label-issues'];

/** How the context is built: the target as train builds it (`--teachers`, `--aggregate`, `--calibrate`), the student, the split. */
export interface ReviewOptions {
  teachers?: string;
  /** Default 'mean', as train's. */
  aggregate?: AggregateMethod;
  weights?: number[];
  calibrate?: boolean;
  /** A trained student's folder (`--student DIR`): its predictions, and DIR/out-of-fold.json when there is one. */
  studentDir?: string;
  /** TensorFlow.js backend for the student's predictions (only loaded when out-of-fold.json does not cover every item). */
  backend?: string;
  /** Only this split's items (`--split`). */
  split?: string;
}

/**
 * Where a student's prediction for an item comes from: the out-of-fold model that did not train on it, the final
 * student on an item it never trained on (another split), or the final student on its own training item.
 */
export type StudentSource = 'out-of-fold' | 'held-out' | 'in-sample';

export interface StudentPredictions {
  dir: string;
  /** Per item row (targets.items order): the student's probabilities over the task's labels, or null. */
  probs: (Float64Array | null)[];
  /** Per item row: where `probs` comes from (meaningless where probs is null). */
  source: StudentSource[];
  /** Folds of DIR/out-of-fold.json, or null when the student has none. */
  folds: number | null;
}

export interface ReviewContext {
  task: TaskRow;
  /** The aggregated target and everything it was built from (items, teachers, views, temperatures). */
  targets: Targets;
  /** Item id → row in targets.items (and in every per-item array here). */
  row: Map<number, number>;
  student: StudentPredictions | null;
  split: string | null;
  /** Item id → the reviewers' live labels on it, when they do not all agree (what `disagree` puts first). */
  reviewerSplits: Map<number, { reviewer: string; label: string }[]>;
}

export interface QueueEntry {
  itemId: number;
  /** The policy that queued it. */
  policy: ReviewPolicy;
  /** Why the item is in the queue, one sentence for the page. */
  reason: string;
  /** The policy's score: lower = more doubtful = earlier. */
  score: number;
}

/** `--policy`: one of the three. */
export function parseReviewPolicy(v: string): ReviewPolicy {
  if ((REVIEW_POLICIES as readonly string[]).includes(v)) return v as ReviewPolicy;
  throw new SettingError('policy', v, `unknown policy "${v}" (use ${REVIEW_POLICIES.join(', ')})`);
}

export async function buildReviewContext(store: Store, task: TaskRow, o: ReviewOptions = {}): Promise<ReviewContext> {
  const targets = buildTargets(store, task, {
    teachers: teacherSpec(store, task, o.teachers),
    aggregate: o.aggregate ?? 'mean',
    weights: o.weights,
    calibrate: o.calibrate ?? false,
  });
  const items = targets.items.items;
  const row = new Map(items.map((it, i) => [it.id, i]));
  if (o.split !== undefined && !items.some((it) => it.split === o.split)) {
    const splits = [...new Set(items.map((it) => it.split))].sort();
    throw new SettingError('split', o.split, `task "${task.name}" has no item in split "${o.split}" (splits: ${splits.join(', ')})`);
  }
  const split = o.split ?? null;
  const student = o.studentDir ? await loadStudent(store, task, targets, row, split, o.studentDir, o.backend ?? 'auto') : null;
  return { task, targets, row, student, split, reviewerSplits: reviewerSplits(store, task) };
}

/** Items on which the reviewers gave different labels: an annotation lead's first work is to settle them. */
function reviewerSplits(store: Store, task: TaskRow): Map<number, { reviewer: string; label: string }[]> {
  const byItem = new Map<number, { reviewer: string; label: string }[]>();
  for (const h of humanLabels(store, task.id))
    byItem.set(h.itemId, [...(byItem.get(h.itemId) ?? []), { reviewer: h.reviewer, label: h.label }]);
  for (const [id, said] of byItem) if (new Set(said.map((x) => x.label)).size < 2) byItem.delete(id);
  return byItem;
}

/**
 * The teachers as `--teachers` names them, without human runs. Without a list: every teacher that is not a
 * reviewer, spelled out, so the rule holds whatever the default list of `resolveTeachers` is.
 */
function teacherSpec(store: Store, task: TaskRow, spec: string | undefined): string {
  if (spec !== undefined) {
    for (const t of resolveTeachers(store, task, spec)) {
      if (t.runs.some(isHumanRun))
        throw new SettingError(
          'teachers',
          spec,
          `${t.name} is a reviewer, not a teacher: the review page compares reviewers with the teachers`,
        );
    }
    return spec;
  }
  const runs = store.runs(task.id);
  const names = [...new Set(runs.filter((r) => !isHumanRun(r)).map((r) => r.teacher))];
  if (names.length === 0) {
    const only = runs.length ? ` (only reviewers' labels: ${[...new Set(runs.map((r) => r.teacher))].join(', ')})` : '';
    throw new DistilleryError(`${store.path}: task "${task.name}" has no teacher runs to review${only}: label it first`);
  }
  // A name resolveTeachers would read as a run id or split in two cannot be spelled out: name each of its runs.
  const runsOf = (name: string) => runs.filter((r) => r.teacher === name && !isHumanRun(r));
  return names.flatMap((n) => (/^\d+$/.test(n) || n.includes(',') ? runsOf(n).map((r) => String(r.id)) : [n])).join(',');
}

/**
 * The student's prediction per item: DIR/out-of-fold.json where it has the item, else the student run on the
 * task's items (TensorFlow.js is loaded only then, and only here).
 */
async function loadStudent(
  store: Store,
  task: TaskRow,
  targets: Targets,
  row: Map<number, number>,
  split: string | null,
  dir: string,
  backend: string,
): Promise<StudentPredictions> {
  const items = targets.items.items;
  const n = items.length;
  const probs = new Array<Float64Array | null>(n).fill(null);
  const source = items.map((it): StudentSource => (it.split === 'train' ? 'in-sample' : 'held-out'));
  const oof = readOutOfFold(dir);
  if (oof) {
    if (oof.task !== task.name || JSON.stringify(oof.labels) !== JSON.stringify(task.labels)) {
      throw new SettingError(
        'studentDir',
        dir,
        `${dir}/out-of-fold.json is for task "${oof.task}" (${oof.labels.join(', ')}), not "${task.name}" (${task.labels.join(', ')})`,
      );
    }
    for (const [id, p] of oof.probs) {
      const i = row.get(id);
      if (i === undefined) continue;
      probs[i] = p;
      // Items without a fold are another split's, predicted by the final student, which never trained on them.
      source[i] = oof.fold.has(id) ? 'out-of-fold' : 'held-out';
    }
  }
  // Only items a queue can hold need the student run: with out-of-fold predictions for all of them, TensorFlow.js is never loaded.
  const needed = items.some((it, i) => probs[i] === null && targets.probs[i] !== null && (split === null || it.split === split));
  if (needed) {
    const { studentPredictions } = await import('../relabel/student.ts');
    const own = await studentPredictions(store, task, task, dir, backend);
    for (const [id, p] of own) {
      const i = row.get(id);
      if (i !== undefined && probs[i] === null) probs[i] = Float64Array.from(p.probs);
    }
  }
  return { dir, probs, source, folds: oof?.folds ?? null };
}

/** The queue of one policy, most doubtful first (ties: the less confident target, then the older item). */
export function buildQueue(ctx: ReviewContext, policy: ReviewPolicy): QueueEntry[] {
  const { targets } = ctx;
  const items = targets.items.items;
  const scored: (QueueEntry & { tie: number })[] = [];
  for (let i = 0; i < items.length; i++) {
    const target = targets.probs[i];
    if (target === null) continue;
    if (ctx.split !== null && items[i].split !== ctx.split) continue;
    const e = ENTRY[policy](ctx, i, target);
    if (e) scored.push({ itemId: items[i].id, policy, ...e, tie: target[targetLabel(ctx, i, target)] });
  }
  scored.sort((a, b) => a.score - b.score || a.tie - b.tie || a.itemId - b.itemId);
  return scored.map(({ tie: _tie, ...entry }) => entry);
}

type Scorer = (ctx: ReviewContext, i: number, target: Float64Array) => { score: number; reason: string } | null;

const ENTRY: Record<ReviewPolicy, Scorer> = {
  disagree: disagreeEntry,
  'low-confidence': lowConfidenceEntry,
  'label-issues': labelIssueEntry,
};

/** The target's label: the aggregation's hard label (a vote's tie-break), else the argmax. */
export function targetLabel(ctx: ReviewContext, i: number, target: Float64Array): number {
  return ctx.targets.hard[i] ?? argmax(target);
}

function disagreeEntry(ctx: ReviewContext, i: number, target: Float64Array): { score: number; reason: string } | null {
  const labels = ctx.task.labels;
  const parts: string[] = [];
  let score = Infinity;
  const votes = new Map<number, string[]>();
  for (const v of ctx.targets.views) {
    const l = teacherLabel(v, i);
    if (l !== null) votes.set(l, [...(votes.get(l) ?? []), v.name]);
  }
  const voters = [...votes.values()].reduce((s, names) => s + names.length, 0);
  if (votes.size >= 2) {
    const top = Math.max(...[...votes.values()].map((names) => names.length));
    score = top / voters;
    parts.push(
      `The teachers disagree: ${voteText(
        votes,
        labels,
        voters,
        ctx.targets.views.map((v) => v.name),
      )}.`,
    );
  }
  const people = ctx.reviewerSplits.get(ctx.targets.items.items[i].id);
  if (people) {
    // Before any teacher disagreement (scores below 0): people who disagree are the strongest sign of a hard item.
    const top = Math.max(...[...new Set(people.map((p) => p.label))].map((l) => people.filter((p) => p.label === l).length));
    score = top / people.length - 1;
    parts.unshift(`The reviewers disagree: ${people.map((p) => `${p.reviewer} says ${p.label}`).join(', ')}.`);
  }
  const k = targetLabel(ctx, i, target);
  const s = studentOf(ctx, i);
  if (s) {
    const predicted = argmax(s.probs);
    if (predicted !== k) {
      score = Math.min(score, s.probs[k]);
      parts.push(
        `The student (${SOURCE_TEXT[s.source]}) predicts ${labels[predicted]} (${pct(s.probs[predicted])}), ` +
          `the target says ${labels[k]} (${pct(target[k])}).`,
      );
    }
  }
  return parts.length ? { score, reason: parts.join(' ') } : null;
}

/** "gpt-a says dog, gpt-b says cat" in teacher order, or with many teachers "dog: 3 teachers, cat: 2 teachers". */
function voteText(votes: Map<number, string[]>, labels: string[], voters: number, teachers: string[]): string {
  if (voters <= 4) {
    const said = new Map([...votes].flatMap(([l, names]) => names.map((n) => [n, l] as const)));
    return teachers
      .filter((t) => said.has(t))
      .map((t) => `${t} says ${labels[said.get(t)!]}`)
      .join(', ');
  }
  const groups = [...votes.entries()].sort((a, b) => b[1].length - a[1].length || a[0] - b[0]);
  return groups.map(([l, names]) => `${labels[l]}: ${names.length} teachers`).join(', ');
}

function lowConfidenceEntry(ctx: ReviewContext, i: number, target: Float64Array): { score: number; reason: string } {
  const labels = ctx.task.labels;
  const k = targetLabel(ctx, i, target);
  let next = -1;
  for (let j = 0; j < target.length; j++) if (j !== k && (next < 0 || target[j] > target[next])) next = j;
  const runnerUp = next >= 0 && target[next] > 0 ? ` (next: ${labels[next]} ${pct(target[next])})` : '';
  // Every item is in this queue, sure ones last: the sentence states the confidence rather than calling it low.
  return { score: target[k], reason: `The teachers' target is ${labels[k]} at ${pct(target[k])}${runnerUp}.` };
}

function labelIssueEntry(ctx: ReviewContext, i: number, target: Float64Array): { score: number; reason: string } {
  const labels = ctx.task.labels;
  const k = targetLabel(ctx, i, target);
  const s = studentOf(ctx, i);
  if (!s) {
    const score = selfConfidence(target, k);
    return { score, reason: `No student prediction for this item: the teachers' target gives its own label ${labels[k]} ${pct(score)}.` };
  }
  const score = selfConfidence(s.probs, k);
  const predicted = argmax(s.probs);
  const says = predicted === k ? 'its top class too' : `it predicts ${labels[predicted]} (${pct(s.probs[predicted])})`;
  return { score, reason: `The student (${SOURCE_TEXT[s.source]}) gives the target's label ${labels[k]} ${pct(score)}; ${says}.` };
}

const SOURCE_TEXT: Record<StudentSource, string> = {
  'out-of-fold': 'out of fold',
  'held-out': 'never trained on this item',
  'in-sample': 'in-sample: it trained on this item',
};

/** The student's prediction for item row i, with where it comes from; null without one. */
export function studentOf(ctx: ReviewContext, i: number): { probs: Float64Array; source: StudentSource } | null {
  const p = ctx.student?.probs[i];
  return p ? { probs: p, source: ctx.student!.source[i] } : null;
}

function pct(p: number): string {
  return `${Math.round(p * 100)}%`;
}
