/**
 * bench-text: the fasttext student's fast trainer (src/train/fast) against Debian's
 * `fasttext supervised` CLI (`apt-get install fasttext`) on the same texts, labels,
 * dim, word bigrams, epochs and bucket count, in one call; optionally the tfjs trainer
 * (the "before" figure) on a subsample.
 *
 *   tsx scripts/bench-text.ts [--data DIR] [--runs 3] [--lr 0.5] [--tfjs 1000] [--json]
 *
 * --data: /work/shared/datasets/sst2 (stsa.binary.train / .test) or banking77 (train.csv /
 * test.csv / categories.json); without it, a generated (seeded) 4-class text task, so the
 * benchmark runs anywhere. Targets are the gold labels (one-hot): no teacher is faked.
 * fastText gets its training lines shuffled (seeded): it reads them in file order.
 * Both tools see the same words: each text is lowercased and split as hashTokens does, and
 * fastText gets them space-joined. Wall time: ours = worker start-up + hashing + initialisation
 * + training; fastText = the whole `fasttext supervised` process (reading, hashing, training, saving).
 * --threads is both tools' thread count: ours with more than 1 is Hogwild (src/train/fast/hogwild.ts).
 * The load average is printed with the figures: on a shared machine it says how much they mean.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { parse } from 'csv-parse/sync';
import { intArg, numberArg } from '../src/cli/run.ts';
import { accuracy as goldAccuracy } from '../src/eval/metrics.ts';
import { argmax } from '../src/targets/vector.ts';
import { mulberry32, shuffle } from '../src/random.ts';
import { fit, LinearFasttext, packBags } from '../src/train/fast/fasttext.ts';
import { Hogwild } from '../src/train/fast/hogwild.ts';
import type { FasttextSpec } from '../src/train/models/index.ts';
// words: hashTokens' own word splitter, so that fastText sees the words we hash.
import { textBatch, words } from '../src/train/models/index.ts';

const program = new Command('bench-text')
  .option('--data <dir>', 'an SST-2 or Banking77 folder (see /work/shared/datasets/README.md); default: a generated task')
  .option('--runs <n>', 'repetitions of each trainer (seeds seed, seed+1, ...)', intArg(1), 1)
  .option('--epochs <n>', 'epochs', intArg(1), 10)
  .option('--dim <n>', 'embedding width', intArg(1), 64)
  .option('--buckets <n>', 'hashed buckets (fastText -bucket)', intArg(1), 1 << 18)
  .option('--lr <x>', 'initial learning rate of both (linear decay to 0)', numberArg(0), 0.5)
  .option('--threads <n>', 'threads of both trainers (ours: Hogwild when > 1; fastText -thread)', intArg(1), 2)
  .option('--seed <n>', 'first seed', intArg(0), 1)
  .option('--fasttext <path>', 'the fastText CLI', 'fasttext')
  .option('--tfjs <n>', 'also train the tfjs student (AdamW, batch 64, lr 1e-3) on the first N train texts: the "before" figure', intArg(1))
  .option('--json', 'print one JSON object as the last line', false);

interface TextData {
  name: string;
  labels: string[];
  train: { text: string; label: number }[];
  test: { text: string; label: number }[];
}

const opts = program.parse().opts();
const data = opts.data ? readData(opts.data) : syntheticData(opts.seed);
const spec: FasttextSpec = {
  kind: 'fasttext',
  numClasses: data.labels.length,
  buckets: opts.buckets,
  dim: opts.dim,
  hidden: [],
  bigrams: true,
};
console.error(
  `${data.name}: ${data.train.length} train / ${data.test.length} test texts, ${data.labels.length} classes; ${opts.epochs} epochs, dim ${opts.dim}, bigrams, ${opts.buckets} buckets, lr ${opts.lr}`,
);

const ours: Run[] = [];
/** Ours on one thread too when --threads > 1, interleaved: what Hogwild buys, in the same call. */
const single: Run[] = [];
const theirs: Run[] = [];
const fasttextBin = findFasttext(opts.fasttext);
for (let r = 0; r < opts.runs; r++) {
  const seed = opts.seed + r;
  ours.push(await runOurs(data, seed, opts.threads));
  console.error(`run ${r + 1}: distillery fast ${ours[r].seconds.toFixed(2)} s, accuracy ${ours[r].accuracy.toFixed(4)}`);
  if (opts.threads > 1) {
    single.push(await runOurs(data, seed, 1));
    console.error(`run ${r + 1}: distillery fast, 1 thread ${single[r].seconds.toFixed(2)} s, accuracy ${single[r].accuracy.toFixed(4)}`);
  }
  if (fasttextBin) {
    theirs.push(runFasttext(fasttextBin, data, seed));
    console.error(`run ${r + 1}: fastText CLI     ${theirs[r].seconds.toFixed(2)} s, accuracy ${theirs[r].accuracy.toFixed(4)}`);
  }
}
const tfjs = opts.tfjs ? await runTfjs(data, opts.tfjs) : null;

