/**
 * The items of a generator of batches, as an async generator that costs one resolved
 * promise per item. An `async function*` costs several per `yield`, which dominates
 * reading a 100,000-row file — many times over when async hooks are active (the
 * node:test runner installs them).
 */
export function flatten<T>(batches: AsyncGenerator<T[], void, undefined>): AsyncGenerator<T, void, undefined> {
  return new Flattened(batches);
}

class Flattened<T> implements AsyncGenerator<T, void, undefined> {
  private batch: T[] = [];
  private index = 0;
  private finished = false;
  /** A batch being fetched; later calls wait for it, as calls to a real generator queue. */
  private pending: Promise<unknown> | undefined;

  constructor(private readonly batches: AsyncGenerator<T[], void, undefined>) {}

  next(): Promise<IteratorResult<T, void>> {
    if (this.pending)
      return this.pending.then(
        () => this.next(),
        () => this.next(),
      );
    if (this.index < this.batch.length) return Promise.resolve({ value: this.batch[this.index++], done: false });
    if (this.finished) return Promise.resolve({ value: undefined, done: true });
    const fetching = this.fetch().finally(() => {
      this.pending = undefined;
    });
    this.pending = fetching;
    return fetching;
  }

  private async fetch(): Promise<IteratorResult<T, void>> {
    try {
      for (;;) {
        const r = await this.batches.next();
        if (r.done || this.finished) break; // finished: return() was called meanwhile
        if (r.value.length === 0) continue;
        this.batch = r.value;
        this.index = 1;
        return { value: this.batch[0], done: false };
      }
    } catch (e) {
      this.finish();
      throw e;
    }
    this.finish();
    return { value: undefined, done: true };
  }

  /** Stopping early (break out of for-await) closes the source, so its file is closed too. */
  async return(): Promise<IteratorResult<T, void>> {
    this.finish();
    await this.batches.return();
    return { value: undefined, done: true };
  }

  async throw(e: unknown): Promise<IteratorResult<T, void>> {
    this.finish();
    await this.batches.return();
    throw e;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  private finish(): void {
    this.finished = true;
    this.batch = [];
    this.index = 0;
  }
}

/** What was read from one chunk, and the error that stopped reading it, if any. */
export interface Batch<T> {
  items: T[];
  error?: unknown;
}

/** The good rows before a bad one are still items: callers see them before the error. */
export function* itemsThenError<T>({ items, error }: Batch<T>): Generator<T[]> {
  if (items.length > 0) yield items;
  if (error !== undefined) throw error;
}
