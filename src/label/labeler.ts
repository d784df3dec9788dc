import pLimit from 'p-limit';
import type { ChatCompletion } from 'openai/resources/chat/completions';
import { BudgetExceeded, DistilleryError, TeacherError } from '../errors.ts';
import { canonicalJson } from '../input/canonical.ts';
import { defaultSoftFormat, encodeSoft, formatName, probsToLogprobs, type SoftFormat } from '../soft/codec.ts';
import { Lease } from '../store/lease.ts';
import type { ItemRow, RunRow, Store, TaskRow } from '../store/store.ts';
import { sha256Hex, type Task } from '../task/task.ts';
import { parseAnswer } from '../teacher/answer.ts';
import type { TeacherClient } from '../teacher/client.ts';
import { RequestBuilder, softModeName, type TeacherRequest, type TeacherSettings } from '../teacher/request.ts';
import { classifyError, retryDelayMs, type RetryPolicy } from '../teacher/retry.ts';
import { softLabelFromLogprobs, SoftLabelError } from '../teacher/soft-labels.ts';
import { BatchLedger, liveBatchKeys, priorAttempts } from '../batch/ledger.ts';
import { Budget, costOf, type Price } from './cost.ts';
import { RateLimiter, sleep, type RateLimits } from './rate-limit.ts';

export interface LabelOptions {
  store: Store;
  task: Task;
  taskRow: TaskRow;
  client: TeacherClient;
  settings: TeacherSettings;
  price: Price;
  concurrency: number;
  limits: RateLimits;
  retry: RetryPolicy;
  /** Invalid answers retried per item before it is recorded as failed. */
  maxInvalid: number;
  /** Try again items whose earlier answers were all invalid. */
  retryFailed: boolean;
  maxCost?: number;
  /** How soft labels are stored (the codec's format); default by the number of classes. */
  storeFormat?: SoftFormat;
  /** Items to label (internal ids); all items of the task when absent. */
  itemIds?: number[];
  limit?: number;
  progress?: ProgressSink;
  /** Aborted on the first Ctrl-C: no new request starts, answers in flight are kept. */
  stopSignal?: AbortSignal;
  /** Extra fields for the run's params (relabel: the policies and the selection). */
  runParams?: Record<string, unknown>;
  /** Called with the run once it is created or reopened, before any request is sent. */
  onRunOpened?: (run: RunRow) => void;
}

export interface ProgressSink {
  start(total: number, run: RunRow): void;
  update(s: LabelStats): void;
  stop(): void;
}

export interface LabelStats {
  total: number;
  labeled: number;
  failed: number;
  /** Items that got no answer after every retry: not paid, still pending. */
  unreachable: number;
  requests: number;
  errors: number;
  cost: number;
  promptTokens: number;
  completionTokens: number;
}

export interface Plan {
  configHash: string;
  /** Target items with no stored answer: what a run would send. */
  todo: number[];
  /** Their request keys, in the same order. */
  keys: string[];
  /** Target items already labeled under this configuration. */
  cached: number;
  /** Target items whose answers were all invalid (skipped unless --retry-failed). */
  failedBefore: number;
  /** Target items whose request is in a live Batch API job (not sent again until that job is collected). */
  inBatch: number;
  /** Estimates over `todo`. */
  promptTokens: number;
  expectedCompletionTokens: number;
  maxCompletionTokens: number;
}

export interface LabelResult {
  run?: RunRow;
  plan: Plan;
  stats: LabelStats;
  /** `pending` only from runBatchLabeling: batch jobs are still running at the API (a rerun collects them). */
  status: 'completed' | 'stopped' | 'interrupted' | 'failed' | 'nothing-to-do' | 'pending';
  message?: string;
}

export type StopStatus = { status: 'stopped' | 'interrupted' | 'failed'; message: string };

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
  for (let after = 0; ; ) {
    const page = o.store.itemPage(o.taskRow.id, after, PAGE);
    if (page.length === 0) return;
    yield* page;
    after = page[page.length - 1].id;
  }
}

