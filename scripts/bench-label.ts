/**
 * bench-label: the labeling pipeline's throughput next to a bare `openai`
 * client loop at the same concurrency, against a zero-latency local server
 * running in a child process (so that the server's work is the same for both
 * and does not share their event loop).
 *
 *   tsx scripts/bench-label.ts [--items 2000] [--concurrency 16] [--prefill 20000] [--json]
 *
 * Whole process (what a user waits for: start-up, import, labeling, exit):
 *  - process_bare_labels_per_s: `node` running a plain ESM loop (openai + p-limit, the same requests read
 *    from a JSONL file, answer parsed, nothing stored), spawn to exit;
 *  - process_pipeline_labels_per_s: `node --import tsx scripts/label.ts --input ITEMS` on a new database
 *    (import, plan, label, store), spawn to exit; process_ratio = pipeline / bare (goal: 0.95 or more);
 *  - process_*_cpu_ms_per_label: user + system CPU of each process (GNU time, where installed) per label, the least
 *    of the runs; process_cpu_ratio = bare / pipeline. On a shared machine CPU time is far less noisy than wall time;
 *  - startup_bare_s, startup_label_help_s, startup_label_one_item_s: the bare loop with no requests, `label.ts
 *    --help`, and label.ts labeling one item on a new database; load_average_before/after (1 min).
 * In process (the labeling loop alone, modules loaded, items imported):
 *  - bare_labels_per_s: chat completions with logprobs, answer parsed, nothing stored;
 *  - pipeline_labels_per_s: runLabeling on a fresh database (request keys,
 *    idempotency look-ups, soft labels, SQLite writes by the writer thread, budgets);
 *  - ratio = pipeline / bare (goal: 0.95 or more);
 *  - pipeline_in_thread_labels_per_s, in_thread_ratio: the same with the writes on the labeling thread
 *    (DISTILLERY_WRITER_THREAD=0);
 *  - *_cpu_ms_per_label: process.cpuUsage (every thread) per label, the least of the runs;
 *  - prefilled_labels_per_s: the same run on a database that already holds
 *    `--prefill` labeled items; growth_ratio = prefilled / fresh (1.0 = no
 *    per-item cost that grows with the database).
 * Each figure is the best of `--repeats` alternating runs (spreads are printed): the machines are shared and noisy.
 */
import { Command } from 'commander';
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import pLimit from 'p-limit';
import { intArg } from '../src/cli/run.ts';
import { readItems } from '../src/input/read.ts';
import { runLabeling } from '../src/label/live.ts';
import { Store } from '../src/store/store.ts';
import { loadTask, type Task } from '../src/task/task.ts';
import { TeacherClient } from '../src/teacher/client.ts';
import { RequestBuilder, defaultMaxTokens, type TeacherSettings } from '../src/teacher/request.ts';
import { DEFAULT_RETRY } from '../src/teacher/retry.ts';
import { startFakeTeacher } from '../src/sim/openai-server.ts';

const program = new Command('bench-label')
  .option('--items <n>', 'items per measured run', intArg(10), 2000)
  .option('--concurrency <n>', 'requests in flight', intArg(1), 16)
  .option('--prefill <n>', 'labeled items already in the database for the growth figure', intArg(0), 20000)
  .option('--repeats <n>', 'alternating repeats; the best of each is kept', intArg(1), 2)
  .option('--no-process', 'skip the whole-process figures (spawned label.ts against a spawned bare loop)')
  .option('--no-in-process', 'skip the in-process figures (runLabeling against the bare loop in this process)')
  .option('--json', 'print one JSON object as the last line', false)
  .option('--serve', 'internal: run the fake server and print its URL', false);

const opts = program.parse().opts();

