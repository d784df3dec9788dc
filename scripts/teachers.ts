import { Command } from 'commander';
import { existsSync } from 'node:fs';
import { addDbOption } from '../src/cli/options.ts';
import { runCli, say } from '../src/cli/run.ts';
import { formatTable } from '../src/cli/table.ts';
import { DistilleryError } from '../src/errors.ts';
import { taskInStore } from '../src/cli/task.ts';
import { Store } from '../src/store/store.ts';
import { teachersReport } from '../src/targets/teachers-report.ts';

const program = addDbOption(new Command('teachers'))
  .description('Every teacher of a task: coverage, accuracy on gold, NLL and calibration error (ECE, 15 bins), agreement between each pair.')
  .option('--task <name>', 'task name (needed when the database holds several)')
  .option('--teachers <list>', 'comma list of teacher names or run ids (default: all)')
  .option('--calibrate', 'also fit a temperature per teacher (train split gold) and show NLL/ECE after it (test split)', false)
  .option('--json', 'one JSON object for machines', false);

runCli(async () => {
  const opts = program.parse().opts();
  if (!existsSync(opts.db)) throw new DistilleryError(`${opts.db}: no such database`);
  const store = Store.open(opts.db);
  try {
    const report = teachersReport(store, taskInStore(store, opts.task), { teachers: opts.teachers, calibrate: opts.calibrate });
    if (opts.json) {
      say(JSON.stringify(report, (_, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v)));
      return;
    }
    say(`task ${report.task}: ${report.items} items, ${report.gold} with gold`);
    const head = ['teacher', 'runs', 'kind', 'labeled', 'coverage', 'accuracy', 'n', 'nll', 'ece', 'soft n', ...(opts.calibrate ? ['T', 'nll@T', 'ece@T'] : [])];
    const rows = report.teachers.map((t) => [
      t.teacher,
      t.runs.join(','),
      t.kinds.join(','),
      String(t.labeled),
      pct(t.coverage),
      pct(t.accuracy),
      String(t.accuracy_n),
      num(t.nll),
      num(t.ece),
      String(t.soft_n),
      ...(opts.calibrate ? [num(t.temperature!), num(t.nll_calibrated!), num(t.ece_calibrated!)] : []),
    ]);
    for (const line of formatTable([head, ...rows], 1)) say(line);
    if (report.agreement.length) {
      say('agreement (items labeled by both):');
      for (const p of report.agreement) say(`  ${p.a} ~ ${p.b}: ${pct(p.rate)} of ${p.n}`);
    }
  } finally {
    store.close();
  }
});

function pct(x: number): string {
  return Number.isFinite(x) ? `${(100 * x).toFixed(1)}%` : '-';
}

function num(x: number): string {
  return Number.isFinite(x) ? x.toFixed(3) : '-';
}
