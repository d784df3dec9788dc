import cliProgress from 'cli-progress';
import type { RunRow } from '../store/store.ts';
import type { LabelStats, ProgressSink } from './types.ts';

/** A progress bar on a terminal; a plain line every `intervalMs` otherwise (logs, CI). */
export function makeProgress(opts: { tty: boolean; intervalMs: number; write: (line: string) => void }): ProgressSink {
  return opts.tty ? new BarProgress() : new LineProgress(opts.intervalMs, opts.write);
}

const money = (x: number) => `$${x.toFixed(4)}`;

class BarProgress implements ProgressSink {
  private bar = new cliProgress.SingleBar(
    {
      format: 'labeling |{bar}| {value}/{total} {rate}/s ETA {eta_formatted} cost {cost} failed {failed} errors {errors}',
      stream: process.stderr,
      hideCursor: true,
      etaBuffer: 50,
    },
    cliProgress.Presets.shades_classic,
  );
  private t0 = Date.now();

  start(total: number): void {
    this.t0 = Date.now();
    this.bar.start(total, 0, { rate: '0.0', cost: money(0), failed: 0, errors: 0 });
  }

  update(s: LabelStats): void {
    const done = s.labeled + s.failed + s.unreachable;
    const rate = done / Math.max(0.001, (Date.now() - this.t0) / 1000);
    this.bar.update(done, { rate: rate.toFixed(1), cost: money(s.cost), failed: s.failed, errors: s.errors });
  }

  stop(): void {
    this.bar.stop();
  }
}

class LineProgress implements ProgressSink {
  private last = 0;
  private t0 = Date.now();
  private total = 0;

  constructor(
    private readonly intervalMs: number,
    private readonly write: (line: string) => void,
  ) {}

  start(total: number, run: RunRow): void {
    this.t0 = this.last = Date.now();
    this.total = total;
    this.write(`run ${run.id}: labeling ${total} item(s) with ${run.teacher}`);
  }

  update(s: LabelStats): void {
    const now = Date.now();
    if (now - this.last < this.intervalMs) return;
    this.last = now;
    const done = s.labeled + s.failed + s.unreachable;
    const rate = done / Math.max(0.001, (now - this.t0) / 1000);
    const eta = rate > 0 ? Math.round((this.total - done) / rate) : NaN;
    this.write(
      `progress ${done}/${this.total} ${rate.toFixed(1)}/s eta ${Number.isNaN(eta) ? '?' : `${eta}s`} cost ${money(s.cost)} failed ${s.failed} errors ${s.errors}`,
    );
  }

  stop(): void {}
}
