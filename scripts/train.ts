import cliProgress from 'cli-progress';
import { Command, InvalidArgumentError, Option } from 'commander';
import {
  addBackendOption,
  addDbOption,
  addOutDirOption,
  addTargetOptions,
  addTaskOption,
  openExistingStore,
  requireDb,
} from '../src/cli/options.ts';
import { taskInStore } from '../src/cli/task.ts';
import { intArg, log, numberArg, runCli, say } from '../src/cli/run.ts';
import { DistilleryError } from '../src/errors.ts';
import { loadModel, type SavedModelSpec } from '../src/infer/model.ts';
import { parseAugment, type AugmentConfig } from '../src/train/augment.ts';
import { selectBackend, type BackendChoice } from '../src/train/backend.ts';
import { describeReplay, loadDataset, type Dataset, type Preprocess } from '../src/train/data.ts';
import { distillFlags, parseDistillList, type DistillSettings } from '../src/train/distill/index.ts';
import { vitDistillTokens, type StudentSpec, type VitSpec } from '../src/train/models/index.ts';
import { FAST_DEFAULT_LR, fastConfig, fastPathUnsupported, trainFasttextFast } from '../src/train/fast/train.ts';
import { train, validationFingerprint, writeMetrics, type TrainConfig, type TrainHooks, type TrainResult } from '../src/train/trainer.ts';

type Arch = 'logreg' | 'mlp' | 'cnn' | 'involution' | 'vit' | 'fasttext';

/**
 * Text students. fasttext keeps fastText's 2^18 rows: its fast trainer touches only the rows a text uses. logreg and
 * mlp train with AdamW, which updates every row of the table each step (time and memory ∝ buckets × width), hence 2^16.
 */
const TEXT_BUCKETS = { fasttext: 1 << 18, logreg: 1 << 16, mlp: 1 << 16 };
/**
 * AdamW's default rate for a text logreg or mlp: a row's share of a text is 1/its length, so 1e-3 barely moves the
 * table in 10 epochs. Measured on SST-2 (notes/p9-text.md): logreg 54.8% at 1e-3, 76.3% at 1e-2, 79.1% at 5e-2;
 * mlp (hidden 64) after one epoch 79.1% at 1e-2, 77.1% at 5e-2 (it then overfits).
 */
const TEXT_DEFAULT_LR = { logreg: 0.05, mlp: 0.01 };

interface TrainOptions extends Partial<DistillSettings> {
  db: string;
  task?: string;
  arch?: Arch;
  out: string;
  backend: BackendChoice;
  supervised: boolean;
  distill?: string[];
  featureTeacher?: string;
  initFrom?: string;
  resume: boolean;
  epochs: number;
  batchSize: number;
  lr?: number;
  trainer: 'auto' | 'fast' | 'tfjs';
  workers: number;
  weightDecay: number;
  warmup?: number;
  clip: number;
  patience: number;
  seed: number;
  augment?: AugmentConfig;
  teachers?: string;
  aggregate?: 'mean' | 'weighted' | 'vote' | 'dawid-skene';
  weights?: number[];
  calibrate: boolean;
  humanLabels: boolean;
  // student shapes
  hidden?: number[];
  patch: number;
  width: number;
  depth: number;
  heads: number;
  mlpRatio: number;
  distillToken: boolean;
  distillTokens?: number;
  shareEvery: number;
  relPosBlocks: number;
  buckets?: number;
  dim: number;
}

const kebab = (key: string) => key.replace(/[A-Z]/g, (m) => `-${m.toLowerCase()}`);

