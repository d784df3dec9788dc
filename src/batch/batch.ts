/**
 * Labeling through OpenAI's Batch API (half the price for work that can wait): the requests of a run go up as JSONL
 * files, one batch job each, are polled, and their output and error files are ingested with the live path's own
 * answer interpretation and recording (labeler.ts: recordAnswer). The job ledger (ledger.ts) makes it resumable: a
 * rerun polls the jobs it already created and never resubmits a request that is in a live job.
 */
import type { Batch } from 'openai/resources/batches';
import type { ChatCompletion } from 'openai/resources/chat/completions';
import { DistilleryError, TeacherError } from '../errors.ts';
import { batchPrice, costOf, type Price } from '../label/cost.ts';
import {
  emptyStats,
  labelLive,
  openRun,
  planLabeling,
  recordAnswer,
  targetItems,
  type LabelOptions,
  type LabelResult,
  type Plan,
  type StopStatus,
  underLabelLease,
} from '../label/labeler.ts';
import { sleep } from '../label/rate-limit.ts';
import type { ItemRow, RunRow } from '../store/store.ts';
import { RequestBuilder } from '../teacher/request.ts';
import { classifyError, retryDelayMs } from '../teacher/retry.ts';
import { BatchLedger, priorAttempts, TERMINAL, type JobRow } from './ledger.ts';

/** OpenAI's limits per batch file. */
export const BATCH_LIMITS = { maxRequests: 50_000, maxBytes: 200 * 1024 * 1024 } as const;

export interface BatchOptions {
  /** Poll until every job is collected (true), or collect what is finished, submit what is new, and return (false). */
  wait: boolean;
  pollIntervalMs: number;
  /** Split the work into jobs of at most this many requests and bytes of JSONL (default: OpenAI's limits). */
  maxRequests?: number;
  maxBytes?: number;
  /** Where requests that got no answer (or an invalid one) inside a batch are asked again: the next batch, or live. */
  retry: 'batch' | 'live';
  /** One line per job event (submitted, polled to a new state, ingested). */
  log?: (line: string) => void;
}

/** A LabelResult (status `pending`: jobs are still running at the API, after --no-poll or polls that kept failing) with the jobs. */
export interface BatchLabelResult extends LabelResult {
  jobs: { submitted: number; collected: number; pending: number; pendingRequests: number };
}

/** Consecutive polls whose API calls all failed (each after its retries) before a waiting run gives up for now. */
const MAX_TROUBLED_POLLS = 3;

/** The TeacherError of a request line that cannot work, kept to fail the run after the job is recorded. */
const FATAL_STATUS = (s: number) => s >= 400 && s < 500 && s !== 408 && s !== 409 && s !== 429;

interface BatchLine {
  custom_id?: string;
  response?: { status_code?: number; body?: unknown } | null;
  error?: { code?: string | null; message?: string | null } | null;
}

/** An API call that still failed after every retry: the job stays as it is, and the next poll tries again. */
class TransientBatchError extends DistilleryError {}

/**
 * Label the target items of `o` through the Batch API. The run is the same as the live path's (same configuration,
 * same request keys: a label paid for in one mode is never paid again in the other). Items already in a live job of
 * this configuration are not sent again; their jobs are polled and ingested first.
 */
export function runBatchLabeling(o: LabelOptions, b: BatchOptions): Promise<BatchLabelResult> {
  return underLabelLease(o, () => batchOnce(o, b));
}

