/**
 * The simulator's misbehaviour on demand: faults at chosen rates (`--faults 429:0.05,500:0.02,timeout:0.01`) and a
 * server-side rate limit (`--rate-limit RPM`), so a user can watch the labeler's retries, backoff and invalid-answer
 * handling without paying for a flaky provider. Both apply to live requests only (Batch API lines are answered as
 * usual).
 */
import { SettingError } from '../errors.ts';
import { sha256Hex } from '../task/task.ts';
import type { ChatRequest, Fault } from './openai-server.ts';

/** What each fault kind does, as a real provider would. */
const KINDS = {
  '429': { kind: 'status', status: 429 },
  '500': { kind: 'status', status: 500 },
  '502': { kind: 'status', status: 502 },
  '503': { kind: 'status', status: 503 },
  timeout: { kind: 'hang' }, // never answers: the client gives up after its --timeout
  drop: { kind: 'drop' }, // the connection is cut without an answer
  'invalid-json': { kind: 'invalid-json' }, // 200 with prose instead of the JSON object
  'unknown-label': { kind: 'unknown-label' }, // 200 with a label the task does not have
} as const satisfies Record<string, Fault>;

export type FaultKind = keyof typeof KINDS;
export const FAULT_KINDS = Object.keys(KINDS) as FaultKind[];

export interface FaultRate {
  kind: FaultKind;
  rate: number;
}

/** `KIND:RATE,KIND:RATE…` (rates in [0, 1], summing to at most 1). */
export function parseFaults(spec: string): FaultRate[] {
  const rates = spec
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((part): FaultRate => {
      const [kind, rate, extra] = part.split(':');
      if (!(kind in KINDS) || extra !== undefined) {
        throw new SettingError('faults', spec, `"${part}": expected KIND:RATE with KIND one of ${FAULT_KINDS.join(', ')}`);
      }
      const r = Number(rate);
      if (rate === undefined || rate.trim() === '' || !(r >= 0 && r <= 1)) {
        throw new SettingError('faults', spec, `"${part}": the rate must be a number between 0 and 1`);
      }
      return { kind: kind as FaultKind, rate: r };
    });
  const total = rates.reduce((a, f) => a + f.rate, 0);
  if (total > 1 + 1e-9) throw new SettingError('faults', spec, `the rates add up to ${total}, more than 1`);
  return rates;
}

/** Request n's fault, if any: fixed by (seed, n), so a rerun in the same order meets the same faults. */
export function faultAt(rates: FaultRate[], seed: number, n: number): Fault | undefined {
  if (rates.length === 0) return undefined;
  let u = parseInt(sha256Hex(`fault\u0000${seed}\u0000${n}`).slice(0, 8), 16) / 2 ** 32;
  for (const f of rates) {
    if (u < f.rate) return KINDS[f.kind];
    u -= f.rate;
  }
  return undefined;
}

/**
 * A requests-per-minute limit over a sliding minute, as providers enforce one: a request over the limit gets a 429
 * with the wait in `retry-after-ms`, `retry-after` and `x-ratelimit-reset-requests` (headers the labeler honours).
 */
export class RateLimit {
  private readonly admitted: number[] = [];

  constructor(readonly rpm: number) {
    if (!Number.isInteger(rpm) || rpm < 1) throw new SettingError('rateLimit', rpm, 'must be a whole number of requests per minute >= 1');
  }

  /** Undefined when the request may go on; else the 429 to answer. */
  check(now = Date.now()): Fault | undefined {
    while (this.admitted.length > 0 && this.admitted[0] <= now - 60_000) this.admitted.shift();
    if (this.admitted.length < this.rpm) {
      this.admitted.push(now);
      return undefined;
    }
    const waitMs = Math.max(1, this.admitted[0] + 60_000 - now);
    return {
      kind: 'status',
      status: 429,
      headers: {
        'retry-after-ms': String(waitMs),
        'retry-after': String(Math.ceil(waitMs / 1000)),
        'x-ratelimit-limit-requests': String(this.rpm),
        'x-ratelimit-remaining-requests': '0',
        'x-ratelimit-reset-requests': `${(waitMs / 1000).toFixed(3)}s`,
      },
      body: {
        error: {
          message: `Rate limit reached: ${this.rpm} requests per minute (distillery simulator). Please try again in ${waitMs}ms.`,
          type: 'requests',
          param: null,
          code: 'rate_limit_exceeded',
        },
      },
    };
  }
}

/** The simulator's fault callback: the rate limit first (a refused request does not count), then the drawn fault. */
export function simFaults(rates: FaultRate[], seed: number, limit: RateLimit | undefined, tally: Map<string, number>) {
  return (req: ChatRequest, n: number): Fault | undefined => {
    if (req.batchId !== undefined) return undefined;
    const limited = limit?.check();
    const fault = limited ?? faultAt(rates, seed, n);
    if (fault) {
      const name = limited ? 'rate-limit' : (FAULT_KINDS.find((k) => KINDS[k] === fault) ?? fault.kind);
      tally.set(name, (tally.get(name) ?? 0) + 1);
    }
    return fault;
  };
}
