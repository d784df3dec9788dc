/**
 * bench-review: is the review page's next item fast on a large task? The issue asks for the next item within
 * 100 ms on a local database of 100,000 items, "the queue is computed once, not per item".
 *
 *   tsx scripts/bench-review.ts [--items 100000] [--classes 10] [--policy label-issues] [--views 200] [--rounds 3] [--keep] [--json]
 *
 * Builds a database of --items text items with two teachers' labels (one with log-probabilities, one with hard
 * labels only), through the store's own import and label methods, in one transaction, and an out-of-fold file
 * for a student (so label-issues reads the out-of-fold predictions as the page does). With --keep the database
 * stays in the temp folder and is reused by the next run with the same --items and --classes.
 *
 * Then, in this one process:
 *  - the queue built once (buildReviewContext + buildQueue), timed;
 *  - the next item: the queue's next entry, its ItemView (src/review/item-view.ts) and its JSON, for --views items, each timed;
 *  - the baseline, the queue recomputed for every item (context + queue + view), for --rounds items only (it is slow).
 * Prints the p50/p95 of each and the ratio of the medians; --json prints one JSON object as the last line.
 */
import { Command, Option } from 'commander';
import fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { addJsonOption } from '../src/cli/options.ts';
import { intArg, log, runCli } from '../src/cli/run.ts';
import { DistilleryError } from '../src/errors.ts';
import { contentHash } from '../src/input/item.ts';
import type { ItemInput } from '../src/input/types.ts';
import { mulberry32, gaussian } from '../src/random.ts';
import { ItemView } from '../src/review/api.ts';
import { itemView } from '../src/review/item-view.ts';
import { buildQueue, buildReviewContext, REVIEW_POLICIES, type ReviewOptions, type ReviewPolicy } from '../src/review/queue.ts';
import { encodeSoft } from '../src/soft/codec.ts';
import { Store, type TaskRow } from '../src/store/store.ts';
import { loadTask, type Task } from '../src/task/task.ts';
import { roundProbs, writeOutOfFold } from '../src/train/out-of-fold.ts';

interface BenchReviewFlags {
  items: number;
  classes: number;
  policy: ReviewPolicy;
  views: number;
  rounds: number;
  keep: boolean;
  seed: number;
  json: boolean;
}

const program = addJsonOption(
  new Command('bench-review')
    .description("the review page's next item on a large task: the queue built once against the queue rebuilt per item")
    .option('--items <n>', 'items in the database', intArg(1), 100_000)
    .option('--classes <n>', 'labels of the task', intArg(2, 100), 10)
    .addOption(new Option('--policy <name>', 'the queue to walk').choices([...REVIEW_POLICIES]).default('label-issues'))
    .option('--views <n>', 'items walked with the queue built once', intArg(1), 200)
    .option('--rounds <n>', 'items walked with the queue rebuilt for each (the slow baseline)', intArg(1), 3)
    .option('--keep', 'keep the database in the temp folder and reuse it next time (same --items and --classes)', false)
    .option('--seed <n>', 'seed of the synthetic labels', intArg(0, 0xffffffff), 1),
);

/** Probability the hard-label teacher, and the soft teacher's top class, are the item's true class. */
const ACCURACY = { soft: 0.85, hard: 0.8 };

function writeTaskFile(dir: string, classes: number): Task {
  const file = join(dir, 'bench-review.md');
  const labels = Array.from({ length: classes }, (_, k) => `class${k}`);
  fs.writeFileSync(
    file,
    `---\nname: bench-review\nlabels: [${labels.join(', ')}]\ninput: text\n---\nWhich class is this?\n\nText: {{text}}\n`,
  );
  return loadTask(file);
}

async function* syntheticItems(n: number, classes: number, rand: () => number): AsyncGenerator<ItemInput> {
  for (let i = 0; i < n; i++) {
    const fields = { text: `ticket ${i}: the printer on floor ${i % 7} <b>shows</b> error ${Math.floor(rand() * 1000)}` };
    yield {
      id: `t${i}`,
      hash: contentHash(fields),
      fields,
      gold: `class${i % classes}`,
      split: i % 10 === 0 ? 'test' : 'train',
      source: { file: 'bench' },
    };
  }
}

