/**
 * The Batch API job ledger (tables batch_jobs and batch_requests, schema v3): what was uploaded and submitted, which
 * request keys each job holds, and how each ended. It is what makes `--batch` resumable: a rerun finds the jobs of
 * its configuration and polls them again, and a request key in a live job (not yet ingested) is never sent again,
 * in batch or live mode. It is part of the store (the API side is in ../batch/).
 */
import { randomBytes } from 'node:crypto';
import { Store } from './store.ts';

/** Local job states. A job is *live* until it is `done` (its output ingested, or it was abandoned). */
export type JobState = 'preparing' | 'uploaded' | 'submitted' | 'done';

/** Request states: pending (in a live job), answered (valid), invalid (answered, not a label), failed (no answer: retry), error (cannot work: fatal). */
export type RequestState = 'pending' | 'answered' | 'invalid' | 'failed' | 'error';

export interface JobRow {
  id: number;
  run_id: number;
  token: string;
  state: JobState;
  remote_status: string | null;
  input_file_id: string | null;
  batch_id: string | null;
  output_file_id: string | null;
  error_file_id: string | null;
  requests: number;
  bytes: number;
  reserved: number;
  cost: number;
  message: string | null;
  created_at: string;
  updated_at: string;
  ended_at: string | null;
}

export interface JobRequestRow {
  request_key: string;
  item_id: number;
  state: RequestState;
  est_prompt: number;
}

/** The API's terminal batch states: after them the output and error files are final. */
export const TERMINAL = new Set(['completed', 'failed', 'expired', 'cancelled']);

const now = () => new Date().toISOString();

/**
 * Keys of every request in a live job, or undefined when there is none (the common case costs one indexed query).
 * Keys are sha256 over the whole configuration, so one set serves every run.
 */
export function liveBatchKeys(store: Store): Set<string> | undefined {
  if (!Store.sqlOf(store).prepare(`SELECT 1 FROM batch_jobs WHERE state != 'done' LIMIT 1`).get()) return undefined;
  const keys = Store.sqlOf(store)
    .prepare(`SELECT r.request_key FROM batch_requests r JOIN batch_jobs j ON j.id = r.job_id WHERE j.state != 'done'`)
    .pluck()
    .all() as string[];
  return new Set(keys);
}

export class BatchLedger {
  constructor(private readonly store: Store) {}

  private get db() {
    return Store.sqlOf(this.store);
  }

  /**
   * Create a job and its requests in one transaction: from here on its keys are "in a live job". Keys that another
   * process put in a live job (or labeled) since they were planned are left out (`dropped`); no job when none is left.
   */
  createJob(
    runId: number,
    requests: Array<{ key: string; itemId: number; estPrompt: number; worst: number }>,
    bytes: number,
  ): { job: JobRow | undefined; dropped: number } {
    this.store.flush();
    const t = now();
    const taken = this.db.prepare(
      `SELECT 1 FROM batch_requests r JOIN batch_jobs j ON j.id = r.job_id WHERE r.request_key = ? AND j.state != 'done'
       UNION ALL SELECT 1 FROM labels WHERE request_key = ? AND status = 'ok' LIMIT 1`,
    );
    return this.db
      .transaction(() => {
        const keep = requests.filter((r) => !taken.get(r.key, r.key));
        if (keep.length === 0) return { job: undefined, dropped: requests.length };
        const reserved = keep.reduce((a, r) => a + r.worst, 0);
        const info = this.db
          .prepare(
            `INSERT INTO batch_jobs (run_id, token, state, requests, bytes, reserved, created_at, updated_at) VALUES (?, ?, 'preparing', ?, ?, ?, ?, ?)`,
          )
          .run(runId, randomBytes(12).toString('hex'), keep.length, bytes, reserved, t, t);
        const jobId = Number(info.lastInsertRowid);
        const add = this.db.prepare(
          `INSERT INTO batch_requests (job_id, request_key, item_id, state, est_prompt) VALUES (?, ?, ?, 'pending', ?)`,
        );
        for (const r of keep) add.run(jobId, r.key, r.itemId, r.estPrompt);
        return { job: this.job(jobId)!, dropped: requests.length - keep.length };
      })
      .immediate();
  }

  job(id: number): JobRow | undefined {
    return this.db.prepare('SELECT * FROM batch_jobs WHERE id = ?').get(id) as JobRow | undefined;
  }

  /** Live jobs of every run with this configuration (a run completed by a live pass may still have one), oldest first. */
  liveJobs(configHash: string): JobRow[] {
    this.store.flush();
    return this.db
      .prepare(`SELECT j.* FROM batch_jobs j JOIN runs r ON r.id = j.run_id WHERE r.config_hash = ? AND j.state != 'done' ORDER BY j.id`)
      .all(configHash) as JobRow[];
  }

  requests(jobId: number): JobRequestRow[] {
    return this.db
      .prepare('SELECT request_key, item_id, state, est_prompt FROM batch_requests WHERE job_id = ? ORDER BY rowid')
      .all(jobId) as JobRequestRow[];
  }

  setUploaded(jobId: number, fileId: string): void {
    this.db.prepare(`UPDATE batch_jobs SET state = 'uploaded', input_file_id = ?, updated_at = ? WHERE id = ?`).run(fileId, now(), jobId);
  }