const program = addTargetOptions(
  addBackendOption(
    addOutDirOption(
      addTaskOption(addDbOption(new Command('train'))),
      'student folder: model.json, weights.bin, metrics.json, checkpoint/',
      { required: true },
    ),
  )
    .description(
      "Distill the stored teachers' knowledge into a student: the --distill methods' terms summed (KD from soft labels or logits, DeiT, feature losses), or --supervised on gold.",
    )
    .addOption(
      new Option('--arch <kind>', "student architecture (default with --init-from: the model's)").choices([
        'logreg',
        'mlp',
        'cnn',
        'involution',
        'vit',
        'fasttext',
      ]),
    )
    .option('--supervised', 'train on gold labels (a teacher, or a baseline) instead of the teachers', false)
    .option(
      '--no-human-labels',
      "ignore the reviewers' labels (review.ts, Label Studio): by default an item's majority human label is its target, and gold for --calibrate and --aggregate weighted where none was imported",
    )
    .option(
      '--distill <list>',
      'distillers whose terms make the loss, e.g. ce,kd,deit (default: ce,kd; ce with --supervised; +deit with --distill-token; civt with --distill-tokens N > 1)',
      (v) => parseDistillList(v),
    )
    .option(
      '--feature-teacher <dir>',
      'a model trained by this project, run frozen on each batch: a ViT for the hidden, attn and manifold distillers, a CNN for dearkd, any model for online-kd',
    )
    .option('--init-from <dir>', "start from this trained student's weights with this run's objective and a fresh optimizer")
    .option('--resume', 'continue from DIR/checkpoint (same student, same objective)', false)
    .option('--epochs <n>', 'epochs', intArg(1), 10)
    .option('--batch-size <n>', 'batch size', intArg(1), 64)
    .option(
      '--lr <x>',
      `peak learning rate (AdamW, default 1e-3; on a text task ${TEXT_DEFAULT_LR.logreg} for logreg, ${TEXT_DEFAULT_LR.mlp} for mlp; the fast fasttext trainer's initial SGD rate, default ${FAST_DEFAULT_LR})`,
      numberArg(0),
    )
    .addOption(
      new Option(
        '--trainer <kind>',
        'fasttext: fast = plain-TypeScript SGD touching only the rows a text uses (ce and kd only), tfjs = the general trainer; auto: fast where it applies',
      )
        .choices(['auto', 'fast', 'tfjs'])
        .default('auto'),
    )
    .option('--weight-decay <x>', 'decoupled weight decay (matrices only)', numberArg(0), 0.05)
    .option('--warmup <steps>', 'linear warm-up steps before the cosine decay (default: 5% of all steps)', intArg(0))
    .option('--clip <norm>', 'clip gradients to this global norm (0: off)', numberArg(0), 1)
    .option('--patience <epochs>', 'early stopping: epochs without a better validation score (0: off)', intArg(0), 0)
    .option('--seed <n>', 'seed for initialisation, shuffling and the validation slice', intArg(0), 1)
    .option(
      '--augment <spec>',
      'images: augmentation of training batches, seeded by --seed, comma-separated: shift:N (random translation up to N pixels), flip, ' +
        'crop:P (RandomCrop with P pixels of padding), erase:p[:pixel] (random erasing), e.g. shift:2,flip or crop:4,flip,erase:0.25; ' +
        'a replay teacher run brings its own',
      parseAugment,
    )
    .option(
      '--workers <n>',
      'threads used for training: the fast fasttext trainer runs Hogwild SGD as fastText -thread does; the tfjs trainer shares each batch ' +
        '(gradients averaged, one optimizer step) on the wasm and cpu backends, which compute on one core. 1: the same seed gives the same weights',
      intArg(1),
      1,
    )
    // student shapes
    .option('--hidden <list>', 'mlp (default 256,128 on images, 64 on texts) / fasttext head: hidden widths, e.g. 256,128', (v) =>
      v.split(',').filter(Boolean).map(Number),
    )
    .option('--patch <n>', 'vit: patch size', intArg(1), 4)
    .option('--width <n>', 'vit: token width', intArg(1), 64)
    .option('--depth <n>', 'vit: blocks', intArg(1), 4)
    .option('--heads <n>', 'vit: attention heads', intArg(1), 2)
    .option('--mlp-ratio <x>', 'vit: MLP width / token width', numberArg(0.1), 2)
    .option('--distill-token', 'vit: DeiT distillation token and head (= --distill-tokens 1)', false)
    .option(
      '--distill-tokens <n>',
      'vit: distillation tokens and heads, one per teacher (CivT; default 0, 1 with --distill-token)',
      intArg(0),
    )
    .option('--share-every <k>', 'vit: MiniViT weight sharing within groups of k consecutive blocks', intArg(1), 1)
    .option(
      '--rel-pos-blocks <k>',
      "vit: DearKD's MHCA, a learned per-head relative-position bias in the attention of the first k blocks (0: none)",
      intArg(0),
      0,
    )
    .option(
      '--buckets <n>',
      `text students: rows of the hashed word and bigram table (floats: buckets × classes for logreg, × hidden[0] for mlp, × dim for fasttext; default ${TEXT_BUCKETS.fasttext} for fasttext, ${TEXT_BUCKETS.logreg} for logreg and mlp)`,
      intArg(1),
    )
    .option('--dim <n>', 'fasttext: embedding width', intArg(1), 64),
);
// Each distiller's own settings, from the registry: adding a distiller adds its flags here.
for (const { key, flag, users } of distillFlags()) {
  const parse = (v: string) => {
    try {
      return flag.parse(v);
    } catch (e) {
      throw new InvalidArgumentError((e as Error).message);
    }
  };
  program.option(
    `--${kebab(key)} <value>`,
    `${flag.help} [${users.join(', ')}; default ${(flag.show ?? String)(flag.default as never)}]`,
    parse,
  );
}

