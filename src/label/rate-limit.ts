/**
 * Client-side request and token budgets (--rpm, --tpm) as token buckets, plus
 * a shared pause: when the server says 429 with a reset time, nobody starts a
 * request before it, not just the request that was refused.
 */
export interface RateLimits {
  rpm?: number;
  tpm?: number;
}

class Bucket {
  private level: number;
  private last = Date.now();
  constructor(
    private readonly perMinute: number,
    private readonly capacity: number,
  ) {
    this.level = capacity;
  }

  private refill(now: number): void {
    this.level = Math.min(this.capacity, this.level + ((now - this.last) * this.perMinute) / 60_000);
    this.last = now;
  }

  /** Milliseconds until `amount` is available (0 = now). Amounts above capacity wait for a full bucket. */
  waitFor(amount: number, now: number): number {
    this.refill(now);
    const need = Math.min(amount, this.capacity) - this.level;
    return need <= 0 ? 0 : Math.ceil((need * 60_000) / this.perMinute);
  }

  take(amount: number): void {
    this.level -= amount;
  }

  /** Give back what an estimate over-reserved (or take what it under-reserved). */
  adjust(delta: number): void {
    this.level = Math.min(this.capacity, this.level + delta);
  }
}

export class RateLimiter {
  private readonly requests?: Bucket;
  private readonly tokens?: Bucket;
  private pausedUntil = 0;
  private queue: Promise<void> = Promise.resolve();

  constructor(limits: RateLimits) {
    // A bucket holds ten seconds' worth: smooth enough not to burst a whole minute at once.
    if (limits.rpm) this.requests = new Bucket(limits.rpm, Math.max(1, limits.rpm / 6));
    if (limits.tpm) this.tokens = new Bucket(limits.tpm, Math.max(1, limits.tpm / 6));
  }

  /** Wait until one request of `tokens` estimated tokens may start. Callers are served in order; `signal` cuts the wait short. */
  acquire(tokens: number, signal?: AbortSignal): Promise<void> {
    const turn = this.queue.then(() => this.waitTurn(tokens, signal));
    this.queue = turn.catch(() => undefined);
    return turn;
  }

  private async waitTurn(tokens: number, signal?: AbortSignal): Promise<void> {
    while (!signal?.aborted) {
      const now = Date.now();
      const wait = Math.max(this.pausedUntil - now, this.requests?.waitFor(1, now) ?? 0, this.tokens?.waitFor(tokens, now) ?? 0);
      if (wait <= 0) break;
      await sleep(wait, signal);
    }
    this.requests?.take(1);
    this.tokens?.take(tokens);
  }

  /** Correct the token bucket once the real usage is known. */
  settle(estimatedTokens: number, actualTokens: number): void {
    this.tokens?.adjust(estimatedTokens - actualTokens);
  }

  /** Nobody starts a request for `ms`. */
  pause(ms: number): void {
    this.pausedUntil = Math.max(this.pausedUntil, Date.now() + ms);
  }
}

/** Resolves after `ms`, or as soon as `signal` aborts (never rejects: callers check what they need). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}
