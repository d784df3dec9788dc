/**
 * A named lease in the database: at most one holder at a time, with an expiry
 * that the holder pushes forward while it works. A holder that crashes stops
 * renewing, so its lease frees itself after the TTL; on the same host a holder
 * whose process is gone or a zombie is recognised at once.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { DistilleryError } from '../errors.ts';
import { Store } from './store.ts';

export interface LeaseRow {
  name: string;
  holder: string;
  pid: number;
  host: string;
  command: string;
  acquired_at: string;
  expires_at: string;
}

export class LeaseHeld extends DistilleryError {
  constructor(
    readonly path: string,
    readonly lease: LeaseRow,
    hint = 'Use --wait to wait for it',
  ) {
    super(
      `${path}: ${lease.name} is held by pid ${lease.pid} on ${lease.host} since ${lease.acquired_at} (${lease.command}); it expires at ${lease.expires_at} unless renewed. ${hint}`,
    );
    this.name = 'LeaseHeld';
  }
}

export interface LeaseOptions {
  ttlMs: number;
  /** What the holder is doing, shown to whoever is refused. */
  command: string;
  /** What the refused one can do (default: "Use --wait to wait for it"). */
  hint?: string;
  now?: () => Date;
}

/**
 * The state letter of a /proc/PID/stat line (R, S, D, Z, T, ...). The command name in parentheses may itself hold
 * spaces and parentheses: the state is the first field after the last ')'.
 */
export function procStatState(line: string): string | undefined {
  const end = line.lastIndexOf(')');
  if (end < 0) return undefined;
  return /^ (\S)/.exec(line.slice(end + 1))?.[1];
}

const HAS_PROC = existsSync('/proc/self/stat');

/**
 * Whether a process on this host can no longer renew a lease: it does not exist, or it is a zombie (dead, not yet
 * reaped; a killed labeler whose parent died too waits for init, which can take seconds). `kill(pid, 0)` cannot tell:
 * it succeeds on a zombie, so /proc decides where there is one.
 */
export function processGone(pid: number): boolean {
  if (HAS_PROC && isZombie(pid)) return true;
  try {
    process.kill(pid, 0);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

/** A missing or unreadable /proc entry says nothing (hidepid hides other users' live processes): kill() decides then. */
function isZombie(pid: number): boolean {
  try {
    const state = procStatState(readFileSync(`/proc/${pid}/stat`, 'utf8'));
    return state === 'Z' || state === 'X';
  } catch {
    return false;
  }
}

/** Without /proc a zombie looks alive: give a same-host holder this long to disappear before refusing. */
const ZOMBIE_GRACE_MS = 2500;

/** Whether `pid` is gone within `ms` (polled; blocks the thread, as taking a lease is synchronous). */
function goneWithin(pid: number, ms: number): boolean {
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (const deadline = Date.now() + ms; ;) {
    if (processGone(pid)) return true;
    if (Date.now() >= deadline) return false;
    Atomics.wait(pause, 0, 0, 100);
  }
}

export class Lease {
  private timer?: NodeJS.Timeout;
  private lost = false;

  private constructor(
    private readonly store: Store,
    readonly name: string,
    readonly holder: string,
    private readonly o: LeaseOptions,
    private readonly onLost?: () => void,
  ) {}

  /** Take the lease or throw LeaseHeld naming its holder. Renews itself every ttl/3 until released. */
  static acquire(store: Store, name: string, o: LeaseOptions, onLost?: () => void): Lease {
    const lease = new Lease(store, name, `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`, o, onLost);
    lease.take();
    lease.timer = setInterval(() => lease.renew(), Math.max(50, Math.floor(o.ttlMs / 3)));
    lease.timer.unref();
    return lease;
  }

  /** Wait (polling) until the lease can be taken, or the signal aborts. */
  static async wait(
    store: Store,
    name: string,
    o: LeaseOptions & { pollMs?: number; signal?: AbortSignal; onWait?: (held: LeaseRow) => void },
    onLost?: () => void,
  ): Promise<Lease> {
    let told = false;
    for (;;) {
      try {
        return Lease.acquire(store, name, o, onLost);
      } catch (e) {
        if (!(e instanceof LeaseHeld)) throw e;
        if (!told) o.onWait?.(e.lease);
        told = true;
        if (o.signal?.aborted) throw new DistilleryError(`gave up waiting for ${name}`);
        await new Promise((r) => setTimeout(r, o.pollMs ?? 1000));
      }
    }
  }

  private now(): Date {
    return this.o.now?.() ?? new Date();
  }

  private take(): void {
    const now = this.now();
    const expires = new Date(now.getTime() + this.o.ttlMs).toISOString();
    const db = Store.sqlOf(this.store);
    // Where a zombie cannot be told from a live process, wait a little for a same-host holder to go (outside the transaction).
    if (!HAS_PROC) {
      const held = currentLease(this.store, this.name);
      if (held && this.blocks(held, now) && held.host === hostname() && held.pid !== process.pid) goneWithin(held.pid, ZOMBIE_GRACE_MS);
    }
    db.transaction(() => {
      const held = currentLease(this.store, this.name);
      if (held && this.blocks(held, now)) {
        const sameHostDead = held.host === hostname() && held.pid !== process.pid && processGone(held.pid);
        if (!sameHostDead) throw new LeaseHeld(this.store.path, held, this.o.hint);
      }
      db.prepare(
        `INSERT INTO leases (name, holder, pid, host, command, acquired_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, pid = excluded.pid, host = excluded.host,
           command = excluded.command, acquired_at = excluded.acquired_at, expires_at = excluded.expires_at`,
      ).run(this.name, this.holder, process.pid, hostname(), this.o.command, now.toISOString(), expires);
    }).immediate();
  }

  /** Held by someone else and not expired. */
  private blocks(held: LeaseRow, now: Date): boolean {
    return held.holder !== this.holder && Date.parse(held.expires_at) > now.getTime();
  }

  /** Push the expiry forward; if someone else took the lease meanwhile (we stalled past the TTL), we lost it. */
  renew(): void {
    if (this.lost) return;
    const expires = new Date(this.now().getTime() + this.o.ttlMs).toISOString();
    const info = Store.sqlOf(this.store)
      .prepare('UPDATE leases SET expires_at = ? WHERE name = ? AND holder = ?')
      .run(expires, this.name, this.holder);
    if (info.changes === 0) {
      this.lost = true;
      clearInterval(this.timer);
      this.onLost?.();
    }
  }

  get isLost(): boolean {
    return this.lost;
  }

  release(): void {
    clearInterval(this.timer);
    if (!this.lost) Store.sqlOf(this.store).prepare('DELETE FROM leases WHERE name = ? AND holder = ?').run(this.name, this.holder);
  }
}

export function currentLease(store: Store, name: string): LeaseRow | undefined {
  return Store.sqlOf(store).prepare('SELECT * FROM leases WHERE name = ?').get(name) as LeaseRow | undefined;
}
