/**
 * bench-review: is the review page's next item fast on a large task? The issue asks for the next item within
 * 100 ms on a local database of 100,000 items, "the queue is computed once, not per item".
 *
 *   tsx scripts/bench-review.ts [--items 100000] [--classes 10] [--policy label-issues] [--views 200] [--rounds 3] [--keep]
 *                               [--http] [--browser] [--json]
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
 * With --http, the path a reviewer uses: the real review server (startReviewServer, loopback, an access token) over a
 * copy of the database (the decisions never reach the kept one), its start timed (open, context, queue, listen), then
 * --views decisions, each `POST /api/decide` (token, the CSRF token read from the page's meta tag, the server's Origin)
 * timed up to the parsed next state, which is what the page waits for before it draws the next item; the ratio to the
 * in-process next item of the same run. With --browser (when Chromium is installed, as test/report.test.ts finds it),
 * --views more answers in headless Chromium by the Enter key, timed in the page from the key event to the next item's
 * text in the DOM and to the frame after it.
 * Prints the p50/p95/max of each; --json prints one JSON object as the last line.
 */
import { Command, Option } from 'commander';
import fs from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { addJsonOption } from '../src/cli/options.ts';
import { intArg, log, runCli } from '../src/cli/run.ts';
import { DistilleryError } from '../src/errors.ts';
import { contentHash } from '../src/input/item.ts';
import type { ItemInput } from '../src/input/types.ts';
import { mulberry32, gaussian } from '../src/random.ts';
import { CSRF_HEADER, ItemView, ReviewState, TOKEN_HEADER } from '../src/review/api.ts';
import { itemView } from '../src/review/item-view.ts';
import { buildQueue, buildReviewContext, REVIEW_POLICIES, type ReviewOptions, type ReviewPolicy } from '../src/review/queue.ts';
import { randomToken } from '../src/review/security.ts';
import { startReviewServer, type ReviewServer } from '../src/review/server.ts';
import { ReviewSession } from '../src/review/session.ts';
import { encodeSoft } from '../src/soft/codec.ts';
import { Store, unpaidLabel, type TaskRow } from '../src/store/store.ts';
import { loadTask, type Task } from '../src/task/task.ts';
import { roundProbs, writeOutOfFold } from '../src/train/out-of-fold.ts';

interface BenchReviewFlags {
  items: number;
  classes: number;
  policy: ReviewPolicy;
  views: number;
  rounds: number;
  keep: boolean;
  http: boolean;
  browser: boolean;
  seed: number;
  json: boolean;
}