const o = summary(ours);
const f = theirs.length ? summary(theirs) : null;
const s1 = single.length ? summary(single) : null;
const figures = {
  data: data.name,
  train: data.train.length,
  test: data.test.length,
  classes: data.labels.length,
  epochs: opts.epochs,
  dim: opts.dim,
  buckets: opts.buckets,
  lr: opts.lr,
  runs: opts.runs,
  threads: opts.threads,
  /** 1-, 5- and 15-minute load averages at the end (2 cores: above 2 the figures are contended). */
  load_average: loadavg().map((x) => round(x, 2)),
  ours_seconds: o.seconds,
  ours_accuracy: o.accuracy,
  ours_1thread_seconds: s1?.seconds ?? null,
  ours_1thread_accuracy: s1?.accuracy ?? null,
  time_ratio_1thread_per_run: f && s1 ? single.map((x, i) => round(x.seconds / theirs[i].seconds, 2)) : null,
  fasttext_seconds: f?.seconds ?? null,
  fasttext_accuracy: f?.accuracy ?? null,
  time_ratio: f ? round(o.seconds.median / f.seconds.median, 2) : null,
  /** Each run's ours/fastText time, the two measured back to back: steadier than the ratio of medians on a loaded machine. */
  time_ratio_per_run: f ? ours.map((x, i) => round(x.seconds / theirs[i].seconds, 2)) : null,
  accuracy_diff: f ? round(o.accuracy.median - f.accuracy.median, 4) : null,
  tfjs: tfjs,
};
const fmt = (s: Stats, digits: number) => `${s.median.toFixed(digits)} (${s.min.toFixed(digits)}–${s.max.toFixed(digits)})`;
console.log(`load average ${figures.load_average.join(' ')}`);
console.log(
  `distillery fast (${opts.threads} thread${opts.threads > 1 ? 's, Hogwild' : ''}): ${fmt(o.seconds, 2)} s, accuracy ${fmt(o.accuracy, 4)}`,
);
if (s1) console.log(`distillery fast (1 thread): ${fmt(s1.seconds, 2)} s, accuracy ${fmt(s1.accuracy, 4)}`);
if (f) {
  console.log(`fastText CLI (${opts.threads} threads): ${fmt(f.seconds, 2)} s, accuracy ${fmt(f.accuracy, 4)}`);
  console.log(
    `ratio ours/fastText time ${figures.time_ratio} (per run ${figures.time_ratio_per_run!.join(', ')}; goal <= 3), accuracy difference ${figures.accuracy_diff} (goal >= -0.005)`,
  );
} else {
  console.log('fastText CLI: not found (apt-get install fasttext); ratios not measured');
}
if (tfjs) console.log(`tfjs trainer on ${tfjs.train} texts: ${tfjs.seconds.toFixed(1)} s, accuracy ${tfjs.accuracy.toFixed(4)}`);
if (opts.json) console.log(JSON.stringify(figures));

// ---------------------------------------------------------------------------------------

interface Run {
  seconds: number;
  accuracy: number;
}