let serverURL = '';

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'bench-label-'));
  const server = await startServer();
  serverURL = server.url;
  try {
    const taskPath = join(dir, 'task.md');
    writeFileSync(
      taskPath,
      '---\nname: bench\nlabels: [billing, bug report, feature request, other]\n---\nClassify the ticket.\nTicket: {{text}}\n',
    );
    const task = loadTask(taskPath);
    const settings: TeacherSettings = {
      model: 'bench',
      baseURL: server.url,
      soft: { kind: 'logprobs' },
      temperature: 0,
      maxTokens: defaultMaxTokens(task.labels),
      imageDetail: 'low',
    };

    const figures: Record<string, number | null> = { items: opts.items, concurrency: opts.concurrency };
    if (opts.process) Object.assign(figures, await wholeProcess(task, settings, taskPath, dir));
    if (opts.inProcess) {
      const bare: Rate[] = [];
      const fresh: Rate[] = [];
      const inThread: Rate[] = [];
      const prefilled: Rate[] = [];
      const template = opts.prefill > 0 ? await prefilledTemplate(task, settings, dir, opts.prefill) : undefined;
      for (let r = 0; r < opts.repeats; r++) {
        bare.push(await bareLoop(task, settings, dir, `bare${r}`));
        fresh.push(await pipeline(task, settings, dir, `fresh${r}`));
        inThread.push(await pipeline(task, settings, dir, `thread${r}`, undefined, false));
        if (template) prefilled.push(await pipeline(task, settings, dir, `pre${r}`, template));
      }
      const best = (xs: Rate[]) => Math.max(...xs.map((x) => x.rate));
      const cpu = (xs: Rate[]) => round(Math.min(...xs.map((x) => x.cpuMs)), 3);
      Object.assign(figures, {
        bare_labels_per_s: round(best(bare)),
        pipeline_labels_per_s: round(best(fresh)),
        ratio: round(best(fresh) / best(bare), 3),
        pipeline_in_thread_labels_per_s: round(best(inThread)),
        in_thread_ratio: round(best(inThread) / best(bare), 3),
        bare_cpu_ms_per_label: cpu(bare),
        pipeline_cpu_ms_per_label: cpu(fresh),
        pipeline_in_thread_cpu_ms_per_label: cpu(inThread),
        prefill: opts.prefill,
        prefilled_labels_per_s: prefilled.length ? round(best(prefilled)) : null,
        growth_ratio: prefilled.length ? round(best(prefilled) / best(fresh), 3) : null,
      });
      const runs = (xs: Rate[]) =>
        `runs: ${spread(xs.map((x) => x.rate))}; CPU ms/label ${spread(
          xs.map((x) => x.cpuMs),
          3,
        )}`;
      console.log(`in process, bare openai loop:   ${figures.bare_labels_per_s} labels/s  (${runs(bare)})`);
      console.log(
        `in process, pipeline (fresh db, writer thread): ${figures.pipeline_labels_per_s} labels/s  (${runs(fresh)})  ratio ${figures.ratio} (goal >= 0.95)`,
      );
      console.log(
        `in process, pipeline (fresh db, writes on the labeling thread): ${figures.pipeline_in_thread_labels_per_s} labels/s  (${runs(inThread)})  ratio ${figures.in_thread_ratio}`,
      );
      if (figures.prefilled_labels_per_s !== null) {
        console.log(
          `in process, pipeline (${opts.prefill} labeled items already): ${figures.prefilled_labels_per_s} labels/s  growth ratio ${figures.growth_ratio} (1.0 = flat)`,
        );
      }
      console.log(`load average (1 min) now: ${round(loadavg()[0], 2)}`);
    }
    if (opts.json) console.log(JSON.stringify(figures));
  } finally {
    server.child.kill();
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The whole-process figures: `--repeats` rounds, each running the bare loop and label.ts (in alternating order: the
 * first of a pair must not always get the quieter machine), and the start-ups. Rates are the best run's; CPU per label
 * (user + system, GNU time) the least.
 */
async function wholeProcess(task: Task, settings: TeacherSettings, taskPath: string, dir: string): Promise<Record<string, number | null>> {
  const bare: Run[] = [];
  const pipe: Run[] = [];
  const startBare: Run[] = [];
  const startHelp: Run[] = [];
  const startRun: Run[] = [];
  const requests = await requestFile(task, settings, dir);
  const empty = join(dir, 'no-requests.jsonl');
  writeFileSync(empty, '');
  const load0 = loadavg()[0];
  for (let r = 0; r < opts.repeats; r++) {
    startBare.push(await timed(bareChild(empty)));
    startHelp.push(await timed([process.execPath, ['--import', 'tsx', LABEL_SCRIPT, '--help']]));
    startRun.push(await timed(labelChild(taskPath, settings, dir, `one${r}`, 1), (out) => out.includes('1 labeled, 0 failed')));
    const runBare = async () => bare.push(await timed(bareChild(requests), (out) => out.includes(`answered ${opts.items}`)));
    const runPipeline = async () =>
      pipe.push(
        await timed(labelChild(taskPath, settings, dir, `proc${r}`, opts.items), (out) =>
          out.includes(`${opts.items} labeled, 0 failed, 0 pending`),
        ),
      );
    if (r % 2 === 0) {
      await runBare();
      await runPipeline();
    } else {
      await runPipeline();
      await runBare();
    }
  }
  const rate = (runs: Run[]) => Math.max(...runs.map((x) => opts.items / x.secs));
  const cpuPerLabel = (runs: Run[]) => (runs.every((x) => x.cpu !== undefined) ? Math.min(...runs.map((x) => x.cpu!)) / opts.items : null);
  const bareCpu = cpuPerLabel(bare);
  const pipeCpu = cpuPerLabel(pipe);
  const f = {
    process_bare_labels_per_s: round(rate(bare)),
    process_pipeline_labels_per_s: round(rate(pipe)),
    process_ratio: round(rate(pipe) / rate(bare), 3),
    process_bare_cpu_ms_per_label: bareCpu === null ? null : round(bareCpu * 1000, 3),
    process_pipeline_cpu_ms_per_label: pipeCpu === null ? null : round(pipeCpu * 1000, 3),
    process_cpu_ratio: bareCpu === null || pipeCpu === null ? null : round(bareCpu / pipeCpu, 3),
    startup_bare_s: round(Math.min(...startBare.map((x) => x.secs)), 3),
    startup_label_help_s: round(Math.min(...startHelp.map((x) => x.secs)), 3),
    startup_label_one_item_s: round(Math.min(...startRun.map((x) => x.secs)), 3),
    load_average_before: round(load0, 2),
    load_average_after: round(loadavg()[0], 2),
  };
  const cpu = (runs: Run[]) =>
    runs[0]?.cpu === undefined
      ? ''
      : `; CPU ${spread(
          runs.map((x) => x.cpu!),
          2,
        )} s`;
  console.log(
    `whole process, bare openai loop:  ${f.process_bare_labels_per_s} labels/s  (runs: ${spread(bare.map((x) => opts.items / x.secs))}${cpu(bare)})`,
  );
  console.log(
    `whole process, label.ts --input:  ${f.process_pipeline_labels_per_s} labels/s  (runs: ${spread(pipe.map((x) => opts.items / x.secs))}${cpu(pipe)})  ratio ${f.process_ratio} (goal >= 0.95)`,
  );
  if (bareCpu !== null) {
    console.log(
      `CPU per label: bare ${f.process_bare_cpu_ms_per_label} ms, label.ts ${f.process_pipeline_cpu_ms_per_label} ms (least of the runs); bare/label.ts ${f.process_cpu_ratio}`,
    );
  }
  console.log(
    `start-up: bare loop ${spread(
      startBare.map((x) => x.secs),
      3,
    )} s${cpu(startBare)}, label.ts --help ${spread(
      startHelp.map((x) => x.secs),
      3,
    )} s${cpu(startHelp)}, ` +
      `label.ts on one item ${spread(
        startRun.map((x) => x.secs),
        3,
      )} s${cpu(startRun)}`,
  );
  console.log(`load average (1 min): ${f.load_average_before} before, ${f.load_average_after} after`);
  return f;
}

type Run = { secs: number; cpu: number | undefined };

const LABEL_SCRIPT = fileURLToPath(new URL('./label.ts', import.meta.url));
const REPO = fileURLToPath(new URL('..', import.meta.url));

/**
 * The whole-process baseline: plain node (no tsx, nothing of distillery), the openai client and p-limit, sending the
 * requests of a JSONL file (one request body a line) at the same concurrency and parsing each answer.
 */
const BARE_CHILD = `
import { readFileSync } from 'node:fs';
import OpenAI from 'openai';
import pLimit from 'p-limit';
const [file, baseURL, concurrency] = process.argv.slice(1);
const requests = readFileSync(file, 'utf8').split('\\n').filter(Boolean).map((l) => JSON.parse(l));
const client = new OpenAI({ apiKey: 'bench', baseURL, maxRetries: 0 });
const limit = pLimit(Number(concurrency));
let ok = 0;
await Promise.all(requests.map((params) => limit(async () => {
  const c = await client.chat.completions.create(params);
  if (JSON.parse(c.choices[0].message.content ?? '{}').label) ok++;
})));
console.log('answered ' + ok);
`;

function bareChild(requests: string): [string, string[]] {
  return [process.execPath, ['--input-type=module', '-e', BARE_CHILD, requests, serverURL, String(opts.concurrency)]];
}

function labelChild(taskPath: string, settings: TeacherSettings, dir: string, name: string, items: number): [string, string[]] {
  const input = inputFile(dir, name, items);
  return [
    process.execPath,
    [
      '--import',
      'tsx',
      LABEL_SCRIPT,
      '--task',
      taskPath,
      '--input',
      input,
      '--db',
      join(dir, `${name}.db`),
      '--model',
      settings.model,
      '--base-url',
      serverURL,
      '--price-in',
      '0.15',
      '--price-out',
      '0.6',
      '--concurrency',
      String(opts.concurrency),
      '--progress-interval',
      '3600',
    ],
  ];
}

/** The request bodies label.ts sends for `--items` items (built by the same RequestBuilder), one JSON a line. */
async function requestFile(task: Task, settings: TeacherSettings, dir: string): Promise<string> {
  const store = Store.open(join(dir, 'requests.db'));
  const { itemIds } = await store.importItems(task, readItems(inputFile(dir, 'requests', opts.items), task));
  const builder = new RequestBuilder(task, settings);
  const path = join(dir, 'requests.jsonl');
  writeFileSync(
    path,
    store
      .itemsByIds(itemIds)
      .map((item) => `${JSON.stringify(builder.build(item).params)}\n`)
      .join(''),
  );
  store.close();
  return path;
}

/** GNU time, when installed: the child's user + system CPU seconds (less noisy than wall time on a shared machine). */
const GNU_TIME = existsSync('/usr/bin/time') ? '/usr/bin/time' : undefined;
const CPU_MARK = 'bench-label-cpu';

/**
 * Spawn to exit: wall seconds and (with GNU time) CPU seconds, user + system, of the process and its threads;
 * the process must exit 0 and its stdout pass `check`.
 */
function timed([cmd, args]: [string, string[]], check: (stdout: string) => boolean = () => true): Promise<Run> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const [file, argv] = GNU_TIME ? [GNU_TIME, ['-f', `${CPU_MARK} %U %S`, cmd, ...args]] : [cmd, args];
    const child = spawn(file, argv, { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, OPENAI_API_KEY: '' } });
    let out = '';
    let err = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (err += d));
    child.once('exit', (code) => {
      const secs = (performance.now() - t0) / 1000;
      const m = new RegExp(`${CPU_MARK} ([\\d.]+) ([\\d.]+)`).exec(err);
      if (code !== 0 || !check(out))
        reject(new Error(`${args.slice(0, 3).join(' ')}… exited ${code}: ${out.slice(-300)} ${err.slice(-300)}`));
      else resolve({ secs, cpu: m ? Number(m[1]) + Number(m[2]) : undefined });
    });
  });
}

