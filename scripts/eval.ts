import { Command } from 'commander';
import {
  addBackendOption,
  addDbOption,
  addJsonOption,
  addStudentDirOption,
  addTargetOptions,
  addTaskOption,
  openExistingStore,
  requireDb,
  type TargetFlags,
} from '../src/cli/options.ts';
import { taskInStore } from '../src/cli/task.ts';
import { log, runCli, say } from '../src/cli/run.ts';
import { formatTable } from '../src/cli/table.ts';
import { evaluateTargets, evaluateTeachers, evaluationJson, type Evaluation } from '../src/eval/evaluate.ts';
import type { TaskRow } from '../src/store/store.ts';
import type { BackendChoice } from '../src/train/backend.ts';

interface EvalOptions extends TargetFlags {
  db: string;
  student: string[];
  task?: string;
  split: string;
  targets: boolean;
  backend: BackendChoice;
  json: boolean;
}

const program = addJsonOption(
  addBackendOption(
    addTargetOptions(
      addTaskOption(
        addStudentDirOption(addDbOption(new Command('eval')), {
          multiple: true,
          help: 'student folders written by train.ts to evaluate (repeat, or list several)',
        }),
        "task name or file (default: the first student's own, else the database's only task)",
      ),
    ),
  )
    .description(
      'Teachers, the aggregated training target and students on a split against gold: accuracy, macro-F1, per-class ' +
        'precision/recall/F1, ECE (15 bins), NLL, confusion matrix, accuracy-coverage curve, cost per 1,000 items ' +
        '(teachers: what the store records as paid; students: none, plus their latency per item). Evaluates each --student, ' +
        'the target with --targets (or any of --aggregate, --weights, --calibrate), and the --teachers; with none of these, every teacher.',
    )
    .option('--split <name>', 'split to evaluate', 'test')
    .option('--targets', 'also score the training target, built as train.ts builds it from --teachers and the flags above', false),
);

runCli(async () => {
  const opts = program.parse().opts<EvalOptions>();
  requireDb(opts.db);
  const store = openExistingStore(opts.db);
  const rows: Evaluation[] = [];
  let task: TaskRow | undefined;
  try {
    if (opts.task) task = taskInStore(store, opts.task);
    if (opts.student.length) {
      // TensorFlow.js only when a student is evaluated: teacher rows need none of it.
      const [{ selectBackend }, { loadModelForTask }, { evaluateStudent }] = await Promise.all([
        import('../src/train/backend.ts'),
        import('../src/infer/model.ts'),
        import('../src/eval/student.ts'),
      ]);
      log(`backend: ${(await selectBackend(opts.backend)).detail}`);
      for (const dir of opts.student) {
        const m = await loadModelForTask(store, dir, { teachers: opts.teachers, ...(task ? { task } : {}) });
        try {
          task ??= m.task;
          rows.push(await evaluateStudent(m, opts.split));
        } finally {
          m.model.student.dispose();
        }
      }
    }
    task ??= taskInStore(store, undefined);
    const targets = opts.targets || opts.aggregate !== undefined || opts.weights !== undefined || opts.calibrate;
    const teachers = opts.teachers !== undefined || (!targets && opts.student.length === 0);
    const before = teachers ? evaluateTeachers(store, task, opts.split, opts.teachers) : [];
    if (targets) {
      const o = { teachers: opts.teachers, aggregate: opts.aggregate ?? 'mean', weights: opts.weights, calibrate: opts.calibrate };
      before.push(evaluateTargets(store, task, opts.split, o));
    }
    rows.unshift(...before);
  } finally {
    store.close();
  }
  if (opts.json) {
    say(JSON.stringify({ task: task.name, split: opts.split, labels: task.labels, evaluations: rows.map(evaluationJson) }));
    return;
  }
  printTables(task, opts.split, rows);
});

function printTables(task: TaskRow, split: string, rows: Evaluation[]): void {
  const gold = rows[0]?.gold ?? 0;
  say(`task ${task.name}, split "${split}": ${gold} items with gold`);
  say(
    formatTable(
      [
        ['kind', 'name', 'answered', 'accuracy', 'macro-F1', 'ECE', 'NLL', '$/1k items', 'ms/item'],
        ...rows.map((e) => [
          e.kind,
          e.name,
          `${e.answered}/${e.gold}`,
          pct(e.metrics.accuracy),
          // Nothing answered on the split (a reviewer who saw none of it): no F1 to speak of, as accuracy shows.
          e.answered === 0 ? '-' : num(e.metrics.macroF1),
          num(e.metrics.ece),
          num(e.metrics.nll),
          e.kind === 'student' ? '0' : e.cost.per1000.toFixed(4),
          e.latencyMsPerItem === null ? '-' : e.latencyMsPerItem.toFixed(3),
        ]),
      ],
      2,
    ).join('\n'),
  );
  const withCurve = rows.filter((e) => e.metrics.coverage);
  if (withCurve.length) {
    say('\naccuracy on the x% most confident items');
    const head = withCurve[0].metrics.coverage!.map((p) => `${Math.round(100 * p.coverage)}%`);
    say(formatTable([['name', ...head], ...withCurve.map((e) => [e.name, ...e.metrics.coverage!.map((p) => pct(p.accuracy))])]).join('\n'));
  }
  for (const e of rows) {
    say(`\n${e.kind} ${e.name}`);
    if (e.teacherAgreement !== undefined)
      say(`agreement with the teachers' label: ${e.teacherAgreement === null ? '-' : pct(e.teacherAgreement)}`);
    if (e.kind !== 'student') say(`paid ${e.cost.paid.toFixed(4)} for ${e.cost.labeled} labeled items (all splits)`);
    say(
      formatTable([
        ['class', 'precision', 'recall', 'F1', 'support'],
        ...e.metrics.perClass.map((c) => [c.label, num(c.precision), num(c.recall), num(c.f1), String(c.support)]),
      ]).join('\n'),
    );
    say('confusion (rows: gold, columns: predicted)');
    say(formatTable([['', ...task.labels], ...e.metrics.confusion.map((row, i) => [task.labels[i], ...row.map(String)])]).join('\n'));
  }
}

function pct(x: number): string {
  return Number.isFinite(x) ? `${(100 * x).toFixed(2)}%` : '-';
}

function num(x: number | null): string {
  return x !== null && Number.isFinite(x) ? x.toFixed(4) : '-';
}