async function runOurs(d: TextData, seed: number, threads: number): Promise<Run> {
  const t0 = performance.now();
  const pool = threads > 1 ? Hogwild.start(threads) : null;
  const bags = packBags(
    textBatch(
      d.train.map((x) => x.text),
      spec,
    ).bags,
    spec.buckets,
  );
  const model = LinearFasttext.init(spec, seed, { shared: pool !== null });
  const hard = Int32Array.from(d.train, (x) => x.label);
  const all = Int32Array.from(d.train, (_, i) => i);
  const fitOptions = { epochs: opts.epochs, lr: opts.lr, seed };
  if (pool) {
    try {
      await pool.fit(model, bags, all, { ceWeight: 1, kdWeight: 0, hard }, fitOptions);
    } finally {
      await pool.close();
    }
  } else fit(model, bags, all, { ceWeight: 1, kdWeight: 0, hard }, fitOptions);
  const seconds = (performance.now() - t0) / 1000;
  const testBags = packBags(
    textBatch(
      d.test.map((x) => x.text),
      spec,
    ).bags,
    spec.buckets,
  );
  const probs = model.predict(
    testBags,
    Int32Array.from(d.test, (_, i) => i),
  );
  return {
    seconds,
    accuracy: accuracy(
      probs,
      d.test.map((x) => x.label),
      d.labels.length,
    ),
  };
}

