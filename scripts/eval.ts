import { Command } from 'commander';
import {
  addBackendOption,
  addDbOption,
  addJsonOption,
  addStudentDirOption,
  addTaskOption,
  addTeachersOption,
  openExistingStore,
  requireDb,
} from '../src/cli/options.ts';
import { taskInStore } from '../src/cli/task.ts';
import { log, runCli, say } from '../src/cli/run.ts';
import { formatTable } from '../src/cli/table.ts';
import { evaluateSplit, type TestReport } from '../src/infer/evaluate.ts';
import { loadModelForTask } from '../src/infer/model.ts';
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

const program = addJsonOption(
  addBackendOption(
    addTeachersOption(
      addTaskOption(
        addStudentDirOption(addDbOption(new Command('eval')), { required: true }),
        "task name or file (default: the student's own)",
      ),
    ),
  )
    .description(
      "A trained student on a split of its task: accuracy against gold, agreement with the teachers' label, ECE (15 bins), confusion matrix.",
    )
    .option('--split <name>', 'split to evaluate', 'test'),
);

runCli(async () => {
  const opts = program.parse().opts<EvalOptions>();
  requireDb(opts.db);
  log(`backend: ${(await selectBackend(opts.backend)).detail}`);
  const store = openExistingStore(opts.db);
  let report: TestReport;
  let labels: string[];
  try {
    const m = await loadModelForTask(store, opts.student, {
      teachers: opts.teachers,
      ...(opts.task ? { task: taskInStore(store, opts.task) } : {}),
    });
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
  say(
    formatTable([
      ['accuracy', 'teacher agreement', 'ECE'],
      [pct(report.accuracy), pct(report.teacher_agreement), report.ece === null ? '-' : report.ece.toFixed(4)],
    ]).join('\n'),
  );
  say('\nconfusion (rows: gold, columns: predicted)');
  say(formatTable([['', ...labels], ...report.confusion.map((row, i) => [labels[i], ...row.map(String)])]).join('\n'));
});