const program = addJsonOption(
  new Command('bench-review')
    .description("the review page's next item on a large task: the queue built once against the queue rebuilt per item")
    .option('--items <n>', 'items in the database', intArg(1), 100_000)
    .option('--classes <n>', 'labels of the task', intArg(2, 100), 10)
    .addOption(new Option('--policy <name>', 'the queue to walk').choices([...REVIEW_POLICIES]).default('label-issues'))
    .option('--views <n>', 'items walked with the queue built once; with --http, --browser also the answers timed on each', intArg(1), 200)
    .option('--rounds <n>', 'items walked with the queue rebuilt for each (the slow baseline)', intArg(1), 3)
    .option('--keep', 'keep the database in the temp folder and reuse it next time (same --items and --classes)', false)
    .option('--http', 'also time POST /api/decide on the real server (token, CSRF, Origin) over a copy of the database', false)
    .option('--browser', 'also time Enter → the next item drawn in headless Chromium (skipped when none is installed)', false)
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
    store.insertLabel(
      unpaidLabel({
        itemId,
        runId: run.id,
        requestKey: `bench-review-${teacher}-${i}`,
        label: task.labels[said],
        soft: values ? encodeSoft({ kind: 'logits', values }, { kind: 'dense16' }) : null,
        softMethod: soft ? 'logits' : 'none',
        attempts: 1,
      }),
    );
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

interface Spread {
  n: number;
  p50: number;
  p95: number;
  max: number;
}

function spread(xs: number[]): Spread {
  return { n: xs.length, p50: r2(quantile(xs, 0.5)), p95: r2(quantile(xs, 0.95)), max: r2(Math.max(...xs)) };
}

const line = (s: Spread) => `p50 ${s.p50} ms, p95 ${s.p95} ms, max ${s.max} ms over ${s.n}`;

interface InProcessFigures {
  items: number;
  classes: number;
  policy: ReviewPolicy;
  queue_length: number;
  context_ms: number;
  queue_ms: number;
  next_item_ms: Spread;
  rebuilt_per_item_ms: Spread;
  ratio_p50: number;
  /** The in-process next item's median unrounded (the HTTP ratio's denominator). */
  nextItemP50: number;
}

/** The queue built once, the next item from it, and the queue rebuilt per item, all in this process. */
async function inProcess(o: BenchReviewFlags, store: Store, task: TaskRow, studentDir: string): Promise<InProcessFigures> {
  const ropts: ReviewOptions = { studentDir };
  let t = performance.now();
  const ctx = await buildReviewContext(store, task, ropts);
  const contextMs = performance.now() - t;
  t = performance.now();
  const queue = buildQueue(ctx, o.policy);
  const queueMs = performance.now() - t;
  if (queue.length < o.views) throw new DistilleryError(`the ${o.policy} queue holds ${queue.length} items, fewer than --views ${o.views}`);
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
  const figures: InProcessFigures = {
    items: o.items,
    classes: o.classes,
    policy: o.policy,
    queue_length: queue.length,
    context_ms: r2(contextMs),
    queue_ms: r2(queueMs),
    next_item_ms: spread(fast),
    rebuilt_per_item_ms: spread(slow),
    ratio_p50: r2(quantile(slow, 0.5) / quantile(fast, 0.5)),
    nextItemP50: quantile(fast, 0.5),
  };
  console.log(`${o.items} items, ${o.classes} classes, policy ${o.policy} (${queue.length} queued)`);
  console.log(
    `  queue built once:          ${(contextMs + queueMs).toFixed(0)} ms (context ${contextMs.toFixed(0)}, queue ${queueMs.toFixed(0)})`,
  );
  console.log(`  next item (once-built):    ${line(figures.next_item_ms)} items`);
  console.log(`  next item (rebuilt each):  ${line(figures.rebuilt_per_item_ms)} items`);
  console.log(`  ratio of the medians:      ${figures.ratio_p50}×`);
  return figures;
}

/** A POST or GET to the review server as the page makes it: the token, and for a POST the CSRF token and the server's Origin. */
function request(
  agent: http.Agent,
  port: number,
  auth: { token: string; csrf: string },
  method: 'GET' | 'POST',
  path: string,
  body?: unknown,
): Promise<{ status: number; text: string }> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const headers: Record<string, string> = { accept: 'application/json', [TOKEN_HEADER]: auth.token };
  if (payload !== undefined) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = String(Buffer.byteLength(payload));
    headers[CSRF_HEADER] = auth.csrf;
    headers.origin = `http://127.0.0.1:${port}`;
  }
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(payload);
  });
}

/** The answer a reviewer pressing Enter gives: the suggestion, else the first label. */
const answerOf = (s: ReviewState): string | null => s.item?.suggestion ?? s.labels[0] ?? null;

/**
 * --views decisions over HTTP, each timed from the POST to the parsed next state (what the page awaits before it
 * draws the next item), through a keep-alive connection as a browser's fetch uses.
 */
