import { Command, type OptionValues } from 'commander';
import { addDbOption, addInputOptions, addJsonOption, addTaskOption, fieldOptions, type InputFlags } from '../src/cli/options.ts';
import { EXIT, intArg, log, runCli, say } from '../src/cli/run.ts';
import { addTeacherOptions } from '../src/cli/teacher-options.ts';
import { DistilleryError } from '../src/errors.ts';

/** The labeling modules (openai, zod, the tokenizer) load once the flags are parsed, as in label.ts. */
async function loadPilot() {
  const [task, teacher, read, store, request, pilot, format] = await Promise.all([
    import('../src/cli/task.ts'),
    import('../src/cli/teacher.ts'),
    import('../src/input/read.ts'),
    import('../src/store/store.ts'),
    import('../src/teacher/request.ts'),
    import('../src/pilot/pilot.ts'),
    import('../src/cli/pilot-table.ts'),
  ]);
  return { ...task, ...teacher, ...read, ...pilot, ...format, Store: store.Store, defaultMaxTokens: request.defaultMaxTokens };
}

/** pilot's own flags; the teacher flags (src/cli/teacher-options.ts) ride along in OptionValues. */
interface PilotFlags extends InputFlags, OptionValues {
  db: string;
  task?: string;
  input: string;
  models: string[];
  prompts?: string[];
  sample: number;
  seed: number;
  json: boolean;
}

const list = (v: string) =>
  v
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);

const program = addTeacherOptions(
  addJsonOption(
    addInputOptions(
      addTaskOption(
        addDbOption(new Command('pilot')),
        "the task: its file, or a name from prompts/ (default: the first of --prompts, else the database's only task)",
      )
        .description(
          'Label a stratified sample of the input (items with gold labels) with every model × prompt, and compare them: ' +
            'accuracy, macro-F1, ECE, invalid answers, latency, cost, and what labeling the whole input would cost. ' +
            'The answers are stored under the same request keys as label.ts: labeling everything afterwards never pays for the sample twice.',
        )
        .requiredOption('--input <path>', 'the data to label (imported into the task, as label.ts --input does)')
        .requiredOption('--models <list>', 'teacher models to try, comma-separated', list)
        .option('--prompts <list>', 'task files to try (prompt variants of the task: same name and labels), comma-separated', list)
        .option('--sample <n>', 'items to label per configuration', intArg(1), 100)
        .option('--seed <n>', 'seed of the sample', intArg(0, 0xffffffff), 1),
    ),
  ),
  { model: false, limit: false, batch: false },
);

runCli(async () => {
  const opts = program.parse().opts<PilotFlags>();
  const {
    taskFromArg,
    teacherSetup,
    labelOptions,
    interruptOnSigint,
    readItems,
    Store,
    defaultMaxTokens,
    runPilot,
    pilotLines,
    pilotJson,
  } = await loadPilot();
  const models = unique(opts.models, '--models');
  if (models.length === 0) throw new DistilleryError('--models: give at least one model');
  const task = taskFromArg(opts.task ?? opts.prompts?.[0], opts.db);
  const prompts = unique(opts.prompts ?? [task.path], '--prompts').map((p) => {
    const variant = taskFromArg(p, opts.db);
    if (variant.name !== task.name || JSON.stringify(variant.labels) !== JSON.stringify(task.labels) || variant.input !== task.input) {
      throw new DistilleryError(
        `${variant.path}: a prompt variant must be a file of task "${task.name}" (labels ${JSON.stringify(task.labels)}, ${task.input}); ` +
          `it says "${variant.name}" (labels ${JSON.stringify(variant.labels)}, ${variant.input})`,
      );
    }
    return { arg: p, task: variant };
  });
  const sameText = prompts.find((p, i) => prompts.findIndex((q) => q.task.version === p.task.version) !== i);
  if (sameText) throw new DistilleryError(`--prompts: ${sameText.arg} is the same file (same bytes) as another prompt`);
  // Prices and clients before the database: a model with no price is refused before anything is written.
  const setups = prompts.flatMap((p) => models.map((model) => ({ prompt: p.arg, setup: teacherSetup({ ...opts, model }, p.task) })));

  const store = Store.open(opts.db);
  const stopSignal = interruptOnSigint();
  try {
    const imported = await store.importItems(task, readItems(opts.input, task, fieldOptions(opts)));
    if (imported.added > 0) log(`imported ${imported.added} new item(s) (${imported.existing} already present)`);
    // The default --max-tokens as label.ts computes it: it is part of every request key.
    const maxTokens = opts.maxTokens ?? store.defaultMaxTokens(task.labels, () => defaultMaxTokens(task.labels));
    const configs = setups.map(({ prompt, setup }) => ({
      prompt,
      options: labelOptions({ ...setup, opts: { ...setup.opts, maxTokens } }, store, imported.taskRow, { stopSignal }),
    }));
    const report = await runPilot({
      store,
      itemIds: imported.itemIds,
      configs,
      sample: opts.sample,
      seed: opts.seed,
      maxCost: opts.maxCost,
      onConfig: (c, i) => log(`configuration ${i + 1}/${configs.length}: ${c.options.settings.model} with ${c.prompt}`),
    });
    if (opts.json) say(pilotJson(report));
    else for (const line of pilotLines(report, { input: opts.input })) say(line);
    return report.status === 'completed'
      ? EXIT.ok
      : report.status === 'interrupted'
        ? EXIT.interrupted
        : report.status === 'stopped'
          ? EXIT.stopped
          : EXIT.error;
  } finally {
    store.close();
  }
});

function unique(xs: string[], flag: string): string[] {
  const twice = xs.find((x, i) => xs.indexOf(x) !== i);
  if (twice !== undefined) throw new DistilleryError(`${flag}: "${twice}" is given twice`);
  return xs;
}
