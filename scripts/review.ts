import os from 'node:os';
import { Command, Option } from 'commander';
import {
  addBackendOption,
  addDbOption,
  addStudentDirOption,
  addTargetOptions,
  addTaskOption,
  openExistingStore,
  type BackendFlag,
  type TargetFlags,
} from '../src/cli/options.ts';
import { intArg, log, runCli, say } from '../src/cli/run.ts';
import { taskFileOf, taskInStore } from '../src/cli/task.ts';
import { DistilleryError } from '../src/errors.ts';
import { buildQueue, buildReviewContext, REVIEW_POLICIES, type ReviewContext, type ReviewPolicy } from '../src/review/queue.ts';
import { isLoopback, randomToken } from '../src/review/security.ts';
import { startReviewServer } from '../src/review/server.ts';
import { ReviewSession, taskGuidelines } from '../src/review/session.ts';
import { checkReviewer } from '../src/store/reviews.ts';

/** Free on most machines, and not one of the ports other tools default to (8080 Label Studio, 6900 Argilla, 7860 Gradio). */
const DEFAULT_PORT = 8765;

interface ReviewFlags extends TargetFlags {
  db: string;
  task?: string;
  policy: ReviewPolicy;
  port: number;
  host: string;
  token?: string;
  reviewer?: string;
  student?: string;
  backend: BackendFlag;
  split?: string;
}

const program = addBackendOption(
  addStudentDirOption(addTargetOptions(addTaskOption(addDbOption(new Command('review')))), {
    help: 'a student folder written by train.ts: its predictions (out of fold where DIR/out-of-fold.json has them) shown and ranked',
  }),
  'tensor backend for --student',
)
  .description("Serve a local review page for a task's most doubtful labels; each answer is stored at once as a human label.")
  .addOption(new Option('--policy <name>', 'which items, most doubtful first').choices(REVIEW_POLICIES).default('disagree'))
  .option('--split <name>', 'only items of this split')
  .option('--reviewer <name>', "the reviewer's name (default: the OS user name)")
  .option('--port <n>', 'port to listen on (0: any free port)', intArg(0, 65535), DEFAULT_PORT)
  .option('--host <address>', 'address to listen on; anything but loopback needs --token (one is made and printed if absent)', '127.0.0.1')
  .addOption(
    // From the environment too: a token on the command line shows in `ps` to every user of the machine.
    new Option('--token <secret>', 'access token every request must carry (the page URL carries it as ?token=)').env(
      'DISTILLERY_REVIEW_TOKEN',
    ),
  );

runCli(async () => {
  const opts = program.parse().opts<ReviewFlags>();
  const reviewer = checkReviewer(opts.reviewer ?? osUser());
  if (opts.token !== undefined && !/^[\x21-\x7e]{16,}$/.test(opts.token))
    throw new DistilleryError('--token: at least 16 printable characters, no spaces');
  const token = opts.token ?? (isLoopback(opts.host) ? null : randomToken());
  const store = openExistingStore(opts.db);
  try {
    const task = taskInStore(store, opts.task);
    const ctx = await buildReviewContext(store, task, {
      teachers: opts.teachers,
      aggregate: opts.aggregate,
      weights: opts.weights,
      calibrate: opts.calibrate,
      studentDir: opts.student,
      backend: opts.backend,
      split: opts.split,
    });
    const queue = buildQueue(ctx, opts.policy);
    const taskFile = taskFileOf(task, opts.task);
    const guidelines = taskFile ? taskGuidelines(taskFile) : null;
    const session = new ReviewSession({ store, ctx, policy: opts.policy, queue, reviewer, guidelines });
    const { progress } = session.state();
    say(`task ${task.name} in ${opts.db}: ${describeQueue(opts, ctx, queue.length)}`);
    say(`reviewer ${reviewer}: ${progress.done} labeled, ${progress.skipped} skipped so far in this queue`);
    say(
      guidelines ? `guidelines: the instructions of ${taskFile!.path}` : `guidelines: none (no task file for "${task.name}" in prompts/)`,
    );
    const server = await listen(() => startReviewServer({ session, host: opts.host, port: opts.port, token, log }), opts);
    if (token && opts.token === undefined) say(`access token (every request needs it): ${token}`);
    say(`review at ${server.url}`);
    for (const address of wildcardAddresses(opts.host)) say(`  or from another machine: ${server.url.replace('127.0.0.1', address)}`);
    if (queue.length === 0) say(`nothing to review under --policy ${opts.policy}: the page says so`);
    say('Ctrl-C stops the server (every answer is already saved)');
    await stopped();
    await server.close();
    const end = session.state().progress;
    say(`stopped: ${end.done} labeled, ${end.skipped} skipped, ${end.queue - end.done - end.skipped} left in the queue`);
  } finally {
    store.close();
  }
});

/** The OS user name, the default reviewer. */
function osUser(): string {
  try {
    return os.userInfo().username;
  } catch {
    // No passwd entry (some containers): ask for the name.
    throw new DistilleryError('no OS user name to use as the reviewer: give --reviewer NAME');
  }
}

/** "queue of 120 item(s) (policy disagree; teachers gpt-a, gpt-b, mean; student DIR, 5-fold out-of-fold; split test)". */
function describeQueue(o: ReviewFlags, ctx: ReviewContext, n: number): string {
  const names = ctx.targets.views.map((v) => v.name);
  const teachers = names.length <= 4 ? names.join(', ') : `${names.slice(0, 3).join(', ')} and ${names.length - 3} more`;
  const student =
    ctx.student && `student ${ctx.student.dir}${ctx.student.folds ? `, ${ctx.student.folds}-fold out-of-fold` : ', no out-of-fold.json'}`;
  const parts = [
    `policy ${o.policy}`,
    `teacher(s) ${teachers}, ${o.aggregate ?? 'mean'}${o.calibrate ? ', calibrated' : ''}`,
    ...(student ? [student] : []),
    ...(o.split ? [`split ${o.split}`] : []),
  ];
  return `queue of ${n} item(s) (${parts.join('; ')})`;
}

/** The server, or one line when the port is taken. */
async function listen<T>(start: () => Promise<T>, o: ReviewFlags): Promise<T> {
  try {
    return await start();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE') throw new DistilleryError(`--port ${o.port}: in use on ${o.host} (give another, or --port 0 for any)`);
    if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND') throw new DistilleryError(`--host ${o.host}: not an address of this machine`);
    if (code === 'EACCES') throw new DistilleryError(`--port ${o.port}: not allowed for this user (use 1024 or above)`);
    throw e;
  }
}

/** On 0.0.0.0 (or ::), the machine's own IPv4 addresses: what another machine would type. */
function wildcardAddresses(host: string): string[] {
  if (host !== '0.0.0.0' && host !== '::') return [];
  return Object.values(os.networkInterfaces())
    .flat()
    .filter((a) => a && a.family === 'IPv4' && !a.internal)
    .map((a) => a!.address);
}

/** Resolves on the first SIGINT or SIGTERM. */
function stopped(): Promise<void> {
  return new Promise((resolve) => {
    const stop = () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}
