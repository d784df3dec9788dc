/** File plumbing for exports: whole files only (temp name, fsync, rename), hashes, listings. */
import { createHash } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { processGone } from '../store/lease.ts';

export function sha256Hex(data: Uint8Array | string): string {
  return createHash('sha256').update(data).digest('hex');
}

export function fileSha256(path: string): string {
  return sha256Hex(readFileSync(path));
}

/**
 * A file written under a temporary name in the same folder (hidden, with the
 * pid), fsynced, and renamed over `path` by `commit()`; `abort()` removes it.
 * Chunks are hashed as they go, so the manifest needs no second read.
 */
export class PendingFile {
  readonly tmp: string;
  private fd: number | null;
  private readonly hash = createHash('sha256');
  bytes = 0;
  sha256 = '';

  constructor(readonly path: string) {
    this.tmp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}`);
    this.fd = openSync(this.tmp, 'w');
  }

  write(chunk: string | Uint8Array): void {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
    this.hash.update(buf);
    this.bytes += buf.length;
    let off = 0;
    while (off < buf.length) off += writeSync(this.fd!, buf, off, buf.length - off);
  }

  /** fsync and close; the file stays under its temporary name until `commit`. */
  finish(): void {
    fsyncSync(this.fd!);
    closeSync(this.fd!);
    this.fd = null;
    this.sha256 = this.hash.digest('hex');
  }

  commit(): void {
    if (this.fd !== null) this.finish();
    renameSync(this.tmp, this.path);
  }

  abort(): void {
    if (this.fd !== null) {
      try {
        closeSync(this.fd);
      } catch {
        // already closed
      }
      this.fd = null;
    }
    rmSync(this.tmp, { force: true });
  }
}

const TEMP_NAME = /^\..+\.tmp-(\d+)$/;

/**
 * Removes the temporary files (PendingFile's `.NAME.tmp-PID`) that a killed export left in `dir`: those whose
 * process is gone. A live export's files (another process writing the same folder) stay.
 */
export function removeStaleTemps(dir: string): void {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const m = TEMP_NAME.exec(name);
    if (m && processGone(Number(m[1]))) rmSync(join(dir, name), { force: true });
  }
}

/** Every file under `dir`, as paths relative to it with `/` separators, sorted. */
export function listFiles(dir: string, prefix = ''): string[] {
  const out: string[] = [];
  for (const e of readdirSync(join(dir, prefix), { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...listFiles(dir, rel));
    else out.push(rel);
  }
  return out.sort(byCodeUnit);
}

export function byCodeUnit(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