runCli(async () => {
  const opts = program.parse().opts<TrainOptions>();
  requireDb(opts.db);
  const backend = await selectBackend(opts.backend);
  log(`backend: ${backend.detail}`);
  const init = opts.initFrom ? await savedSpec(opts.initFrom) : undefined;
  const store = openExistingStore(opts.db);
  let ds: Dataset;
  try {
    ds = loadDataset(store, taskInStore(store, opts.task), {
      supervised: opts.supervised,
      targets: {
        teachers: opts.teachers,
        aggregate: opts.aggregate,
        weights: opts.weights,
        calibrate: opts.calibrate,
        humanLabels: opts.humanLabels,
      },
      // A student started from trained weights sees its inputs as they were preprocessed then.
      ...(init ? { preprocess: init.preprocess } : {}),
    });
  } finally {
    store.close();
  }
  if (ds.replay) log(describeReplay(ds.replay, opts.epochs));
  if (!opts.arch && !init)
    throw new DistilleryError(
      '--arch: choose the student (logreg, mlp, cnn, involution, vit or fasttext), or start from a model with --init-from',
    );
  const spec = opts.arch ? studentSpec(opts, opts.arch, ds) : init!.student;
  const distill = opts.distill ?? defaultDistill(spec, opts.supervised);
  const settings = distillSettings(opts, distill);
  const unsupported = fastPathUnsupported(
    spec,
    { distill, featureTeacher: opts.featureTeacher, initFrom: opts.initFrom, augment: opts.augment },
    opts.resume,
  );
  if (opts.trainer === 'fast' && unsupported) throw new DistilleryError(`--trainer fast: ${unsupported}`);
  const fast = opts.trainer === 'fast' || (opts.trainer === 'auto' && unsupported === null);
  const config: TrainConfig = {
    epochs: opts.epochs,
    batchSize: opts.batchSize,
    lr:
      opts.lr ?? (fast ? FAST_DEFAULT_LR : ds.texts && (spec.kind === 'logreg' || spec.kind === 'mlp') ? TEXT_DEFAULT_LR[spec.kind] : 1e-3),
    weightDecay: opts.weightDecay,
    warmup: opts.warmup,
    seed: opts.seed,
    clip: opts.clip,
    patience: opts.patience,
    distill,
    settings,
    ...(opts.featureTeacher ? { featureTeacher: opts.featureTeacher } : {}),
    ...(opts.initFrom ? { initFrom: opts.initFrom } : {}),
    ...(opts.augment ? { augment: opts.augment } : {}),
    ...(opts.workers > 1 ? { workers: opts.workers } : {}),
  };
  const bar = process.stderr.isTTY
    ? new cliProgress.SingleBar(
        { format: 'epoch {epoch} |{bar}| {value}/{total}', stream: process.stderr },
        cliProgress.Presets.shades_classic,
      )
    : undefined;
  let epoch = 0;
  const hooks: TrainHooks = {
    onBatch: (done, total) => {
      if (!bar) return;
      if (done <= config.batchSize) bar.start(total, 0, { epoch });
      bar.update(done, { epoch });
    },
    onEpoch: (r) => {
      bar?.stop();
      epoch = r.epoch + 1;
      const terms = Object.entries(r.terms)
        .map(([k, v]) => `${k} ${v.toFixed(4)}`)
        .join(' ');
      const pct = (x: number | null) => (x === null ? '-' : `${(100 * x).toFixed(2)}%`);
      log(
        `epoch ${r.epoch + 1}: loss ${r.loss.toFixed(4)} (${terms}) train ${pct(r.train_accuracy)} val ${pct(r.val_accuracy)} test ${pct(r.test_accuracy)} ${r.seconds.toFixed(1)} s`,
      );
    },
  };
  if (fast) log('trainer: fast fasttext (SGD over the rows each text touches)');
  const result: TrainResult =
    fast && spec.kind === 'fasttext'
      ? await trainFasttextFast(ds, spec, { ...fastConfig(config), workers: opts.workers }, opts.out, { hooks })
      : await train(ds, spec, config, opts.out, { resume: opts.resume, hooks });
  writeMetrics(opts.out, {
    command: `tsx scripts/train.ts ${process.argv.slice(2).join(' ')}`,
    backend: backend.backend,
    trainer: fast ? 'fast' : 'tfjs',
    seed: opts.seed,
    validation: validationFingerprint(ds, opts.seed),
    student: spec,
    params: result.params,
    config,
    targets: opts.supervised
      ? 'gold'
      : {
          teachers: opts.teachers ?? 'all',
          aggregate: opts.aggregate ?? 'mean',
          calibrate: opts.calibrate,
          human_labels: opts.humanLabels,
        },
    human_labels: { used: opts.humanLabels, ...ds.human },
    history: result.history,
    best_epoch: result.best_epoch,
    test: result.test,
    samples_per_second: result.samples_per_second,
  });
  const t = result.test;
  say(
    `saved ${opts.out}: test accuracy ${t.accuracy === null ? '-' : (100 * t.accuracy).toFixed(2) + '%'} on ${t.n} items, teacher agreement ${t.teacher_agreement === null ? '-' : (100 * t.teacher_agreement).toFixed(2) + '%'}, ${result.samples_per_second.toFixed(0)} samples/s`,
  );
});

