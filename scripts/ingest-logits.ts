import { Command } from 'commander';
import { storedTask, taskInStore } from '../src/cli/task.ts';
import { DistilleryError } from '../src/errors.ts';
import {
  addBackendOption,
  addDbOption,
  addStoreOption,
  addTaskOption,
  openExistingStore,
  storeFormat,
  type BackendFlag,
} from '../src/cli/options.ts';
import { log, runCli, say } from '../src/cli/run.ts';
import { formatName, type SoftFormat } from '../src/soft/codec.ts';
import type { Task } from '../src/task/task.ts';
import { Store } from '../src/store/store.ts';
import { ingestLogits } from '../src/whitebox/ingest.ts';

interface IngestFlags {
  db: string;
  task?: string;
  teacher: string;
  input?: string;
  ids?: string;
  fromModel?: string;
  backend: BackendFlag;
  store?: string;
}

const program = addBackendOption(
  addStoreOption(
    addTaskOption(
      addDbOption(new Command('ingest-logits')),
      "task name or file; its items must be imported already (default: the database's only task)",
    )
      .description(
        'Store a white-box teacher\'s logits as a run: JSONL rows {"id" or "text", "logits": [C numbers]}, or a .npy array [N, C] (float32 or float16) with --ids.',
      )
      .requiredOption('--teacher <name>', "the teacher's name (what --teachers refers to later)")
      .option('--input <file>', 'logits: .jsonl or .npy')
      .option('--ids <file>', 'for .npy: item ids, one per line in row order')
      .option(
        '--from-model <dir>',
        'instead of a file: run a student trained by train.ts over every item of the task (a local white-box teacher)',
      ),
  ),
  'tensor backend for --from-model',
);

runCli(async () => {
  const opts = program.parse().opts<IngestFlags>();
  const store = openExistingStore(opts.db);
  try {
    const task = storedTask(taskInStore(store, opts.task), store);
    const format = storeFormat(opts.store, task.labels.length);
    if (!opts.input === !opts.fromModel) throw new DistilleryError('give either --input FILE or --from-model DIR');
    const res = opts.fromModel
      ? await ingestFromModel(store, task, opts.teacher, opts.fromModel, format, opts.backend)
      : await ingestLogits({ store, task, teacher: opts.teacher, input: opts.input!, idsFile: opts.ids, format });
    say(
      res.alreadyIngested
        ? `nothing to do: ${opts.input ?? opts.fromModel} was already ingested as run ${res.run.id} (${res.rows} rows)`
        : `run ${res.run.id}: ingested ${res.rows} rows of logits from ${opts.input ?? opts.fromModel} as teacher "${opts.teacher}", stored as ${formatName(format)}`,
    );
  } finally {
    store.close();
  }
});

/** The heteromorphic path: a local model (say a CNN trained with --supervised) becomes a white-box teacher run. */
async function ingestFromModel(store: Store, task: Task, teacher: string, dir: string, format: SoftFormat, backend: string) {
  const { selectBackend } = await import('../src/train/backend.ts');
  const { loadModelForTask, modelFiles } = await import('../src/infer/model.ts');
  const { modelLogitsRows } = await import('../src/infer/predict.ts');
  log(`backend: ${(await selectBackend(backend as never)).detail}`);
  const taskRow = store.findTask(task.name);
  if (!taskRow) throw new DistilleryError(`${store.path}: task "${task.name}" has no items; import them first`);
  const { model, ds } = await loadModelForTask(store, dir, { task: taskRow });
  try {
    return await ingestLogits({
      store,
      task,
      teacher,
      input: dir,
      format,
      sourceFiles: modelFiles(dir),
      rows: () => modelLogitsRows(model, ds),
    });
  } finally {
    model.student.dispose();
  }
}
