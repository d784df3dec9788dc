/**
 * Labeling through OpenAI's Batch API (half the price for work that can wait): the requests of a run go up as JSONL
 * files, one batch job each, are polled, and their output and error files are ingested with the live path's own
 * answer interpretation and recording (../label/record.ts). The steps are BatchPass's (pass.ts); the job ledger
 * (ledger.ts) makes them resumable: a rerun polls the jobs it already created and never resubmits a request that is
 * in a live job.
 */
import { underLabelLease } from '../label/run.ts';
import type { LabelOptions } from '../label/types.ts';
import { BatchPass } from './pass.ts';
import type { BatchLabelResult, BatchOptions } from './types.ts';

/**
 * Label the target items of `o` through the Batch API. The run is the same as the live path's (same configuration,
 * same request keys: a label paid for in one mode is never paid again in the other). Items already in a live job of
 * this configuration are not sent again; their jobs are polled and ingested first.
 */
export function runBatchLabeling(o: LabelOptions, b: BatchOptions): Promise<BatchLabelResult> {
  return underLabelLease(o, () => BatchPass.label(o, b));
}
