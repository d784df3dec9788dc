import { Command } from 'commander';
import { addDbOption, addJsonOption, addTaskOption, addTeachersOption, openExistingStore } from '../src/cli/options.ts';
import { runCli, say } from '../src/cli/run.ts';
import { formatTable } from '../src/cli/table.ts';
import { taskInStore } from '../src/cli/task.ts';
import { agreementLines, reviewerAgreement } from '../src/review/agreement.ts';
import { teachersReport } from '../src/targets/teachers-report.ts';

interface TeachersFlags {
  db: string;
  task?: string;
  teachers?: string;
  calibrate: boolean;
  json: boolean;
}

const program = addJsonOption(
  addTeachersOption(addTaskOption(addDbOption(new Command('teachers'))))
    .description(
      'Every teacher of a task: coverage, accuracy on gold, NLL and calibration error (ECE, 15 bins), agreement and κ between each pair; ' +
        "the reviewers' runs (human:NAME) among them, and the reviewers' agreement.",
    )
    .option('--calibrate', 'also fit a temperature per teacher (train split gold) and show NLL/ECE after it (test split)', false),
);

runCli(async () => {
  const opts = program.parse().opts<TeachersFlags>();
  const store = openExistingStore(opts.db);
  try {
    const task = taskInStore(store, opts.task);
    const report = teachersReport(store, task, { teachers: opts.teachers, calibrate: opts.calibrate });
    const reviewers = reviewerAgreement(store, task);
    if (opts.json) {
      say(JSON.stringify({ ...report, reviewers }, (_, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v)));
      return;
    }
    say(`task ${report.task}: ${report.items} items, ${report.gold} with gold`);
    const head = [
      'teacher',
      'runs',
      'kind',
      'labeled',
      'coverage',
      'accuracy',
      'n',
      'nll',
      'ece',
      'soft n',
      ...(opts.calibrate ? ['T', 'nll@T', 'ece@T'] : []),
    ];
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
      for (const p of report.agreement) say(`  ${p.a} ~ ${p.b}: ${pct(p.rate)} of ${p.n}, κ ${p.kappa === null ? '-' : num(p.kappa)}`);
    }
    if (opts.calibrate && report.human_gold.calibration)
      say(`calibration: gold of ${report.human_gold.calibration} train item(s) is the reviewers' (no imported gold there)`);
    for (const line of agreementLines(reviewers)) say(line);
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