/** Which target items need a request, and (with `estimate`) what they would cost. Sends nothing, writes nothing. */
export async function planLabeling(o: LabelOptions, estimate = true): Promise<Plan> {
  const builder = new RequestBuilder(o.task, o.settings);
  const plan: Plan = { configHash: configHash(o.task, o.settings), todo: [], keys: [], cached: 0, failedBefore: 0, inBatch: 0, promptTokens: 0, expectedCompletionTokens: 0, maxCompletionTokens: 0 };
  // Requests in a live batch job are paid for (or will be): neither mode sends them again until the job is collected.
  const inBatch = liveBatchKeys(o.store);
  const n = o.settings.soft.kind === 'samples' ? o.settings.soft.n : 1;
  const typicalAnswer = Math.round(o.task.labels.reduce((a, l) => a + JSON.stringify({ label: l }).length, 0) / o.task.labels.length / 3) + 1;
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
    const req = builder.build(item, o.task.input === 'image' && item.image ? o.store.blob(item.image) : undefined, key);
    plan.promptTokens += req.promptTokens;
    plan.expectedCompletionTokens += typicalAnswer * n;
    plan.maxCompletionTokens += req.maxCompletionTokens;
  }
  return plan;
}

/**
 * Label every target item that has no stored answer, at most `concurrency`
 * requests at a time, within the rate and cost budgets. Each paid answer is
 * committed as soon as it arrives, so a killed run loses at most the requests
 * in flight, and the same command resumes the same run.
 */
export function runLabeling(o: LabelOptions): Promise<LabelResult> {
  return underLabelLease(o, () => labelOnce(o));
}

/** A lease expires this long after its holder's last renewal (every third of it): how long a hung labeler blocks the next. */
const LABEL_LEASE_TTL_MS = 60_000;

/**
 * One labeling process per teacher configuration and database, live or batch: two would plan the same
 * items and pay for each twice. The second is refused with the holder named; a killed holder's lease is
 * taken over at once on the same host, and expires after a minute elsewhere.
 */
