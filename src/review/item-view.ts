/**
 * What the review page shows for one queued item (the `ItemView` of ./api.ts), from the context built once
 * (./queue.ts): the item's text fields or its image URL, each teacher's distribution, the aggregated target, the
 * student's prediction, why the item was chosen and the suggestion Enter accepts. No SQL: the item rows are
 * already in the context, and the rest is O(classes × teachers) per item.
 *
 * Text is passed through as data, exactly as stored: escaping is the page's job (it renders text as text).
 */
import { DistilleryError } from '../errors.ts';
import type { Store } from '../store/store.ts';
import { argmax } from '../targets/vector.ts';
import { teacherLabel, teacherProbs } from '../targets/views.ts';
import type { ItemView, TeacherBars } from './api.ts';
import { studentOf, targetLabel, type QueueEntry, type ReviewContext } from './queue.ts';

/** `store` is unused today (every item row is in the context); it stays in the signature for views that read more. */
export function itemView(_store: Store, ctx: ReviewContext, entry: QueueEntry): ItemView {
  const i = ctx.row.get(entry.itemId);
  if (i === undefined) throw new DistilleryError(`item ${entry.itemId} is not an item of task "${ctx.task.name}"`);
  const { targets, task } = ctx;
  const labels = task.labels;
  const item = targets.items.items[i];
  const target = targets.probs[i];
  const k = target === null ? null : targetLabel(ctx, i, target);
  const s = studentOf(ctx, i);
  return {
    id: item.id,
    extId: item.ext_id,
    split: item.split,
    fields: textFields(item.input, item.image !== null),
    image: item.image === null ? null : `/api/image/${item.id}`,
    teachers: teacherBars(ctx, i),
    target: target === null || k === null ? null : { label: labels[k], probs: Array.from(target) },
    student: s ? { label: labels[argmax(s.probs)], probs: Array.from(s.probs), outOfFold: s.source === 'out-of-fold' } : null,
    reason: { policy: entry.policy, text: entry.reason, score: entry.score },
    suggestion: k === null ? null : labels[k],
  };
}

/**
 * Every chosen teacher, in --teachers order: its answer and its distribution as it went into the target (after
 * --calibrate's temperature; one-hot for a hard-label-only teacher), or nulls where it did not label the item.
 */
function teacherBars(ctx: ReviewContext, i: number): TeacherBars[] {
  const { targets, task } = ctx;
  const c = task.labels.length;
  return targets.views.map((v, t) => {
    const probs = teacherProbs(v, i, targets.temperatures?.[t] ?? 1, c);
    const label = teacherLabel(v, i);
    return { name: v.name, label: label === null ? null : task.labels[label], probs: probs === null ? null : Array.from(probs) };
  });
}

/** The item's fields as the teacher saw them, in their stored order, strings as they are (an image's path is not shown: the image is). */
function textFields(input: string, isImage: boolean): { name: string; value: string }[] {
  const fields = JSON.parse(input) as Record<string, unknown>;
  return Object.entries(fields)
    .filter(([name]) => !(isImage && name === 'image'))
    .map(([name, value]) => ({ name, value: typeof value === 'string' ? value : JSON.stringify(value) }));
}
