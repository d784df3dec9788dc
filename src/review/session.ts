/**
 * A reviewer's session over the review queue: which item to show now, what a
 * decision or an undo does, and the progress line.
 *
 * The queue is built once (./queue.ts) and never again; the session walks it
 * with a cursor that passes over every item this reviewer has a live decision
 * on (read from the store before each answer, so a second tab, a second server
 * of the same reviewer or a Label Studio import in the meantime are seen), then
 * shows the skipped items again, once each. An undone item is shown again
 * before anything else. Every decision is committed by src/store/reviews.ts
 * before the answer is sent: a crash or Ctrl-C loses nothing, and a restart
 * continues where the reviewer stopped.
 */
import { decide, decisionsSince, undo, type Decision } from '../store/reviews.ts';
import type { Store } from '../store/store.ts';
import type { Task } from '../task/task.ts';
import type { ItemView, ReviewState } from './api.ts';
import { itemView } from './item-view.ts';
import { targetLabel, type QueueEntry, type ReviewContext, type ReviewPolicy } from './queue.ts';

export interface SessionOptions {
  store: Store;
  ctx: ReviewContext;
  policy: ReviewPolicy;
  /** The queue of `policy` over `ctx`, most doubtful first (buildQueue). */
  queue: readonly QueueEntry[];
  /** Checked (checkReviewer) by the caller. */
  reviewer: string;
  /** The task's instructions for the reviewer (`taskGuidelines`), or none. */
  guidelines?: string | null;
}

/** What a decision did, with the state to show next. */
export interface DecideOutcome {
  status: 'stored' | 'unchanged' | 'conflict';
  state: ReviewState;
}

/** This reviewer's live decisions by item: the label when there is one (a label over a live skip leaves the skip live). */
type Live = Map<number, Decision>;

export class ReviewSession {
  readonly store: Store;
  readonly ctx: ReviewContext;
  readonly policy: ReviewPolicy;
  readonly reviewer: string;
  readonly queue: readonly QueueEntry[];
  readonly guidelines: string | null;
  /** Item id → its place in the queue. */
  readonly #position: Map<number, number>;
  #live: Live = new Map();
  /** Every live decision of this reviewer by item (a label over a live skip leaves both), and the last log id read. */
  #liveByItem = new Map<number, Decision[]>();
  #seen = 0;
  /** The target label each decision was shown with, parsed once. */
  #shownTargets = new Map<number, string | null>();
  /** Every queue entry before it has a live decision of this reviewer. */
  #cursor = 0;
  /** Items undone in this session and not decided since: shown first, the latest undo first. */
  #again: number[] = [];
  /** Skipped items the reviewer skipped again when they came back: not shown again in this session. */
  #passed = new Set<number>();
  /** Target label per item, computed when first needed (agreement). */
  #targetLabels = new Map<number, string | null>();

  constructor(o: SessionOptions) {
    this.store = o.store;
    this.ctx = o.ctx;
    this.policy = o.policy;
    this.reviewer = o.reviewer;
    this.queue = o.queue;
    this.guidelines = o.guidelines ?? null;
    this.#position = new Map(o.queue.map((e, i) => [e.itemId, i]));
    this.#refresh();
  }

  /** Is the item in this review's queue (the only items the page decides)? */
  has(itemId: number): boolean {
    return this.#position.has(itemId);
  }

  /** The item to show now, the progress, and what `u` would take back. */
  state(message: string | null = null): ReviewState {
    this.#refresh();
    const entry = this.#current();
    return {
      task: this.ctx.task.name,
      labels: this.ctx.task.labels,
      reviewer: this.reviewer,
      policy: this.policy,
      progress: this.#progress(),
      item: entry ? this.#view(entry) : null,
      undo: this.#undoable(),
      guidelines: this.guidelines,
      message,
    };
  }