/**
 * The settings of the chosen distillers: those given on the command line, and --supervised's
 * default CE weight (1: CE on gold is the whole objective). A setting none of the chosen
 * distillers reads is an error: it would silently do nothing.
 */
function distillSettings(opts: TrainOptions, distill: string[]): Partial<DistillSettings> {
  const out: Record<string, unknown> = {};
  for (const { key, users } of distillFlags()) {
    if (program.getOptionValueSource(key) !== 'cli') continue;
    if (!users.some((u) => distill.includes(u)))
      throw new DistilleryError(`--${kebab(key)}: used by ${users.join(', ')}, none of which is in --distill (${distill.join(',')})`);
    out[key] = opts[key];
  }
  // CE as the whole objective (gold, or the teachers' hard labels alone) gets weight 1: at 0.1 the fast fasttext
  // trainer's SGD steps were ten times too small and a hard-label twin did not learn.
  const ceAlone = distill.length === 1 && distill[0] === 'ce';
  if ((opts.supervised || ceAlone) && out.ceWeight === undefined) out.ceWeight = 1;
  return out as Partial<DistillSettings>;
}

async function savedSpec(dir: string): Promise<SavedModelSpec> {
  const m = await loadModel(dir);
  m.student.dispose();
  return m.spec;
}

/** ce,kd (ce with --supervised), + deit for one distillation token; civt alone (CE included) for several. */
function defaultDistill(spec: StudentSpec, supervised: boolean): string[] {
  const tokens = spec.kind === 'vit' ? vitDistillTokens(spec) : 0;
  if (tokens > 1) return ['civt'];
  return [supervised ? 'ce' : 'ce,kd', ...(tokens === 1 ? ['deit'] : [])].join(',').split(',');
}

