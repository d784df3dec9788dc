/**
 * One invocation of the Batch API path, as an object whose methods are its steps. Each round: collect (poll the live
 * jobs of the configuration, ingest the finished ones), choose the work (the plan first, later what came back
 * unsettled), ask live what is retried live, and submit the rest as new jobs. The answers of a job are recorded
 * with the live path's own interpretation (../label/record.ts); the ledger (ledger.ts) makes every step resumable.
 */
import type { Batch } from 'openai/resources/batches';
import type { ChatCompletion } from 'openai/resources/chat/completions';
import { DistilleryError, TeacherError } from '../errors.ts';
import { batchPrice, costOf, type Price } from '../label/cost.ts';
import { labelLive } from '../label/live.ts';
import { limitPlan, planLabeling, requestFor, targetItems } from '../label/plan.ts';
import { sleep } from '../label/rate-limit.ts';
import { priorAttempts, recordAnswer } from '../label/record.ts';
import { openRun } from '../label/run.ts';
import { emptyStats, type LabelOptions, type LabelStats, type Plan, type StopStatus, type Work } from '../label/types.ts';
import type { ItemRow, RunRow, Store } from '../store/store.ts';
import { RequestBuilder } from '../teacher/request.ts';
import { classifyError, retryDelayMs } from '../teacher/retry.ts';
import { BatchLedger, TERMINAL, type JobRequestRow, type JobRow } from '../store/batch-ledger.ts';
import { BATCH_LIMITS, type BatchJobCounts, type BatchLabelResult, type BatchOptions } from './types.ts';

/** Consecutive polls whose API calls all failed (each after its retries) before a waiting run gives up for now. */
const MAX_TROUBLED_POLLS = 3;

/** The TeacherError of a request line that cannot work, kept to fail the run after the job is recorded. */
const FATAL_STATUS = (s: number) => s >= 400 && s < 500 && s !== 408 && s !== 409 && s !== 429;

interface BatchLine {
  custom_id?: string;
  response?: { status_code?: number; body?: unknown } | null;
  error?: { code?: string | null; message?: string | null } | null;
}

/** What the ingest of one job found. */
interface Tally {
  answered: number;
  invalid: number;
  failed: number;
  missing: number;
  cost: number;
  /** The first answer or error line showing that no request of the run can work. */
  fatal?: string;
}

/** An API call that still failed after every retry: the job stays as it is, and the next poll tries again. */
class TransientBatchError extends DistilleryError {}

export class BatchPass {
  private readonly store: Store;
  private readonly ledger: BatchLedger;
  private readonly price: Price;
  private readonly builder: RequestBuilder;
  /** The options for planning and for the live retries: no progress bar, and --limit kept by this pass (`touched`). */
  private readonly unlimited: LabelOptions;
  private readonly maxRequests: number;
  private readonly maxBytes: number;
  private readonly log: (line: string) => void;

  private readonly stats: LabelStats;
  private readonly jobs: BatchJobCounts = { submitted: 0, collected: 0, pending: 0, pendingRequests: 0 };
  private stop: StopStatus | undefined;
  private fatal: string | undefined;
  private budgetMessage: string | undefined;
  /** Why the polls gave up, when the API kept failing. */
  private apiTrouble: string | undefined;
  private unreachable = 0;
  /** Keys this invocation is done with (settled, or sent live): never planned again in this invocation. */
  private readonly settled = new Set<string>();
  /** Keys submitted by this invocation, for --limit (retries of them do not count again). */
  private readonly touched = new Set<string>();
  private round = 0;
  private troubledPolls = 0;
  /** Jobs were ingested since the work was last chosen: plan again. */
  private replan = false;

