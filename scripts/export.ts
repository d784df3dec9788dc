import { Command } from 'commander';
import { existsSync } from 'node:fs';
import { addDbOption } from '../src/cli/options.ts';
import { runCli, say } from '../src/cli/run.ts';
import { DistilleryError } from '../src/errors.ts';
import { pickTask, writeJsonlExport } from '../src/export/export.ts';
import { Store } from '../src/store/store.ts';

const program = addDbOption(new Command('export'))
  .description("Write DIR/labels.jsonl: one row per item and teacher with that teacher's latest valid label.")
  .requiredOption('--out <dir>', 'output folder')
  .option('--format <formats>', 'output format (jsonl)', 'jsonl')
  .option('--task <name>', 'task name (needed when the database holds several)');

runCli(async () => {
  const opts = program.parse().opts();
  const formats = String(opts.format).split(',').map((f) => f.trim());
  const unknown = formats.filter((f) => f !== 'jsonl');
  if (unknown.length) throw new DistilleryError(`--format: unsupported format ${unknown.join(', ')} (supported: jsonl)`);
  if (!existsSync(opts.db)) throw new DistilleryError(`${opts.db}: no such database`);
  const store = Store.open(opts.db);
  try {
    const task = pickTask(store, opts.task);
    const { path, rows } = writeJsonlExport(store, task, opts.out);
    say(`wrote ${rows} row(s) to ${path}`);
  } finally {
    store.close();
  }
});