function runFasttext(bin: string, d: TextData, seed: number): Run {
  const dir = mkdtempSync(join(tmpdir(), 'bench-text-'));
  try {
    const line = (x: { text: string; label: number }) => `__label__${x.label} ${words(x.text).join(' ')}\n`;
    // fastText reads its file in order and does not shuffle; Banking77's train.csv is sorted by class,
    // which costs fastText ~25 points. So it gets the lines in a seeded random order (as `shuf` would).
    writeFileSync(
      join(dir, 'train.txt'),
      shuffle(d.train, mulberry32(seed ^ 0x5f17))
        .map(line)
        .join(''),
    );
    writeFileSync(join(dir, 'test.txt'), d.test.map(line).join(''));
    const args = [
      'supervised',
      '-input',
      join(dir, 'train.txt'),
      '-output',
      join(dir, 'model'),
      '-dim',
      String(opts.dim),
      '-wordNgrams',
      '2',
      '-epoch',
      String(opts.epochs),
    ];
    args.push(
      '-bucket',
      String(opts.buckets),
      '-lr',
      String(opts.lr),
      '-thread',
      String(opts.threads),
      '-seed',
      String(seed),
      '-verbose',
      '0',
    );
    const t0 = performance.now();
    execFileSync(bin, args, { stdio: ['ignore', 'ignore', 'inherit'] });
    const seconds = (performance.now() - t0) / 1000;
    const out = execFileSync(bin, ['test', join(dir, 'model.bin'), join(dir, 'test.txt')], { encoding: 'utf8' });
    const p1 = /P@1\s+([\d.]+)/.exec(out);
    if (!p1) throw new Error(`fasttext test printed no P@1: ${out}`);
    return { seconds, accuracy: Number(p1[1]) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The tfjs trainer (src/train/trainer.ts) on the first n train texts; its 10% validation slice is left out of training. */
async function runTfjs(d: TextData, n: number): Promise<{ train: number; seconds: number; accuracy: number }> {
  const { selectBackend } = await import('../src/train/backend.ts');
  const { train } = await import('../src/train/trainer.ts');
  await selectBackend('auto');
  const items = [...d.train.slice(0, n).map((x) => ({ ...x, split: 'train' })), ...d.test.map((x) => ({ ...x, split: 'test' }))];
  const c = d.labels.length;
  const targetProbs = new Float32Array(items.length * c);
  items.forEach((x, i) => (targetProbs[i * c + x.label] = 1));
  const gold = Int32Array.from(items, (x) => x.label);
  const ds = {
    task: { id: 0, name: d.name, labels: d.labels, input_kind: 'text' },
    n: items.length,
    ids: items.map((_, i) => String(i)),
    splits: items.map((x) => x.split),
    gold,
    targetProbs,
    targetHard: gold,
    teacherHard: new Int32Array(items.length).fill(-1),
    texts: items.map((x) => x.text),
    preprocess: { input: 'text' as const },
  };
  const dir = mkdtempSync(join(tmpdir(), 'bench-text-tfjs-'));
  try {
    const config = { epochs: opts.epochs, batchSize: 64, lr: 1e-3, weightDecay: 0.05, seed: opts.seed, clip: 1, patience: 0 };
    const t0 = performance.now();
    const r = await train(ds, spec, { ...config, distill: ['ce'], settings: { ceWeight: 1 }, testEachEpoch: false }, dir);
    return { train: Math.min(n, d.train.length), seconds: (performance.now() - t0) / 1000, accuracy: r.test.accuracy ?? 0 };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function accuracy(probs: Float32Array, gold: number[], c: number): number {
  return goldAccuracy(
    gold.map((_, i) => argmax(probs.subarray(i * c, (i + 1) * c))),
    gold,
  ).value;
}

function findFasttext(bin: string): string | undefined {
  return spawnSync(bin, ['supervised'], { stdio: 'ignore' }).error ? undefined : bin;
}

function readData(dir: string): TextData {
  if (existsSync(join(dir, 'stsa.binary.train'))) {
    const read = (f: string) =>
      readFileSync(join(dir, f), 'utf8')
        .split('\n')
        .filter((l) => l.trim())
        .map((l) => ({ label: Number(l[0]), text: l.slice(2) }));
    return { name: 'sst2', labels: ['0', '1'], train: read('stsa.binary.train'), test: read('stsa.binary.test') };
  }
  if (existsSync(join(dir, 'train.csv')) && existsSync(join(dir, 'test.csv'))) {
    const rows = (f: string) =>
      parse(readFileSync(join(dir, f), 'utf8'), { columns: true, skip_empty_lines: true }) as { text: string; category: string }[];
    const train = rows('train.csv');
    const test = rows('test.csv');
    const labels: string[] = existsSync(join(dir, 'categories.json'))
      ? JSON.parse(readFileSync(join(dir, 'categories.json'), 'utf8'))
      : [...new Set(train.map((r) => r.category))].sort();
    const index = new Map(labels.map((l, i) => [l, i]));
    const conv = (r: { text: string; category: string }) => {
      const label = index.get(r.category);
      if (label === undefined) throw new Error(`${dir}: category ${JSON.stringify(r.category)} is not in categories.json`);
      return { text: r.text, label };
    };
    return { name: 'banking77', labels, train: train.map(conv), test: test.map(conv) };
  }
  throw new Error(`${dir}: expected stsa.binary.train/.test (SST-2) or train.csv/test.csv (Banking77)`);
}

/**
 * 4 classes, 3000 train / 1000 test texts of 8–24 words: each word comes from the class's
 * 60 own words with probability 0.25, otherwise from 2000 shared ones; 5% of labels are flipped.
 */
function syntheticData(seed: number): TextData {
  const r = mulberry32(seed ^ 0x7e47);
  const word = () => Array.from({ length: 3 + Math.floor(r() * 6) }, () => String.fromCharCode(97 + Math.floor(r() * 26))).join('');
  const shared = Array.from({ length: 2000 }, word);
  const own = Array.from({ length: 4 }, () => Array.from({ length: 60 }, word));
  const item = () => {
    const label = Math.floor(r() * 4);
    const n = 8 + Math.floor(r() * 17);
    const text = Array.from({ length: n }, () =>
      r() < 0.25 ? own[label][Math.floor(r() * 60)] : shared[Math.floor(r() * shared.length)],
    ).join(' ');
    return { text, label: r() < 0.05 ? Math.floor(r() * 4) : label };
  };
  return {
    name: 'synthetic',
    labels: ['a', 'b', 'c', 'd'],
    train: Array.from({ length: 3000 }, item),
    test: Array.from({ length: 1000 }, item),
  };
}

interface Stats {
  median: number;
  min: number;
  max: number;
}

function summary(runs: Run[]): { seconds: Stats; accuracy: Stats } {
  const stats = (xs: number[]): Stats => {
    const s = [...xs].sort((a, b) => a - b);
    const mid = s.length >> 1;
    return { median: round(s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2, 4), min: round(s[0], 4), max: round(s[s.length - 1], 4) };
  };
  return { seconds: stats(runs.map((x) => x.seconds)), accuracy: stats(runs.map((x) => x.accuracy)) };
}

function round(x: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