  setSubmitted(jobId: number, batchId: string, remoteStatus: string): void {
    this.db
      .prepare(`UPDATE batch_jobs SET state = 'submitted', batch_id = ?, remote_status = ?, updated_at = ? WHERE id = ?`)
      .run(batchId, remoteStatus, now(), jobId);
  }

  setRemote(jobId: number, b: { status: string; output_file_id?: string | null; error_file_id?: string | null }): void {
    this.db
      .prepare(
        `UPDATE batch_jobs SET remote_status = ?, output_file_id = coalesce(?, output_file_id), error_file_id = coalesce(?, error_file_id), updated_at = ? WHERE id = ?`,
      )
      .run(b.status, b.output_file_id ?? null, b.error_file_id ?? null, now(), jobId);
  }

  setRequest(jobId: number, key: string, state: RequestState, promptTokens: number | null, error: string | null): void {
    this.db
      .prepare('UPDATE batch_requests SET state = ?, prompt_tokens = ?, error = ? WHERE job_id = ? AND request_key = ?')
      .run(state, promptTokens, error, jobId, key);
  }

  /** The job is over: its requests leave the live set and its reservation is released (call inside the ingest's transaction). */
  finishJob(jobId: number, cost: number, message: string | null): void {
    const t = now();
    this.db
      .prepare(`UPDATE batch_jobs SET state = 'done', reserved = 0, cost = ?, message = ?, updated_at = ?, ended_at = ? WHERE id = ?`)
      .run(cost, message, t, t, jobId);
  }

  /** Worst-case cost held by a run's live jobs. */
  reservedFor(runId: number): number {
    return (
      this.db.prepare(`SELECT coalesce(sum(reserved), 0) AS c FROM batch_jobs WHERE run_id = ? AND state != 'done'`).get(runId) as {
        c: number;
      }
    ).c;
  }

  /** Times a key got no answer from a batch of this run (failed lines, expired or failed batches). */
  failures(runId: number, key: string): number {
    return (
      this.db
        .prepare(
          `SELECT count(*) AS n FROM batch_requests r JOIN batch_jobs j ON j.id = r.job_id WHERE j.run_id = ? AND r.request_key = ? AND r.state = 'failed'`,
        )
        .get(runId, key) as { n: number }
    ).n;
  }

  /** Whether a key was in an earlier batch of this run (so asking again is a retry). */
  wasBatched(runId: number, key: string): boolean {
    return !!this.db
      .prepare(
        `SELECT 1 FROM batch_requests r JOIN batch_jobs j ON j.id = r.job_id WHERE j.run_id = ? AND r.request_key = ? AND j.state = 'done' LIMIT 1`,
      )
      .get(runId, key);
  }

  /** Largest ratio seen in a run of the server's prompt tokens to our estimate (1 when none): reservations scale by it. */
  promptScale(runId: number): number {
    const r = this.db
      .prepare(
        `SELECT max(1.0 * r.prompt_tokens / r.est_prompt) AS s FROM batch_requests r JOIN batch_jobs j ON j.id = r.job_id WHERE j.run_id = ? AND r.est_prompt > 0 AND r.prompt_tokens IS NOT NULL`,
      )
      .get(runId) as { s: number | null };
    return Math.max(1, r.s ?? 1);
  }
}

/** One job as status.ts can show it. */
export interface BatchJobSummary {
  job: number;
  run: number;
  task: string;
  teacher: string;
  state: JobState;
  /** The API's status when last polled. */
  remote_status: string | null;
  batch_id: string | null;
  input_file_id: string | null;
  requests: number;
  /** Request counts by outcome (pending until the job is ingested). */
  answered: number;
  invalid: number;
  failed: number;
  pending: number;
  bytes: number;
  /** Worst-case cost held against --max-cost while the job is live. */
  reserved: number;
  /** What its answers cost, at the batch price, once ingested. */
  cost: number;
  message: string | null;
  created_at: string;
  updated_at: string;
  ended_at: string | null;
}

/**
 * Batch jobs, newest first: every job, or those of one run, or only live ones. Read-only (works on a store opened
 * read-only); for `scripts/status.ts`.
 */
export function batchJobSummaries(store: Store, opts: { runId?: number; liveOnly?: boolean } = {}): BatchJobSummary[] {
  const where: string[] = [];
  const params: unknown[] = [];
  if (opts.runId !== undefined) {
    where.push('j.run_id = ?');
    params.push(opts.runId);
  }
  if (opts.liveOnly) where.push(`j.state != 'done'`);
  return Store.sqlOf(store)
    .prepare(
      `SELECT j.id AS job, j.run_id AS run, t.name AS task, r.teacher, j.state, j.remote_status, j.batch_id, j.input_file_id, j.requests,
              (SELECT count(*) FROM batch_requests b WHERE b.job_id = j.id AND b.state = 'answered') AS answered,
              (SELECT count(*) FROM batch_requests b WHERE b.job_id = j.id AND b.state = 'invalid') AS invalid,
              (SELECT count(*) FROM batch_requests b WHERE b.job_id = j.id AND b.state IN ('failed', 'error')) AS failed,
              (SELECT count(*) FROM batch_requests b WHERE b.job_id = j.id AND b.state = 'pending') AS pending,
              j.bytes, j.reserved, j.cost, j.message, j.created_at, j.updated_at, j.ended_at
       FROM batch_jobs j JOIN runs r ON r.id = j.run_id JOIN tasks t ON t.id = r.task_id
       ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
       ORDER BY j.id DESC`,
    )
    .all(...params) as BatchJobSummary[];
}
