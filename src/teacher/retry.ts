import OpenAI from 'openai';
import { TeacherError } from '../errors.ts';

import type { RetryPolicy } from './retry-policy.ts';

/**
 * The one retry policy. The openai SDK is built with `maxRetries: 0` so that
 * only this code retries: it honours the rate-limit headers, tells the rate
 * limiter to pause everyone on a 429, and counts every attempt in the store.
 * The policy's shape and defaults are in retry-policy.ts (the flags read them without loading openai).
 */
export { DEFAULT_RETRY, type RetryPolicy } from './retry-policy.ts';

export type FailureClass =
  { kind: 'retry'; reason: string; waitMs?: number; rateLimited: boolean } | { kind: 'fatal'; error: TeacherError };

/** Decide what an error from the SDK means for the run. */
export function classifyError(err: unknown): FailureClass {
  if (err instanceof OpenAI.APIConnectionTimeoutError) return { kind: 'retry', reason: 'timeout', rateLimited: false };
  if (err instanceof OpenAI.APIConnectionError) return { kind: 'retry', reason: 'connection error', rateLimited: false };
  if (err instanceof OpenAI.APIError && err.status !== undefined) {
    const status = err.status;
    if (status === 429) {
      if (isQuotaExhausted(err)) return { kind: 'fatal', error: new TeacherError(`insufficient quota: ${oneLine(err.message)}`) };
      return { kind: 'retry', reason: '429 rate limited', waitMs: serverWaitMs(err.headers), rateLimited: true };
    }
    if (status === 408 || status === 409 || status >= 500) {
      return { kind: 'retry', reason: `${status} server error`, waitMs: serverWaitMs(err.headers), rateLimited: false };
    }
    if (status === 400 && mentionsLogprobs(err)) {
      return {
        kind: 'fatal',
        error: new TeacherError(
          `the server rejected logprobs (${oneLine(err.message)}); use --soft samples:N (self-consistency) or --soft none`,
        ),
      };
    }
    if (status === 401) return { kind: 'fatal', error: new TeacherError(`${oneLine(err.message)} (check the API key variable)`) };
    return { kind: 'fatal', error: new TeacherError(`the teacher answered ${oneLine(err.message)}`) };
  }
  if (err instanceof Error && err.name === 'AbortError') return { kind: 'retry', reason: 'aborted', rateLimited: false };
  return {
    kind: 'fatal',
    error: new TeacherError(`unexpected error from the teacher client: ${oneLine(String((err as Error)?.message ?? err))}`),
  };
}

/** The wait a server asked for, from retry-after-ms, retry-after and x-ratelimit-reset-* headers (the longest wins). */
export function serverWaitMs(headers: Headers | Record<string, string | null | undefined> | undefined): number | undefined {
  if (!headers) return undefined;
  const get = (name: string): string | null | undefined =>
    headers instanceof Headers ? headers.get(name) : (headers as Record<string, string | null | undefined>)[name];
  const waits: number[] = [];
  const ms = Number(get('retry-after-ms'));
  if (get('retry-after-ms') && Number.isFinite(ms)) waits.push(ms);
  const ra = get('retry-after');
  if (ra) {
    const secs = Number(ra);
    if (Number.isFinite(secs)) waits.push(secs * 1000);
    else {
      const date = Date.parse(ra);
      if (!Number.isNaN(date)) waits.push(date - Date.now());
    }
  }
  for (const h of ['x-ratelimit-reset-requests', 'x-ratelimit-reset-tokens']) {
    const d = parseDuration(get(h));
    if (d !== undefined) waits.push(d);
  }
  return waits.length ? Math.max(0, ...waits) : undefined;
}

/** OpenAI's reset durations: "20ms", "1s", "6m0s", "1h2m3.5s". */
export function parseDuration(s: string | null | undefined): number | undefined {
  if (!s) return undefined;
  const re = /(\d+(?:\.\d+)?)(ms|h|m|s)/g;
  let total = 0;
  let matched = '';
  for (const m of s.trim().matchAll(re)) {
    const n = Number(m[1]);
    total += m[2] === 'ms' ? n : m[2] === 's' ? n * 1000 : m[2] === 'm' ? n * 60_000 : n * 3_600_000;
    matched += m[0];
  }
  return matched.length > 0 && matched === s.trim() ? total : undefined;
}

/** Exponential backoff with jitter (between half and all of the step), or the server's wait when it gave one. */
export function retryDelayMs(attempt: number, policy: RetryPolicy, serverWait?: number, random = Math.random): number {
  if (serverWait !== undefined) return Math.min(serverWait, policy.maxServerWaitMs);
  const cap = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** attempt);
  return Math.round(cap * (0.5 + 0.5 * random()));
}

function isQuotaExhausted(err: InstanceType<typeof OpenAI.APIError>): boolean {
  return err.code === 'insufficient_quota' || (err.error as any)?.code === 'insufficient_quota';
}

function mentionsLogprobs(err: InstanceType<typeof OpenAI.APIError>): boolean {
  return err.param === 'logprobs' || err.param === 'top_logprobs' || /logprob/i.test(err.message);
}

function oneLine(s: string): string {
  return s.replace(/\s+/g, ' ').trim().slice(0, 300);
}
