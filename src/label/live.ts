/**
 * The live path: label every target item that has no stored answer, one request per item at a time (at most
 * `concurrency` in flight), within the rate and cost budgets. Planning (plan.ts), the run and its lease (run.ts) and
 * recording answers (record.ts) are shared with the Batch API path, which also asks items live through labelLive.
 */
import pLimit from 'p-limit';
import { BatchLedger } from '../store/batch-ledger.ts';
import { BudgetExceeded, TeacherError } from '../errors.ts';
import type { ItemRow, RunRow } from '../store/store.ts';
import { RequestBuilder, type TeacherRequest } from '../teacher/request.ts';
import { classifyError, retryDelayMs } from '../teacher/retry.ts';
import { Budget, costOf } from './cost.ts';
import { planLabeling, requestFor, targetItems } from './plan.ts';
import { RateLimiter, sleep } from './rate-limit.ts';
import { freshTotals, priorAttempts, recordAnswer, type Paid } from './record.ts';
import { openRun, underLabelLease } from './run.ts';
import { emptyStats, type LabelOptions, type LabelResult, type LabelStats, type StopStatus, type Work } from './types.ts';

/**
 * Label every target item that has no stored answer, at most `concurrency`
 * requests at a time, within the rate and cost budgets. Every paid answer is
 * committed before the next request starts, so a killed run loses at most the
 * requests in flight, and the same command resumes the same run.
 */
export function runLabeling(o: LabelOptions): Promise<LabelResult> {
  return underLabelLease(o, () => labelOnce(o));
}

async function labelOnce(o: LabelOptions): Promise<LabelResult> {
  const plan = await planLabeling(o, false);
  const stats = emptyStats(plan.todo.length);
  if (plan.todo.length === 0) {
    const message = plan.inBatch > 0 ? `${plan.inBatch} item(s) are in live batch jobs; collect them with --batch` : undefined;
    return { plan, stats, status: 'nothing-to-do', message };
  }

  const run = openRun(o, plan);
  o.onRunOpened?.(run);
  o.progress?.start(plan.todo.length, run);
  let stop: StopStatus | undefined;
  try {
    // The worst case held by this run's live batch jobs counts against --max-cost here too.
    stop = await labelLive(o, run, plan, { stats, reservedElsewhere: new BatchLedger(o.store).reservedFor(run.id) });
  } finally {
    o.progress?.stop();
    o.store.flush();
  }
  const status = stop?.status ?? 'completed';
  o.store.finishRun(run.id, status, stop?.message ?? null);
  return { run: o.store.run(run.id), plan, stats, status, message: stop?.message };
}

export interface LiveOptions {
  /** Counters to add to (and report progress with). */
  stats: LabelStats;
  /** Cost held elsewhere against the cap (live batch jobs' reservations). */
  reservedElsewhere?: number;
  /** Count the invalid answers already stored for a key in this run (items retried after a batch). */
  resumeAttempts?: boolean;
}

/**
 * The live path of one run: ask for `todo` (with their request keys), at most `concurrency` at a time, within the rate
 * and cost budgets. Does not open or finish the run; returns why it stopped early, if it did.
 */
