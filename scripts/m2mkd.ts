import { Command } from 'commander';
import {
  addBackendOption,
  addDbOption,
  addOutDirOption,
  addTaskOption,
  addTeachersOption,
  openExistingStore,
  requireDb,
} from '../src/cli/options.ts';
import { taskInStore } from '../src/cli/task.ts';
import { intArg, log, numberArg, runCli, say } from '../src/cli/run.ts';
import { DistilleryError } from '../src/errors.ts';
import { loadModel } from '../src/infer/model.ts';
import { selectBackend, type BackendChoice } from '../src/train/backend.ts';
import { loadDataset, type Dataset } from '../src/train/data.ts';
import { parseDistillList } from '../src/train/distill/index.ts';
import { runM2mkd, type M2mkdConfig, type M2mkdRecord } from '../src/train/m2mkd/run.ts';
import type { VitSpec } from '../src/train/models/index.ts';
import { writeMetrics } from '../src/train/trainer.ts';

interface M2mkdOptions {
  db: string;
  task?: string;
  teachers?: string;
  supervised: boolean;
  featureTeacher: string;
  out: string;
  backend: BackendChoice;
  modules: number;
  width: number;
  depth: number;
  heads: number;
  mlpRatio: number;
  metaEpochs: number;
  incubateEpochs: number;
  moduleEpochs: number;
  epochs: number;
  distill?: string[];
  batchSize: number;
  lr: number;
  weightDecay: number;
  clip: number;
  seed: number;
  moduleAlpha: number;
  moduleTau: number;
  json: boolean;
}

const program = addBackendOption(
  addOutDirOption(
    addTeachersOption(addTaskOption(addDbOption(new Command('m2mkd')))),
    'student folder: model.json, weights.bin, metrics.json, checkpoint/, and m2mkd/ (one folder per phase)',
    { required: true },
  )
    .description(
      'm2mKD (Lo et al. 2024): cut a ViT teacher and a ViT student into modules, train a meta model with one block per module, distill each student module inside the meta model from the teacher module in the same slot, assemble the student and train it end to end. A rerun with the same --out resumes by phase.',
    )
    .requiredOption('--feature-teacher <dir>', 'the teacher: a ViT trained by this project, run frozen on each batch inside the meta model')
    .option('--supervised', "train on gold labels instead of the teachers' (CE targets everywhere, and the end-to-end phase)", false)
    .option('--modules <n>', 'modules per model (groups of consecutive blocks)', intArg(1), 2)
    .option('--width <n>', "student: token width (stitch layers bridge it to the teacher's)", intArg(1), 64)
    .option('--depth <n>', 'student: blocks', intArg(1), 4)
    .option('--heads <n>', 'student: attention heads', intArg(1), 2)
    .option('--mlp-ratio <x>', 'student: MLP width / token width', numberArg(0.1), 2)
    .option('--meta-epochs <n>', 'epochs of the meta model (one block per module, trained end to end)', intArg(1), 5)
    .option(
      '--incubate-epochs <n>',
      "Deep Incubation: epochs of each teacher module inside the frozen meta model before it teaches (0: the teacher's modules as they are)",
      intArg(0),
      2,
    )
    .option('--module-epochs <n>', 'epochs of each student module inside the frozen meta model', intArg(1), 5)
    .option('--epochs <n>', 'epochs of the assembled student, end to end', intArg(1), 10)
    .option('--distill <list>', 'end-to-end distillers, as train.ts (default: ce,kd; ce with --supervised)', (v) => parseDistillList(v))
    .option('--batch-size <n>', 'batch size (every phase)', intArg(1), 64)
    .option('--lr <x>', 'peak learning rate (AdamW, every phase)', numberArg(0), 1e-3)
    .option('--weight-decay <x>', 'decoupled weight decay (matrices only)', numberArg(0), 0.05)
    .option('--clip <norm>', 'clip gradients to this global norm (0: off)', numberArg(0), 1)
    .option('--seed <n>', 'seed for initialisation, shuffling and the validation slice', intArg(0), 1)
    .option('--module-alpha <x>', "module loss: the KL term's weight α (CE gets 1 − α)", numberArg(0), 0.5)
    .option('--module-tau <x>', 'module loss: the KL temperature τ', numberArg(0.01), 1)
    .option('--json', 'one JSON object for machines instead of a table for people', false),
);

