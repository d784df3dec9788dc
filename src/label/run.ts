/**
 * The run a labeling pass records into, and the lease that makes it the only pass of its configuration: shared by
 * the live path (live.ts) and the Batch API path (../batch/).
 */
import { defaultSoftFormat, formatName } from '../soft/codec.ts';
import { Lease } from '../store/lease.ts';
import type { RunRow } from '../store/store.ts';
import { softModeName } from '../teacher/request.ts';
import { configHash } from './plan.ts';
import type { LabelOptions, Plan } from './types.ts';

/** A lease expires this long after its holder's last renewal (every third of it): how long a hung labeler blocks the next. */
const LABEL_LEASE_TTL_MS = 60_000;

/**
 * One labeling process per teacher configuration and database, live or batch: two would plan the same
 * items and pay for each twice. The second is refused with the holder named; a killed holder's lease is
 * taken over at once on the same host, and expires after a minute elsewhere.
 */
export async function underLabelLease<T>(o: LabelOptions, work: () => Promise<T>): Promise<T> {
  const lease = Lease.acquire(
    o.store,
    `labeling ${o.task.name} with ${o.settings.model} (config ${configHash(o.task, o.settings).slice(0, 12)})`,
    {
      ttlMs: LABEL_LEASE_TTL_MS,
      command: `label ${o.task.name} --model ${o.settings.model}`,
      hint: 'Let it finish (it labels the same items), or stop it; a killed labeler frees it at once on this host, after a minute elsewhere',
    },
  );
  try {
    return await work();
  } finally {
    lease.release();
  }
}

/** The run these options label into: the unfinished run with the same configuration, else a new one. */
export function openRun(o: LabelOptions, plan: Plan, extraItems = 0): RunRow {
  const previous = o.store.resumableRun(plan.configHash);
  if (previous) {
    o.store.reopenRun(previous.id, o.store.labeledItemCount(previous.id) + plan.todo.length + extraItems);
    return o.store.run(previous.id)!;
  }
  const s = o.settings;
  return o.store.createRun({
    task_id: o.taskRow.id,
    kind: 'llm',
    teacher: s.model,
    base_url: s.baseURL,
    prompt_version: o.task.version,
    config_hash: plan.configHash,
    labels: JSON.stringify(o.task.labels),
    items_total: plan.todo.length + extraItems,
    params: JSON.stringify({
      soft: softModeName(s.soft),
      temperature: s.temperature,
      max_tokens: s.maxTokens,
      image_detail: s.imageDetail,
      max_invalid: o.maxInvalid,
      concurrency: o.concurrency,
      rpm: o.limits.rpm ?? null,
      tpm: o.limits.tpm ?? null,
      max_cost: o.maxCost ?? null,
      store: formatName(o.storeFormat ?? defaultSoftFormat(o.task.labels.length)),
      price: o.price,
      ...(s.keySalt ? { relabel_salt: s.keySalt } : {}),
      ...o.runParams,
    }),
  });
}
