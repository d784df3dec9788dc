/**
 * The teacher flags' wiring, shared by label.ts and relabel.ts: one definition of how a command line becomes
 * LabelOptions. The flags themselves are in teacher-options.ts.
 */
import { runBatchLabeling } from '../batch/batch.ts';
import type { BatchLabelResult, BatchOptions } from '../batch/types.ts';
import { batchPrice, costOf, loadPriceTable, resolvePrice } from '../label/cost.ts';
import { runLabeling } from '../label/live.ts';
import { makeProgress } from '../label/progress.ts';
import type { LabelOptions, LabelResult, Plan } from '../label/types.ts';
import type { Store, TaskRow } from '../store/store.ts';
import type { Task } from '../task/task.ts';
import { TeacherClient } from '../teacher/client.ts';
import { defaultMaxTokens, parseSoftMode } from '../teacher/request.ts';
import { DEFAULT_RETRY } from '../teacher/retry.ts';
import { storeFormat } from './options.ts';
import { EXIT, log } from './run.ts';

// The flags live apart from this wiring so that a script can parse them (and print --help) before loading openai and zod.
export { addTeacherOptions } from './teacher-options.ts';

/** The batch flags as BatchOptions; undefined without --batch. */
export function batchOptions(opts: Record<string, any>): BatchOptions | undefined {
  if (!opts.batch) return undefined;
  return {
    wait: opts.poll !== false,
    pollIntervalMs: opts.pollInterval * 1000,
    maxRequests: opts.batchMaxRequests,
    maxBytes: opts.batchMaxBytes,
    retry: opts.batchRetry,
    log,
  };
}

/** One labeling pass as the flags say: live (runLabeling), or through the Batch API with --batch (runBatchLabeling). */
export function runTeacherPass(t: TeacherSetup, o: LabelOptions): Promise<LabelResult> {
  const b = batchOptions(t.opts);
  return b ? runBatchLabeling({ ...o, progress: undefined }, b) : runLabeling(o);
}

/** A dry run's estimate at the price the flags select (the batch price with --batch): expected and worst case, US$. */
export function estimateCost(t: TeacherSetup, plan: Plan): { expected: number; worst: number; note: string } {
  const price = t.opts.batch ? batchPrice(t.price) : t.price;
  return {
    expected: costOf(price, plan.promptTokens, plan.expectedCompletionTokens),
    worst: costOf(price, plan.promptTokens, plan.maxCompletionTokens),
    note: t.opts.batch ? ' at the batch price' : '',
  };
}

/** What the teacher flags resolve to before a store is open: the client and the price are made once per process. */
export interface TeacherSetup {
  client: TeacherClient;
  price: ReturnType<typeof resolvePrice>;
  opts: Record<string, any>;
  task: Task;
}

/**
 * `sends` (default true): this invocation will send requests, so a missing API key is refused now, before the
 * command writes anything; a dry run passes false and needs no key.
 */
export function teacherSetup(opts: Record<string, any>, task: Task, o: { sends: boolean } = { sends: true }): TeacherSetup {
  const onlyPrices = opts.priceIn !== undefined && opts.priceOut !== undefined;
  const price = resolvePrice(opts.model, onlyPrices ? undefined : loadPriceTable(opts.prices), opts.prices, opts.priceIn, opts.priceOut);
  const client = new TeacherClient({ baseURL: opts.baseUrl, apiKeyEnv: opts.apiKeyEnv, timeoutMs: opts.timeout * 1000 });
  if (o.sends) client.requireKey();
  return { client, price, opts, task };
}

/** LabelOptions for one labeling pass over `itemIds` (every item of the task when absent). */
export function labelOptions(t: TeacherSetup, store: Store, taskRow: TaskRow, extra: Partial<LabelOptions> = {}): LabelOptions {
  const { opts, task } = t;
  const soft = parseSoftMode(opts.soft);
  return {
    store,
    task,
    taskRow,
    client: t.client,
    settings: {
      model: opts.model,
      baseURL: t.client.baseURL,
      soft,
      temperature: opts.temperature ?? (soft.kind === 'samples' ? 1 : 0),
      maxTokens: opts.maxTokens ?? defaultMaxTokens(task.labels),
      imageDetail: opts.imageDetail,
    },
    price: t.price,
    concurrency: opts.concurrency,
    limits: { rpm: opts.rpm, tpm: opts.tpm },
    retry: { ...DEFAULT_RETRY, maxRetries: opts.maxRetries, baseDelayMs: opts.retryBaseMs },
    maxInvalid: opts.maxInvalid,
    retryFailed: opts.retryFailed,
    maxCost: opts.maxCost,
    storeFormat: storeFormat(opts.store, task.labels.length),
    limit: opts.limit,
    progress: makeProgress({ tty: process.stderr.isTTY === true, intervalMs: opts.progressInterval * 1000, write: log }),
    ...extra,
  };
}

/** First Ctrl-C: finish the requests in flight and stop; second: quit at once. */
export function interruptOnSigint(): AbortSignal {
  const stop = new AbortController();
  let interrupts = 0;
  process.on('SIGINT', () => {
    if (++interrupts > 1) process.exit(EXIT.interrupted);
    log('interrupt: finishing the requests in flight (Ctrl-C again to quit at once)');
    stop.abort();
  });
  return stop.signal;
}

/** The one-line summary of a labeling pass. */
export function labelSummary(r: LabelResult | BatchLabelResult): string {
  if (r.status === 'nothing-to-do') {
    return (
      `nothing to do: ${r.plan.cached} item(s) already labeled${r.plan.failedBefore ? `, ${r.plan.failedBefore} failed before (--retry-failed to ask again)` : ''}` +
      `${r.plan.inBatch ? `, ${r.plan.inBatch} in live batch jobs (--batch collects them)` : ''}; 0 requests sent`
    );
  }
  const s = r.stats;
  const pending = s.total - s.labeled - s.failed;
  const jobs = 'jobs' in r ? `; batch jobs: ${r.jobs.submitted} submitted, ${r.jobs.collected} collected, ${r.jobs.pending} pending` : '';
  return (
    `run ${r.run!.id} ${r.status}: ${s.labeled} labeled, ${s.failed} failed, ${pending} pending, ${r.plan.cached} already labeled; ` +
    `${s.requests} requests (${s.errors} errors), ${s.promptTokens + s.completionTokens} tokens, $${s.cost.toFixed(4)}${jobs}` +
    (r.message ? ` — ${r.message}` : '')
  );
}

/** 0 done, 3 stopped early or batch jobs still pending, 130 interrupted, 1 failed. */
export function labelExitCode(r: LabelResult | BatchLabelResult): number {
  switch (r.status) {
    case 'completed':
    case 'nothing-to-do':
      return EXIT.ok;
    case 'stopped':
    case 'pending':
      return EXIT.stopped;
    case 'interrupted':
      return EXIT.interrupted;
    default:
      return EXIT.error;
  }
}
