import cliProgress from 'cli-progress';
import { Command, Option } from 'commander';
import { existsSync } from 'node:fs';
import { addDbOption, addTargetOptions } from '../src/cli/options.ts';
import { intArg, log, numberArg, runCli, say } from '../src/cli/run.ts';
import { DistilleryError } from '../src/errors.ts';
import { taskInStore } from '../src/cli/task.ts';
import { Store } from '../src/store/store.ts';
import { selectBackend, type BackendChoice } from '../src/train/backend.ts';
import { loadDataset, type Dataset } from '../src/train/data.ts';
import { parseAugment } from '../src/train/augment.ts';
import { parseLayerMap, type FeatureKdConfig } from '../src/train/feature-kd.ts';
import type { StudentSpec } from '../src/train/models/index.ts';
import { train, writeMetrics, type TrainConfig } from '../src/train/trainer.ts';

const program = addTargetOptions(
  addDbOption(new Command('train'))
    .description("Distill the stored teachers' knowledge into a student: KD from soft labels or logits, DeiT distillation, or --supervised on gold.")
    .requiredOption('--task <name>', 'task name')
    .addOption(new Option('--student <kind>', 'student model').choices(['logreg', 'mlp', 'cnn', 'vit', 'fasttext']).makeOptionMandatory())
    .requiredOption('--out <dir>', 'model folder: model.json, weights.bin, metrics.json, checkpoint/')
    .addOption(new Option('--backend <name>', 'tensor backend').choices(['auto', 'tensorflow', 'wasm', 'cpu']).default('auto'))
    .option('--supervised', 'train on gold labels (a teacher, or a baseline) instead of the teachers', false)
    .option('--epochs <n>', 'epochs', intArg(1), 10)
    .option('--batch-size <n>', 'batch size', intArg(1), 64)
    .option('--lr <x>', 'peak learning rate (AdamW)', numberArg(0), 1e-3)
    .option('--weight-decay <x>', 'decoupled weight decay (matrices only)', numberArg(0), 0.05)
    .option('--warmup <steps>', 'linear warm-up steps before the cosine decay (default: 5% of all steps)', intArg(0))
    .option('--clip <norm>', 'clip gradients to this global norm (0: off)', numberArg(0), 1)
    .option('--patience <epochs>', 'early stopping: epochs without a better validation score (0: off)', intArg(0), 0)
    .option('--seed <n>', 'seed for initialisation, shuffling and the validation slice', intArg(0), 1)
    .option('--ce-weight <w>', "weight of cross-entropy to the hard target (default 0.1; 1 with --supervised)", numberArg(0))
    .option('--kd-weight <w>', 'weight of the KD term T²·KL(teacher‖student) (default 0.9; 0 with --supervised)', numberArg(0))
    .option('--temperature <T>', 'KD temperature, applied to logits (stored probabilities are logged first); 4 was best in bench-kd', numberArg(0.01), 4)
    .addOption(new Option('--distill <mode>', 'DeiT: loss of the distillation head (needs --distill-token)').choices(['hard', 'soft']).default('hard'))
    .option('--distill-weight <w>', 'weight of the DeiT distillation-head loss', numberArg(0), 1)
    // feature-level KD from a local ViT teacher (src/train/feature-kd.ts)
    .option('--teacher-model <dir>', 'a ViT trained by this project, run frozen on each batch for the feature losses below')
    .option('--hidden-weight <w>', 'weight of the hidden-state MSE (learned projection when widths differ)', numberArg(0), 0)
    .option('--hidden-layers <s:t,...>', 'student:teacher block pairs for --hidden-weight and --attn-weight (0-based; default: last to last)')
    .option('--attn-weight <w>', "weight of MiniViT's Q/K/V attention-relation loss", numberArg(0), 0)
    .option('--manifold-weight <w>', "weight of the manifold (patch-relation) loss on the last block's patches", numberArg(0), 0)
    .option('--augment <spec>', 'images: light augmentation of training batches, seeded by --seed: shift:N (random translation up to N pixels), flip, or both (shift:2,flip)', parseAugment)
    .option('--resume', 'continue from DIR/checkpoint', false)
    // student shapes
    .option('--hidden <list>', 'mlp / fasttext head: hidden widths, e.g. 256,128', (v) => v.split(',').filter(Boolean).map(Number))
    .option('--patch <n>', 'vit: patch size', intArg(1), 4)
    .option('--width <n>', 'vit: token width', intArg(1), 64)
    .option('--depth <n>', 'vit: blocks', intArg(1), 4)
    .option('--heads <n>', 'vit: attention heads', intArg(1), 2)
    .option('--mlp-ratio <x>', 'vit: MLP width / token width', numberArg(0.1), 2)
    .option('--distill-token', 'vit: DeiT distillation token and head', false)
    .option('--share-every <k>', 'vit: MiniViT weight sharing within groups of k consecutive blocks', intArg(1), 1)
    .option('--buckets <n>', 'fasttext: hashed feature buckets', intArg(1), 1 << 18)
    .option('--dim <n>', 'fasttext: embedding width', intArg(1), 64),
);

