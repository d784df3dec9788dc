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
import { intArg, log, runCli, say } from '../src/cli/run.ts';
import { formatName, type SoftFormat } from '../src/soft/codec.ts';
import type { Task } from '../src/task/task.ts';
import { Store } from '../src/store/store.ts';
import { formatAugment, parseAugment, type AugmentConfig } from '../src/train/augment.ts';
import { ingestLogits, replayRunFor, type IngestResult } from '../src/whitebox/ingest.ts';

interface IngestFlags {
  db: string;
  task?: string;
  teacher: string;
  input?: string;
  ids?: string;
  fromModel?: string;
  backend: BackendFlag;
  store?: string;
  augment?: AugmentConfig;
  epochs?: number;
  seed: number;
  checkReplay: boolean;
  json: boolean;
}

/** What --from-model does besides the plain ingest: store replayed views, or check stored ones. */
interface ModelJob {
  replay?: { augment: AugmentConfig; epochs: number; seed: number };
  check: boolean;
  json: boolean;
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
      )
      .option(
        '--augment <spec>',
        "with --from-model: augmentation replay (TinyViT): also store, for --epochs epochs, each train item's augmentation seed " +
          'and the teacher on that augmented view; train.ts replays the views (shift:N, flip, crop:P, erase:p[:pixel], e.g. crop:4,flip,erase:0.25)',
        parseAugment,
      )
      .option('--epochs <n>', 'with --augment: epochs of views to store (training epoch e uses stored epoch e mod n)', intArg(1))
      .option(
        '--seed <n>',
        "with --augment: base seed of the views' seeds (each from it, the item and the epoch)",
        intArg(0, 0x7fffffff),
        0,
      )
      .option(
        '--check-replay',
        'with the --from-model, --augment, --epochs and --seed of an ingested replay run: run the teacher again on the replayed views ' +
          '(and on independently drawn ones) and report how far they are from the stored outputs; stores nothing',
        false,
      )
      .option('--json', 'with --check-replay: print the report as one JSON object', false),
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
    const job = modelJob(opts);
    const res = opts.fromModel
      ? await ingestFromModel(store, task, opts.teacher, opts.fromModel, format, opts.backend, job)
      : await ingestLogits({ store, task, teacher: opts.teacher, input: opts.input!, idsFile: opts.ids, format });
    if (!res) return; // the check printed its report
    say(
      res.alreadyIngested
        ? `nothing to do: ${opts.input ?? opts.fromModel} was already ingested as run ${res.run.id} (${res.rows} rows)`
        : `run ${res.run.id}: ingested ${res.rows} rows of logits from ${opts.input ?? opts.fromModel} as teacher "${opts.teacher}", stored as ${formatName(format)}` +
            (job.replay
              ? `, and ${job.replay.epochs} epochs of the train items' ${formatAugment(job.replay.augment)} views with their seeds`
              : ''),
    );
  } finally {
    store.close();
  }
});

function modelJob(opts: IngestFlags): ModelJob {
  const needsModel = (flag: string) => {
    if (!opts.fromModel) throw new DistilleryError(`${flag} needs --from-model DIR (the teacher is run on the augmented views)`);
  };
  if (opts.augment) needsModel('--augment');
  if (opts.checkReplay) needsModel('--check-replay');
  if (opts.epochs !== undefined && !opts.augment)
    throw new DistilleryError('--epochs: only with --augment SPEC (epochs of augmented views)');
  if (opts.checkReplay && !opts.augment)
    throw new DistilleryError('--check-replay: give the --augment and --epochs of the replay run to check');
  if (opts.json && !opts.checkReplay) throw new DistilleryError('--json: only with --check-replay');
  if (!opts.augment) return { check: false, json: false };
  if (opts.epochs === undefined) throw new DistilleryError('--augment: give --epochs N (how many epochs of views to store)');
  return { replay: { augment: opts.augment, epochs: opts.epochs, seed: opts.seed }, check: opts.checkReplay, json: opts.json };
}

/** The heteromorphic path: a local model (say a CNN trained with --supervised) becomes a white-box teacher run. */
async function ingestFromModel(
  store: Store,
  task: Task,
  teacher: string,
  dir: string,
  format: SoftFormat,
  backend: string,
  job: ModelJob,
): Promise<IngestResult | undefined> {
  const { selectBackend } = await import('../src/train/backend.ts');
  const { loadModelForTask, modelFiles } = await import('../src/infer/model.ts');
  const { modelLogitsRows } = await import('../src/infer/predict.ts');
  const replay = await import('../src/whitebox/replay.ts');
  log(`backend: ${(await selectBackend(backend as never)).detail}`);
  const taskRow = store.findTask(task.name);
  if (!taskRow) throw new DistilleryError(`${store.path}: task "${task.name}" has no items; import them first`);
  const { model, ds } = await loadModelForTask(store, dir, { task: taskRow });
  try {
    const o = {
      store,
      task,
      teacher,
      input: dir,
      format,
      sourceFiles: modelFiles(dir),
      rows: () => modelLogitsRows(model, ds),
      ...(job.replay ? { replay: replay.modelReplay(store, taskRow, model, ds, job.replay) } : {}),
    };
    if (job.check) {
      printCheck(await replay.checkReplay(store, await replayRunFor(o), model, ds), job.json);
      return undefined;
    }
    return await ingestLogits(o);
  } finally {
    model.student.dispose();
  }
}

function printCheck(r: import('../src/whitebox/replay.ts').ReplayCheck, json: boolean): void {
  if (json) return say(JSON.stringify(r));
  say(`run ${r.run}: ${r.rows} stored views of ${r.augment} over ${r.epochs} epochs, compared on the top ${r.k}`);
  const row = (name: string, a: typeof r.replayed) =>
    say(
      `  ${name.padEnd(12)} mean |Δp| ${a.meanAbsDiff.toExponential(2)}  index mismatch ${(100 * a.indexMismatch).toFixed(2)}%  ` +
        `top-1 mismatch ${(100 * a.top1Mismatch).toFixed(2)}%  byte-identical ${(100 * a.identical).toFixed(1)}%`,
    );
  row('replayed', r.replayed);
  row('independent', r.independent);
}
