/** How often and how long to retry (src/teacher/retry.ts applies it); here, free of openai, for the flags' defaults. */
export interface RetryPolicy {
  maxRetries: number;
  /** First backoff step; doubles each attempt, with full jitter. */
  baseDelayMs: number;
  maxDelayMs: number;
  /** Longest server-requested wait honoured; a longer one is capped to this. */
  maxServerWaitMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { maxRetries: 6, baseDelayMs: 500, maxDelayMs: 30_000, maxServerWaitMs: 300_000 };
