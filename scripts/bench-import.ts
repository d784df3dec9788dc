/**
 * bench-import: is an input streamed, or loaded whole? Runs the real import CLI
 * (scripts/import.ts) in a child process on generated JSONL files of growing
 * size and reports each child's peak resident memory (maxRSS), next to a
 * baseline child that loads the same modules and imports nothing.
 *
 *   tsx scripts/bench-import.ts [--sizes 10000,100000] [--text-bytes 200] [--json]
 *
 * Flat means: peak memory at the largest size over peak memory at the smallest
 * stays near 1 while the input grows 10×. With --json the last line is one JSON
 * object with every figure.
 */
import { Command } from 'commander';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { addJsonOption } from '../src/cli/options.ts';
import { intArg, log, runCli } from '../src/cli/run.ts';
import { DistilleryError } from '../src/errors.ts';

const ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));

interface BenchImportFlags {
  sizes: number[];
  textBytes: number;
  json: boolean;
}

const program = addJsonOption(
  new Command('bench-import')
    .description('peak memory of scripts/import.ts as the input grows (streaming check)')
    .option('--sizes <list>', 'input rows per run', (v) => v.split(',').map(Number), [10_000, 100_000])
    .option('--text-bytes <n>', 'length of each text', intArg(1), 200),
);

/** Preloaded into the child: prints its peak RSS (kB) as the last stderr line when it exits. */
const REPORT_RSS = `process.on('exit', () => process.stderr.write('maxrss_kb ' + process.resourceUsage().maxRSS + '\\n'));\n`;

async function child(args: string[], preload: string): Promise<{ seconds: number; maxRssMb: number; stdout: string }> {
  const started = process.hrtime.bigint();
  const p = spawn(process.execPath, ['--import', 'tsx', '--import', preload, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const code = await new Promise<number | null>((r) => p.on('close', r));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const m = /maxrss_kb (\d+)/.exec(stderr);
  if (code !== 0 || !m)
    throw new DistilleryError(`child ${args.join(' ')} failed (exit ${code}): ${stderr.trim().split('\n').slice(-3).join(' | ')}`);
  return { seconds, maxRssMb: Number(m[1]) / 1024, stdout };
}

async function writeInput(file: string, rows: number, textBytes: number): Promise<void> {
  const out = createWriteStream(file);
  const filler = 'lorem ipsum dolor sit amet '.repeat(Math.ceil(textBytes / 27)).slice(0, textBytes);
  for (let i = 0; i < rows; i++) {
    const line = `${JSON.stringify({ id: `r${i}`, text: `ticket ${i}: ${filler}`, label: i % 2 ? 'billing' : 'technical' })}\n`;
    if (!out.write(line)) await once(out, 'drain');
  }
  await new Promise<void>((r) => out.end(() => r()));
}

runCli(async () => {
  const opts = program.parse().opts<BenchImportFlags>();
  const sizes = opts.sizes;
  if (sizes.some((n) => !Number.isInteger(n) || n < 1)) throw new DistilleryError('--sizes: positive whole numbers');
  const dir = mkdtempSync(join(tmpdir(), 'bench-import-'));
  try {
    const preload = join(dir, 'rss.mjs');
    writeFileSync(preload, REPORT_RSS);
    const task = join(dir, 'task.md');
    writeFileSync(task, '---\nname: tickets\nlabels: [billing, technical]\ninput: text\n---\nClassify: {{text}}\n');
    // Baseline: the same CLI, modules loaded, an empty input.
    writeFileSync(join(dir, 'empty.jsonl'), '');
    const baseline = await child(
      ['scripts/import.ts', '--task', task, '--input', join(dir, 'empty.jsonl'), '--db', join(dir, 'empty.db')],
      preload,
    );
    log(`baseline (empty input): peak ${baseline.maxRssMb.toFixed(1)} MB`);
    const runs: { rows: number; input_mb: number; seconds: number; rows_per_s: number; peak_rss_mb: number }[] = [];
    for (const rows of sizes) {
      const input = join(dir, `in-${rows}.jsonl`);
      await writeInput(input, rows, opts.textBytes);
      const r = await child(['scripts/import.ts', '--task', task, '--input', input, '--db', join(dir, `db-${rows}.db`)], preload);
      if (!r.stdout.includes(`imported ${rows} new item(s)`)) throw new DistilleryError(`import of ${rows} rows said: ${r.stdout.trim()}`);
      const inputMb = statSync(input).size / 2 ** 20;
      runs.push({
        rows,
        input_mb: round(inputMb),
        seconds: round(r.seconds),
        rows_per_s: Math.round(rows / r.seconds),
        peak_rss_mb: round(r.maxRssMb),
      });
      log(`${rows} rows (${inputMb.toFixed(1)} MB of JSONL): ${r.seconds.toFixed(1)} s, peak ${r.maxRssMb.toFixed(1)} MB`);
      rmSync(input);
    }
    const first = runs[0];
    const last = runs[runs.length - 1];
    const growth = last.peak_rss_mb / first.peak_rss_mb;
    const aboveBaseline = (last.peak_rss_mb - baseline.maxRssMb) / Math.max(1, first.peak_rss_mb - baseline.maxRssMb);
    console.log(`\npeak memory: baseline ${baseline.maxRssMb.toFixed(1)} MB (no input)`);
    for (const r of runs)
      console.log(
        `  ${String(r.rows).padStart(8)} rows  ${r.input_mb.toFixed(1).padStart(7)} MB input  ${r.seconds.toFixed(1).padStart(6)} s  peak ${r.peak_rss_mb.toFixed(1)} MB`,
      );
    console.log(
      `ratio peak(${last.rows}) / peak(${first.rows}): ${growth.toFixed(2)} for ${(last.rows / first.rows).toFixed(0)}× the rows; above the baseline: ${aboveBaseline.toFixed(2)}×`,
    );
    if (opts.json)
      console.log(
        JSON.stringify({
          baseline_peak_rss_mb: round(baseline.maxRssMb),
          runs,
          peak_ratio: round(growth),
          above_baseline_ratio: round(aboveBaseline),
        }),
      );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

function round(x: number): number {
  return Math.round(x * 100) / 100;
}
