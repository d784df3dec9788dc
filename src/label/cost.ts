import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { BudgetExceeded, InputError } from '../errors.ts';

const TokenPrice = z.object({ input: z.number().nonnegative(), output: z.number().nonnegative() }).strict();

/**
 * The editable price table: US dollars per 1M input and output tokens, and optionally the Batch API's price
 * (`batch`; when absent, half the live price).
 */
export const PriceTable = z.object({
  _comment: z.string().optional(),
  models: z.record(z.string(), TokenPrice.extend({ batch: TokenPrice.optional() }).strict()),
});
export type PriceTable = z.infer<typeof PriceTable>;

export interface Price {
  input: number;
  output: number;
  /** Where the price came from, for the run's record. */
  source: string;
  /** The Batch API's price, when the table gives one (else half the live price: see batchPrice). */
  batch?: { input: number; output: number };
}

/** The price of a request sent through the Batch API: the table's batch price, else half the live price. */
export function batchPrice(price: Price): Price {
  if (price.batch) return { input: price.batch.input, output: price.batch.output, source: `${price.source} (batch)` };
  return { input: price.input / 2, output: price.output / 2, source: `${price.source} (batch: half)` };
}

export function loadPriceTable(path: string): PriceTable {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new InputError(path, undefined, `cannot read price table (${(e as NodeJS.ErrnoException).code ?? e})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new InputError(path, undefined, `invalid JSON: ${(e as Error).message}`);
  }
  const parsed = PriceTable.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new InputError(path, undefined, `invalid price table at ${issue.path.join('.')}: ${issue.message}`);
  }
  return parsed.data;
}

/** The model's price: flags win, else the longest table key the model name starts with. */
export function resolvePrice(model: string, table: PriceTable | undefined, tablePath: string, priceIn?: number, priceOut?: number): Price {
  if (priceIn !== undefined && priceOut !== undefined) return { input: priceIn, output: priceOut, source: 'flags' };
  const key = Object.keys(table?.models ?? {})
    .filter((k) => model === k || model.startsWith(`${k}-`))
    .sort((a, b) => b.length - a.length)[0];
  if (key === undefined) {
    throw new InputError(
      tablePath,
      undefined,
      `model "${model}" has no price; add it to the table or pass --price-in and --price-out (US$ per 1M tokens; 0 for a local model)`,
    );
  }
  const p = table!.models[key];
  // A flag overriding the live price makes the table's batch price stale: batchPrice() then halves the flags.
  const batch = p.batch && priceIn === undefined && priceOut === undefined ? { batch: p.batch } : {};
  return { input: priceIn ?? p.input, output: priceOut ?? p.output, source: `${tablePath}#${key}`, ...batch };
}

export function costOf(price: Price, promptTokens: number, completionTokens: number): number {
  return (promptTokens * price.input + completionTokens * price.output) / 1e6;
}

/**
 * The hard cost cap. Before a request starts it reserves its worst case
 * (estimated prompt + max_tokens for every choice); when the answer comes back
 * the reservation is replaced by the real cost. No request starts that could
 * take spent + reserved over the cap.
 */
export class Budget {
  private spent: number;
  private reserved = 0;
  private waiters: Array<() => void> = [];

  constructor(
    readonly cap: number | undefined,
    alreadySpent = 0,
  ) {
    this.spent = alreadySpent;
  }

  /**
   * Reserve `worstCase` dollars. While other requests are in flight, wait for
   * them to settle (their real cost is usually far below their worst case);
   * throw BudgetExceeded only when even an idle budget cannot afford it.
   */
  async reserve(worstCase: number): Promise<void> {
    while (!this.fits(worstCase)) {
      if (this.reserved <= 1e-12) {
        throw new BudgetExceeded(
          `cost cap reached: $${this.spent.toFixed(4)} spent, the next request could cost up to $${worstCase.toFixed(4)}, cap $${this.cap}`,
        );
      }
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    this.reserved += worstCase;
  }

  private fits(amount: number): boolean {
    return this.cap === undefined || this.spent + this.reserved + amount <= this.cap + 1e-12;
  }

  /** Replace a reservation by what was really spent (0 when the request failed unpaid). */
  settle(reservation: number, actual: number): void {
    this.reserved -= reservation;
    this.spent += actual;
    const waiting = this.waiters;
    this.waiters = [];
    for (const wake of waiting) wake();
  }

  get total(): number {
    return this.spent;
  }
}