/** A run of `teacher` with one ok label per item; `soft` gives log-probabilities, else hard labels only. */
function addTeacher(store: Store, task: TaskRow, ids: number[], teacher: string, soft: boolean, rand: () => number): void {
  const c = task.labels.length;
  const run = store.createRun({
    task_id: task.id,
    kind: soft ? 'logits' : 'llm',
    teacher,
    base_url: null,
    prompt_version: null,
    config_hash: `bench-review-${teacher}`,
    params: '{}',
    labels: JSON.stringify(task.labels),
    items_total: ids.length,
  });
  ids.forEach((itemId, i) => {
    const truth = i % c;
    const said = rand() < (soft ? ACCURACY.soft : ACCURACY.hard) ? truth : Math.floor(rand() * c);
    let values: Float32Array | null = null;
    if (soft) {
      values = Float32Array.from({ length: c }, () => gaussian(rand));
      values[said] += 1.5 + 2 * rand();
      for (let k = 0; k < c; k++) if (k !== said) values[k] = Math.min(values[k], values[said] - 0.01);
    }
    store.insertLabel({
      itemId,
      runId: run.id,
      requestKey: `bench-review-${teacher}-${i}`,
      status: 'ok',
      label: task.labels[said],
      soft: values ? encodeSoft({ kind: 'logits', values }, { kind: 'dense16' }) : null,
      softMethod: soft ? 'logits' : 'none',
      sparse: false,
      raw: null,
      promptTokens: 0,
      completionTokens: 0,
      cost: 0,
      latencyMs: 0,
      attempts: 1,
      error: null,
    });
  });
  store.finishRun(run.id, 'completed', null);
}

/** The out-of-fold file a `train.ts --folds K` student folder holds (design §3): a noisy copy of the truth. */
function writeStudentFolder(dir: string, task: TaskRow, ids: number[], rand: () => number): void {
  const c = task.labels.length;
  const items = ids.map((id, i) => {
    const z = Array.from({ length: c }, () => gaussian(rand));
    z[i % c] += 2;
    const m = Math.max(...z);
    const e = z.map((x) => Math.exp(x - m));
    const s = e.reduce((a, b) => a + b, 0);
    return { id, probs: roundProbs(e.map((x) => x / s)), fold: i % 10 === 0 ? null : i % 5 };
  });
  writeOutOfFold(dir, { task: task.name, labels: task.labels, folds: 5, seed: 1, items });
}

/** The database (built, or reused with --keep), its task and the student folder. */
async function database(
  o: BenchReviewFlags,
  dir: string,
): Promise<{ store: Store; task: TaskRow; studentDir: string; built: boolean; seconds: number }> {
  const file = join(dir, 'bench-review.db');
  const studentDir = join(dir, 'student');
  const t0 = performance.now();
  if (fs.existsSync(file) && fs.existsSync(join(studentDir, 'out-of-fold.json'))) {
    const store = Store.open(file);
    const task = store.findTask('bench-review');
    const runs = task ? store.runs(task.id).filter((r) => r.status === 'completed') : [];
    if (task && task.labels.length === o.classes && store.countItems(task.id) === o.items && runs.length === 2)
      return { store, task, studentDir, built: false, seconds: (performance.now() - t0) / 1000 };
    store.close();
    fs.rmSync(file, { force: true });
  }
  for (const suffix of ['-wal', '-shm']) fs.rmSync(file + suffix, { force: true });
  const store = Store.open(file);
  const rand = mulberry32(o.seed);
  const taskFile = writeTaskFile(dir, o.classes);
  const imported = await store.importItems(taskFile, syntheticItems(o.items, o.classes, rand));
  const task = imported.taskRow;
  await store.transaction(async () => {
    addTeacher(store, task, imported.itemIds, 'soft-teacher', true, rand);
    addTeacher(store, task, imported.itemIds, 'hard-teacher', false, rand);
  });
  writeStudentFolder(studentDir, task, imported.itemIds, rand);
  return { store, task, studentDir, built: true, seconds: (performance.now() - t0) / 1000 };
}

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