runCli(async () => {
  const opts = program.parse().opts();
  if (!existsSync(opts.db)) throw new DistilleryError(`${opts.db}: no such database`);
  const backend = await selectBackend(opts.backend as BackendChoice);
  log(`backend: ${backend.detail}`);
  const store = Store.open(opts.db);
  let ds: Dataset;
  try {
    ds = loadDataset(store, taskInStore(store, opts.task), {
      supervised: opts.supervised,
      targets: { teachers: opts.teachers, aggregate: opts.aggregate, weights: opts.weights, calibrate: opts.calibrate },
    });
  } finally {
    store.close();
  }
  const spec = studentSpec(opts, ds);
  const featureKd = featureKdConfig(opts);
  const config: TrainConfig = {
    epochs: opts.epochs,
    batchSize: opts.batchSize,
    lr: opts.lr,
    weightDecay: opts.weightDecay,
    warmup: opts.warmup,
    seed: opts.seed,
    clip: opts.clip,
    patience: opts.patience,
    ceWeight: opts.ceWeight ?? (opts.supervised ? 1 : 0.1),
    kdWeight: opts.kdWeight ?? (opts.supervised ? 0 : 0.9),
    temperature: opts.temperature,
    distill: opts.distill,
    distillWeight: opts.distillWeight,
    ...(featureKd ? { featureKd } : {}),
    ...(opts.augment ? { augment: opts.augment } : {}),
  };
  const bar = process.stderr.isTTY ? new cliProgress.SingleBar({ format: 'epoch {epoch} |{bar}| {value}/{total}', stream: process.stderr }, cliProgress.Presets.shades_classic) : undefined;
  let epoch = 0;
  const result = await train(ds, spec, config, opts.out, {
    resume: opts.resume,
    hooks: {
      onBatch: (done, total) => {
        if (!bar) return;
        if (done <= config.batchSize) bar.start(total, 0, { epoch });
        bar.update(done, { epoch });
      },
      onEpoch: (r) => {
        bar?.stop();
        epoch = r.epoch + 1;
        const terms = Object.entries(r.terms).map(([k, v]) => `${k} ${v.toFixed(4)}`).join(' ');
        const pct = (x: number | null) => (x === null ? '-' : `${(100 * x).toFixed(2)}%`);
        log(`epoch ${r.epoch + 1}: loss ${r.loss.toFixed(4)} (${terms}) train ${pct(r.train_accuracy)} val ${pct(r.val_accuracy)} test ${pct(r.test_accuracy)} ${r.seconds.toFixed(1)} s`);
      },
    },
  });
  writeMetrics(opts.out, {
    command: `tsx scripts/train.ts ${process.argv.slice(2).join(' ')}`,
    backend: backend.backend,
    seed: opts.seed,
    student: spec,
    params: result.params,
    config,
    targets: opts.supervised ? 'gold' : { teachers: opts.teachers ?? 'all', aggregate: opts.aggregate ?? 'mean', calibrate: opts.calibrate },
    history: result.history,
    best_epoch: result.best_epoch,
    test: result.test,
    samples_per_second: result.samples_per_second,
  });
  const t = result.test;
  say(`saved ${opts.out}: test accuracy ${t.accuracy === null ? '-' : (100 * t.accuracy).toFixed(2) + '%'} on ${t.n} items, teacher agreement ${t.teacher_agreement === null ? '-' : (100 * t.teacher_agreement).toFixed(2) + '%'}, ${result.samples_per_second.toFixed(0)} samples/s`);
});

function featureKdConfig(o: Record<string, any>): FeatureKdConfig | undefined {
  const on = (['hidden', 'attn', 'manifold'] as const).filter((k) => o[`${k}Weight`] > 0);
  if (o.teacherModel === undefined) {
    if (on.length > 0) throw new DistilleryError(`${on.map((k) => `--${k}-weight`).join(', ')}: needs --teacher-model DIR (a ViT trained by this project)`);
    if (o.hiddenLayers !== undefined) throw new DistilleryError('--hidden-layers: needs --teacher-model DIR');
    return undefined;
  }
  return {
    teacherModel: o.teacherModel,
    hiddenWeight: o.hiddenWeight,
    attnWeight: o.attnWeight,
    manifoldWeight: o.manifoldWeight,
    ...(o.hiddenLayers !== undefined ? { layers: parseLayerMap(o.hiddenLayers) } : {}),
  };
}

function studentSpec(o: Record<string, any>, ds: Dataset): StudentSpec {
  const numClasses = ds.task.labels.length;
  if (ds.preprocess.input === 'text') {
    if (o.student !== 'fasttext') throw new DistilleryError(`--student ${o.student}: a text task trains the fasttext student`);
    return { kind: 'fasttext', numClasses, buckets: o.buckets, dim: o.dim, hidden: o.hidden ?? [] };
  }
  if (o.student === 'fasttext') throw new DistilleryError('--student fasttext: an image task trains logreg, mlp, cnn or vit');
  const im = ds.preprocess.image!;
  const inputShape: [number, number, number] = [im.height, im.width, im.channels];
  switch (o.student) {
    case 'logreg':
      return { kind: 'logreg', numClasses, inputShape };
    case 'mlp':
      return { kind: 'mlp', numClasses, inputShape, hidden: o.hidden ?? [256, 128] };
    case 'cnn':
      return { kind: 'cnn', numClasses, inputShape };
    default:
      return { kind: 'vit', numClasses, inputShape, patchSize: o.patch, width: o.width, depth: o.depth, heads: o.heads, mlpRatio: o.mlpRatio, distillToken: o.distillToken, shareEvery: o.shareEvery };
  }
}
