import { Command, Option } from 'commander';
import { fileURLToPath } from 'node:url';
import { addDbOption, addInputOptions, addStoreOption, fieldOptions, resolveTask, storeFormat } from '../src/cli/options.ts';
import { EXIT, intArg, log, numberArg, runCli, say } from '../src/cli/run.ts';
import { DistilleryError } from '../src/errors.ts';
import { readItems } from '../src/input/read.ts';
import { loadPriceTable, resolvePrice } from '../src/label/cost.ts';
import { planLabeling, runLabeling, type LabelOptions, type LabelResult } from '../src/label/labeler.ts';
import { makeProgress } from '../src/label/progress.ts';
import { Store } from '../src/store/store.ts';
import { TeacherClient } from '../src/teacher/client.ts';
import { defaultMaxTokens, parseSoftMode, softModeName } from '../src/teacher/request.ts';
import { DEFAULT_RETRY } from '../src/teacher/retry.ts';

const DEFAULT_PRICES = fileURLToPath(new URL('../prices.json', import.meta.url));

const program = addStoreOption(addInputOptions(
  addDbOption(new Command('label'))
    .description('Label every unlabeled item of a task with a teacher LLM behind an OpenAI-compatible API. Resumable: the same command never pays for an answer twice.')
    .requiredOption('--task <file>', 'task file (or a name from prompts/)')
    .option('--input <file>', 'import this file first and label its items (else: every item of the task in the database)')
    .requiredOption('--model <name>', 'teacher model')
    .option('--base-url <url>', 'OpenAI-compatible endpoint (default: env OPENAI_BASE_URL, else the official API)')
    .option('--api-key-env <name>', 'environment variable holding the API key', 'OPENAI_API_KEY')
    .option('--soft <mode>', 'soft labels: logprobs | samples:N | none', 'logprobs')
    .option('--temperature <t>', 'sampling temperature (default 0, or 1 with samples:N)', numberArg(0, 2))
    .option('--max-tokens <n>', 'max_tokens per answer (default: longest label answer + 16)', intArg(1))
    .addOption(new Option('--image-detail <d>', 'image detail for vision models').choices(['low', 'high', 'auto']).default('low'))
    .option('--concurrency <n>', 'requests in flight', intArg(1, 1024), 8)
    .option('--rpm <n>', 'client-side requests-per-minute budget', intArg(1))
    .option('--tpm <n>', 'client-side tokens-per-minute budget', intArg(1))
    .option('--timeout <seconds>', 'per-request timeout', numberArg(0.01), 60)
    .option('--max-retries <n>', 'retries per request for 429, 5xx, timeouts and dropped connections', intArg(0, 100), DEFAULT_RETRY.maxRetries)
    .option('--retry-base-ms <ms>', 'first backoff step (doubles each retry, with jitter)', intArg(1), DEFAULT_RETRY.baseDelayMs)
    .option('--max-invalid <n>', 'invalid answers retried per item before it is recorded as failed', intArg(0, 100), 2)
    .option('--retry-failed', 'ask again for items whose earlier answers were all invalid', false)
    .option('--prices <file>', 'price table (US$ per 1M tokens)', DEFAULT_PRICES)
    .option('--price-in <usd>', 'US$ per 1M input tokens (overrides the table)', numberArg(0))
    .option('--price-out <usd>', 'US$ per 1M output tokens (overrides the table)', numberArg(0))
    .option('--max-cost <usd>', 'hard cost cap for the run: no request starts that could take its total over this', numberArg(0))
    .option('--limit <n>', 'label at most N items in this invocation', intArg(1))
    .option('--dry-run', 'print the item count, estimated tokens and cost; send nothing', false)
    .option('--progress-interval <seconds>', 'seconds between progress lines when not on a terminal', numberArg(0), 10),
));