  /**
   * Plan the pass and open its run, then go through the rounds. Items already in a live job of this configuration
   * are not sent again; their jobs are polled and ingested first.
   */
  static async label(o: LabelOptions, b: BatchOptions): Promise<BatchLabelResult> {
    const unlimited = BatchPass.unlimitedOptions(o);
    const firstPlan = await planLabeling(unlimited, false);
    const live = new BatchLedger(o.store).liveJobs(firstPlan.configHash);
    const plan = limitPlan(firstPlan, o.limit);
    const stats = emptyStats(plan.todo.length + plan.inBatch);
    if (plan.todo.length === 0 && live.length === 0) {
      return { plan, stats, status: 'nothing-to-do', jobs: { submitted: 0, collected: 0, pending: 0, pendingRequests: 0 } };
    }
    const run = BatchPass.openRun(unlimited, plan, live);
    o.onRunOpened?.(run);
    return new BatchPass(o, b, plan, run, stats).execute();
  }

  private static unlimitedOptions(o: LabelOptions): LabelOptions {
    return { ...o, limit: undefined, progress: undefined, runParams: { ...o.runParams, batch: true } };
  }

  /** Only collecting the jobs of an earlier run (completed by a live pass since): reopen that run rather than start an empty one. */
  private static openRun(unlimited: LabelOptions, plan: Plan, live: JobRow[]): RunRow {
    const store = unlimited.store;
    if (plan.todo.length === 0 && live.every((j) => j.run_id === live[0].run_id)) {
      const earlier = store.run(live[0].run_id)!;
      store.reopenRun(earlier.id, earlier.items_total);
      return store.run(earlier.id)!;
    }
    return openRun(unlimited, plan, plan.inBatch);
  }

  private constructor(
    private readonly o: LabelOptions,
    private readonly b: BatchOptions,
    private readonly plan: Plan,
    private readonly run: RunRow,
    stats: LabelStats,
  ) {
    this.store = o.store;
    this.ledger = new BatchLedger(o.store);
    this.price = batchPrice(o.price);
    this.builder = new RequestBuilder(o.task, o.settings);
    this.unlimited = BatchPass.unlimitedOptions(o);
    this.maxRequests = b.maxRequests ?? BATCH_LIMITS.maxRequests;
    this.maxBytes = b.maxBytes ?? BATCH_LIMITS.maxBytes;
    this.log = b.log ?? (() => {});
    this.stats = stats;
  }

  private get interrupted(): boolean {
    return this.o.stopSignal?.aborted === true;
  }

  /** Round after round until every job is collected (or, without `wait`, one round); then finish the run. */
  private async execute(): Promise<BatchLabelResult> {
    try {
      for (; ; this.round++) {
        if (!(await this.collect())) break;
        const { fresh, again } = this.split(await this.chooseWork());
        if (again.todo.length > 0 && !(await this.askLive(again))) break;
        await this.submit(fresh);
        if (!this.b.wait || this.ledger.liveJobs(this.plan.configHash).length === 0 || this.interrupted) break;
        await sleep(this.b.pollIntervalMs, this.o.stopSignal);
      }
    } catch (e) {
      if (e instanceof TeacherError) this.fatal ??= e.message;
      else {
        this.store.flush();
        this.store.finishRun(this.run.id, 'failed', (e as Error).message.slice(0, 1000));
        throw e;
      }
    } finally {
      this.store.flush();
    }
    return this.finish();
  }

  /**
   * Step 1: poll the live jobs of this configuration (upload or create those a crash left half-done) and ingest the
   * finished ones. False when the pass should stop here (interrupted, a fatal answer, an API that keeps failing).
   */
  private async collect(): Promise<boolean> {
    const collectedBefore = this.jobs.collected;
    let trouble: string | undefined;
    for (const job of this.ledger.liveJobs(this.plan.configHash)) {
      if (this.interrupted) break;
      try {
        await this.advance(job);
      } catch (e) {
        if (!(e instanceof TransientBatchError)) throw e;
        trouble = e.message;
        this.log(`batch job ${job.id}: ${e.message}; tried again on the next poll`);
      }
    }
    // Waiting out an API that keeps failing (after every retry of every call) for more than a few polls: give up, the jobs stay pending.
    this.troubledPolls = trouble ? this.troubledPolls + 1 : 0;
    if (this.troubledPolls >= MAX_TROUBLED_POLLS) {
      this.apiTrouble = trouble;
      return false;
    }
    if (this.interrupted || this.fatal) return false;
    this.replan ||= this.jobs.collected > collectedBefore;
    return true;
  }