async function batchOnce(o: LabelOptions, b: BatchOptions): Promise<BatchLabelResult> {
  const maxRequests = b.maxRequests ?? BATCH_LIMITS.maxRequests;
  const maxBytes = b.maxBytes ?? BATCH_LIMITS.maxBytes;
  const log = b.log ?? (() => {});
  const store = o.store;
  const ledger = new BatchLedger(store);
  const price = batchPrice(o.price);
  const builder = new RequestBuilder(o.task, o.settings);
  const unlimited: LabelOptions = { ...o, limit: undefined, runParams: { ...o.runParams, batch: true } };

  const firstPlan = await planLabeling(unlimited, false);
  const live0 = ledger.liveJobs(firstPlan.configHash);
  const plan: Plan = limitPlan(firstPlan, o.limit);
  const stats = emptyStats(plan.todo.length + plan.inBatch);
  const jobs = { submitted: 0, collected: 0, pending: 0, pendingRequests: 0 };
  if (plan.todo.length === 0 && live0.length === 0) {
    return { plan, stats, status: 'nothing-to-do', jobs };
  }

  // Only collecting the jobs of an earlier run (completed by a live pass since): reopen that run rather than start an empty one.
  let run: RunRow;
  if (plan.todo.length === 0 && live0.every((j) => j.run_id === live0[0].run_id)) {
    run = store.run(live0[0].run_id)!;
    store.reopenRun(run.id, run.items_total);
    run = store.run(run.id)!;
  } else {
    run = openRun(unlimited, plan, plan.inBatch);
  }
  o.onRunOpened?.(run);

  let stop: StopStatus | undefined;
  const stopWith = (s: StopStatus) => (stop ??= s);
  const interrupted = () => o.stopSignal?.aborted === true;
  let fatal: string | undefined;
  let budgetMessage: string | undefined;
  let unreachable = 0;
  // Keys this invocation is done with (settled, or sent live): never planned again in this invocation.
  const settled = new Set<string>();
  // Keys submitted by this invocation, for --limit (retries of them do not count again).
  const touched = new Set<string>();

  /** An API call with the live path's retry policy; fatal errors (401, 400, quota) throw TeacherError. */
  async function api<T>(what: string, call: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await call();
      } catch (e) {
        const cls = classifyError(e);
        if (cls.kind === 'fatal') throw new TeacherError(`batch ${what}: ${cls.error.message}`);
        if (attempt >= o.retry.maxRetries || interrupted()) throw new TransientBatchError(`batch ${what}: ${cls.reason}`);
        await sleep(retryDelayMs(attempt, o.retry, cls.waitMs), o.stopSignal);
      }
    }
  }

  /** One request line of the JSONL: the custom_id is the request key. */
  function line(item: ItemRow, key: string): { text: string; estPrompt: number; maxCompletion: number } {
    const req = builder.build(item, o.task.input === 'image' && item.image ? store.blob(item.image) : undefined, key);
    const text = JSON.stringify({ custom_id: key, method: 'POST', url: '/v1/chat/completions', body: req.params });
    return { text, estPrompt: o.maxCost !== undefined ? req.promptTokens : 0, maxCompletion: req.maxCompletionTokens };
  }

  /** The JSONL of a job from the ledger (after a crash between writing the job and uploading it). */
  function rebuild(job: JobRow): Buffer {
    const reqs = ledger.requests(job.id);
    const items = store.itemsByIds(reqs.map((r) => r.item_id));
    const lines = reqs.map((r, i) => {
      if (builder.key(items[i]) !== r.request_key) throw new DistilleryError(`batch job ${job.id}: item ${items[i].ext_id} no longer has the request key it was submitted with`);
      return line(items[i], r.request_key).text;
    });
    return Buffer.from(lines.join('\n') + '\n');
  }

  /** Move a job one step on: upload, create, or poll (and ingest when the API is done with it). */
  async function advance(job: JobRow, content?: Buffer, fresh = false): Promise<void> {
    const resumed = !fresh;
    if (job.state === 'preparing') {
      const file = await api('upload', () => o.client.uploadBatchFile(`distillery-job-${job.token}.jsonl`, content ?? rebuild(job)));
      ledger.setUploaded(job.id, file.id);
      job = ledger.job(job.id)!;
    }
    if (job.state === 'uploaded') {
      // A batch created just before a crash (its id never recorded) is found by the token in its metadata.
      const existing = resumed ? (await api('list', () => o.client.recentBatches(1000))).find((x) => x.metadata?.distillery_job === job.token) : undefined;
      const batch = existing ?? (await api('create', () => o.client.createBatch(job.input_file_id!, { distillery_job: job.token, distillery_run: String(job.run_id) })));
      ledger.setSubmitted(job.id, batch.id, batch.status);
      log(`batch job ${job.id}: ${existing ? 'found' : 'submitted'} ${batch.id} (${job.requests} requests, ${(job.bytes / 1e6).toFixed(2)} MB) — ${batch.status}`);
      return; // polled on the next pass
    }
    if (job.state === 'submitted') {
      const batch = await api('retrieve', () => o.client.retrieveBatch(job.batch_id!));
      if (batch.status !== job.remote_status) log(`batch job ${job.id}: ${job.batch_id} ${batch.status}`);
      ledger.setRemote(job.id, batch);
      if (TERMINAL.has(batch.status)) await ingest(ledger.job(job.id)!, batch);
    }
  }

  /** Read a finished job's output and error files and record every request of it, in one transaction. */
  async function ingest(job: JobRow, batch: Batch): Promise<void> {
    const lines = new Map<string, BatchLine>();
    for (const fileId of [batch.output_file_id, batch.error_file_id]) {
      if (!fileId) continue;
      const text = await api('download', () => o.client.fileText(fileId));
      for (const raw of text.split('\n')) {
        if (raw.trim() === '') continue;
        let parsed: BatchLine;
        try {
          parsed = JSON.parse(raw) as BatchLine;
        } catch {
          continue; // a line we cannot read is a request without an answer: retried
        }
        // An answer wins over an error line for the same request.
        if (typeof parsed.custom_id === 'string' && !(lines.get(parsed.custom_id)?.response?.status_code === 200)) lines.set(parsed.custom_id, parsed);
      }
    }
    const failedBatch = batch.status === 'failed';
    // What the API wrote is stored and printed: without the key, should a server quote it.
    const batchErrors = o.client.redact((batch.errors?.data ?? []).map((e) => `${e.code ?? 'error'}: ${e.message ?? ''}`.trim()).join('; '));
    const n = { answered: 0, invalid: 0, failed: 0, missing: 0 };
    let cost = 0;
    let jobFatal: string | undefined;
    const ro: LabelOptions = { ...o, progress: undefined };
    store.flush();
    store.db.transaction(() => {
      for (const r of ledger.requests(job.id)) {
        if (r.state !== 'pending') continue;
        const l = lines.get(r.request_key);
        const resp = l?.response;
        if (resp && resp.status_code === 200 && resp.body && typeof resp.body === 'object') {
          const completion = resp.body as ChatCompletion;
          const promptTokens = completion.usage?.prompt_tokens ?? r.est_prompt;
          const completionTokens = completion.usage?.completion_tokens ?? builder.maxCompletionTokens;
          const c = costOf(price, promptTokens, completionTokens);
          cost += c;
          stats.requests++;
          stats.cost += c;
          stats.promptTokens += promptTokens;
          stats.completionTokens += completionTokens;
          let next: 'labeled' | 'failed' | 'invalid' | 'error';
          try {
            next = recordAnswer(ro, job.run_id, r.item_id, r.request_key, { completion, latencyMs: 0, promptTokens, completionTokens, cost: c }, priorAttempts(store, job.run_id, r.request_key));
          } catch (e) {
            if (!(e instanceof TeacherError)) throw e;
            jobFatal ??= e.message;
            next = 'error';
          }
          if (next === 'labeled') (n.answered++, stats.labeled++);
          else if (next === 'failed') (n.invalid++, stats.failed++);
          else n.invalid++;
          if (next !== 'invalid') settled.add(r.request_key);
          ledger.setRequest(job.id, r.request_key, next === 'labeled' ? 'answered' : next === 'error' ? 'error' : 'invalid', promptTokens, null);
          continue;
        }
        // No answer: an error line (the request failed, or the batch expired or was cancelled before it ran) or no line at all.
        const status = resp?.status_code;
        const err = l?.error ?? ((resp?.body as { error?: { code?: string; message?: string } } | undefined)?.error ?? null);
        const errMessage = o.client.redact(String(err?.message ?? 'no answer'));
        const reason = l
          ? `batch ${job.batch_id}: ${status ?? ''} ${err?.code ?? ''} ${errMessage}`.replace(/\s+/g, ' ')
          : `batch ${job.batch_id} ${batch.status}${failedBatch && batchErrors ? ` (${batchErrors})` : ''}: no answer`;
        const lineFatal = status !== undefined && FATAL_STATUS(status);
        if (lineFatal) jobFatal ??= `the teacher answered a batch request with ${status}: ${errMessage}`;
        if (l) stats.requests++;
        stats.errors++;
        n.failed += l ? 1 : 0;
        n.missing += l ? 0 : 1;
        store.recordRequestError({ runId: job.run_id, itemId: r.item_id, requestKey: r.request_key, reason: reason.slice(0, 500) });
        // A batch that failed as a whole, or a request that cannot work, is not a retry to count: the run fails, and a rerun resubmits.
        ledger.setRequest(job.id, r.request_key, lineFatal || failedBatch ? 'error' : 'failed', null, reason.slice(0, 500));
      }
      const message =
        `${batch.status}: ${n.answered} labeled, ${n.invalid} invalid, ${n.failed} failed, ${n.missing} without an answer` + (batchErrors ? `; ${batchErrors}` : '');
      ledger.finishJob(job.id, cost, message.slice(0, 1000));
      store.flush();
    }).immediate();
    jobs.collected++;
    log(`batch job ${job.id}: ingested ${job.batch_id} (${batch.status}): ${n.answered} labeled, ${n.invalid} invalid, ${n.failed} failed, ${n.missing} without an answer, $${cost.toFixed(4)}`);
    if (failedBatch) fatal ??= `batch ${job.batch_id} failed${batchErrors ? `: ${batchErrors}` : ''}; its ${job.requests} request(s) are sent again on the next run`;
    if (jobFatal) fatal ??= jobFatal;
  }

  /** Submit `work` as jobs within the request, byte and cost limits. Returns how many jobs were created. */
  async function submit(work: Pick<Plan, 'todo' | 'keys'>): Promise<number> {
    if (work.todo.length === 0) return 0;
    budgetMessage = undefined;
    const scale = ledger.promptScale(run.id);
    const headroom = scale > 1 ? scale * 1.05 : 1;
    let available = o.maxCost === undefined ? Infinity : o.maxCost - store.runCost(run.id) - ledger.reservedFor(run.id);
    let created = 0;
    let chunk: Array<{ key: string; itemId: number; estPrompt: number; worst: number }> = [];
    let texts: string[] = [];
    let bytes = 0;
    const flush = async () => {
      if (chunk.length === 0) return;
      const { job, dropped } = ledger.createJob(run.id, chunk, bytes);
      // Requests another process submitted meanwhile are left out: the file is then rebuilt from the ledger.
      const content = dropped === 0 ? Buffer.from(texts.join('\n') + '\n') : undefined;
      for (const c of chunk) touched.add(c.key);
      chunk = [];
      texts = [];
      bytes = 0;
      if (!job) return;
      created++;
      jobs.submitted++;
      try {
        await advance(job, content, true);
      } catch (e) {
        if (!(e instanceof TransientBatchError)) throw e;
        log(`batch job ${job.id}: ${e.message}; tried again on the next poll`);
      }
    };
    let i = 0;
    for (const item of targetItems(o, work.todo)) {
      const key = work.keys[i++];
      if (interrupted()) break;
      const l = line(item, key);
      const size = Buffer.byteLength(l.text) + 1;
      if (size > maxBytes) throw new DistilleryError(`item ${item.ext_id}: its batch request is ${size} bytes, more than the ${maxBytes} allowed in a batch file`);
      const worst = o.maxCost === undefined ? 0 : costOf(price, Math.ceil(l.estPrompt * headroom), l.maxCompletion);
      if (worst > available + 1e-12) {
        budgetMessage = `cost cap reached: $${(o.maxCost! - available).toFixed(4)} spent or reserved, the next batch request could cost up to $${worst.toFixed(4)} (batch price), cap $${o.maxCost}`;
        break;
      }
      if (chunk.length >= maxRequests || bytes + size > maxBytes) await flush();
      available -= worst;
      chunk.push({ key, itemId: item.id, estPrompt: l.estPrompt, worst });
      texts.push(l.text);
      bytes += size;
    }
    await flush();
    return created;
  }

  let apiTrouble: string | undefined;
  try {
    let replan = false;
    let troubledPasses = 0;
    for (let pass = 0; ; pass++) {
      // 1. Poll the live jobs of this configuration (upload or create those a crash left half-done); ingest finished ones.
      const collectedBefore = jobs.collected;
      let trouble: string | undefined;
      for (const job of ledger.liveJobs(plan.configHash)) {
        if (interrupted()) break;
        try {
          await advance(job);
        } catch (e) {
          if (!(e instanceof TransientBatchError)) throw e;
          trouble = e.message;
          log(`batch job ${job.id}: ${e.message}; tried again on the next poll`);
        }
      }
      // Waiting out an API that keeps failing (after every retry of every call) for more than a few polls: give up, the jobs stay pending.
      troubledPasses = trouble ? troubledPasses + 1 : 0;
      if (troubledPasses >= MAX_TROUBLED_POLLS) {
        apiTrouble = trouble;
        break;
      }
      if (interrupted()) break;
      if (fatal) break;
      replan ||= jobs.collected > collectedBefore;

      // 2. What to send: on the first pass the plan, later what came back from the jobs just collected.
      const work: Pick<Plan, 'todo' | 'keys'> = replan ? await nextWork() : pass === 0 ? plan : { todo: [], keys: [] };
      replan = false;
      const fresh: Pick<Plan, 'todo' | 'keys'> = { todo: [], keys: [] };
      const again: Pick<Plan, 'todo' | 'keys'> = { todo: [], keys: [] };
      for (let i = 0; i < work.todo.length; i++) {
        const key = work.keys[i];
        if (ledger.failures(run.id, key) > o.retry.maxRetries) {
          if (!settled.has(key)) unreachable++;
          settled.add(key);
          continue;
        }
        const target = b.retry === 'live' && ledger.wasBatched(run.id, key) ? again : fresh;
        target.todo.push(work.todo[i]);
        target.keys.push(key);
      }

      // 3. Items that failed inside a batch, asked live (--batch-retry live): the live path, at the live price.
      if (again.todo.length > 0) {
        for (const k of again.keys) settled.add(k);
        log(`asking ${again.todo.length} item(s) again live`);
        const s = await labelLive({ ...o, progress: undefined }, run, again, { stats, reservedElsewhere: ledger.reservedFor(run.id), resumeAttempts: true });
        if (s) stopWith(s);
        if (stop) break;
      }

      // 4. New jobs.
      await submit(fresh);
      if (!b.wait || ledger.liveJobs(plan.configHash).length === 0 || interrupted()) break;
      await sleep(b.pollIntervalMs, o.stopSignal);
    }
  } catch (e) {
    if (e instanceof TeacherError) fatal ??= e.message;
    else {
      store.flush();
      store.finishRun(run.id, 'failed', (e as Error).message.slice(0, 1000));
      throw e;
    }
  } finally {
    store.flush();
  }

  /** Every target item without a label and not in a live job, minus those this invocation is done with; within --limit. */
  async function nextWork(): Promise<Pick<Plan, 'todo' | 'keys'>> {
    const p = await planLabeling(unlimited, false);
    const out: Pick<Plan, 'todo' | 'keys'> = { todo: [], keys: [] };
    let newOnes = 0;
    for (let i = 0; i < p.todo.length; i++) {
      const key = p.keys[i];
      if (settled.has(key)) continue;
      if (o.limit !== undefined && !touched.has(key) && touched.size + newOnes >= o.limit) continue;
      if (!touched.has(key)) newOnes++;
      out.todo.push(p.todo[i]);
      out.keys.push(key);
    }
    return out;
  }

  const pending = ledger.liveJobs(plan.configHash);
  jobs.pending = pending.length;
  jobs.pendingRequests = pending.reduce((a, j) => a + j.requests, 0);
  let status: BatchLabelResult['status'];
  let message: string | undefined;
  if (fatal) [status, message] = ['failed', fatal];
  else if (stop) [status, message] = [stop.status, stop.message];
  else if (interrupted()) [status, message] = ['interrupted', `interrupted; ${jobs.pending} batch job(s) keep running at the API: rerun the same command to collect them`];
  else if (budgetMessage) [status, message] = ['stopped', budgetMessage + (jobs.pending ? `; ${jobs.pending} batch job(s) pending` : '')];
  else if (jobs.pending > 0) {
    status = 'pending';
    message = `${jobs.pending} batch job(s) (${jobs.pendingRequests} requests) pending${apiTrouble ? ` (the API kept failing: ${apiTrouble})` : ''}; rerun the same command to collect them`;
  }
  else if (unreachable > 0) [status, message] = ['stopped', `${unreachable} item(s) got no answer in ${o.retry.maxRetries + 1} batches; rerun the same command to retry them`];
  else status = 'completed';
  // The run's own record knows no "pending": a run with live jobs is stopped (a rerun resumes it), never completed.
  store.finishRun(run.id, status === 'pending' ? 'stopped' : status, message ?? null);
  return { run: store.run(run.id), plan, stats, status, message, jobs };
}

/** The plan cut to --limit items (the rest are left for another invocation). */
function limitPlan(p: Plan, limit: number | undefined): Plan {
  if (limit === undefined || p.todo.length <= limit) return p;
  return { ...p, todo: p.todo.slice(0, limit), keys: p.keys.slice(0, limit) };
}

/** The batch price of a run, for dry runs and summaries. */
export function batchPriceOf(o: Pick<LabelOptions, 'price'>): Price {
  return batchPrice(o.price);
}