/** --distill-token is --distill-tokens 1; one token is saved as before (distillToken: true), several as distillTokens. */
function distillTokens(o: TrainOptions): Pick<VitSpec, 'distillToken' | 'distillTokens'> {
  if (o.distillToken && o.distillTokens !== undefined && o.distillTokens !== 1)
    throw new DistilleryError(`--distill-token means one token; --distill-tokens ${o.distillTokens} asks for another count`);
  const n = o.distillTokens ?? (o.distillToken ? 1 : 0);
  return n > 1 ? { distillTokens: n } : { distillToken: n === 1 };
}

function studentSpec(o: TrainOptions, arch: Arch, ds: Dataset): StudentSpec {
  const numClasses = ds.task.labels.length;
  if (ds.preprocess.input === 'text') {
    // The three text students read the same hashed word and bigram features (models/text-features.ts).
    switch (arch) {
      case 'fasttext':
        return { kind: 'fasttext', numClasses, buckets: o.buckets ?? TEXT_BUCKETS.fasttext, dim: o.dim, hidden: o.hidden ?? [] };
      case 'logreg':
        return { kind: 'logreg', numClasses, buckets: o.buckets ?? TEXT_BUCKETS.logreg, bigrams: true };
      case 'mlp':
        // One hidden layer of 64 by default: its first layer is a buckets × width table (64: the size of fasttext's).
        return { kind: 'mlp', numClasses, buckets: o.buckets ?? TEXT_BUCKETS.mlp, bigrams: true, hidden: o.hidden ?? [64] };
      default:
        throw new DistilleryError(`--arch ${arch}: a text task trains logreg, mlp or fasttext (on hashed word and bigram features)`);
    }
  }
  if (arch === 'fasttext') throw new DistilleryError('--arch fasttext: an image task trains logreg, mlp, cnn, involution or vit');
  const im = (ds.preprocess as Required<Preprocess>).image;
  const inputShape: [number, number, number] = [im.height, im.width, im.channels];
  switch (arch) {
    case 'logreg':
      return { kind: 'logreg', numClasses, inputShape };
    case 'mlp':
      return { kind: 'mlp', numClasses, inputShape, hidden: o.hidden ?? [256, 128] };
    case 'cnn':
      return { kind: 'cnn', numClasses, inputShape };
    case 'involution':
      return { kind: 'involution', numClasses, inputShape };
    default:
      return {
        kind: 'vit',
        numClasses,
        inputShape,
        patchSize: o.patch,
        width: o.width,
        depth: o.depth,
        heads: o.heads,
        mlpRatio: o.mlpRatio,
        ...distillTokens(o),
        shareEvery: o.shareEvery,
        // Only when asked for: a spec without it is the one every earlier model was saved with.
        ...(o.relPosBlocks > 0 ? { relPosBlocks: o.relPosBlocks } : {}),
      };
  }
}