  /** Step 2: what to send: on the first round the plan, later what came back from the jobs just collected. */
  private async chooseWork(): Promise<Work> {
    const work = this.replan ? await this.nextWork() : this.round === 0 ? this.plan : { todo: [], keys: [] };
    this.replan = false;
    return work;
  }

  /** Every target item without a label and not in a live job, minus those this invocation is done with; within --limit. */
  private async nextWork(): Promise<Work> {
    const p = await planLabeling(this.unlimited, false);
    const out: Work = { todo: [], keys: [] };
    const limit = this.o.limit;
    let newOnes = 0;
    for (let i = 0; i < p.todo.length; i++) {
      const key = p.keys[i];
      if (this.settled.has(key)) continue;
      if (limit !== undefined && !this.touched.has(key) && this.touched.size + newOnes >= limit) continue;
      if (!this.touched.has(key)) newOnes++;
      out.todo.push(p.todo[i]);
      out.keys.push(key);
    }
    return out;
  }

  /** Drop the keys that ran out of batch retries; of the rest, those to ask again live (--batch-retry live) and those for new jobs. */
  private split(work: Work): { fresh: Work; again: Work } {
    const fresh: Work = { todo: [], keys: [] };
    const again: Work = { todo: [], keys: [] };
    for (let i = 0; i < work.todo.length; i++) {
      const key = work.keys[i];
      if (this.ledger.failures(this.run.id, key) > this.o.retry.maxRetries) {
        if (!this.settled.has(key)) this.unreachable++;
        this.settled.add(key);
        continue;
      }
      const target = this.b.retry === 'live' && this.ledger.wasBatched(this.run.id, key) ? again : fresh;
      target.todo.push(work.todo[i]);
      target.keys.push(key);
    }
    return { fresh, again };
  }

  /** Step 3: items that failed inside a batch, asked live: the live path, at the live price. False when that stopped the pass. */
  private async askLive(again: Work): Promise<boolean> {
    for (const k of again.keys) this.settled.add(k);
    this.log(`asking ${again.todo.length} item(s) again live`);
    const s = await labelLive({ ...this.o, progress: undefined }, this.run, again, {
      stats: this.stats,
      reservedElsewhere: this.ledger.reservedFor(this.run.id),
      resumeAttempts: true,
    });
    if (s) this.stop ??= s;
    return this.stop === undefined;
  }

