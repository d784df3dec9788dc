/** The Batch API path's options and result, shared by its entry point (batch.ts), the pass (pass.ts) and the CLI. */
import type { LabelResult } from '../label/types.ts';

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

export interface BatchJobCounts {
  submitted: number;
  collected: number;
  pending: number;
  pendingRequests: number;
}

/** A LabelResult (status `pending`: jobs are still running at the API, after --no-poll or polls that kept failing) with the jobs. */
export interface BatchLabelResult extends LabelResult {
  jobs: BatchJobCounts;
}