function spread(xs: number[], digits = 1): string {
  return xs.map((x) => round(x, digits)).join(' / ');
}

function inputFile(dir: string, name: string, n: number, offset = 0): string {
  const path = join(dir, `${name}.jsonl`);
  const words = ['invoice', 'crash', 'please add', 'hello'];
  const lines: string[] = [];
  for (let i = 0; i < n; i++)
    lines.push(
      JSON.stringify({ id: `${name}-${offset + i}`, text: `ticket ${offset + i}: ${words[i % 4]} number ${(offset + i) * 7919}` }),
    );
  writeFileSync(path, `${lines.join('\n')}\n`);
  return path;
}

/** The baseline: what any script would do with the openai client and p-limit. */
/** Labels per second and CPU milliseconds per label (process.cpuUsage: every thread of this process). */
type Rate = { rate: number; cpuMs: number };

async function bareLoop(task: Task, settings: TeacherSettings, dir: string, name: string): Promise<Rate> {
  const store = Store.open(join(dir, `${name}.db`));
  const { itemIds } = await store.importItems(task, readItems(inputFile(dir, name, opts.items), task));
  const builder = new RequestBuilder(task, settings);
  const requests = store.itemsByIds(itemIds).map((item) => builder.build(item).params);
  store.close();
  const client = new OpenAI({ apiKey: 'bench', baseURL: settings.baseURL, maxRetries: 0 });
  const limit = pLimit(opts.concurrency);
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  let ok = 0;
  await Promise.all(
    requests.map((params) =>
      limit(async () => {
        const c = await client.chat.completions.create(params);
        if (JSON.parse(c.choices[0].message.content ?? '{}').label) ok++;
      }),
    ),
  );
  const secs = (performance.now() - t0) / 1000;
  if (ok !== requests.length) throw new Error(`bare loop: ${requests.length - ok} answers without a label`);
  return { rate: ok / secs, cpuMs: cpuMsSince(c0) / ok };
}

