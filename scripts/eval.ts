import { Command, Option } from 'commander';
import { existsSync } from 'node:fs';
import { addDbOption } from '../src/cli/options.ts';
import { log, runCli, say } from '../src/cli/run.ts';
import { formatTable } from '../src/cli/table.ts';
import { DistilleryError } from '../src/errors.ts';
import { pickTask } from '../src/export/export.ts';
import { evaluateSplit, type TestReport } from '../src/infer/evaluate.ts';
import { loadModelForTask } from '../src/infer/model.ts';
import { Store } from '../src/store/store.ts';
import { selectBackend, type BackendChoice } from '../src/train/backend.ts';

interface EvalOptions {
  db: string;
  student: string;
  task?: string;
  split: string;
  teachers?: string;
  backend: BackendChoice;
  json: boolean;
}

const program = addDbOption(new Command('eval'))
  .description("A trained student on a split of its task: accuracy against gold, agreement with the teachers' label, ECE (15 bins), confusion matrix.")
  .requiredOption('--student <dir>', 'student folder written by train.ts')
  .option('--task <name>', "task (default: the student's own)")
  .option('--split <name>', 'split to evaluate', 'test')
  .option('--teachers <list>', 'teachers for the agreement figure (default: all)')
  .addOption(new Option('--backend <name>', 'tensor backend').choices(['auto', 'tensorflow', 'wasm', 'cpu']).default('auto'))
  .option('--json', 'print one JSON object instead of a table', false);

runCli(async () => {
  const opts = program.parse().opts<EvalOptions>();
  if (!existsSync(opts.db)) throw new DistilleryError(`${opts.db}: no such database`);
  log(`backend: ${(await selectBackend(opts.backend)).detail}`);
  const store = Store.open(opts.db);
  let report: TestReport;
  let labels: string[];
  try {
    const m = await loadModelForTask(store, opts.student, { teachers: opts.teachers, ...(opts.task ? { task: pickTask(store, opts.task) } : {}) });
    try {
      report = await evaluateSplit(m, opts.split);
      labels = m.task.labels;
    } finally {
      m.model.student.dispose();
    }
  } finally {
    store.close();
  }
  if (opts.json) {
    say(JSON.stringify({ student: opts.student, split: opts.split, ...report }));
    return;
  }
  const pct = (x: number | null) => (x === null ? '-' : `${(100 * x).toFixed(2)}%`);
  say(`${opts.student} on split "${opts.split}" (${report.n} items)`);
  say(formatTable([['accuracy', 'teacher agreement', 'ECE'], [pct(report.accuracy), pct(report.teacher_agreement), report.ece === null ? '-' : report.ece.toFixed(4)]]).join('\n'));
  say('\nconfusion (rows: gold, columns: predicted)');
  say(formatTable([['', ...labels], ...report.confusion.map((row, i) => [labels[i], ...row.map(String)])]).join('\n'));
});
