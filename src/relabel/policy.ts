/**
 * Which items a relabel run asks about again, and in what order.
 *
 * Policies (any mix, given as `--policy changed,stale:7d`):
 * - `disagree`: the teachers of the task disagree on the item, or a trained student (`--student DIR`)
 *   predicts another class than the item's current label (cleanlab's idea: the weakest evidence first);
 * - `low-confidence:P`: the current label's top probability is under P;
 * - `changed`: the current label came from another model or another prompt version than now;
 * - `stale:DURATION`: the current label is older than that (`30m`, `12h`, `7d`, `2w`).
 *
 * The "current label" of an item is its latest valid label from any LLM run of the task. Items
 * without one are not relabel's business (label.ts labels them).
 *
 * An item matched by several policies is selected once, under the most useful one; the order is
 * disagree, low-confidence, changed, stale (cheapest-to-most-useful first, as the evidence is
 * strongest there), and inside each group by how weak the evidence is.
 *
 * `disagree` and `low-confidence` skip items whose current label already comes from a relabel with
 * the same teacher settings: asking the same teacher the same question again would give the same
 * answer, and a scheduled relabel would otherwise pay for it on every tick.
 */
import { SettingError } from '../errors.ts';
import { decodeSoft, softToProbs } from '../soft/codec.ts';
import { currentLabels, type CurrentLabel } from '../store/relabels.ts';
import type { Store, TaskRow } from '../store/store.ts';
import { loadView, resolveTeachers, taskItems } from '../targets/from-store.ts';
import { isHumanRun } from '../store/reviews.ts';

export type Reason = 'disagree' | 'low-confidence' | 'changed' | 'stale';
/** Most useful first: the order of selection. */
export const REASON_ORDER: Reason[] = ['disagree', 'low-confidence', 'changed', 'stale'];

export type Policy =
  { kind: 'disagree' } | { kind: 'low-confidence'; threshold: number } | { kind: 'changed' } | { kind: 'stale'; ms: number; spec: string };

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 7 * 86_400_000 };

/** "7d", "12h", "1h30m", "90s", "0s" → milliseconds. */
export function parseAge(spec: string): number {
  const s = spec.trim();
  const parts = [...s.matchAll(/(\d+(?:\.\d+)?)([smhdw])/g)];
  if (parts.length === 0 || parts.map((p) => p[0]).join('') !== s) {
    throw new SettingError('policy', `stale:${spec}`, `stale:${spec}: expected a duration such as 30m, 12h, 7d or 2w`);
  }
  return parts.reduce((ms, p) => ms + Number(p[1]) * UNIT_MS[p[2]], 0);
}

/** `--policy` values: comma lists, possibly given several times. */
export function parsePolicies(values: string | string[]): Policy[] {
  const policies: Policy[] = [];
  for (const raw of ([] as string[]).concat(values).flatMap((v) => v.split(','))) {
    const p = raw.trim();
    if (p === '') continue;
    const [name, arg] = splitOnce(p);
    let policy: Policy;
    if (name === 'disagree' && arg === undefined) policy = { kind: 'disagree' };
    else if (name === 'changed' && arg === undefined) policy = { kind: 'changed' };
    else if (name === 'stale' && arg) policy = { kind: 'stale', ms: parseAge(arg), spec: arg };
    else if (name === 'low-confidence' && arg) {
      const threshold = Number(arg);
      if (!Number.isFinite(threshold) || threshold <= 0 || threshold > 1)
        throw new SettingError('policy', p, `${p}: P must be a probability in (0, 1]`);
      policy = { kind: 'low-confidence', threshold };
    } else {
      throw new SettingError('policy', p, `${p}: unknown policy (use changed, stale:DURATION, low-confidence:P, disagree)`);
    }
    if (policies.some((q) => q.kind === policy.kind)) throw new SettingError('policy', policy.kind, `${policy.kind} given twice`);
    policies.push(policy);
  }
  if (policies.length === 0)
    throw new SettingError('policy', '', 'give at least one of changed, stale:DURATION, low-confidence:P, disagree');
  return policies;
}

function splitOnce(s: string): [string, string | undefined] {
  const i = s.indexOf(':');
  return i < 0 ? [s, undefined] : [s.slice(0, i), s.slice(i + 1)];
}

export function policyName(p: Policy): string {
  switch (p.kind) {
    case 'stale':
      return `stale:${p.spec}`;
    case 'low-confidence':
      return `low-confidence:${p.threshold}`;
    default:
      return p.kind;
  }
}