function cpuMsSince(c0: NodeJS.CpuUsage): number {
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / 1000;
}

/** runLabeling on a fresh database (or a copy of `copyFrom`); `writerThread: false` keeps the writes on this thread. */
async function pipeline(
  task: Task,
  settings: TeacherSettings,
  dir: string,
  name: string,
  copyFrom?: string,
  writerThread = true,
): Promise<Rate> {
  const dbPath = join(dir, `${name}.db`);
  if (copyFrom) copyFileSync(copyFrom, dbPath);
  const store = Store.open(dbPath);
  const { itemIds, taskRow } = await store.importItems(task, readItems(inputFile(dir, `${name}-new`, opts.items), task));
  const client = new TeacherClient({ baseURL: settings.baseURL, apiKeyEnv: 'BENCH_NO_KEY', timeoutMs: 60_000 });
  // Read by Store.startWriterThread.
  if (writerThread) delete process.env.DISTILLERY_WRITER_THREAD;
  else process.env.DISTILLERY_WRITER_THREAD = '0';
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const res = await runLabeling({
    store,
    task,
    taskRow,
    client,
    settings,
    price: { input: 0.15, output: 0.6, source: 'bench' },
    concurrency: opts.concurrency,
    limits: {},
    retry: DEFAULT_RETRY,
    maxInvalid: 2,
    retryFailed: false,
    itemIds,
  });
  const secs = (performance.now() - t0) / 1000;
  store.close();
  delete process.env.DISTILLERY_WRITER_THREAD;
  if (res.stats.labeled !== opts.items) throw new Error(`pipeline labeled ${res.stats.labeled} of ${opts.items}`);
  return { rate: res.stats.labeled / secs, cpuMs: cpuMsSince(c0) / res.stats.labeled };
}

