/**
 * The shapes the labeling modules pass between them (options, plan, counters, results): shared by the live path
 * (live.ts), the Batch API path (../batch/) and their callers. Types only; it imports no labeling module, so any
 * module can depend on it without a cycle.
 */
import type { SoftFormat } from '../soft/codec.ts';
import type { RunRow, Store, TaskRow } from '../store/store.ts';
import type { Task } from '../task/task.ts';
import type { TeacherClient } from '../teacher/client.ts';
import type { TeacherSettings } from '../teacher/request.ts';
import type { RetryPolicy } from '../teacher/retry.ts';
import type { Price } from './cost.ts';
import type { RateLimits } from './rate-limit.ts';

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

export function emptyStats(total: number): LabelStats {
  return { total, labeled: 0, failed: 0, unreachable: 0, requests: 0, errors: 0, cost: 0, promptTokens: 0, completionTokens: 0 };
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

/** Items to ask for and their request keys, in the same order (a plan, or part of one). */
export type Work = Pick<Plan, 'todo' | 'keys'>;

export interface LabelResult {
  run?: RunRow;
  plan: Plan;
  stats: LabelStats;
  /** `pending` only from runBatchLabeling: batch jobs are still running at the API (a rerun collects them). */
  status: 'completed' | 'stopped' | 'interrupted' | 'failed' | 'nothing-to-do' | 'pending';
  message?: string;
}

export type StopStatus = { status: 'stopped' | 'interrupted' | 'failed'; message: string };
