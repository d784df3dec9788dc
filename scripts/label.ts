import { Command, type OptionValues } from 'commander';
import { addDbOption, addInputOptions, addTaskOption, fieldOptions, requireDb, type InputFlags } from '../src/cli/options.ts';
import { EXIT, log, runCli, say } from '../src/cli/run.ts';
import { addTeacherOptions } from '../src/cli/teacher-options.ts';
import { DistilleryError } from '../src/errors.ts';
import type { LabelOptions } from '../src/label/types.ts';
import type { Store, TaskRow } from '../src/store/store.ts';

/**
 * What a run needs beyond parsing its flags, loaded once they are parsed: openai, zod, yaml and the labeling modules
 * take most of a second to load, which `--help` and a mistyped flag need not wait for.
 */
async function loadLabeling() {
  const [task, teacher, read, plan, open, request] = await Promise.all([
    import('../src/cli/task.ts'),
    import('../src/cli/teacher.ts'),
    import('../src/input/read.ts'),
    import('../src/label/plan.ts'),
    import('../src/store/open.ts'),
    import('../src/teacher/request.ts'),
  ]);
  return {
    ...task,
    ...teacher,
    ...read,
    ...plan,
    ...open,
    softModeName: request.softModeName,
    defaultMaxTokens: request.defaultMaxTokens,
  };
}

/** label's own flags; the teacher flags (src/cli/teacher.ts) ride along in OptionValues. */
interface LabelFlags extends InputFlags, OptionValues {
  db: string;
  task?: string;
  input?: string;
  dryRun: boolean;
}

const program = addTeacherOptions(
  addInputOptions(
    addTaskOption(addDbOption(new Command('label')), "task file, or a name from prompts/ (default: the database's only task)")
      .description(
        'Label every unlabeled item of a task with a teacher LLM behind an OpenAI-compatible API. Resumable: the same command never pays for an answer twice.',
      )
      .option('--input <path>', 'import this file first and label its items (else: every item of the task in the database)')
      .option('--dry-run', 'print the item count, estimated tokens and cost; send nothing', false),
  ),
);

runCli(async () => {
  const opts = program.parse().opts<LabelFlags>();
  const {
    taskFromArg,
    teacherSetup,
    openForDryRun,
    usingStore,
    interruptOnSigint,
    labelOptions,
    planLabeling,
    estimateCost,
    softModeName,
    defaultMaxTokens,
    readItems,
    runTeacherPass,
    labelSummary,
    labelExitCode,
  } = await loadLabeling();
  // Everything that can be refused without the database is, before it is opened: a bad task, price or flag, or a
  // missing API key (only when requests will be sent: a dry run needs none), leaves no database file behind.
  const task = taskFromArg(opts.task, opts.db);
  const teacher = teacherSetup(opts, task, { sends: !opts.dryRun });
  const stopSignal = interruptOnSigint();
  const base = (store: Store, taskRow: TaskRow, itemIds?: number[]): LabelOptions =>
    labelOptions(teacher, store, taskRow, { itemIds, stopSignal });
  // The default --max-tokens is a token count: the database remembers it, so that only its first run loads the tokenizer.
  const maxTokens = (store: Store) =>
    (opts.maxTokens ??= store.defaultMaxTokens(task.labels, () => defaultMaxTokens(task.labels), { remember: !opts.dryRun }));

  if (opts.dryRun) {
    // A dry run creates no database: without one, the input is read into an empty in-memory store.
    if (!opts.input) requireDb(opts.db);
    const store = openForDryRun(opts.db);
    try {
      maxTokens(store);
      const dry = async (o: LabelOptions) => {
        const plan = await planLabeling(o);
        const { expected, worst, note } = estimateCost(teacher, plan);
        say(
          `dry run: ${plan.todo.length} item(s) to label (${plan.cached} already labeled, ${plan.failedBefore} failed before) with ${opts.model}, ` +
            `soft ${softModeName(o.settings.soft)}: ~${plan.promptTokens} input tokens, ~${plan.expectedCompletionTokens} output tokens, ` +
            `estimated cost $${expected.toFixed(4)} (at most $${worst.toFixed(4)})${note}` +
            `${plan.inBatch ? `, ${plan.inBatch} in live batch jobs` : ''}; nothing sent`,
        );
      };
      if (opts.input)
        await store.importItems(task, readItems(opts.input, task, fieldOptions(opts)), {
          dryRun: true,
          beforeCommit: (r) => dry(base(store, r.taskRow, r.itemIds)),
        });
      else await dry(base(store, existingTask(store, task.name)));
      return EXIT.ok;
    } finally {
      store.close();
    }
  }

  // A first run whose input turns out bad removes the database it created (usingStore).
  return usingStore(opts.db, async (store) => {
    maxTokens(store);
    let o: LabelOptions;
    if (opts.input) {
      const imported = await store.importItems(task, readItems(opts.input, task, fieldOptions(opts)));
      if (imported.added > 0) log(`imported ${imported.added} new item(s) (${imported.existing} already present)`);
      o = base(store, imported.taskRow, imported.itemIds);
    } else {
      o = base(store, existingTask(store, task.name));
    }
    const result = await runTeacherPass(teacher, o);
    say(labelSummary(result));
    return labelExitCode(result);
  });
});

function existingTask(store: Store, name: string) {
  const row = store.findTask(name);
  if (!row) throw new DistilleryError(`${store.path}: task "${name}" has no items yet; pass --input FILE`);
  return row;
}