const r2 = (x: number) => Math.round(x * 100) / 100;

runCli(async () => {
  const o = program.parse().opts<BenchReviewFlags>();
  const dir = o.keep ? join(tmpdir(), `distillery-bench-review-${o.items}x${o.classes}`) : fs.mkdtempSync(join(tmpdir(), 'bench-review-'));
  fs.mkdirSync(dir, { recursive: true });
  try {
    const db = await database(o, dir);
    const { store, task } = db;
    try {
      log(`${db.built ? 'built' : 'reused'} ${o.items} items × 2 teachers in ${db.seconds.toFixed(1)} s (${dir})`);
      const ropts: ReviewOptions = { studentDir: db.studentDir };

      let t = performance.now();
      const ctx = await buildReviewContext(store, task, ropts);
      const contextMs = performance.now() - t;
      t = performance.now();
      const queue = buildQueue(ctx, o.policy);
      const queueMs = performance.now() - t;
      if (queue.length < o.views)
        throw new DistilleryError(`the ${o.policy} queue holds ${queue.length} items, fewer than --views ${o.views}`);
      log(`queue built once: context ${contextMs.toFixed(0)} ms + ${o.policy} queue ${queueMs.toFixed(0)} ms (${queue.length} items)`);

      // The views timed are the page's: checked against its contract once, outside the timing.
      ItemView.parse(itemView(store, ctx, queue[0]));
      // The page's next item: the cursor's next entry and its view, from the context built once.
      const fast: number[] = [];
      let sink = 0;
      for (let k = 0; k < o.views; k++) {
        const t0 = performance.now();
        const body = JSON.stringify(itemView(store, ctx, queue[k]));
        fast.push(performance.now() - t0);
        sink += body.length;
      }
      // The baseline: everything recomputed for each item, as a server without a stored queue would.
      const slow: number[] = [];
      for (let k = 0; k < o.rounds; k++) {
        const t0 = performance.now();
        const c = await buildReviewContext(store, task, ropts);
        const body = JSON.stringify(itemView(store, c, buildQueue(c, o.policy)[k]));
        slow.push(performance.now() - t0);
        sink += body.length;
      }
      if (sink === 0) throw new DistilleryError('every view was empty');
      const figures = {
        items: o.items,
        classes: o.classes,
        policy: o.policy,
        queue_length: queue.length,
        context_ms: r2(contextMs),
        queue_ms: r2(queueMs),
        next_item_ms: { n: fast.length, p50: r2(quantile(fast, 0.5)), p95: r2(quantile(fast, 0.95)), max: r2(Math.max(...fast)) },
        rebuilt_per_item_ms: { n: slow.length, p50: r2(quantile(slow, 0.5)), p95: r2(quantile(slow, 0.95)), max: r2(Math.max(...slow)) },
        ratio_p50: r2(quantile(slow, 0.5) / quantile(fast, 0.5)),
      };
      console.log(`${o.items} items, ${o.classes} classes, policy ${o.policy} (${queue.length} queued)`);
      console.log(
        `  queue built once:          ${(contextMs + queueMs).toFixed(0)} ms (context ${contextMs.toFixed(0)}, queue ${queueMs.toFixed(0)})`,
      );
      console.log(
        `  next item (once-built):    p50 ${figures.next_item_ms.p50} ms, p95 ${figures.next_item_ms.p95} ms over ${fast.length} items`,
      );
      console.log(
        `  next item (rebuilt each):  p50 ${figures.rebuilt_per_item_ms.p50} ms, p95 ${figures.rebuilt_per_item_ms.p95} ms over ${slow.length} items`,
      );
      console.log(`  ratio of the medians:      ${figures.ratio_p50}×`);
      if (o.json) console.log(JSON.stringify(figures));
    } finally {
      store.close();
    }
  } finally {
    if (!o.keep) fs.rmSync(dir, { recursive: true, force: true });
  }
});