async function httpDecisions(
  server: ReviewServer,
  token: string,
  views: number,
): Promise<{ ms: Spread; firstTenth: Spread; lastTenth: Spread }> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    const page = await request(agent, server.port, { token, csrf: '' }, 'GET', `/?token=${encodeURIComponent(token)}`);
    const csrf = /<meta name="csrf-token" content="([^"]+)">/.exec(page.text)?.[1];
    if (page.status !== 200 || !csrf) throw new DistilleryError(`GET / answered ${page.status} without a csrf-token meta tag`);
    const auth = { token, csrf };
    const first = await request(agent, server.port, auth, 'GET', '/api/state');
    let state = ReviewState.parse(JSON.parse(first.text));
    const done0 = state.progress.done;
    const ms: number[] = [];
    for (let k = 0; k < views; k++) {
      const item = state.item;
      if (!item) throw new DistilleryError(`the queue ran out after ${k} decisions`);
      const t0 = performance.now();
      const r = await request(agent, server.port, auth, 'POST', '/api/decide', { itemId: item.id, label: answerOf(state) });
      const next = JSON.parse(r.text) as ReviewState;
      ms.push(performance.now() - t0);
      if (r.status !== 200) throw new DistilleryError(`POST /api/decide answered ${r.status}: ${r.text.slice(0, 200)}`);
      if (next.item?.id === item.id) throw new DistilleryError(`item ${item.id} came back after its decision`);
      state = next;
    }
    // The last state against the contract, and every decision counted (outside the timing).
    state = ReviewState.parse(state);
    if (state.progress.done !== done0 + views)
      throw new DistilleryError(`progress says ${state.progress.done - done0} done after ${views} decisions`);
    // The session re-reads this reviewer's decisions for every state: the first and last tenth show whether that grows.
    const tenth = Math.max(1, Math.floor(views / 10));
    return { ms: spread(ms), firstTenth: spread(ms.slice(0, tenth)), lastTenth: spread(ms.slice(-tenth)) };
  } finally {
    agent.destroy();
  }
}

function chromiumPath(): string | undefined {
  const candidates = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'];
  return candidates.find((p): p is string => !!p && fs.existsSync(p));
}

interface BrowserProbe {
  /** Key event → the next item's text in the DOM (the render ran). */
  dom: number;
  /** Key event → the frame after it (rAF, then a task: the browser has had its chance to paint). */
  painted: number;
}

/**
 * --views answers in headless Chromium: Enter pressed, timed in the page from the key event's timestamp to the next
 * item's text in the DOM and to the frame after. Null when no Chromium is installed.
 */
async function browserAnswers(server: ReviewServer, views: number): Promise<{ dom: Spread; painted: Spread } | null> {
  const exe = chromiumPath();
  if (!exe) return null;
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({ executablePath: exe, args: ['--no-sandbox', '--disable-gpu'] });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(server.url);
    await page.waitForFunction(() => !!document.querySelector('#content .text'));
    const dom: number[] = [];
    const painted: number[] = [];
    for (let k = 0; k < views; k++) {
      // Armed before the key: resolves with the two times, or rejects after 10 s.
      await page.evaluate(() => {
        const w = window as unknown as { probe?: Promise<BrowserProbe> };
        const item = document.getElementById('item')!;
        const before = item.dataset.itemId;
        w.probe = new Promise<BrowserProbe>((resolve, reject) => {
          let pressed = -1;
          document.addEventListener('keydown', (e) => (pressed = e.timeStamp), { capture: true, once: true });
          const timer = setTimeout(() => reject(new Error(`item ${before} was still shown after 10 s`)), 10_000);
          const obs = new MutationObserver(() => {
            const text = document.querySelector('#content .text')?.textContent ?? '';
            if (pressed < 0 || item.dataset.itemId === before || !item.dataset.itemId || !text.startsWith('ticket ')) return;
            const domAt = performance.now();
            obs.disconnect();
            requestAnimationFrame(() =>
              setTimeout(() => {
                clearTimeout(timer);
                resolve({ dom: domAt - pressed, painted: performance.now() - pressed });
              }, 0),
            );
          });
          obs.observe(document.getElementById('panel') ?? document.body, { subtree: true, childList: true, attributes: true });
        });
      });
      await page.keyboard.press('Enter');
      const p = await page.evaluate(() => (window as unknown as { probe: Promise<BrowserProbe> }).probe);
      dom.push(p.dom);
      painted.push(p.painted);
      await page.waitForFunction(() => !document.body.classList.contains('busy'));
    }
    if (errors.length) throw new DistilleryError(`the page reported: ${errors[0]}`);
    return { dom: spread(dom), painted: spread(painted) };
  } finally {
    await browser.close();
  }
}

/**
 * The path a reviewer uses: the real server (scripts/review.ts's parts, with an access token) over a copy of the
 * database, so the decisions never reach the kept one; the start (open, context, queue, session, listen) timed.
 */