export async function labelLive(o: LabelOptions, run: RunRow, work: Work, lo: LiveOptions): Promise<StopStatus | undefined> {
  const { stats } = lo;
  const budget = new Budget(o.maxCost, o.store.runCost(run.id) + (lo.reservedElsewhere ?? 0));
  const limiter = new RateLimiter(o.limits);
  const limit = pLimit(o.concurrency);
  const inFlight = new Set<Promise<void>>();
  let stop: StopStatus | undefined;
  // Aborted at the first stop of any kind: cuts short the waits (rate limiter, backoff) of requests not yet sent.
  const stopping = new AbortController();
  const stopWith = (s: StopStatus) => {
    stop ??= s;
    stopping.abort();
  };
  const onAbort = () => stopWith({ status: 'interrupted', message: 'interrupted; rerun the same command to resume' });
  if (o.stopSignal?.aborted) onAbort();
  o.stopSignal?.addEventListener('abort', onAbort);
  const unreachableBefore = stats.unreachable;

  const ctx: ItemContext = {
    o,
    run,
    budget,
    limiter,
    stats,
    promptScale: 1,
    stopSignal: stopping.signal,
    isStopping: () => stop !== undefined,
    resumeAttempts: lo.resumeAttempts === true,
  };
  // Answers are committed by a writer thread (a database file) while this thread runs the HTTP client.
  o.store.startWriterThread();
  try {
    const builder = new RequestBuilder(o.task, o.settings);
    let index = 0;
    for (const item of targetItems(o, work.todo)) {
      if (stop) break;
      const req = requestFor(o, builder, item, work.keys[index++]);
      const p = limit(async () => {
        if (stop) return;
        try {
          await labelItem(ctx, item, req);
        } catch (e) {
          if (e instanceof BudgetExceeded) stopWith({ status: 'stopped', message: e.message });
          else if (e instanceof TeacherError) stopWith({ status: 'failed', message: e.message });
          else stopWith({ status: 'failed', message: `item ${item.ext_id}: ${(e as Error).message}` });
        } finally {
          o.progress?.update(stats);
        }
      });
      inFlight.add(p);
      void p.finally(() => inFlight.delete(p));
      // Backpressure: never queue more than a few pages of work ahead of the requests.
      while (inFlight.size >= o.concurrency * 2) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
  } finally {
    o.stopSignal?.removeEventListener('abort', onAbort);
    try {
      o.store.flush();
    } finally {
      await o.store.stopWriterThread();
    }
  }
  const unreachable = stats.unreachable - unreachableBefore;
  if (!stop && unreachable > 0) {
    stop = {
      status: 'stopped',
      message: `${unreachable} item(s) got no answer after ${o.retry.maxRetries} retries; rerun the same command to retry them`,
    };
  }
  return stop;
}

interface ItemContext {
  o: LabelOptions;
  run: RunRow;
  budget: Budget;
  limiter: RateLimiter;
  stats: LabelStats;
  /**
   * Largest ratio seen of the server's prompt tokens to our estimate (servers count what we cannot see,
   * such as the response schema): reservations scale by it so that the cost cap holds.
   */
  promptScale: number;
  stopSignal: AbortSignal;
  isStopping: () => boolean;
  resumeAttempts: boolean;
}

/** Ask until a valid answer or `maxInvalid` invalid ones; store every paid answer. */
async function labelItem(ctx: ItemContext, item: ItemRow, req: TeacherRequest): Promise<void> {
  const { o, run, stats } = ctx;
  const totals = ctx.resumeAttempts ? priorAttempts(o.store, run.id, req.key) : freshTotals();
  for (;;) {
    if (ctx.isStopping()) return;
    const paid = await requestWithRetries(ctx, item, req);
    if (!paid) {
      // undefined also means "stopping": only an item whose retries ran out is unreachable.
      if (!ctx.isStopping()) stats.unreachable++;
      return;
    }
    const next = recordAnswer(o, run.id, item.id, req.key, paid, totals);
    if (next === 'labeled') stats.labeled++;
    if (next === 'failed') stats.failed++;
    if (next !== 'invalid') return;
  }
}

/** One paid answer, or undefined when every retry failed; fatal errors throw. */
async function requestWithRetries(ctx: ItemContext, item: ItemRow, req: TeacherRequest): Promise<Paid | undefined> {
  const { o, run, budget, limiter, stats } = ctx;
  for (let attempt = 0; ; attempt++) {
    if (ctx.isStopping()) return undefined;
    // The tokenizer runs only when a budget needs the estimate.
    const needsEstimate = o.maxCost !== undefined || o.limits.tpm !== undefined;
    const estPrompt = needsEstimate ? Math.ceil(req.promptTokens * ctx.promptScale) : 0;
    const worstCase = costOf(o.price, estPrompt, req.maxCompletionTokens);
    const estTokens = estPrompt + req.maxCompletionTokens;
    await budget.reserve(worstCase);
    let reserved = true;
    try {
      await limiter.acquire(estTokens, ctx.stopSignal);
      // Every answer already paid for is committed before another request starts, so that a kill loses only the
      // requests in flight. The writer thread commits the answers that arrived meanwhile together.
      await o.store.durable();
      // The wait for the budget or the rate limiter can outlast a stop (Ctrl-C, cost cap, fatal error): start nothing then.
      if (ctx.isStopping()) {
        budget.settle(worstCase, 0);
        return undefined;
      }
      stats.requests++;
      const { completion, latencyMs } = await o.client.complete(req.params);
      const promptTokens = completion.usage?.prompt_tokens ?? req.promptTokens;
      // 5% headroom over the worst ratio seen so far.
      if (needsEstimate && promptTokens > 0) ctx.promptScale = Math.max(ctx.promptScale, (1.05 * promptTokens) / req.promptTokens);
      const completionTokens = completion.usage?.completion_tokens ?? req.maxCompletionTokens;
      const cost = costOf(o.price, promptTokens, completionTokens);
      budget.settle(worstCase, cost);
      reserved = false;
      limiter.settle(estTokens, promptTokens + completionTokens);
      stats.cost += cost;
      stats.promptTokens += promptTokens;
      stats.completionTokens += completionTokens;
      return { completion, latencyMs, promptTokens, completionTokens, cost };
    } catch (e) {
      if (reserved) budget.settle(worstCase, 0);
      if (e instanceof BudgetExceeded) throw e;
      stats.errors++;
      const cls = classifyError(e);
      o.store.recordRequestError({
        runId: run.id,
        itemId: item.id,
        requestKey: req.key,
        reason: cls.kind === 'fatal' ? cls.error.message : cls.reason,
      });
      if (cls.kind === 'fatal') throw cls.error;
      if (cls.rateLimited && cls.waitMs !== undefined) limiter.pause(cls.waitMs);
      if (attempt >= o.retry.maxRetries) return undefined;
      await sleep(retryDelayMs(attempt, o.retry, cls.waitMs), ctx.stopSignal);
    }
  }
}
