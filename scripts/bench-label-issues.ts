/**
 * bench-label-issues: does ranking by `label-issues` find wrong labels faster than reviewing in a random order?
 * (issue 14: "at least twice as often per reviewed item".) A simulated task with injected label noise, through the
 * real pipeline:
 *
 *   1. texts with gold labels (synthetic tickets, src/datasets/tickets.ts; or --dataset FILE) imported into a real
 *      SQLite file, all in the train split (the pool a team labels and reviews);
 *   2. a teacher whose label is gold, except a fraction --noise flipped to another class (uniformly), stored as
 *      logits through the white-box ingest (src/whitebox/ingest.ts). Its confidence (top probability) is drawn
 *      from one range for every item ("flat": the confidence does not give the flips away), and, as a second case,
 *      lower for the flipped items ("informative", where low-confidence has something to go on);
 *   3. a student trained on that teacher by scripts/train.ts --folds K (a child process, as a user runs it);
 *   4. the review queue (src/review/queue.ts) of the label-issues and low-confidence policies, and random orders.
 *
 * Counted: wrong labels (teacher ≠ gold) among the first R items of each order; ratios against the mean of the
 * random orders (seeds seed..seed+n−1). Also label-issues with the student's in-sample predictions (the same
 * student without its out-of-fold.json: what --folds is for).
 *
 *   tsx scripts/bench-label-issues.ts [--count 2000] [--noise 0.2] [--folds 5] [--epochs 10] [--confidence both] [--json]
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'commander';
import { addBackendOption, addJsonOption, addOutDirOption } from '../src/cli/options.ts';
import { intArg, log, numberArg, runCli, say } from '../src/cli/run.ts';
import { makeTickets, TICKET_LABELS } from '../src/datasets/tickets.ts';
import { DistilleryError, InputError } from '../src/errors.ts';
import { readItems } from '../src/input/read.ts';
import { mulberry32, shuffle } from '../src/random.ts';
import { buildQueue, buildReviewContext } from '../src/review/queue.ts';
import { Store } from '../src/store/store.ts';
import { loadTask, type Task } from '../src/task/task.ts';
import { ingestLogits } from '../src/whitebox/ingest.ts';

type ConfidenceCase = 'flat' | 'informative';

interface BenchOptions {
  count?: number;
  noise: number;
  folds: number;
  epochs: number;
  arch: 'fasttext' | 'logreg' | 'mlp';
  seed: number;
  randomOrders: number;
  confidence: ConfidenceCase | 'both';
  at?: number[];
  dataset?: string;
  out?: string;
  backend: string;
  json: boolean;
}

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

const program = addJsonOption(
  addBackendOption(
    addOutDirOption(
      new Command('bench-label-issues'),
      'keep the databases, teacher logits and students here (default: a temporary folder, removed)',
    ),
    "the students' tensor backend (train.ts --backend)",
  ),
)
  .description(
    'Wrong labels found per reviewed item: the review queue ranked by label-issues (a student trained with --folds) against ' +
      'low-confidence and random orders, on a simulated task whose teacher has a share --noise of flipped labels.',
  )
  .option('--count <n>', 'items (default: 2000 synthetic tickets; with --dataset, every row)', intArg(20))
  .option('--noise <x>', "share of the teacher's labels flipped to another class", numberArg(0.01, 0.9), 0.2)
  .option('--folds <k>', 'train.ts --folds', intArg(2), 5)
  .option('--epochs <n>', 'train.ts --epochs', intArg(1), 10)
  .addOption(new Option('--arch <kind>', 'the student (train.ts --arch)').choices(['fasttext', 'logreg', 'mlp']).default('fasttext'))
  .option('--seed <n>', 'seed of the data, the flips, the confidences, the student and the first random order', intArg(0), 1)
  .option('--random-orders <n>', 'random orders averaged (seeds seed..seed+n−1)', intArg(1), 20)
  .addOption(
    new Option(
      '--confidence <case>',
      "the teacher's confidence: flat (the same range for flipped and correct labels), informative (lower on flips), or both",
    )
      .choices(['flat', 'informative', 'both'])
      .default('both'),
  )
  .option(
    '--at <list>',
    'review depths R, e.g. 50,100,200 (default: 50, 100, 200, 10% of the items, and the number of flipped labels)',
    (v) => v.split(',').map((x) => intArg(1)(x)),
  )
  .option('--dataset <file>', 'a JSONL file of real texts with gold labels (fields text and label; id optional) instead of the tickets');

interface Row {
  id: string;
  text: string;
  gold: string;
}

/** One order's wrong labels among its first R items. */
interface Depth {
  r: number;
  label_issues: number;
  label_issues_in_sample: number;
  low_confidence: number;
  random_mean: number;
  random_min: number;
  random_max: number;
}