async function servedBench(
  o: BenchReviewFlags,
  dbFile: string,
  studentDir: string,
  inproc: InProcessFigures,
): Promise<Record<string, unknown>> {
  const scratch = fs.mkdtempSync(join(tmpdir(), 'bench-review-served-'));
  try {
    const copy = join(scratch, 'review.db');
    fs.copyFileSync(dbFile, copy);
    const t0 = performance.now();
    const store = Store.open(copy);
    try {
      const task = store.findTask('bench-review')!;
      const t1 = performance.now();
      const ctx = await buildReviewContext(store, task, { studentDir });
      const t2 = performance.now();
      const queue = buildQueue(ctx, o.policy);
      const t3 = performance.now();
      const session = new ReviewSession({ store, ctx, policy: o.policy, queue, reviewer: 'bench' });
      const token = randomToken();
      const server = await startReviewServer({ session, port: 0, token, log });
      const t4 = performance.now();
      const start = { open_ms: r2(t1 - t0), context_ms: r2(t2 - t1), queue_ms: r2(t3 - t2), listen_ms: r2(t4 - t3), total_ms: r2(t4 - t0) };
      console.log(
        `  server start:              ${start.total_ms.toFixed(0)} ms (open ${start.open_ms.toFixed(0)}, context ${start.context_ms.toFixed(0)}, ` +
          `queue ${start.queue_ms.toFixed(0)}, session + listen ${start.listen_ms.toFixed(0)})`,
      );
      const out: Record<string, unknown> = { server_start_ms: start };
      try {
        if (o.http) {
          const h = await httpDecisions(server, token, o.views);
          out.http_decide_ms = h.ms;
          out.http_decide_first_tenth_ms = h.firstTenth;
          out.http_decide_last_tenth_ms = h.lastTenth;
          out.http_ratio_p50 = r2(h.ms.p50 / inproc.nextItemP50);
          console.log(`  POST /api/decide → state:  ${line(h.ms)} decisions (token, CSRF from the page, Origin)`);
          console.log(`    first / last tenth p50:  ${h.firstTenth.p50} ms / ${h.lastTenth.p50} ms`);
          console.log(`  HTTP / in-process p50:     ${out.http_ratio_p50}× (in-process next item p50 ${inproc.next_item_ms.p50} ms)`);
        }
        if (o.browser) {
          const b = await browserAnswers(server, o.views);
          if (!b) {
            console.log('  browser: skipped, no Chromium found (apt-get install chromium, or set CHROMIUM_PATH)');
            out.browser = null;
          } else {
            out.browser_key_to_dom_ms = b.dom;
            out.browser_key_to_frame_ms = b.painted;
            console.log(`  browser Enter → next text: ${line(b.dom)} answers (in the DOM)`);
            console.log(`  browser Enter → next frame: ${line(b.painted)} answers (rAF + task after the DOM)`);
          }
        }
      } finally {
        await server.close();
      }
      return out;
    } finally {
      store.close();
    }
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

runCli(async () => {
  const o = program.parse().opts<BenchReviewFlags>();
  const dir = o.keep ? join(tmpdir(), `distillery-bench-review-${o.items}x${o.classes}`) : fs.mkdtempSync(join(tmpdir(), 'bench-review-'));
  fs.mkdirSync(dir, { recursive: true });
  try {
    const db = await database(o, dir);
    let figures: InProcessFigures;
    try {
      log(`${db.built ? 'built' : 'reused'} ${o.items} items × 2 teachers in ${db.seconds.toFixed(1)} s (${dir})`);
      figures = await inProcess(o, db.store, db.task, db.studentDir);
    } finally {
      db.store.close();
    }
    const served = o.http || o.browser ? await servedBench(o, join(dir, 'bench-review.db'), db.studentDir, figures) : {};
    const { nextItemP50: _, ...shown } = figures;
    if (o.json) console.log(JSON.stringify({ ...shown, ...served }));
  } finally {
    if (!o.keep) fs.rmSync(dir, { recursive: true, force: true });
  }
});
