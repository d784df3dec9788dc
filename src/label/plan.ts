/**
 * Planning the work of a labeling pass, the same for the live and the batch path: which target items need a
 * request, under which request key (RequestBuilder.key: one definition for both paths, so an answer paid for in one
 * mode is never paid again in the other), and what the requests would cost. Sends nothing, writes nothing.
 */
import { canonicalJson } from '../input/canonical.ts';
import { liveBatchKeys } from '../store/batch-ledger.ts';
import type { ItemRow } from '../store/store.ts';
import { sha256Hex, type Task } from '../task/task.ts';
import { RequestBuilder, softModeName, type TeacherRequest, type TeacherSettings } from '../teacher/request.ts';
import type { LabelOptions, Plan } from './types.ts';

const PAGE = 256;

/** What makes two invocations the same run: everything that changes the answers. */
export function configHash(task: Task, s: TeacherSettings): string {
  return sha256Hex(
    canonicalJson({
      task: task.name,
      promptVersion: task.version,
      model: s.model,
      baseURL: s.baseURL,
      soft: softModeName(s.soft),
      temperature: s.temperature,
      maxTokens: s.maxTokens,
      imageDetail: s.imageDetail,
      ...(s.keySalt ? { relabel: s.keySalt } : {}),
    }),
  );
}

/** The target items, in pages of rows. */
export function* targetItems(o: Pick<LabelOptions, 'store' | 'taskRow' | 'itemIds'>, ids?: number[]): Generator<ItemRow> {
  const list = ids ?? o.itemIds;
  if (list) {
    for (let i = 0; i < list.length; i += PAGE) yield* o.store.itemsByIds(list.slice(i, i + PAGE));
    return;
  }
  for (let after = 0; ;) {
    const page = o.store.itemPage(o.taskRow.id, after, PAGE);
    if (page.length === 0) return;
    yield* page;
    after = page[page.length - 1].id;
  }
}

/** The request for an item (its image read from the store), under the key the plan gave it. */
export function requestFor(o: Pick<LabelOptions, 'store' | 'task'>, builder: RequestBuilder, item: ItemRow, key?: string): TeacherRequest {
  return builder.build(item, o.task.input === 'image' && item.image ? o.store.blob(item.image) : undefined, key);
}

/** Which target items need a request, and (with `estimate`) what they would cost. Sends nothing, writes nothing. */
export async function planLabeling(o: LabelOptions, estimate = true): Promise<Plan> {
  const builder = new RequestBuilder(o.task, o.settings);
  const plan: Plan = {
    configHash: configHash(o.task, o.settings),
    todo: [],
    keys: [],
    cached: 0,
    failedBefore: 0,
    inBatch: 0,
    promptTokens: 0,
    expectedCompletionTokens: 0,
    maxCompletionTokens: 0,
  };
  // Requests in a live batch job are paid for (or will be): neither mode sends them again until the job is collected.
  const inBatch = liveBatchKeys(o.store);
  const n = o.settings.soft.kind === 'samples' ? o.settings.soft.n : 1;
  const typicalAnswer =
    Math.round(o.task.labels.reduce((a, l) => a + JSON.stringify({ label: l }).length, 0) / o.task.labels.length / 3) + 1;
  const seen = new Set<number>();
  for (const item of targetItems(o)) {
    if (seen.has(item.id)) continue; // the same content twice in one input
    seen.add(item.id);
    const key = builder.key(item);
    const state = o.store.hasLabel(key);
    if (state.ok) {
      plan.cached++;
      continue;
    }
    if (state.failed && !o.retryFailed) {
      plan.failedBefore++;
      continue;
    }
    if (inBatch?.has(key)) {
      plan.inBatch++;
      continue;
    }
    if (o.limit !== undefined && plan.todo.length >= o.limit) continue;
    plan.todo.push(item.id);
    plan.keys.push(key);
    if (!estimate) continue;
    const req = requestFor(o, builder, item, key);
    plan.promptTokens += req.promptTokens;
    plan.expectedCompletionTokens += typicalAnswer * n;
    plan.maxCompletionTokens += req.maxCompletionTokens;
  }
  return plan;
}

/** The plan cut to `limit` items (the rest are left for another invocation). */
export function limitPlan(p: Plan, limit: number | undefined): Plan {
  if (limit === undefined || p.todo.length <= limit) return p;
  return { ...p, todo: p.todo.slice(0, limit), keys: p.keys.slice(0, limit) };
}