export interface SelectContext {
  /** The teacher asked now. */
  model: string;
  promptVersion: string;
  /** Config hash of the teacher settings asked now, without a salt (see TeacherSettings.keySalt). */
  baseConfig: string;
  now: Date;
  /** A student's predicted class index per item id (`disagree` with --student). */
  student?: Map<number, { hard: number; probs: ArrayLike<number> }>;
  limit?: number;
}

export interface Selected {
  itemId: number;
  reason: Reason;
  /** Lower = weaker evidence for the current label = asked first inside its group. */
  score: number;
  prevLabelId: number;
}

export function selectItems(store: Store, task: TaskRow, policies: Policy[], ctx: SelectContext): Selected[] {
  const current = currentLabels(store, task.id);
  const picked = new Map<number, Selected>();
  const consider = (itemId: number, reason: Reason, score: number) => {
    const cur = current.get(itemId);
    if (!cur) return;
    const prev = picked.get(itemId);
    if (prev && REASON_ORDER.indexOf(prev.reason) <= REASON_ORDER.indexOf(reason)) return;
    picked.set(itemId, { itemId, reason, score, prevLabelId: cur.labelId });
  };
  const askedAlready = (cur: CurrentLabel) => cur.relabelConfig === ctx.baseConfig;

  for (const policy of policies) {
    switch (policy.kind) {
      case 'disagree':
        for (const [itemId, score] of disagreements(store, task, current, ctx)) {
          if (!askedAlready(current.get(itemId)!)) consider(itemId, 'disagree', score);
        }
        break;
      case 'low-confidence':
        for (const cur of current.values()) {
          if (!cur.soft || askedAlready(cur)) continue;
          const top = Math.max(...softToProbs(decodeSoft(cur.soft)));
          if (top < policy.threshold) consider(cur.itemId, 'low-confidence', top);
        }
        break;
      case 'changed':
        for (const cur of current.values()) {
          if (cur.model !== ctx.model || cur.promptVersion !== ctx.promptVersion) consider(cur.itemId, 'changed', cur.labelId);
        }
        break;
      case 'stale': {
        const cutoff = ctx.now.getTime() - policy.ms;
        for (const cur of current.values()) {
          const t = Date.parse(cur.createdAt);
          if (t <= cutoff) consider(cur.itemId, 'stale', t);
        }
        break;
      }
    }
  }
  const ordered = [...picked.values()].sort(
    (a, b) => REASON_ORDER.indexOf(a.reason) - REASON_ORDER.indexOf(b.reason) || a.score - b.score || a.itemId - b.itemId,
  );
  return ctx.limit !== undefined ? ordered.slice(0, ctx.limit) : ordered;
}

/**
 * Items where the evidence disagrees, with a score (lower = stronger disagreement):
 * - between teachers: the share of teachers agreeing with the most common label (needs two teachers with a label);
 * - with the student: the student's probability of the current label.
 */
function disagreements(store: Store, task: TaskRow, current: Map<number, CurrentLabel>, ctx: SelectContext): Map<number, number> {
  const out = new Map<number, number>();
  const note = (itemId: number, score: number) => out.set(itemId, Math.min(score, out.get(itemId) ?? Infinity));
  const items = taskItems(store, task);
  // Reviewers' runs are not teachers here: a person who overruled a teacher is no reason to ask the teacher again.
  const runs = store.runs(task.id).filter((r) => !isHumanRun(r));
  if (new Set(runs.map((r) => r.teacher)).size >= 2) {
    const views = resolveTeachers(store, task).map((t) => loadView(store, task, items, t));
    items.items.forEach((it, i) => {
      const votes = views.map((v) => v.hard[i]).filter((h): h is number => h !== null);
      if (votes.length < 2) return;
      const counts = new Map<number, number>();
      for (const h of votes) counts.set(h, (counts.get(h) ?? 0) + 1);
      if (counts.size < 2) return;
      note(it.id, Math.max(...counts.values()) / votes.length);
    });
  }
  if (ctx.student) {
    for (const [itemId, pred] of ctx.student) {
      const cur = current.get(itemId);
      if (!cur) continue;
      const k = task.labels.indexOf(cur.label);
      if (k >= 0 && pred.hard !== k) note(itemId, pred.probs[k]);
    }
  }
  return out;
}