export async function underLabelLease<T>(o: LabelOptions, work: () => Promise<T>): Promise<T> {
  const lease = Lease.acquire(o.store, `labeling ${o.task.name} with ${o.settings.model} (config ${configHash(o.task, o.settings).slice(0, 12)})`, {
    ttlMs: LABEL_LEASE_TTL_MS,
    command: `label ${o.task.name} --model ${o.settings.model}`,
    hint: 'Let it finish (it labels the same items), or stop it; a killed labeler frees it at once on this host, after a minute elsewhere',
  });
  try {
    return await work();
  } finally {
    lease.release();
  }
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

export function emptyStats(total: number): LabelStats {
  return { total, labeled: 0, failed: 0, unreachable: 0, requests: 0, errors: 0, cost: 0, promptTokens: 0, completionTokens: 0 };
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
export async function labelLive(o: LabelOptions, run: RunRow, work: Pick<Plan, 'todo' | 'keys'>, lo: LiveOptions): Promise<StopStatus | undefined> {
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

  const ctx: ItemContext = { o, run, budget, limiter, stats, promptScale: 1, stopSignal: stopping.signal, isStopping: () => stop !== undefined, resumeAttempts: lo.resumeAttempts === true };
  try {
    const builder = new RequestBuilder(o.task, o.settings);
    let index = 0;
    for (const item of targetItems(o, work.todo)) {
      if (stop) break;
      const req = builder.build(item, o.task.input === 'image' && item.image ? o.store.blob(item.image) : undefined, work.keys[index++]);
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
    o.store.flush();
  }
  const unreachable = stats.unreachable - unreachableBefore;
  if (!stop && unreachable > 0) {
    stop = { status: 'stopped', message: `${unreachable} item(s) got no answer after ${o.retry.maxRetries} retries; rerun the same command to retry them` };
  }
  return stop;
}

/** The run these options label into: the unfinished run with the same configuration, else a new one. */
export function openRun(o: LabelOptions, plan: Plan, extraItems = 0): RunRow {
  const previous = o.store.resumableRun(plan.configHash);
  if (previous) {
    const done = o.store.db.prepare('SELECT count(DISTINCT item_id) AS n FROM labels WHERE run_id = ?').get(previous.id) as { n: number };
    o.store.reopenRun(previous.id, done.n + plan.todo.length + extraItems);
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

/** One paid answer and what it cost. */
export interface Paid {
  completion: ChatCompletion;
  latencyMs: number;
  promptTokens: number;
  completionTokens: number;
  cost: number;
}

/** What the answers to one request key have added up to in a run (the label row's totals). */
export interface AttemptTotals {
  promptTokens: number;
  completionTokens: number;
  cost: number;
  latencyMs: number;
  attempts: number;
  /** Invalid answers so far. */
  invalid: number;
  lastRaw: string | null;
  lastError: string;
}

export function freshTotals(): AttemptTotals {
  return { promptTokens: 0, completionTokens: 0, cost: 0, latencyMs: 0, attempts: 0, invalid: 0, lastRaw: null, lastError: '' };
}

/**
 * Record one paid answer to a request: its response row always, and a label row when it settles the item (a valid
 * answer, or the invalid answer beyond `maxInvalid`). The one place answers become labels, for the live path and the
 * batch ingest alike. `totals` (the key's earlier answers in this run) is updated. Returns what the item needs next;
 * throws the TeacherError of an answer that shows no request of this run can work (no logprobs), after storing it.
 */
export function recordAnswer(o: LabelOptions, runId: number, itemId: number, requestKey: string, paid: Paid, totals: AttemptTotals): 'labeled' | 'failed' | 'invalid' {
  totals.promptTokens += paid.promptTokens;
  totals.completionTokens += paid.completionTokens;
  totals.cost += paid.cost;
  totals.latencyMs += paid.latencyMs;
  totals.attempts++;
  const outcome = interpretCompletion(o, paid.completion);
  totals.lastRaw = outcome.raw;
  o.store.recordResponse({
    requestKey,
    runId,
    itemId,
    status: outcome.ok ? 'ok' : 'invalid',
    body: responseBody(paid.completion),
    promptTokens: paid.promptTokens,
    completionTokens: paid.completionTokens,
    cost: paid.cost,
    latencyMs: paid.latencyMs,
  });
  const { invalid: _invalid, lastRaw: _raw, lastError: _error, ...sums } = totals;
  if (outcome.ok) {
    o.store.recordLabel({ itemId, runId, requestKey, status: 'ok', label: outcome.label, soft: outcome.soft, softMethod: softModeName(o.settings.soft), sparse: outcome.sparse, raw: outcome.raw, ...sums, error: null });
    return 'labeled';
  }
  if (outcome.fatal) throw outcome.fatal;
  totals.lastError = outcome.error;
  if (++totals.invalid <= o.maxInvalid) return 'invalid';
  o.store.recordLabel({ itemId, runId, requestKey, status: 'failed', label: null, soft: null, softMethod: softModeName(o.settings.soft), sparse: false, raw: totals.lastRaw, ...sums, error: `${o.maxInvalid + 1} invalid answers; last: ${totals.lastError}` });
  return 'failed';
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
      // Commit the answers already paid for before paying for another, so that a kill loses only the requests
      // in flight. One turn of the event loop first lets answers that arrived together commit in one batch.
      await new Promise<void>((resolve) => setImmediate(resolve));
      o.store.flush();
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
      reserved = false;
      if (e instanceof BudgetExceeded) throw e;
      stats.errors++;
      const cls = classifyError(e);
      o.store.recordRequestError({ runId: run.id, itemId: item.id, requestKey: req.key, reason: cls.kind === 'fatal' ? cls.error.message : cls.reason });
      if (cls.kind === 'fatal') throw cls.error;
      if (cls.rateLimited && cls.waitMs !== undefined) limiter.pause(cls.waitMs);
      if (attempt >= o.retry.maxRetries) return undefined;
      await sleep(retryDelayMs(attempt, o.retry, cls.waitMs), ctx.stopSignal);
    }
  }
}

export type Outcome =
  | { ok: true; label: string; soft: Buffer | null; sparse: boolean; raw: string }
  | { ok: false; error: string; raw: string | null; fatal?: TeacherError };

function storeFormatOf(o: Pick<LabelOptions, 'task' | 'storeFormat'>): SoftFormat {
  return o.storeFormat ?? defaultSoftFormat(o.task.labels.length);
}

/** Turn a completion into a hard label and a distribution, per soft mode. */
export function interpretCompletion(o: Pick<LabelOptions, 'task' | 'settings' | 'storeFormat'>, completion: ChatCompletion): Outcome {
  const labels = o.task.labels;
  const mode = o.settings.soft;
  const first = completion.choices[0];
  const raw = first?.message?.content ?? null;
  if (mode.kind === 'samples') {
    const votes = completion.choices.map((c) => parseAnswer(c.message?.content, labels));
    const valid = votes.filter((v): v is { ok: true; label: string } => v.ok);
    if (valid.length === 0) return { ok: false, error: (votes[0] as { error: string } | undefined)?.error ?? 'no choices', raw };
    const counts = labels.map((l) => valid.filter((v) => v.label === l).length);
    const probs = counts.map((c) => c / valid.length);
    // Majority vote; a tie goes to the label that was sampled first.
    const best = Math.max(...counts);
    const hard = valid.find((v) => counts[labels.indexOf(v.label)] === best)!.label;
    return { ok: true, label: hard, soft: encodeSoft({ kind: 'probs', values: Float32Array.from(probs) }, storeFormatOf(o)), sparse: false, raw: JSON.stringify(completion.choices.map((c) => c.message?.content ?? null)) };
  }
  const parsed = parseAnswer(raw, labels);
  if (!parsed.ok) return { ok: false, error: parsed.error, raw };
  if (mode.kind === 'none') return { ok: true, label: parsed.label, soft: null, sparse: false, raw: raw! };
  const tokens = first.logprobs?.content;
  if (!tokens || tokens.length === 0) {
    return { ok: false, error: 'no logprobs in the answer', raw, fatal: new TeacherError('the server returned no logprobs; use --soft samples:N (self-consistency) or --soft none') };
  }
  try {
    const soft = softLabelFromLogprobs(tokens, labels);
    return { ok: true, label: parsed.label, soft: encodeSoft({ kind: 'logprobs', values: probsToLogprobs(soft.probs) }, storeFormatOf(o)), sparse: soft.sparse, raw: raw! };
  } catch (e) {
    if (e instanceof SoftLabelError) return { ok: false, error: `cannot read label probabilities: ${e.message}`, raw };
    throw e;
  }
}

/**
 * What is kept of a response: enough to recompute the labels (content and
 * token logprobs), nothing about the request's credentials. A token's `bytes`
 * are kept only where its text cannot stand for them (a split UTF-8
 * character shows as U+FFFD): that makes the stored body several times smaller.
 */
export function responseBody(c: ChatCompletion): unknown {
  return {
    id: c.id,
    model: c.model,
    usage: c.usage,
    choices: c.choices.map((ch) => ({ content: ch.message?.content ?? null, finish_reason: ch.finish_reason, logprobs: ch.logprobs?.content?.map(compactToken) ?? null })),
  };
}

type Logprob = { token: string; logprob: number; bytes?: number[] | null };

function compactLogprob(t: Logprob): Logprob {
  return t.token.includes('\uFFFD') && t.bytes ? { token: t.token, logprob: t.logprob, bytes: t.bytes } : { token: t.token, logprob: t.logprob };
}

function compactToken(t: Logprob & { top_logprobs?: Logprob[] }): unknown {
  return { ...compactLogprob(t), top_logprobs: (t.top_logprobs ?? []).map(compactLogprob) };
}

export { DistilleryError };
