import { Command, Option } from 'commander';
import { join } from 'node:path';
import {
  addBackendOption,
  addDbOption,
  addOutDirOption,
  addStudentDirOption,
  addTargetOptions,
  addTaskOption,
  openExistingStore,
  type BackendFlag,
  type TargetFlags,
} from '../src/cli/options.ts';
import { EXIT, intArg, log, runCli, say } from '../src/cli/run.ts';
import { DistilleryError } from '../src/errors.ts';
import { taskInStore } from '../src/cli/task.ts';
import { writeExport, type WriteOptions } from '../src/export/export.ts';
import { CONFIG_FILE, TASKS_FILE, writeLabelStudio } from '../src/export/labelstudio.ts';
import { DATA_FILES, FORMATS, MANIFEST, type Format } from '../src/export/manifest.ts';
import { verifyExport } from '../src/export/verify.ts';
import { buildQueue, buildReviewContext, REVIEW_POLICIES, type ReviewPolicy } from '../src/review/queue.ts';

interface ExportFlags extends TargetFlags {
  db: string;
  task?: string;
  out?: string;
  format: string;
  logits: boolean;
  asOf?: number;
  withImages: boolean;
  verify?: string;
  split?: string;
  policy?: ReviewPolicy;
  student?: string;
  backend: BackendFlag;
  limit?: number;
}

/** The Label Studio format: a folder of its own (tasks JSON and labeling config), not a data file of an export. */
const LABELSTUDIO = 'labelstudio';

const program = addBackendOption(
  addStudentDirOption(addTargetOptions(addTaskOption(addOutDirOption(addDbOption(new Command('export')), 'output folder'))), {
    help: `${LABELSTUDIO} with --policy: a student folder written by train.ts, its predictions (out of fold where it has them) ranking the items`,
  }),
  'tensor backend for --student',
)
  .description(
    "Write DIR/labels.jsonl and/or DIR/labels.parquet and DIR/manifest.json: per item and teacher its latest valid label, or with --aggregate one target per item from several teachers. With --format labelstudio: DIR/tasks.json (Label Studio tasks, the teachers' answers as predictions with scores) and DIR/labeling-config.xml. The same database state gives byte-identical files.",
  )
  .option('--format <formats>', `comma list of output formats (${FORMATS.join(', ')}), or ${LABELSTUDIO} alone`, 'jsonl')
  .option('--split <name>', `${LABELSTUDIO}: only the items of this split (default: every item)`)
  .addOption(
    new Option('--policy <name>', `${LABELSTUDIO}: only the items review.ts would queue, most doubtful first, each with why`).choices(
      REVIEW_POLICIES,
    ),
  )
  .option('--limit <n>', `${LABELSTUDIO} with --policy: only the N most doubtful items`, intArg(1))
  .option('--logits', 'include the stored logits of white-box teachers (per-teacher rows)', false)
  .option(
    '--as-of <run>',
    'export the state after this run: labels of runs with id <= RUN, items imported by the end of that run',
    intArg(1),
  )
  .option('--with-images', 'image tasks: also write the images, as images/<sha256>.<ext>', false)
  .option(
    '--verify <dir>',
    'check an export: every file hash and size, no unlisted file, the counts against the rows; exits 1 naming the file on any difference',
  );

