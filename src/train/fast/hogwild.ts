/**
 * fit() on several threads, as fastText trains: Hogwild (Recht et al. 2011). Every thread
 * runs the same SGD step (LinearFasttext.sgdStep) on the one input matrix and head, which
 * live in SharedArrayBuffers, without locks: two texts rarely share rows of E, and the
 * head's races cost little (fastText's own argument). The rate decays linearly with the
 * global progress, a step counter all threads advance (fastText's tokenCount).
 *
 * Unlike fastText, which gives each thread a fixed slice of the file, the threads take
 * chunks of the epoch's shuffled order from a shared cursor: on a loaded machine a thread
 * that is descheduled does less, instead of the others waiting for its slice. The threads
 * meet at each epoch's end, so that onEpoch (validation, best epoch, early stopping) sees
 * a settled model. The calling thread is one of the threads: `threads` 2 starts 1 worker.
 *
 * Not deterministic (the interleaving of updates varies run to run): fit() with one
 * thread is the reproducible path.
 */
import { Worker } from 'node:worker_threads';
import { DistilleryError } from '../../errors.ts';
import { mulberry32, shuffle } from '../../random.ts';
import { LinearFasttext, type FitOptions, type Objective, type PackedBags, type StepLoss } from './fasttext.ts';

/** Items a thread takes from the cursor at a time: small enough to balance, big enough that the atomics cost nothing. */
const CHUNK = 32;

/**
 * counters[CURSOR]: the next position in the epoch's order; counters[STEP]: steps done by all
 * threads, all epochs; counters[STARTED]: threads that have begun this epoch.
 */
const CURSOR = 0;
const STEP = 1;
const STARTED = 2;

/** Everything a worker needs, all views of SharedArrayBuffers (posting them shares the memory, copies nothing). */
export interface SharedState {
  dims: { buckets: number; dim: number; numClasses: number };
  embed: Float32Array;
  headW: Float32Array;
  headB: Float32Array;
  offsets: Int32Array;
  ids: Int32Array;
  ceWeight: number;
  kdWeight: number;
  hard: Int32Array;
  teacher?: { T: number; probs: Float32Array; plogp: Float64Array };
  order: Int32Array;
  counters: Int32Array;
}

/** One thread's part of an epoch: what the main thread and the workers run. */
export interface EpochShare {
  /** Items in this epoch's order. */
  n: number;
  /** Steps over all epochs (the denominator of the rate's decay). */
  total: number;
  lr: number;
}

export interface ShareResult {
  steps: number;
  sum: StepLoss;
}

/** Takes CHUNK items at a time from the shared cursor until the order is used up; the rate follows the global step. */
export function trainShare(
  model: LinearFasttext,
  bags: PackedBags,
  o: Objective,
  s: SharedState,
  e: EpochShare,
  onChunk?: () => void,
): ShareResult {
  const sum = { loss: 0, ce: 0, kd: 0 };
  let steps = 0;
  Atomics.add(s.counters, STARTED, 1);
  Atomics.notify(s.counters, STARTED);
  for (;;) {
    const from = Atomics.add(s.counters, CURSOR, CHUNK);
    if (from >= e.n) break;
    const to = Math.min(from + CHUNK, e.n);
    const done = Atomics.add(s.counters, STEP, to - from);
    for (let p = from; p < to; p++) {
      const lr = e.lr * Math.max(0, 1 - (done + p - from) / e.total);
      const l = model.sgdStep(bags, s.order[p], o, lr);
      sum.loss += l.loss;
      sum.ce += l.ce;
      sum.kd += l.kd;
    }
    steps += to - from;
    onChunk?.();
  }
  return { steps, sum };
}

/** The model, bags and objective a SharedState describes (what a worker trains on). */
export function fromShared(s: SharedState): { model: LinearFasttext; bags: PackedBags; objective: Objective } {
  return {
    model: new LinearFasttext(s.dims, s.embed, s.headW, s.headB),
    bags: { n: s.offsets.length - 1, offsets: s.offsets, ids: s.ids },
    objective: { ceWeight: s.ceWeight, kdWeight: s.kdWeight, hard: s.hard, ...(s.teacher ? { teacher: s.teacher } : {}) },
  };
}

/** What the threads did: steps per thread (the calling thread first), summed over epochs. */
export interface HogwildStats {
  threads: number;
  steps: number[];
}

type Reply = { kind: 'ready' } | { kind: 'done'; result: ShareResult } | { kind: 'error'; message: string };

/**
 * The worker threads, started before the data is hashed so that their start-up (loading
 * the TypeScript modules) overlaps it. close() ends them; a pool trains one model.
 */
export class Hogwild {
  private readonly waiting = new Map<Worker, (r: Reply) => void>();
  private failure: Error | null = null;

  private constructor(
    readonly threads: number,
    private readonly workers: Worker[],
  ) {
    for (const w of workers) {
      w.on('message', (r: Reply) => this.deliver(w, r));
      w.on('error', (err) => this.fail(err));
      w.on('exit', (code) => code !== 0 && this.fail(new DistilleryError(`hogwild worker exited with code ${code}`)));
    }
  }

  /** `threads` ≥ 2 (fit() is the one-thread path). */
  static start(threads: number): Hogwild {
    if (!Number.isInteger(threads) || threads < 2) throw new DistilleryError(`Hogwild needs at least 2 threads, got ${threads}`);
    const workers = Array.from({ length: threads - 1 }, spawnWorker);
    return new Hogwild(threads, workers);
  }