runCli(async () => {
  const opts = program.parse().opts();
  const task = resolveTask(opts.task);
  const soft = parseSoftMode(opts.soft);
  const onlyPrices = opts.priceIn !== undefined && opts.priceOut !== undefined;
  const price = resolvePrice(opts.model, onlyPrices ? undefined : loadPriceTable(opts.prices), opts.prices, opts.priceIn, opts.priceOut);
  const client = new TeacherClient({ baseURL: opts.baseUrl, apiKeyEnv: opts.apiKeyEnv, timeoutMs: opts.timeout * 1000 });

  const store = Store.open(opts.db);
  const stop = new AbortController();
  let interrupts = 0;
  process.on('SIGINT', () => {
    if (++interrupts > 1) process.exit(EXIT.interrupted);
    log('interrupt: finishing the requests in flight (Ctrl-C again to quit at once)');
    stop.abort();
  });

  try {
    const base = (taskRow: LabelOptions['taskRow'], itemIds?: number[]): LabelOptions => ({
      store,
      task,
      taskRow,
      client,
      settings: {
        model: opts.model,
        baseURL: client.baseURL,
        soft,
        temperature: opts.temperature ?? (soft.kind === 'samples' ? 1 : 0),
        maxTokens: opts.maxTokens ?? defaultMaxTokens(task.labels),
        imageDetail: opts.imageDetail,
      },
      price,
      concurrency: opts.concurrency,
      limits: { rpm: opts.rpm, tpm: opts.tpm },
      retry: { ...DEFAULT_RETRY, maxRetries: opts.maxRetries, baseDelayMs: opts.retryBaseMs },
      maxInvalid: opts.maxInvalid,
      retryFailed: opts.retryFailed,
      maxCost: opts.maxCost,
      storeFormat: storeFormat(opts.store, task.labels.length),
      itemIds,
      limit: opts.limit,
      stopSignal: stop.signal,
      progress: makeProgress({ tty: process.stderr.isTTY === true, intervalMs: opts.progressInterval * 1000, write: log }),
    });

    if (opts.dryRun) {
      const dry = async (o: LabelOptions) => {
        const plan = await planLabeling(o);
        const expected = (plan.promptTokens * price.input + plan.expectedCompletionTokens * price.output) / 1e6;
        const worst = (plan.promptTokens * price.input + plan.maxCompletionTokens * price.output) / 1e6;
        say(
          `dry run: ${plan.todo.length} item(s) to label (${plan.cached} already labeled, ${plan.failedBefore} failed before) with ${opts.model}, ` +
            `soft ${softModeName(soft)}: ~${plan.promptTokens} input tokens, ~${plan.expectedCompletionTokens} output tokens, ` +
            `estimated cost $${expected.toFixed(4)} (at most $${worst.toFixed(4)}); nothing sent`,
        );
      };
      if (opts.input) await store.importItems(task, readItems(opts.input, task, fieldOptions(opts)), { dryRun: true, beforeCommit: (r) => dry(base(r.taskRow, r.itemIds)) });
      else await dry(base(existingTask(store, task.name)));
      return EXIT.ok;
    }

    let o: LabelOptions;
    if (opts.input) {
      const imported = await store.importItems(task, readItems(opts.input, task, fieldOptions(opts)));
      if (imported.added > 0) log(`imported ${imported.added} new item(s) (${imported.existing} already present)`);
      o = base(imported.taskRow, imported.itemIds);
    } else {
      o = base(existingTask(store, task.name));
    }
    const result = await runLabeling(o);
    say(summary(result));
    return exitCode(result);
  } finally {
    store.close();
  }
});

function existingTask(store: Store, name: string) {
  const row = store.findTask(name);
  if (!row) throw new DistilleryError(`${store.path}: task "${name}" has no items yet; pass --input FILE`);
  return row;
}

function summary(r: LabelResult): string {
  if (r.status === 'nothing-to-do') {
    return `nothing to do: ${r.plan.cached} item(s) already labeled${r.plan.failedBefore ? `, ${r.plan.failedBefore} failed before (--retry-failed to ask again)` : ''}; 0 requests sent`;
  }
  const s = r.stats;
  const pending = s.total - s.labeled - s.failed;
  return (
    `run ${r.run!.id} ${r.status}: ${s.labeled} labeled, ${s.failed} failed, ${pending} pending, ${r.plan.cached} already labeled; ` +
    `${s.requests} requests (${s.errors} errors), ${s.promptTokens + s.completionTokens} tokens, $${s.cost.toFixed(4)}` +
    (r.message ? ` — ${r.message}` : '')
  );
}

function exitCode(r: LabelResult): number {
  switch (r.status) {
    case 'completed':
    case 'nothing-to-do':
      return EXIT.ok;
    case 'stopped':
      return EXIT.stopped;
    case 'interrupted':
      return EXIT.interrupted;
    default:
      return EXIT.error;
  }
}
