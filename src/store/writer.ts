/**
 * The writer thread: a second connection to the database file, in a worker thread, that commits the labeler's
 * answers (responses, labels, request errors) in groups and deflates response bodies, off the thread that runs the
 * HTTP client. Durability is the caller's to wait for: `durable()` (async, the labeler awaits it before it starts a
 * request) and `flushSync()` (blocks, for a read that must see every write) resolve once every row handed over so far
 * is committed. Rows not yet committed when the process is killed are lost; the labeler starts no request while an
 * answer it received is uncommitted, so they are at most the requests in flight.
 */
import { MessageChannel, receiveMessageOnPort, Worker, type MessagePort } from 'node:worker_threads';
import { DistilleryError } from '../errors.ts';

/** One row for the writer thread: the table, then the values in the order of its INSERT (writer-thread.js). */
export type WriterRow =
  | ['response', string, number, number, string, string, number, number, number, number, string]
  | [
      'label',
      number,
      number,
      string,
      string,
      string | null,
      Uint8Array | null,
      string,
      number,
      string | null,
      number,
      number,
      number,
      number,
      number,
      string | null,
      string,
    ]
  | ['error', number, number, string, string, string];

type Reply = { seq?: number; error?: string };

/** How long a synchronous flush waits for the writer thread before it gives up (it then reports an error). */
const FLUSH_TIMEOUT_MS = 120_000;

export class WriterThread {
  private readonly worker: Worker;
  /** [0]: the last batch committed; [1]: 1 once a commit failed (see writer-thread.js). */
  private readonly state = new Int32Array(new SharedArrayBuffer(8));
  private pending: WriterRow[] = [];
  /** Rows handed to the thread (posted or pending) and not known to be committed. */
  private uncommitted = 0;
  private readonly batchRows = new Map<number, number>();
  private posted = 0;
  private postScheduled = false;
  private waiters: Array<{ seq: number; resolve: () => void; reject: (e: Error) => void }> = [];
  private error?: DistilleryError;
  private closed = false;

  /** What the thread says (a batch committed, or why a commit failed): read as events, or synchronously by flushSync. */
  private readonly replies: MessagePort;

  constructor(private readonly path: string) {
    const { port1, port2 } = new MessageChannel();
    this.replies = port1;
    // No tsx in the thread (execArgv: []): writer-thread.js is plain JavaScript.
    this.worker = new Worker(new URL('./writer-thread.js', import.meta.url), {
      workerData: { path, shared: this.state.buffer, replies: port2 },
      transferList: [port2],
      execArgv: [],
    });
    port1.on('message', (m: Reply) => this.onReply(m));
    this.worker.on('error', (e) => this.failWith(e.message));
    // Neither may keep the process alive: close() ends them.
    this.worker.unref();
    port1.unref();
  }

  /** Queue a row; rows queued in the same event-loop turn go to the thread together (one transaction). */
  write(row: WriterRow): void {
    this.check();
    this.pending.push(row);
    this.uncommitted++;
    if (!this.postScheduled) {
      this.postScheduled = true;
      setImmediate(() => this.post());
    }
  }

  /** Resolves once every row written so far is committed; rejects with the write error if a commit failed. */
  durable(): Promise<void> {
    if (this.error) return Promise.reject(this.error);
    // Rows of this turn are posted together at its end (write() scheduled it): the wait is for that batch.
    const seq = this.posted + (this.pending.length > 0 ? 1 : 0);
    if (Atomics.load(this.state, 0) >= seq) return Promise.resolve();
    // While someone waits for a commit, its reply must keep the process alive.
    this.replies.ref();
    return new Promise((resolve, reject) => this.waiters.push({ seq, resolve, reject }));
  }

  /** Block until every row written so far is committed (throws the write error if a commit failed). */
  flushSync(): void {
    this.post();
    const deadline = Date.now() + FLUSH_TIMEOUT_MS;
    for (;;) {
      // Replies are read here, not only as events: this thread is blocked, and a failure's reason is in one.
      for (let m = receiveMessageOnPort(this.replies); m; m = receiveMessageOnPort(this.replies)) this.onReply(m.message as Reply);
      this.check();
      const done = Atomics.load(this.state, 0);
      if (done >= this.posted) return;
      if (Date.now() > deadline) this.failWith(`the writer thread did not commit within ${FLUSH_TIMEOUT_MS / 1000} s`);
      // Woken by a commit; a failure only posts its reason, read on the next turn.
      else Atomics.wait(this.state, 0, done, Atomics.load(this.state, 1) === 1 ? 10 : 1000);
    }
  }

  /** Commit what is queued, then end the thread and its connection. */
  async close(): Promise<void> {
    if (this.closed) return;
    try {
      this.flushSync();
    } finally {
      this.closed = true;
      const exited = new Promise<void>((resolve) => this.worker.once('exit', () => resolve()));
      this.worker.ref(); // awaited: its exit must keep the process alive
      this.worker.postMessage({ close: true });
      this.replies.close();
      await exited;
    }
  }

  private post(): void {
    this.postScheduled = false;
    if (this.pending.length === 0 || this.error) return;
    const seq = ++this.posted;
    this.batchRows.set(seq, this.pending.length);
    this.worker.postMessage({ seq, rows: this.pending });
    this.pending = [];
  }

  private committed(seq: number): void {
    for (const [s, n] of this.batchRows) {
      if (s > seq) break;
      this.uncommitted -= n;
      this.batchRows.delete(s);
    }
    const ready = this.waiters.filter((w) => w.seq <= seq);
    if (ready.length === 0) return;
    this.waiters = this.waiters.filter((w) => w.seq > seq);
    if (this.waiters.length === 0) this.replies.unref();
    for (const w of ready) w.resolve();
  }

  private onReply(m: Reply): void {
    if (m.error !== undefined) this.failWith(m.error);
    else this.committed(m.seq!);
  }

  private failWith(message: string): void {
    // The same words as the store's own commit failure; every row not committed is named as lost.
    this.error ??= new DistilleryError(
      `${this.path}: cannot write (${message}); ${this.uncommitted} record(s) of the last moment were not saved, everything before them is`,
    );
    const waiting = this.waiters;
    this.waiters = [];
    this.replies.unref();
    for (const w of waiting) w.reject(this.error);
  }

  private check(): void {
    if (this.error) throw this.error;
    if (this.closed) throw new DistilleryError(`${this.path}: the writer thread is closed`);
  }
}