interface CaseResult {
  confidence: ConfidenceCase;
  items: number;
  wrong: number;
  /** The student's out-of-fold predictions against gold and against the teacher (from train.ts's metrics). */
  out_of_fold_gold_accuracy: number | null;
  out_of_fold_teacher_agreement: number | null;
  train_seconds: number;
  depths: Depth[];
}

runCli(async () => {
  const o = program.parse().opts<BenchOptions>();
  const data = o.dataset ? readDataset(o.dataset, o.count, o.seed) : tickets(o.count ?? 2000, o.seed);
  const labels = o.dataset ? [...new Set(data.rows.map((r) => r.gold))].sort() : [...TICKET_LABELS];
  if (labels.length < 2) throw new DistilleryError(`${o.dataset}: fewer than two labels`);
  const n = data.rows.length;
  const depths = [...new Set(o.at ?? [50, 100, 200, Math.round(n / 10), Math.round(n * o.noise)])]
    .filter((r) => r <= n)
    .sort((a, b) => a - b);
  const root = o.out ?? mkdtempSync(join(tmpdir(), 'distillery-bench-label-issues-'));
  mkdirSync(root, { recursive: true });
  const cases: ConfidenceCase[] = o.confidence === 'both' ? ['flat', 'informative'] : [o.confidence];
  log(`${data.name}: ${n} items, ${labels.length} labels, noise ${o.noise}, ${o.folds} folds, ${o.arch}; load ${loadavg()[0].toFixed(1)}`);
  const results: CaseResult[] = [];
  try {
    for (const c of cases) results.push(await runCase(o, data, labels, join(root, c), c, depths));
  } finally {
    if (!o.out) rmSync(root, { recursive: true, force: true });
  }
  for (const r of results) printCase(r, o);
  if (o.json)
    say(
      JSON.stringify({
        bench: 'label-issues',
        dataset: data.name,
        items: n,
        labels: labels.length,
        noise: o.noise,
        folds: o.folds,
        epochs: o.epochs,
        arch: o.arch,
        seed: o.seed,
        random_orders: o.randomOrders,
        cases: results,
      }),
    );
});

function tickets(count: number, seed: number): { name: string; rows: Row[] } {
  return { name: 'synthetic tickets', rows: makeTickets(count, seed).map((t) => ({ id: t.id, text: t.text, gold: t.label })) };
}

