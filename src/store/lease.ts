/**
 * A named lease in the database: at most one holder at a time, with an expiry
 * that the holder pushes forward while it works. A holder that crashes stops
 * renewing, so its lease frees itself after the TTL; on the same host a holder
 * whose process is gone is recognised at once.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { DistilleryError } from '../errors.ts';
import type { Store } from './store.ts';

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
    super(`${path}: ${lease.name} is held by pid ${lease.pid} on ${lease.host} since ${lease.acquired_at} (${lease.command}); it expires at ${lease.expires_at} unless renewed. ${hint}`);
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

function processGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ESRCH';
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
  static async wait(store: Store, name: string, o: LeaseOptions & { pollMs?: number; signal?: AbortSignal; onWait?: (held: LeaseRow) => void }, onLost?: () => void): Promise<Lease> {
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
    const db = this.store.db;
    db.transaction(() => {
      const held = db.prepare('SELECT * FROM leases WHERE name = ?').get(this.name) as LeaseRow | undefined;
      if (held && held.holder !== this.holder && Date.parse(held.expires_at) > now.getTime()) {
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

  /** Push the expiry forward; if someone else took the lease meanwhile (we stalled past the TTL), we lost it. */
  renew(): void {
    if (this.lost) return;
    const expires = new Date(this.now().getTime() + this.o.ttlMs).toISOString();
    const info = this.store.db.prepare('UPDATE leases SET expires_at = ? WHERE name = ? AND holder = ?').run(expires, this.name, this.holder);
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
    if (!this.lost) this.store.db.prepare('DELETE FROM leases WHERE name = ? AND holder = ?').run(this.name, this.holder);
  }
}

export function currentLease(store: Store, name: string): LeaseRow | undefined {
  return store.db.prepare('SELECT * FROM leases WHERE name = ?').get(name) as LeaseRow | undefined;
}