  private deliver(w: Worker, r: Reply): void {
    if (r.kind === 'error') return this.fail(new DistilleryError(`hogwild worker: ${r.message}`));
    const resolve = this.waiting.get(w);
    this.waiting.delete(w);
    resolve?.(r);
  }

  private fail(err: Error): void {
    this.failure ??= err;
    for (const resolve of this.waiting.values()) resolve({ kind: 'error', message: err.message });
    this.waiting.clear();
  }

  /** The next reply of every worker. */
  private async replies(): Promise<Reply[]> {
    // A worker that failed while starting (during the hashing) would otherwise never reply.
    if (this.failure) throw this.failure;
    const all = this.workers.map((w) => new Promise<Reply>((resolve) => this.waiting.set(w, resolve)));
    const got = await Promise.all(all);
    if (this.failure) throw this.failure;
    return got;
  }

  /**
   * fit() (fasttext.ts) with the work spread over the threads. The model must live in
   * shared memory (LinearFasttext.init(spec, seed, { shared: true })).
   */
  async fit(model: LinearFasttext, bags: PackedBags, train: ArrayLike<number>, o: Objective, f: FitOptions): Promise<HogwildStats> {
    if (o.kdWeight > 0 && !o.teacher) throw new DistilleryError('fit: kdWeight > 0 needs the tempered teacher');
    if (!(model.embed.buffer instanceof SharedArrayBuffer)) throw new DistilleryError('Hogwild.fit: the model must be in shared memory');
    const s: SharedState = {
      dims: { buckets: model.buckets, dim: model.dim, numClasses: model.classes },
      embed: model.embed,
      headW: model.headW,
      headB: model.headB,
      offsets: toShared(bags.offsets),
      ids: toShared(bags.ids),
      ceWeight: o.ceWeight,
      kdWeight: o.kdWeight,
      hard: toShared(o.hard),
      ...(o.teacher ? { teacher: { T: o.teacher.T, probs: toShared(o.teacher.probs), plogp: toShared(o.teacher.plogp) } } : {}),
      order: new Int32Array(new SharedArrayBuffer(4 * train.length)),
      counters: new Int32Array(new SharedArrayBuffer(12)),
    };
    const local = fromShared(s);
    const ready = this.replies();
    for (const w of this.workers) w.postMessage({ kind: 'init', state: s });
    await ready;
    const stats: HogwildStats = { threads: this.threads, steps: new Array(this.threads).fill(0) };
    const total = f.epochs * train.length;
    for (let epoch = 0; epoch < f.epochs; epoch++) {
      // fit()'s per-epoch order: the same seed visits the same items in the same epochs.
      s.order.set(shuffle(train, mulberry32(f.seed * 1000 + epoch)));
      Atomics.store(s.counters, CURSOR, 0);
      Atomics.store(s.counters, STARTED, 0);
      const share: EpochShare = { n: train.length, total, lr: f.lr };
      const done = this.replies();
      for (const w of this.workers) w.postMessage({ kind: 'epoch', share });
      f.onStep?.(0, train.length);
      // The calling thread waits for the workers to begin (a message hop) rather than run ahead
      // alone: on a busy machine it would otherwise take most of a small epoch itself.
      this.awaitStart(s.counters);
      const mine = trainShare(local.model, local.bags, local.objective, s, share, () =>
        f.onStep?.(Math.min(Atomics.load(s.counters, CURSOR), train.length), train.length),
      );
      const theirs = (await done).map((r) => (r as { result: ShareResult }).result);
      const sum = { loss: 0, ce: 0, kd: 0 };
      [mine, ...theirs].forEach((r, t) => {
        stats.steps[t] += r.steps;
        sum.loss += r.sum.loss;
        sum.ce += r.sum.ce;
        sum.kd += r.sum.kd;
      });
      const n = Math.max(1, train.length);
      const lr = f.lr * Math.max(0, 1 - Atomics.load(s.counters, STEP) / total);
      if (f.onEpoch?.(epoch, { loss: sum.loss / n, ce: sum.ce / n, kd: sum.kd / n }, lr)) break;
    }
    return stats;
  }

  /** Blocks (no events run meanwhile): a worker that died is noticed at the epoch's end, so the wait is capped at 5 s. */
  private awaitStart(counters: Int32Array): void {
    const until = performance.now() + 5000;
    for (let seen = Atomics.load(counters, STARTED); seen < this.workers.length; seen = Atomics.load(counters, STARTED)) {
      const left = until - performance.now();
      if (left <= 0) break;
      Atomics.wait(counters, STARTED, seen, left);
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

/**
 * Node 20 does not hand the main thread's tsx loader to worker threads (ERR_UNKNOWN_FILE_EXTENSION
 * on worker.ts), so the worker registers tsx itself before importing its module.
 */
function spawnWorker(): Worker {
  const entry = new URL('./worker.ts', import.meta.url).href;
  const tsx = import.meta.resolve('tsx/esm/api');
  return new Worker(`import(${JSON.stringify(tsx)}).then((m) => m.register()).then(() => import(${JSON.stringify(entry)}))`, {
    eval: true,
  });
}

function toShared<T extends Int32Array | Float32Array | Float64Array>(x: T): T {
  if (x.buffer instanceof SharedArrayBuffer) return x;
  const Ctor = x.constructor as new (b: SharedArrayBuffer) => T;
  const out = new Ctor(new SharedArrayBuffer(x.byteLength));
  out.set(x as never);
  return out;
}