  /** Step 4: submit `work` as new jobs within the request, byte and cost limits. Returns how many jobs were created. */
  private async submit(work: Work): Promise<number> {
    if (work.todo.length === 0) return 0;
    const { o, ledger, store, run } = this;
    this.budgetMessage = undefined;
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
      for (const c of chunk) this.touched.add(c.key);
      chunk = [];
      texts = [];
      bytes = 0;
      if (!job) return;
      created++;
      this.jobs.submitted++;
      try {
        await this.advance(job, content, true);
      } catch (e) {
        if (!(e instanceof TransientBatchError)) throw e;
        this.log(`batch job ${job.id}: ${e.message}; tried again on the next poll`);
      }
    };
    let i = 0;
    for (const item of targetItems(o, work.todo)) {
      const key = work.keys[i++];
      if (this.interrupted) break;
      const l = this.line(item, key);
      const size = Buffer.byteLength(l.text) + 1;
      if (size > this.maxBytes)
        throw new DistilleryError(
          `item ${item.ext_id}: its batch request is ${size} bytes, more than the ${this.maxBytes} allowed in a batch file`,
        );
      const worst = o.maxCost === undefined ? 0 : costOf(this.price, Math.ceil(l.estPrompt * headroom), l.maxCompletion);
      if (worst > available + 1e-12) {
        this.budgetMessage =
          `cost cap reached: $${(o.maxCost! - available).toFixed(4)} spent or reserved, ` +
          `the next batch request could cost up to $${worst.toFixed(4)} (batch price), cap $${o.maxCost}`;
        break;
      }
      if (chunk.length >= this.maxRequests || bytes + size > this.maxBytes) await flush();
      available -= worst;
      chunk.push({ key, itemId: item.id, estPrompt: l.estPrompt, worst });
      texts.push(l.text);
      bytes += size;
    }
    await flush();
    return created;
  }

  /** One request line of the JSONL: the custom_id is the request key. */
  private line(item: ItemRow, key: string): { text: string; estPrompt: number; maxCompletion: number } {
    const req = requestFor(this.o, this.builder, item, key);
    const text = JSON.stringify({ custom_id: key, method: 'POST', url: '/v1/chat/completions', body: req.params });
    return { text, estPrompt: this.o.maxCost !== undefined ? req.promptTokens : 0, maxCompletion: req.maxCompletionTokens };
  }

  /** The JSONL of a job from the ledger (after a crash between writing the job and uploading it). */
  private rebuild(job: JobRow): Buffer {
    const reqs = this.ledger.requests(job.id);
    const items = this.store.itemsByIds(reqs.map((r) => r.item_id));
    const lines = reqs.map((r, i) => {
      if (this.builder.key(items[i]) !== r.request_key)
        throw new DistilleryError(`batch job ${job.id}: item ${items[i].ext_id} no longer has the request key it was submitted with`);
      return this.line(items[i], r.request_key).text;
    });
    return Buffer.from(lines.join('\n') + '\n');
  }

  /** An API call with the live path's retry policy; fatal errors (401, 400, quota) throw TeacherError. */
  private async api<T>(what: string, call: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await call();
      } catch (e) {
        const cls = classifyError(e);
        if (cls.kind === 'fatal') throw new TeacherError(`batch ${what}: ${cls.error.message}`);
        if (attempt >= this.o.retry.maxRetries || this.interrupted) throw new TransientBatchError(`batch ${what}: ${cls.reason}`);
        await sleep(retryDelayMs(attempt, this.o.retry, cls.waitMs), this.o.stopSignal);
      }
    }
  }

  /** Move a job one step on: upload, create, or poll (and ingest when the API is done with it). */
  private async advance(job: JobRow, content?: Buffer, fresh = false): Promise<void> {
    const { client } = this.o;
    if (job.state === 'preparing') {
      const file = await this.api('upload', () =>
        client.uploadBatchFile(`distillery-job-${job.token}.jsonl`, content ?? this.rebuild(job)),
      );
      this.ledger.setUploaded(job.id, file.id);
      job = this.ledger.job(job.id)!;
    }
    if (job.state === 'uploaded') {
      // A batch created just before a crash (its id never recorded) is found by the token in its metadata.
      const existing = fresh
        ? undefined
        : (await this.api('list', () => client.recentBatches(1000))).find((x) => x.metadata?.distillery_job === job.token);
      const batch =
        existing ??
        (await this.api('create', () =>
          client.createBatch(job.input_file_id!, { distillery_job: job.token, distillery_run: String(job.run_id) }),
        ));
      this.ledger.setSubmitted(job.id, batch.id, batch.status);
      this.log(
        `batch job ${job.id}: ${existing ? 'found' : 'submitted'} ${batch.id} (${job.requests} requests, ${(job.bytes / 1e6).toFixed(2)} MB) — ${batch.status}`,
      );
      return; // polled on the next round
    }
    if (job.state === 'submitted') {
      const batch = await this.api('retrieve', () => client.retrieveBatch(job.batch_id!));
      if (batch.status !== job.remote_status) this.log(`batch job ${job.id}: ${job.batch_id} ${batch.status}`);
      this.ledger.setRemote(job.id, batch);
      if (TERMINAL.has(batch.status)) await this.ingest(this.ledger.job(job.id)!, batch);
    }
  }

  /** The output and error lines of a finished job, by request key; an answer wins over an error line for the same request. */
  private async download(batch: Batch): Promise<Map<string, BatchLine>> {
    const lines = new Map<string, BatchLine>();
    for (const fileId of [batch.output_file_id, batch.error_file_id]) {
      if (!fileId) continue;
      const text = await this.api('download', () => this.o.client.fileText(fileId));
      for (const raw of text.split('\n')) {
        if (raw.trim() === '') continue;
        let parsed: BatchLine;
        try {
          parsed = JSON.parse(raw) as BatchLine;
        } catch {
          continue; // a line we cannot read is a request without an answer: retried
        }
        if (typeof parsed.custom_id === 'string' && !(lines.get(parsed.custom_id)?.response?.status_code === 200))
          lines.set(parsed.custom_id, parsed);
      }
    }
    return lines;
  }

  /** Read a finished job's output and error files and record every request of it, in one transaction. */
  private async ingest(job: JobRow, batch: Batch): Promise<void> {
    const lines = await this.download(batch);
    const failedBatch = batch.status === 'failed';
    // What the API wrote is stored and printed: without the key, should a server quote it.
    const batchErrors = this.o.client.redact(
      (batch.errors?.data ?? []).map((e) => `${e.code ?? 'error'}: ${e.message ?? ''}`.trim()).join('; '),
    );
    const n: Tally = { answered: 0, invalid: 0, failed: 0, missing: 0, cost: 0 };
    this.store.flush();
    this.store.transactionSync(() => {
      for (const r of this.ledger.requests(job.id)) {
        if (r.state !== 'pending') continue;
        const l = lines.get(r.request_key);
        const resp = l?.response;
        if (resp && resp.status_code === 200 && resp.body && typeof resp.body === 'object')
          this.ingestAnswer(job, r, resp.body as ChatCompletion, n);
        else this.ingestNoAnswer(job, batch, r, l, batchErrors, n);
      }
      const message =
        `${batch.status}: ${n.answered} labeled, ${n.invalid} invalid, ${n.failed} failed, ${n.missing} without an answer` +
        (batchErrors ? `; ${batchErrors}` : '');
      this.ledger.finishJob(job.id, n.cost, message.slice(0, 1000));
      this.store.flush();
    });
    this.jobs.collected++;
    this.log(
      `batch job ${job.id}: ingested ${job.batch_id} (${batch.status}): ${n.answered} labeled, ${n.invalid} invalid, ${n.failed} failed, ` +
        `${n.missing} without an answer, $${n.cost.toFixed(4)}`,
    );
    if (failedBatch)
      this.fatal ??= `batch ${job.batch_id} failed${batchErrors ? `: ${batchErrors}` : ''}; its ${job.requests} request(s) are sent again on the next run`;
    if (n.fatal) this.fatal ??= n.fatal;
  }

  /** A request the batch answered: recorded as the live path records answers, at the batch price. */
  private ingestAnswer(job: JobRow, r: JobRequestRow, completion: ChatCompletion, n: Tally): void {
    const { stats } = this;
    const promptTokens = completion.usage?.prompt_tokens ?? r.est_prompt;
    const completionTokens = completion.usage?.completion_tokens ?? this.builder.maxCompletionTokens;
    const c = costOf(this.price, promptTokens, completionTokens);
    n.cost += c;
    stats.requests++;
    stats.cost += c;
    stats.promptTokens += promptTokens;
    stats.completionTokens += completionTokens;
    let next: 'labeled' | 'failed' | 'invalid' | 'error';
    try {
      const paid = { completion, latencyMs: 0, promptTokens, completionTokens, cost: c };
      next = recordAnswer(this.unlimited, job.run_id, r.item_id, r.request_key, paid, priorAttempts(this.store, job.run_id, r.request_key));
    } catch (e) {
      if (!(e instanceof TeacherError)) throw e;
      n.fatal ??= e.message;
      next = 'error';
    }
    if (next === 'labeled') {
      n.answered++;
      stats.labeled++;
    } else if (next === 'failed') {
      n.invalid++;
      stats.failed++;
    } else n.invalid++;
    if (next !== 'invalid') this.settled.add(r.request_key);
    this.ledger.setRequest(
      job.id,
      r.request_key,
      next === 'labeled' ? 'answered' : next === 'error' ? 'error' : 'invalid',
      promptTokens,
      null,
    );
  }

  /** No answer: an error line (the request failed, or the batch expired or was cancelled before it ran) or no line at all. */
  private ingestNoAnswer(job: JobRow, batch: Batch, r: JobRequestRow, l: BatchLine | undefined, batchErrors: string, n: Tally): void {
    const resp = l?.response;
    const status = resp?.status_code;
    const err = l?.error ?? (resp?.body as { error?: { code?: string; message?: string } } | undefined)?.error ?? null;
    const errMessage = this.o.client.redact(String(err?.message ?? 'no answer'));
    const failedBatch = batch.status === 'failed';
    const reason = l
      ? `batch ${job.batch_id}: ${status ?? ''} ${err?.code ?? ''} ${errMessage}`.replace(/\s+/g, ' ')
      : `batch ${job.batch_id} ${batch.status}${failedBatch && batchErrors ? ` (${batchErrors})` : ''}: no answer`;
    const lineFatal = status !== undefined && FATAL_STATUS(status);
    if (lineFatal) n.fatal ??= `the teacher answered a batch request with ${status}: ${errMessage}`;
    if (l) this.stats.requests++;
    this.stats.errors++;
    n.failed += l ? 1 : 0;
    n.missing += l ? 0 : 1;
    this.store.recordRequestError({ runId: job.run_id, itemId: r.item_id, requestKey: r.request_key, reason: reason.slice(0, 500) });
    // A batch that failed as a whole, or a request that cannot work, is not a retry to count: the run fails, and a rerun resubmits.
    this.ledger.setRequest(job.id, r.request_key, lineFatal || failedBatch ? 'error' : 'failed', null, reason.slice(0, 500));
  }

  /** The result, and the run finished with it. */
  private finish(): BatchLabelResult {
    const { o, jobs } = this;
    const pending = this.ledger.liveJobs(this.plan.configHash);
    jobs.pending = pending.length;
    jobs.pendingRequests = pending.reduce((a, j) => a + j.requests, 0);
    let status: BatchLabelResult['status'];
    let message: string | undefined;
    if (this.fatal) [status, message] = ['failed', this.fatal];
    else if (this.stop) [status, message] = [this.stop.status, this.stop.message];
    else if (this.interrupted)
      [status, message] = [
        'interrupted',
        `interrupted; ${jobs.pending} batch job(s) keep running at the API: rerun the same command to collect them`,
      ];
    else if (this.budgetMessage)
      [status, message] = ['stopped', this.budgetMessage + (jobs.pending ? `; ${jobs.pending} batch job(s) pending` : '')];
    else if (jobs.pending > 0) {
      status = 'pending';
      message =
        `${jobs.pending} batch job(s) (${jobs.pendingRequests} requests) pending${this.apiTrouble ? ` (the API kept failing: ${this.apiTrouble})` : ''}; ` +
        'rerun the same command to collect them';
    } else if (this.unreachable > 0)
      [status, message] = [
        'stopped',
        `${this.unreachable} item(s) got no answer in ${o.retry.maxRetries + 1} batches; rerun the same command to retry them`,
      ];
    else status = 'completed';
    // The run's own record knows no "pending": a run with live jobs is stopped (a rerun resumes it), never completed.
    this.store.finishRun(this.run.id, status === 'pending' ? 'stopped' : status, message ?? null);
    return { run: this.store.run(this.run.id), plan: this.plan, stats: this.stats, status, message, jobs };
  }
}
