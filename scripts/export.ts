import { Command } from 'commander';
import { existsSync } from 'node:fs';
import { addDbOption, addTargetOptions } from '../src/cli/options.ts';
import { log, runCli, say } from '../src/cli/run.ts';
import { DistilleryError } from '../src/errors.ts';
import { pickTask, writeJsonlExport, type ExportOptions } from '../src/export/export.ts';
import { Store } from '../src/store/store.ts';

const program = addTargetOptions(
  addDbOption(new Command('export'))
    .description("Write DIR/labels.jsonl: per item and teacher its latest valid label, or with --aggregate one target per item from several teachers.")
    .requiredOption('--out <dir>', 'output folder')
    .option('--format <formats>', 'output format (jsonl)', 'jsonl')
    .option('--task <name>', 'task name (needed when the database holds several)')
    .option('--logits', 'include the stored logits of white-box teachers (per-teacher rows)', false),
);

runCli(async () => {
  const opts = program.parse().opts();
  const formats = String(opts.format).split(',').map((f) => f.trim());
  const unknown = formats.filter((f) => f !== 'jsonl');
  if (unknown.length) throw new DistilleryError(`--format: unsupported format ${unknown.join(', ')} (supported: jsonl)`);
  if (opts.calibrate && !opts.aggregate) throw new DistilleryError('--calibrate goes with --aggregate (it calibrates each teacher before combining them)');
  if (opts.weights && opts.aggregate !== 'weighted') throw new DistilleryError('--weights goes with --aggregate weighted');
  if (!existsSync(opts.db)) throw new DistilleryError(`${opts.db}: no such database`);
  const store = Store.open(opts.db);
  try {
    const task = pickTask(store, opts.task);
    const o: ExportOptions = {
      teachers: opts.teachers,
      logits: opts.logits,
      targets: opts.aggregate ? { aggregate: opts.aggregate, weights: opts.weights, calibrate: opts.calibrate } : undefined,
    };
    const { path, rows } = writeJsonlExport(store, task, opts.out, o);
    say(`wrote ${rows} row(s) to ${path}`);
  } finally {
    store.close();
  }
});
