import { Command, InvalidArgumentError } from 'commander';
import { addInputOptions, addTaskOption, fieldOptions, type InputFlags } from '../src/cli/options.ts';
import { intArg, log, numberArg, runCli, say } from '../src/cli/run.ts';
import { DistilleryError } from '../src/errors.ts';

/** sim-teacher's flags. */
interface SimFlags extends InputFlags {
  accuracy: number;
  port: number;
  task?: string;
  input?: string;
  logprobs: boolean;
  faults?: string;
  rateLimit?: number;
  latencyMs: number;
  seed: number;
}

const DEFAULT_PORT = 8787;

const program = addInputOptions(
  addTaskOption(new Command('sim-teacher'), 'the task of --input (a task file, or a name from prompts/); needed with --input')
    .description(
      'A SIMULATED teacher on 127.0.0.1: a local OpenAI-compatible server (chat completions with token logprobs, and the Batch API) ' +
        'that answers from the gold labels of --input, right with probability --accuracy. Not a real teacher: for trying the pipeline ' +
        'for free. It serves the models sim-teacher and sim-* only (priced at 0 in prices.json), so its labels are never taken for a real ' +
        "model's. Stop it with Ctrl-C.",
    )
    .option('--accuracy <p>', 'probability that an answer is the gold label', numberArg(0, 1), 0.85)
    .option('--port <n>', 'TCP port on 127.0.0.1 (0: any free port)', intArg(0, 65535), DEFAULT_PORT)
    .option('--input <path>', 'the items, with gold labels (the --gold-field column, or the class folders of an image folder)')
    .option(
      '--no-logprobs',
      'refuse requests for logprobs with HTTP 400, like a server that has none (label.ts then needs --soft none or samples:N)',
    )
    .option(
      '--faults <list>',
      'misbehave at these rates, KIND:RATE comma list; KIND: 429, 500, 502, 503, timeout, drop, invalid-json, unknown-label',
    )
    .option('--rate-limit <rpm>', 'answer 429 (with retry-after) beyond this many requests per minute', intArg(1))
    .option('--latency-ms <ms>', 'wait this long before each answer', intArg(0, 600_000), 0)
    .option('--seed <n>', 'which items are answered wrong, and the faults, are fixed by the seed', seedArg, 0),
);

function seedArg(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 0x7fffffff) throw new InvalidArgumentError('expected a whole number from 0 to 2147483647');
  return n;
}

runCli(async () => {
  const opts = program.parse().opts<SimFlags>();
  if (opts.input && !opts.task) throw new DistilleryError('--input: give --task NAME|FILE too (it says how to read the file)');
  const [{ taskFromArg }, { readItems }, server, sim, faults] = await Promise.all([
    import('../src/cli/task.ts'),
    import('../src/input/read.ts'),
    import('../src/sim/openai-server.ts'),
    import('../src/sim/gold-teacher.ts'),
    import('../src/sim/faults.ts'),
  ]);
  const settings = { accuracy: opts.accuracy, seed: opts.seed };
  sim.checkSimSettings(settings);
  const faultRates = opts.faults ? faults.parseFaults(opts.faults) : [];
  const limit = opts.rateLimit === undefined ? undefined : new faults.RateLimit(opts.rateLimit);
  const task = opts.task ? taskFromArg(opts.task) : undefined;
  const index = opts.input && task ? await sim.GoldIndex.build(task, readItems(opts.input, task, fieldOptions(opts))) : undefined;
  if (index && index.size === 0) throw new DistilleryError(`${opts.input}: no item has a gold label (the --gold-field column)`);

  const tally = new Map<string, import('../src/sim/gold-teacher.ts').SimTally>();
  const faultTally = new Map<string, number>();
  let fake: Awaited<ReturnType<typeof server.startFakeTeacher>>;
  try {
    fake = await server.startFakeTeacher({
      port: opts.port,
      teacher: sim.goldTeacher(index, settings, tally),
      fault: faultRates.length || limit ? faults.simFaults(faultRates, opts.seed, limit, faultTally) : undefined,
      rejectLogprobs: !opts.logprobs,
      latencyMs: opts.latencyMs,
      keepRequests: false,
      systemFingerprint: 'fp_distillery_simulator',
      models: {
        list: [sim.SIM_MODEL],
        serves: sim.servesModel,
        refusal: (m) =>
          `The model \`${m}\` does not exist here: this is distillery's SIMULATOR (npm run sim-teacher), which serves ` +
          `${sim.SIM_MODEL} and any sim-* model, so that its labels are never mistaken for a real model's. Use --model ${sim.SIM_MODEL}.`,
      },
    });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' || code === 'EACCES') {
      throw new DistilleryError(
        `--port ${opts.port}: cannot listen on 127.0.0.1 (${code}); pick another port, or --port 0 for any free one`,
      );
    }
    throw e;
  }

  const source = index
    ? `the gold labels of ${opts.input} (${index.size} item(s)), right ${(opts.accuracy * 100).toFixed(1)}% of the time (seed ${opts.seed})`
    : 'guesses (no --input with gold labels: a label the text mentions, else one picked by a hash); --accuracy has no effect';
  const extras = [
    opts.logprobs ? 'token logprobs when asked' : 'NO logprobs (400 when asked)',
    faultRates.length ? `faults ${faultRates.map((f) => `${f.kind}:${f.rate}`).join(',')}` : undefined,
    limit ? `rate limit ${limit.rpm} requests/min` : undefined,
    opts.latencyMs ? `${opts.latencyMs} ms per answer` : undefined,
  ].filter(Boolean);
  const bar = '='.repeat(100);
  log(
    [
      bar,
      'SIMULATOR: this is NOT a real teacher. No model reads your data; answers are drawn from',
      `  ${source}.`,
      `  Serves: ${sim.SIM_MODEL} (and any sim-* model name); ${extras.join('; ')}.`,
      `  Base URL: ${fake.url}   (any API key, or none)`,
      `  Try:  npx tsx scripts/label.ts --base-url ${fake.url} --model ${sim.SIM_MODEL}${opts.task ? ` --task ${opts.task}` : ' --task T'}` +
        `${opts.input ? ` --input ${opts.input}` : ' --input FILE'}`,
      '  Ctrl-C stops it.',
      bar,
    ].join('\n'),
  );
  say(fake.url);

  const summary = (): string => {
    const models = [...tally].map(([m, t]) => {
      const acc = t.withGold ? ` (${t.right}/${t.withGold} right: ${((100 * t.right) / t.withGold).toFixed(1)}%)` : '';
      return `${m || '(no model)'}: ${t.answers} answer(s)${acc}${t.unknown ? `, ${t.unknown} about items without a gold label` : ''}`;
    });
    const faulted = [...faultTally].map(([k, n]) => `${k} ${n}`).join(', ');
    return `simulator: ${models.join('; ') || 'no answers yet'}${faulted ? `; faults: ${faulted}` : ''}`;
  };
  let last = '';
  const timer = setInterval(() => {
    const now = summary();
    if (now !== last && tally.size > 0) log(now);
    last = now;
  }, 10_000);

  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  clearInterval(timer);
  log(`${summary()} (stopped)`);
  await fake.close();
});
