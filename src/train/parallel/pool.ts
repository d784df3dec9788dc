/**
 * The worker threads: each runs ./worker.ts, one share of each batch at a time.
 *
 * Node does not load the tsx hooks into a worker started from a .ts file (Node 20: the worker's
 * entry is resolved before any --import runs there), so each worker starts from a line of
 * JavaScript that registers tsx and then imports worker.ts.
 */
import { Worker } from 'node:worker_threads';
import { DistilleryError } from '../../errors.ts';
import { shareBuffers, type Share } from './shares.ts';
import type { Reply, WorkerInit } from './worker.ts';

const ENTRY = new URL('./worker.ts', import.meta.url).href;
const BOOT = `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((tsx) => { tsx.register(); return import(${JSON.stringify(ENTRY)}); })`;

export class Replica {
  private pending?: { resolve: (r: { value: number; terms: Record<string, number> }) => void; reject: (e: Error) => void };
  private failed?: Error;

  private constructor(private readonly worker: Worker) {
    worker.on('message', (m: Reply | { ready: true }) => {
      const p = this.pending;
      this.pending = undefined;
      worker.unref();
      if ('error' in m) p?.reject(new DistilleryError(`worker thread: ${m.error}`));
      else if ('value' in m) p?.resolve(m);
      else p?.resolve({ value: 0, terms: {} });
    });
    const fail = (e: Error) => {
      this.failed = e;
      this.pending?.reject(e);
      this.pending = undefined;
    };
    worker.on('error', (e) => fail(new DistilleryError(`worker thread: ${e.message}`)));
    worker.on('exit', (code) => fail(new DistilleryError(`worker thread exited (code ${code})`)));
  }

  /** Start a worker and wait until its student and distillers are built. */
  static async start(init: WorkerInit): Promise<Replica> {
    const r = new Replica(new Worker(BOOT, { eval: true, workerData: init }));
    await r.wait();
    return r;
  }

  /** Gradients of this share into the worker's shared buffer; resolves with the share's loss and terms. */
  step(share: Share): Promise<{ value: number; terms: Record<string, number> }> {
    const done = this.wait();
    this.worker.postMessage(share, shareBuffers(share));
    return done;
  }

  async close(): Promise<void> {
    this.worker.removeAllListeners('exit');
    await this.worker.terminate();
  }

  /**
   * The next reply. The worker is referenced only while one is awaited: an idle worker must not
   * keep the process alive (a training that throws leaves its pool behind).
   */
  private wait(): Promise<{ value: number; terms: Record<string, number> }> {
    if (this.failed) return Promise.reject(this.failed);
    if (this.pending) throw new Error('Replica: one share at a time');
    this.worker.ref();
    return new Promise((resolve, reject) => (this.pending = { resolve, reject }));
  }
}
