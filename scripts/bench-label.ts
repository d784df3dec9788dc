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
 *  - startup_bare_s, startup_label_help_s: the bare loop with no requests, and `label.ts --help`.
 * In process (the labeling loop alone, modules loaded, items imported):
 *  - bare_labels_per_s: chat completions with logprobs, answer parsed, nothing stored;
 *  - pipeline_labels_per_s: runLabeling on a fresh database (request keys,
 *    idempotency look-ups, soft labels, SQLite writes, budgets);
 *  - ratio = pipeline / bare (goal: 0.95 or more);
 *  - prefilled_labels_per_s: the same run on a database that already holds
 *    `--prefill` labeled items; growth_ratio = prefilled / fresh (1.0 = no
 *    per-item cost that grows with the database).
 * Each figure is the best of `--repeats` alternating runs (spreads are printed): the machines are shared and noisy.
 */
import { Command } from 'commander';
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
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
import { startFakeTeacher } from '../test/fake-openai.ts';

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
    if (opts.process) {
      const procBare: number[] = [];
      const procPipeline: number[] = [];
      const startBare: number[] = [];
      const startHelp: number[] = [];
      const requests = await requestFile(task, settings, dir);
      const empty = join(dir, 'no-requests.jsonl');
      writeFileSync(empty, '');
      for (let r = 0; r < opts.repeats; r++) {
        startBare.push((await timed(bareChild(empty))).secs);
        startHelp.push((await timed([process.execPath, ['--import', 'tsx', LABEL_SCRIPT, '--help']])).secs);
        procBare.push(opts.items / (await timed(bareChild(requests), (out) => out.includes(`answered ${opts.items}`))).secs);
        procPipeline.push(
          opts.items /
            (
              await timed(labelChild(taskPath, settings, dir, `proc${r}`), (out) =>
                out.includes(`${opts.items} labeled, 0 failed, 0 pending`),
              )
            ).secs,
        );
      }
      Object.assign(figures, {
        process_bare_labels_per_s: round(Math.max(...procBare)),
        process_pipeline_labels_per_s: round(Math.max(...procPipeline)),
        process_ratio: round(Math.max(...procPipeline) / Math.max(...procBare), 3),
        startup_bare_s: round(Math.min(...startBare), 3),
        startup_label_help_s: round(Math.min(...startHelp), 3),
      });
      console.log(`whole process, bare openai loop:  ${figures.process_bare_labels_per_s} labels/s  (runs: ${spread(procBare)})`);
      console.log(
        `whole process, label.ts --input:  ${figures.process_pipeline_labels_per_s} labels/s  (runs: ${spread(procPipeline)})  ratio ${figures.process_ratio} (goal >= 0.95)`,
      );
      console.log(`start-up: bare loop ${spread(startBare, 3)} s, label.ts --help ${spread(startHelp, 3)} s`);
    }
    if (opts.inProcess) {
      const bare: number[] = [];
      const fresh: number[] = [];
      const prefilled: number[] = [];
      const template = opts.prefill > 0 ? await prefilledTemplate(task, settings, dir, opts.prefill) : undefined;
      for (let r = 0; r < opts.repeats; r++) {
        bare.push(await bareLoop(task, settings, dir, `bare${r}`));
        fresh.push(await pipeline(task, settings, dir, `fresh${r}`));
        if (template) prefilled.push(await pipeline(task, settings, dir, `pre${r}`, template));
      }
      Object.assign(figures, {
        bare_labels_per_s: round(Math.max(...bare)),
        pipeline_labels_per_s: round(Math.max(...fresh)),
        ratio: round(Math.max(...fresh) / Math.max(...bare), 3),
        prefill: opts.prefill,
        prefilled_labels_per_s: prefilled.length ? round(Math.max(...prefilled)) : null,
        growth_ratio: prefilled.length ? round(Math.max(...prefilled) / Math.max(...fresh), 3) : null,
      });
      console.log(`in process, bare openai loop:   ${figures.bare_labels_per_s} labels/s  (runs: ${spread(bare)})`);
      console.log(
        `in process, pipeline (fresh db): ${figures.pipeline_labels_per_s} labels/s  (runs: ${spread(fresh)})  ratio ${figures.ratio} (goal >= 0.95)`,
      );
      if (figures.prefilled_labels_per_s !== null) {
        console.log(
          `in process, pipeline (${opts.prefill} labeled items already): ${figures.prefilled_labels_per_s} labels/s  growth ratio ${figures.growth_ratio} (1.0 = flat)`,
        );
      }
    }
    if (opts.json) console.log(JSON.stringify(figures));
  } finally {
    server.child.kill();
    rmSync(dir, { recursive: true, force: true });
  }
}

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

function labelChild(taskPath: string, settings: TeacherSettings, dir: string, name: string): [string, string[]] {
  const input = inputFile(dir, name, opts.items);
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

/** Spawn to exit, in seconds; the process must exit 0 and its stdout pass `check`. */
function timed([cmd, args]: [string, string[]], check: (stdout: string) => boolean = () => true): Promise<{ secs: number }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(cmd, args, { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, OPENAI_API_KEY: '' } });
    let out = '';
    let err = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (err += d));
    child.once('exit', (code) => {
      const secs = (performance.now() - t0) / 1000;
      if (code !== 0 || !check(out))
        reject(new Error(`${args.slice(0, 3).join(' ')}… exited ${code}: ${out.slice(-300)} ${err.slice(-300)}`));
      else resolve({ secs });
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
async function bareLoop(task: Task, settings: TeacherSettings, dir: string, name: string): Promise<number> {
  const store = Store.open(join(dir, `${name}.db`));
  const { itemIds } = await store.importItems(task, readItems(inputFile(dir, name, opts.items), task));
  const builder = new RequestBuilder(task, settings);
  const requests = store.itemsByIds(itemIds).map((item) => builder.build(item).params);
  store.close();
  const client = new OpenAI({ apiKey: 'bench', baseURL: settings.baseURL, maxRetries: 0 });
  const limit = pLimit(opts.concurrency);
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
  return ok / secs;
}

async function pipeline(task: Task, settings: TeacherSettings, dir: string, name: string, copyFrom?: string): Promise<number> {
  const dbPath = join(dir, `${name}.db`);
  if (copyFrom) copyFileSync(copyFrom, dbPath);
  const store = Store.open(dbPath);
  const { itemIds, taskRow } = await store.importItems(task, readItems(inputFile(dir, `${name}-new`, opts.items), task));
  const client = new TeacherClient({ baseURL: settings.baseURL, apiKeyEnv: 'BENCH_NO_KEY', timeoutMs: 60_000 });
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
  if (res.stats.labeled !== opts.items) throw new Error(`pipeline labeled ${res.stats.labeled} of ${opts.items}`);
  return res.stats.labeled / secs;
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
