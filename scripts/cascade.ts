import { join } from 'node:path';
import { Command } from 'commander';
import {
  addBackendOption,
  addDbOption,
  addJsonOption,
  addOutDirOption,
  addStudentDirOption,
  addTaskOption,
  openExistingStore,
  type BackendFlag,
} from '../src/cli/options.ts';
import { intArg, log, numberArg, runCli, say } from '../src/cli/run.ts';
import { formatTable } from '../src/cli/table.ts';
import { taskInStore } from '../src/cli/task.ts';
import { DistilleryError } from '../src/errors.ts';

interface FitFlags {
  db: string;
  student: string;
  task?: string;
  target: number;
  split: string;
  out?: string;
  confidence: number;
  resamples: number;
  minItems: number;
  seed: number;
  backend: BackendFlag;
  json: boolean;
}

const program = new Command('cascade').description(
  'A student-first cascade: the student answers where it is confident enough, the teacher answers the rest (predict.ts --cascade).',
);

addJsonOption(
  addBackendOption(
    addOutDirOption(
      addTaskOption(
        addStudentDirOption(addDbOption(program.command('fit')), { required: true }),
        "task name or file (default: the student's own)",
      ),
      'folder to write cascade.json into (default: the student folder)',
    ),
  ),
)
  .description(
    "Per class the student predicts, the lowest confidence threshold at which its answers' bootstrap lower bound meets --target " +
      "on held-out labeled data (gold where the split has it, else the teachers' labels; never the test split). Writes cascade.json.",
  )
  .requiredOption(
    '--target <accuracy>',
    'accuracy the student must reach on the items it answers, per class (e.g. 0.95)',
    numberArg(0.01, 1),
  )
  .option(
    '--split <name>',
    "held-out split to fit on: a split of the data, or val (the data's split named val, else the student's validation slice); never test",
    'val',
  )
  .option(
    '--confidence <level>',
    "confidence of the per-class guarantee (each of a class's K candidate thresholds is tested at 1 − (1 − level)/K)",
    numberArg(0.5, 0.999),
    0.95,
  )
  .option('--resamples <n>', 'bootstrap resamples', intArg(100, 100_000), 1000)
  .option(
    '--min-items <n>',
    'the smallest candidate set: the top N, 1.5·N, 1.5²·N … most confident items of a class are tried (a class with fewer: teacher only)',
    intArg(1),
    30,
  )
  .option('--seed <n>', 'seed of the bootstrap', intArg(0), 1)
  .action(async (opts: FitFlags) => fit(opts));

runCli(async () => {
  await program.parseAsync();
});

async function fit(opts: FitFlags): Promise<void> {
  const { checkFitSplit, fitCascade } = await import('../src/cascade/fit.ts');
  checkFitSplit(opts.split); // before anything is opened or loaded
  const store = openExistingStore(opts.db);
  const { selectBackend } = await import('../src/train/backend.ts');
  const { loadModel, checkLabels } = await import('../src/infer/model.ts');
  const { CASCADE_FILE, writeCascade } = await import('../src/cascade/schema.ts');
  try {
    log(`backend: ${(await selectBackend(opts.backend)).detail}`);
    const model = await loadModel(opts.student);
    try {
      const task = opts.task ? taskInStore(store, opts.task) : store.findTask(model.spec.task);
      if (!task) throw new DistilleryError(`${opts.student}: task "${model.spec.task}" is not in ${store.path}; give --task`);
      checkLabels(model, task);
      const file = join(opts.out ?? opts.student, CASCADE_FILE);
      const cascade = await fitCascade(store, task, model, { ...opts, file });
      writeCascade(file, cascade);
      if (opts.json) return say(JSON.stringify({ file, ...cascade }));
      const pct = (x: number | null) => (x === null ? '-' : `${(100 * x).toFixed(2)}%`);
      const d = cascade.data;
      say(
        `${file}: target ${pct(cascade.target)} per class at ${pct(cascade.bootstrap.confidence)} confidence ` +
          `(${cascade.bootstrap.resamples} bootstrap resamples; each of a class's K candidate thresholds tested at 1 − ` +
          `${pct(1 - cascade.bootstrap.confidence)}/K), fitted on ${d.n} item(s) of ${d.split} against ${d.reference} labels`,
      );
      say(
        formatTable([
          ['class', 'threshold', 'predicted', 'K', 'accepted', 'accuracy', 'lower bound'],
          ...cascade.thresholds.map((t) => [
            t.label,
            t.threshold === null ? 'teacher' : t.threshold.toFixed(4),
            String(t.predicted),
            String(t.candidates),
            String(t.accepted),
            pct(t.accuracy),
            pct(t.lower_bound),
          ]),
        ]).join('\n'),
      );
      say(
        `expected on the fit data: the student answers ${pct(cascade.expected.coverage)} of items, at ${pct(cascade.expected.accuracy)} accuracy`,
      );
    } finally {
      model.student.dispose();
    }
  } finally {
    store.close();
  }
}