runCli(async () => {
  const opts = program.parse().opts<M2mkdOptions>();
  requireDb(opts.db);
  if (opts.moduleAlpha > 1) throw new DistilleryError('--module-alpha: must be in [0, 1]');
  const backend = await selectBackend(opts.backend);
  log(`backend: ${backend.detail}`);
  const teacher = await loadModel(opts.featureTeacher).catch((e: Error) => {
    throw new DistilleryError(`--feature-teacher: ${e.message}`);
  });
  teacher.student.dispose();
  if (teacher.spec.student.kind !== 'vit')
    throw new DistilleryError(`--feature-teacher: m2mkd needs a ViT, this is a ${teacher.spec.student.kind}`);
  const store = openExistingStore(opts.db);
  let ds: Dataset;
  try {
    ds = loadDataset(store, taskInStore(store, opts.task), {
      supervised: opts.supervised,
      targets: { teachers: opts.teachers, calibrate: false },
      // The teacher's modules read the pixels as the teacher was trained on them.
      preprocess: teacher.spec.preprocess,
    });
  } finally {
    store.close();
  }
  const t = teacher.spec.student;
  const student: VitSpec = {
    kind: 'vit',
    numClasses: ds.task.labels.length,
    inputShape: t.inputShape,
    patchSize: t.patchSize,
    width: opts.width,
    depth: opts.depth,
    heads: opts.heads,
    mlpRatio: opts.mlpRatio,
    classToken: t.classToken ?? true,
    distillToken: false,
    shareEvery: 1,
  };
  const config: M2mkdConfig = {
    modules: opts.modules,
    student,
    featureTeacher: opts.featureTeacher,
    metaEpochs: opts.metaEpochs,
    incubateEpochs: opts.incubateEpochs,
    moduleEpochs: opts.moduleEpochs,
    epochs: opts.epochs,
    batchSize: opts.batchSize,
    lr: opts.lr,
    weightDecay: opts.weightDecay,
    clip: opts.clip,
    seed: opts.seed,
    loss: { alpha: opts.moduleAlpha, tau: opts.moduleTau },
    distill: opts.distill ?? (opts.supervised ? ['ce'] : ['ce', 'kd']),
    ...(opts.supervised ? { settings: { ceWeight: 1 } } : {}),
  };
  const record = await runM2mkd(ds, config, opts.out, {
    log,
    train: {
      onEpoch: (r) =>
        log(`  end-to-end epoch ${r.epoch + 1}: loss ${r.loss.toFixed(4)} val ${pct(r.val_accuracy)} test ${pct(r.test_accuracy)}`),
    },
  });
  writeMetrics(opts.out, {
    command: `tsx scripts/m2mkd.ts ${process.argv.slice(2).join(' ')}`,
    backend: backend.backend,
    seed: opts.seed,
    student,
    params: record.e2e.params,
    config,
    targets: opts.supervised ? 'gold' : { teachers: opts.teachers ?? 'all' },
    history: record.e2e.history,
    best_epoch: record.e2e.best_epoch,
    test: record.e2e.test,
    m2mkd: record,
  });
  if (opts.json) say(JSON.stringify(summary(record)));
  else for (const [k, v] of Object.entries(summary(record))) say(`${k.padEnd(24)} ${Array.isArray(v) ? v.map(pct).join(', ') : pct(v)}`);
});

function pct(x: number | null): string {
  return x === null ? '-' : `${(100 * x).toFixed(2)}%`;
}

/** Test accuracies phase by phase (fractions). */
function summary(r: M2mkdRecord): Record<string, number | null | Array<number | null>> {
  return {
    teacher: r.teacher.accuracy,
    meta: r.meta.accuracy,
    hybrid_teacher: r.hybrid_teacher.plain,
    ...(r.hybrid_teacher.incubated ? { hybrid_teacher_incubated: r.hybrid_teacher.incubated } : {}),
    hybrid_student: r.modules.map((m) => m.hybrid_accuracy),
    assembled: r.assembled.accuracy,
    student: r.e2e.test.accuracy,
  };
}