/** A database with `n` items labeled through the real pipeline (not timed), copied for each measured run. */
async function prefilledTemplate(task: Task, settings: TeacherSettings, dir: string, n: number): Promise<string> {
  const path = join(dir, 'prefilled-template.db');
  const store = Store.open(path);
  const { itemIds, taskRow } = await store.importItems(task, readItems(inputFile(dir, 'prefill', n, 1_000_000), task));
  const client = new TeacherClient({ baseURL: settings.baseURL, apiKeyEnv: 'BENCH_NO_KEY', timeoutMs: 60_000 });
  await runLabeling({
    store,
    task,
    taskRow,
    client,
    settings: { ...settings, model: 'bench-prefill' },
    price: { input: 0, output: 0, source: 'bench' },
    concurrency: 32,
    limits: {},
    retry: DEFAULT_RETRY,
    maxInvalid: 2,
    retryFailed: false,
    itemIds,
  });
  store.checkpoint();
  store.close();
  return path;
}

function startServer(): Promise<{ url: string; child: ChildProcess }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', new URL(import.meta.url).pathname, '--serve'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    child.stdout!.setEncoding('utf8');
    child.stdout!.once('data', (d: string) => resolve({ url: d.trim(), child }));
    child.once('exit', (code) => reject(new Error(`fake server exited with ${code}`)));
  });
}

function round(x: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

// Last: main() reads the constants above.
if (opts.serve) {
  const fake = await startFakeTeacher();
  process.stdout.write(`${fake.url}\n`);
} else {
  await main();
}
