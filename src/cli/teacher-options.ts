/**
 * The teacher flags, shared by label.ts and relabel.ts. Kept free of the labeling modules (openai, zod, the
 * tokenizer): a script defines and parses them, and prints --help, before it loads what a run needs.
 */
import { Option, type Command } from 'commander';
import { fileURLToPath } from 'node:url';
import { BATCH_LIMITS } from '../batch/types.ts';
import { DEFAULT_RETRY } from '../teacher/retry-policy.ts';
import { addStoreOption } from './options.ts';
import { intArg, numberArg } from './run.ts';

const DEFAULT_PRICES = fileURLToPath(new URL('../../prices.json', import.meta.url));

/**
 * Which teacher flags a command takes: pilot.ts asks several models (its own --models) on a sample, live, so it
 * leaves out --model, --limit and the Batch API flags.
 */
export interface TeacherOptionSet {
  model?: boolean;
  limit?: boolean;
  batch?: boolean;
  /** With `model`: --model is optional (predict.ts asks a teacher only with --cascade, and checks it then). */
  requireModel?: boolean;
}

/** Every flag that says which teacher to ask and how: model, decoding, limits, retries, prices, cost cap. */
export function addTeacherOptions(cmd: Command, set: TeacherOptionSet = {}): Command {
  const { model = true, limit = true, batch = true, requireModel = true } = set;
  if (model && requireModel) cmd.requiredOption('--model <name>', 'teacher model');
  else if (model) cmd.option('--model <name>', 'teacher model');
  cmd
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
    .option(
      '--max-retries <n>',
      'retries per request for 429, 5xx, timeouts and dropped connections',
      intArg(0, 100),
      DEFAULT_RETRY.maxRetries,
    )
    .option('--retry-base-ms <ms>', 'first backoff step (doubles each retry, with jitter)', intArg(1), DEFAULT_RETRY.baseDelayMs)
    .option('--max-invalid <n>', 'invalid answers retried per item before it is recorded as failed', intArg(0, 100), 2)
    .option('--retry-failed', 'ask again for items whose earlier answers were all invalid', false)
    .option('--prices <file>', 'price table (US$ per 1M tokens)', DEFAULT_PRICES)
    .option('--price-in <usd>', 'US$ per 1M input tokens (overrides the table)', numberArg(0))
    .option('--price-out <usd>', 'US$ per 1M output tokens (overrides the table)', numberArg(0))
    .option('--max-cost <usd>', 'hard cost cap for the run: no request starts that could take its total over this', numberArg(0));
  if (limit) cmd.option('--limit <n>', 'label at most N items in this invocation', intArg(1));
  cmd.option('--progress-interval <seconds>', 'seconds between progress lines when not on a terminal', numberArg(0), 10);
  if (batch) addBatchOptions(cmd);
  return addStoreOption(cmd);
}

/** --batch and its companions (label.ts, relabel.ts). */
function addBatchOptions(cmd: Command): Command {
  return (
    cmd
      .option(
        '--batch',
        "send the requests through OpenAI's Batch API: half the price, answers within 24 hours; resumable (see the README)",
        false,
      )
      .option(
        '--no-poll',
        'with --batch: collect finished jobs, submit new ones and exit (for cron) instead of polling until every job is done',
      )
      .option('--poll-interval <seconds>', 'with --batch: seconds between polls of the running jobs', numberArg(0), 60)
      .addOption(
        new Option(
          '--batch-retry <where>',
          'with --batch: where items that got no answer (or an invalid one) inside a batch are asked again',
        )
          .choices(['batch', 'live'])
          .default('batch'),
      )
      // Advanced: OpenAI's per-batch limits, overridable (tests split small).
      .addOption(
        new Option('--batch-max-requests <n>', 'requests per batch job').argParser(intArg(1)).default(BATCH_LIMITS.maxRequests).hideHelp(),
      )
      .addOption(
        new Option('--batch-max-bytes <n>', 'bytes of JSONL per batch job').argParser(intArg(1)).default(BATCH_LIMITS.maxBytes).hideHelp(),
      )
  );
}