runCli(async () => {
  const opts = program.parse().opts<ExportFlags>();
  if (opts.verify !== undefined) {
    if (opts.out !== undefined) throw new DistilleryError('--verify DIR checks an export; it goes without --out');
    const v = await verifyExport(opts.verify);
    if (v.problems.length) {
      for (const p of v.problems) log(`error: ${p}`);
      return EXIT.error;
    }
    const files = v.manifest!.files;
    say(`${opts.verify}: ok (${files.length} file(s) and ${MANIFEST}, ${v.manifest!.counts.rows} row(s))`);
    return EXIT.ok;
  }
  if (opts.out === undefined) throw new DistilleryError('give --out DIR (write an export) or --verify DIR (check one)');
  if (opts.calibrate && !opts.aggregate)
    throw new DistilleryError('--calibrate goes with --aggregate (it calibrates each teacher before combining them)');
  if (opts.weights && opts.aggregate !== 'weighted') throw new DistilleryError('--weights goes with --aggregate weighted');
  if (opts.format.split(',').some((f) => f.trim() === LABELSTUDIO)) return await exportLabelStudio(opts, opts.out);
  for (const [flag, given] of [
    ['--split', opts.split],
    ['--policy', opts.policy],
    ['--student', opts.student],
    ['--limit', opts.limit],
  ] as const)
    if (given !== undefined) throw new DistilleryError(`${flag} goes with --format ${LABELSTUDIO}`);
  const formats = [
    ...new Set(
      String(opts.format)
        .split(',')
        .map((f) => f.trim()),
    ),
  ];
  const unknown = formats.filter((f) => !(FORMATS as readonly string[]).includes(f));
  if (unknown.length || formats.length === 0)
    throw new DistilleryError(
      `--format: unsupported format ${unknown.join(', ') || '(none)'} (supported: ${FORMATS.join(', ')}, or ${LABELSTUDIO} alone)`,
    );
  const out = opts.out;
  const store = openExistingStore(opts.db);
  try {
    const task = taskInStore(store, opts.task);
    const o: WriteOptions = {
      teachers: opts.teachers,
      logits: opts.logits,
      targets: opts.aggregate ? { aggregate: opts.aggregate, weights: opts.weights, calibrate: opts.calibrate } : undefined,
      formats: formats as Format[],
      asOf: opts.asOf,
      withImages: opts.withImages,
    };
    const r = await writeExport(store, task, out, o);
    const images = r.files.filter((f) => f.startsWith('images/')).length;
    say(
      `wrote ${r.rows} row(s) to ${formats.map((f) => join(out, DATA_FILES[f as Format])).join(' and ')}${images ? `, ${images} image(s) to ${join(out, 'images')}` : ''}; manifest ${join(out, MANIFEST)}`,
    );
  } finally {
    store.close();
  }
});

async function exportLabelStudio(opts: ExportFlags, out: string): Promise<number> {
  if (opts.format.trim() !== LABELSTUDIO) throw new DistilleryError(`--format ${LABELSTUDIO} goes alone (it writes a folder of its own)`);
  if (opts.logits) throw new DistilleryError(`--logits goes with --format jsonl or parquet, not ${LABELSTUDIO}`);
  if (opts.withImages)
    throw new DistilleryError(`--with-images goes with --format jsonl or parquet; ${LABELSTUDIO} carries each image in its task`);
  if (opts.policy === undefined && (opts.student !== undefined || opts.limit !== undefined))
    throw new DistilleryError(`${opts.student !== undefined ? '--student' : '--limit'} goes with --policy (it ranks the review queue)`);
  if (opts.policy !== undefined && opts.asOf !== undefined)
    throw new DistilleryError('--as-of goes without --policy (the queue is of the database as it is)');
  const store = openExistingStore(opts.db);
  try {
    const task = taskInStore(store, opts.task);
    const targets = opts.aggregate ? { aggregate: opts.aggregate, weights: opts.weights, calibrate: opts.calibrate } : undefined;
    // The queue the review page would walk, from the same teachers, target and split.
    const queue =
      opts.policy === undefined
        ? undefined
        : buildQueue(
            await buildReviewContext(store, task, {
              teachers: opts.teachers,
              ...targets,
              studentDir: opts.student,
              backend: opts.backend,
              split: opts.split,
            }),
            opts.policy,
          );
    const r = writeLabelStudio(store, task, out, {
      teachers: opts.teachers,
      targets,
      asOf: opts.asOf,
      split: opts.split,
      queue,
      limit: opts.limit,
    });
    say(
      `wrote ${r.tasks} task(s)${queue ? ` (most doubtful first by ${opts.policy}, of ${queue.length} queued)` : ''} with ${r.predictions} ` +
        `prediction(s) to ${join(out, TASKS_FILE)} and the labeling config to ${join(out, CONFIG_FILE)}`,
    );
    say(
      `in Label Studio: create a project, paste ${CONFIG_FILE} into Settings > Labeling Interface > Code, import ${TASKS_FILE}; ` +
        `when labeled, export the project as JSON and run: tsx scripts/import-review.ts FILE --format ${LABELSTUDIO} --db ${opts.db}`,
    );
    return EXIT.ok;
  } finally {
    store.close();
  }
}