  /** Label an item (null: skip it), committed before this returns. */
  decide(itemId: number, label: string | null): DecideOutcome {
    const entry = this.queue[this.#position.get(itemId)!];
    const wasSkipped = this.#live.get(itemId)?.action === 'skip';
    const r = decide(this.store, {
      task: this.ctx.task,
      reviewer: this.reviewer,
      itemId,
      label,
      shown: this.#shown(entry),
      source: 'page',
    });
    if (r.status === 'conflict') {
      const live = r.decision.label === null ? 'skipped' : `labeled ${r.decision.label}`;
      return {
        status: r.status,
        state: this.state(`item ${entry.itemId} is already ${live} (in another tab?); kept that, showing the next item`),
      };
    }
    this.#again = this.#again.filter((id) => id !== itemId);
    // A skip of an item that came back skipped: the reviewer has seen it twice, so it rests until the next session.
    if (label === null && (wasSkipped || r.status === 'unchanged')) this.#passed.add(itemId);
    const what = label === null ? 'skipped' : label;
    const message = r.status === 'stored' ? null : `item ${itemId} was already ${label === null ? 'skipped' : `labeled ${what}`}`;
    return { status: r.status, state: this.state(message) };
  }

  /** Take back a decision (default: this reviewer's latest on the task); its item is shown again first. */
  undo(decisionId?: number): ReviewState {
    const r = undo(this.store, { task: this.ctx.task, reviewer: this.reviewer, decisionId });
    if (r.status === 'none') return this.state('nothing to undo');
    const d = r.decision!;
    const what = d.action === 'skip' ? 'skip' : `label ${d.label}`;
    if (r.status === 'unchanged') return this.state(`the ${what} of item ${d.itemId} was already undone`);
    if (this.has(d.itemId)) {
      this.#again = [d.itemId, ...this.#again.filter((id) => id !== d.itemId)];
      this.#passed.delete(d.itemId);
    }
    return this.state(`undone: the ${what} of item ${d.itemId}`);
  }

  /**
   * This reviewer's live decisions, brought up to date with what was logged since the last look (by this tab,
   * another tab, another server or an import): each request costs what is new, not the reviewer's whole history.
   * The cursor steps back over any item whose decision was undone.
   */
  #refresh(): void {
    const fresh = decisionsSince(this.store, this.ctx.task.id, this.reviewer, this.#seen);
    if (fresh.length === 0) return;
    const touched = new Set<number>();
    for (const d of fresh) {
      this.#seen = d.id;
      touched.add(d.itemId);
      const list = this.#liveByItem.get(d.itemId) ?? [];
      const next = d.action === 'undo' ? list.filter((x) => x.id !== d.undoes) : [...list, d];
      if (next.length > 0) this.#liveByItem.set(d.itemId, next);
      else this.#liveByItem.delete(d.itemId);
    }
    for (const id of touched) {
      const list = this.#liveByItem.get(id);
      const shown = list?.find((x) => x.action === 'label') ?? list?.[0];
      if (shown) {
        this.#live.set(id, shown);
        continue;
      }
      this.#live.delete(id);
      const at = this.#position.get(id);
      if (at !== undefined && at < this.#cursor) this.#cursor = at;
    }
  }

  /** Undone items first; then the queue in order; then the skipped items again; null when all is done. */
  #current(): QueueEntry | null {
    while (this.#again.length > 0) {
      const id = this.#again[0];
      if (this.#live.get(id)?.action !== 'label') return this.queue[this.#position.get(id)!];
      this.#again.shift();
    }
    while (this.#cursor < this.queue.length && this.#live.has(this.queue[this.#cursor].itemId)) this.#cursor++;
    if (this.#cursor < this.queue.length) return this.queue[this.#cursor];
    let first: number | null = null;
    for (const d of this.#live.values()) {
      const at = this.#position.get(d.itemId);
      if (d.action === 'skip' && at !== undefined && !this.#passed.has(d.itemId) && (first === null || at < first)) first = at;
    }
    return first === null ? null : this.queue[first];
  }

  #progress(): ReviewState['progress'] {
    let done = 0;
    let skipped = 0;
    let agree = 0;
    for (const d of this.#live.values()) {
      if (!this.has(d.itemId)) continue;
      if (d.action === 'skip') {
        skipped++;
        continue;
      }
      done++;
      if (d.label === this.#shownTarget(d)) agree++;
    }
    return { done, skipped, queue: this.queue.length, agreement: done === 0 ? null : agree / done };
  }

  /** The target label the reviewer saw when deciding (stored with the decision), else the target now. */
  #shownTarget(d: Decision): string | null {
    let label = this.#shownTargets.get(d.id);
    if (label === undefined) this.#shownTargets.set(d.id, (label = this.#parseShownTarget(d)));
    return label;
  }

  #parseShownTarget(d: Decision): string | null {
    if (d.shown) {
      try {
        const shown = JSON.parse(d.shown) as { target?: unknown };
        if (typeof shown.target === 'string' || shown.target === null) return shown.target;
      } catch {
        // an unreadable `shown` (written by something else): fall back to the target now
      }
    }
    return this.#targetLabel(d.itemId);
  }

  #targetLabel(itemId: number): string | null {
    let label = this.#targetLabels.get(itemId);
    if (label === undefined) {
      const i = this.ctx.row.get(itemId);
      const probs = i === undefined ? null : this.ctx.targets.probs[i];
      label = i === undefined || probs === null ? null : this.ctx.task.labels[targetLabel(this.ctx, i, probs)];
      this.#targetLabels.set(itemId, label);
    }
    return label;
  }

  #view(entry: QueueEntry): ItemView {
    return itemView(this.store, this.ctx, entry);
  }

  /** What the decision is stored with: why the item was shown and what the page said about it (not its text: the item has that). */
  #shown(entry: QueueEntry): Record<string, unknown> {
    const v = this.#view(entry);
    return {
      policy: this.policy,
      reason: entry.reason,
      score: entry.score,
      target: v.target?.label ?? null,
      targetProbs: v.target?.probs ?? null,
      teachers: v.teachers.map((t) => ({ name: t.name, label: t.label })),
      student: v.student ? { label: v.student.label, outOfFold: v.student.outOfFold } : null,
      suggestion: v.suggestion,
    };
  }

  /** What `u` takes back: the latest live decision of this reviewer on the task. */
  #undoable(): ReviewState['undo'] {
    let latest: Decision | null = null;
    for (const d of this.#live.values()) if (!latest || d.id > latest.id) latest = d;
    // A label over a live skip hides the skip in #live; the latest decision is still the label.
    return latest ? { decisionId: latest.id, itemId: latest.itemId, label: latest.label } : null;
  }
}

/**
 * What a reviewer reads as the task's guidelines: the instructions the teacher got (the task file's system line
 * and body), so a person and the teacher answer the same question. Template placeholders stay as written.
 */
export function taskGuidelines(task: Pick<Task, 'system' | 'template'>): string | null {
  const text = [task.system, task.template]
    .filter((t): t is string => !!t && t.trim() !== '')
    .map((t) => t.trim())
    .join('\n\n');
  return text === '' ? null : text;
}