/** Rows of a JSONL file with `text` and `label`; a seeded sample of `count` of them when given. */
function readDataset(file: string, count: number | undefined, seed: number): { name: string; rows: Row[] } {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new InputError(file, undefined, `cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let rows: Row[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    let r: unknown;
    try {
      r = JSON.parse(line);
    } catch (e) {
      throw new InputError(file, i + 1, `not JSON (${(e as Error).message})`);
    }
    const o = r as Record<string, unknown>;
    if (typeof o.text !== 'string' || (typeof o.label !== 'string' && typeof o.label !== 'number'))
      throw new InputError(file, i + 1, 'expected an object with a string "text" and a "label"');
    rows.push({
      id: typeof o.id === 'string' || typeof o.id === 'number' ? String(o.id) : `row${i + 1}`,
      text: o.text,
      gold: String(o.label),
    });
  });
  // The import stores a repeated text once (items are keyed by content): keep its first row.
  const seen = new Set<string>();
  const distinct = rows.filter((r) => !seen.has(r.text) && seen.add(r.text));
  if (distinct.length < rows.length) log(`${file}: ${rows.length - distinct.length} repeated texts left out`);
  rows = distinct;
  const picked = count === undefined || count >= rows.length ? rows : shuffle(rows, mulberry32(seed ^ 0xda7a)).slice(0, count);
  return { name: file, rows: picked };
}

/**
 * The simulated teacher: gold, except a share `noise` flipped to a uniformly drawn other class; the given label's
 * probability drawn from [0.6, 0.95] (flat: every item; informative: correct items, flipped ones from
 * [1/C + 0.05, 0.75]), the rest spread evenly over the other classes (which says nothing about the gold label).
 */
function teacherOf(rows: Row[], labels: string[], noise: number, seed: number, c: ConfidenceCase): { label: number[]; logits: number[][] } {
  const flip = mulberry32(seed ^ 0xf11b);
  const conf = mulberry32(seed ^ 0xc0f1);
  const k = labels.length;
  const flips = new Set(
    shuffle(
      rows.map((_, i) => i),
      flip,
    ).slice(0, Math.round(noise * rows.length)),
  );
  const label: number[] = [];
  const logits: number[][] = [];
  rows.forEach((r, i) => {
    const gold = labels.indexOf(r.gold);
    const given = flips.has(i) ? (gold + 1 + Math.floor(flip() * (k - 1))) % k : gold;
    const [lo, hi] = c === 'informative' && given !== gold ? [1 / k + 0.05, 0.75] : [0.6, 0.95];
    const top = lo + (hi - lo) * conf();
    label.push(given);
    logits.push(labels.map((_, j) => Math.log(j === given ? top : (1 - top) / (k - 1))));
  });
  return { label, logits };
}

async function runCase(
  o: BenchOptions,
  data: { name: string; rows: Row[] },
  labels: string[],
  dir: string,
  c: ConfidenceCase,
  depths: number[],
): Promise<CaseResult> {
  mkdirSync(dir, { recursive: true });
  const { rows } = data;
  const taskFile = join(dir, 'bench.md');
  writeFileSync(
    taskFile,
    `---\nname: bench\nlabels: ${JSON.stringify(labels)}\ninput: text\n---\nWhich label fits this text?\n\nText: {{text}}\n`,
  );
  const task: Task = loadTask(taskFile);
  const itemsFile = join(dir, 'items.jsonl');
  writeFileSync(itemsFile, rows.map((r) => JSON.stringify({ id: r.id, text: r.text, label: r.gold, split: 'train' })).join('\n') + '\n');
  const teacher = teacherOf(rows, labels, o.noise, o.seed, c);
  const logitsFile = join(dir, 'teacher.jsonl');
  writeFileSync(logitsFile, rows.map((r, i) => JSON.stringify({ id: r.id, logits: teacher.logits[i] })).join('\n') + '\n');

  const db = join(dir, 'bench.db');
  rmSync(db, { force: true });
  const store = Store.open(db);
  let itemIds: number[];
  try {
    itemIds = (await store.importItems(task, readItems(itemsFile, task))).itemIds;
    await ingestLogits({ store, task, teacher: `noisy-${c}`, input: logitsFile, format: { kind: 'dense32' } });
  } finally {
    store.close();
  }
  const wrongById = new Map(itemIds.map((id, i) => [id, teacher.label[i] !== labels.indexOf(rows[i].gold)]));

  const student = join(dir, 'student');
  const t0 = performance.now();
  trainStudent(o, db, student);
  const trainSeconds = (performance.now() - t0) / 1000;
  // The same student without its out-of-fold predictions: the queue then asks the student itself (in-sample).
  const inSample = join(dir, 'student-in-sample');
  mkdirSync(inSample, { recursive: true });
  for (const f of ['model.json', 'weights.bin']) copyFileSync(join(student, f), join(inSample, f));

  const reopened = Store.open(db);
  let queues: { issues: number[]; inSample: number[]; low: number[] };
  try {
    const row = reopened.findTask('bench')!;
    const ids = async (studentDir: string, policy: 'label-issues' | 'low-confidence') =>
      buildQueue(await buildReviewContext(reopened, row, { studentDir, backend: o.backend }), policy).map((e) => e.itemId);
    queues = {
      issues: await ids(student, 'label-issues'),
      inSample: await ids(inSample, 'label-issues'),
      low: await ids(student, 'low-confidence'),
    };
  } finally {
    reopened.close();
  }
  for (const [name, q] of Object.entries(queues))
    if (q.length !== rows.length) throw new DistilleryError(`the ${name} queue holds ${q.length} of ${rows.length} items`);
  const wrongIn = (order: number[], r: number) => order.slice(0, r).filter((id) => wrongById.get(id)).length;
  const randoms = Array.from({ length: o.randomOrders }, (_, s) => shuffle(itemIds, mulberry32(o.seed + s)));
  const metrics = JSON.parse(readFileSync(join(student, 'metrics.json'), 'utf8')) as {
    out_of_fold: { target_agreement: number | null; gold_accuracy: number | null };
  };
  return {
    confidence: c,
    items: rows.length,
    wrong: [...wrongById.values()].filter(Boolean).length,
    out_of_fold_gold_accuracy: metrics.out_of_fold.gold_accuracy,
    out_of_fold_teacher_agreement: metrics.out_of_fold.target_agreement,
    train_seconds: trainSeconds,
    depths: depths.map((r) => {
      const rnd = randoms.map((q) => wrongIn(q, r));
      return {
        r,
        label_issues: wrongIn(queues.issues, r),
        label_issues_in_sample: wrongIn(queues.inSample, r),
        low_confidence: wrongIn(queues.low, r),
        random_mean: rnd.reduce((s, x) => s + x, 0) / rnd.length,
        random_min: Math.min(...rnd),
        random_max: Math.max(...rnd),
      };
    }),
  };
}

/** scripts/train.ts --folds, as a user runs it. */
function trainStudent(o: BenchOptions, db: string, out: string): void {
  const args = ['--db', db, '--arch', o.arch, '--folds', String(o.folds), '--epochs', String(o.epochs), '--seed', String(o.seed)];
  args.push('--backend', o.backend, '--out', out);
  log(`tsx scripts/train.ts ${args.join(' ')}`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts/train.ts'), ...args], { cwd: ROOT, encoding: 'utf8' });
  if (r.status !== 0) {
    process.stderr.write(r.stderr);
    throw new DistilleryError(`train.ts exited with ${r.status ?? r.signal}`);
  }
}

function printCase(r: CaseResult, o: BenchOptions): void {
  const pct = (x: number | null) => (x === null ? '-' : `${(100 * x).toFixed(1)}%`);
  say('');
  say(
    `teacher confidence ${r.confidence}: ${r.items} items, ${r.wrong} wrong labels (${pct(r.wrong / r.items)}); ` +
      `out of fold the student agrees with gold on ${pct(r.out_of_fold_gold_accuracy)}, with the teacher on ${pct(r.out_of_fold_teacher_agreement)} ` +
      `(trained in ${r.train_seconds.toFixed(0)} s)`,
  );
  const cell = (wrong: number, d: Depth) => `${wrong} (${(wrong / Math.max(d.random_mean, 1e-9)).toFixed(2)}×)`.padEnd(16);
  say(
    `${'R'.padStart(5)}  ${'label-issues'.padEnd(16)}${'in-sample'.padEnd(16)}${'low-confidence'.padEnd(16)}random (mean of ${o.randomOrders}, min–max)`,
  );
  for (const d of r.depths)
    say(
      `${String(d.r).padStart(5)}  ${cell(d.label_issues, d)}${cell(d.label_issues_in_sample, d)}${cell(d.low_confidence, d)}` +
        `${d.random_mean.toFixed(1)} (${d.random_min}–${d.random_max})`,
    );
}
