import { Command, type OptionValues } from 'commander';
import { Cron } from 'croner';
import { addBackendOption, addDbOption, addStudentDirOption, addTaskOption, requireDb, type BackendFlag } from '../src/cli/options.ts';
import { taskFromArg } from '../src/cli/task.ts';
import { EXIT, intArg, log, numberArg, runCli, say } from '../src/cli/run.ts';
import {
  addTeacherOptions,
  estimateCost,
  interruptOnSigint,
  labelExitCode,
  labelOptions,
  labelSummary,
  runTeacherPass,
  teacherSetup,
  type TeacherSetup,
} from '../src/cli/teacher.ts';
import { DistilleryError } from '../src/errors.ts';
import { planLabeling } from '../src/label/plan.ts';
import { parsePolicies, REASON_ORDER, type Policy } from '../src/relabel/policy.ts';
import { relabelOnce, type RelabelOutcome } from '../src/relabel/relabel.ts';
import { studentPredictions } from '../src/relabel/student.ts';
import { Lease } from '../src/store/lease.ts';
import { Store } from '../src/store/store.ts';

const LEASE = 'relabel';

/** relabel's own flags; the teacher flags (src/cli/teacher.ts) ride along in OptionValues. */
interface RelabelFlags extends OptionValues {
  db: string;
  task?: string;
  policy: string[];
  student?: string;
  backend: BackendFlag;
  cron?: string;
  maxRuns?: number;
  wait: boolean;
  leaseTtl: number;
  dryRun: boolean;
  limit?: number;
  model: string;
}

const program = addTeacherOptions(
  addBackendOption(
    addStudentDirOption(
      addTaskOption(
        addDbOption(new Command('relabel')),
        "task file, or a name from prompts/ (default: the database's only task)",
      ).requiredOption(
        '--policy <list...>',
        'what to relabel: changed, stale:DURATION (e.g. stale:7d), low-confidence:P, disagree (comma list or repeated)',
      ),
      { help: 'a student folder written by train.ts: `disagree` also selects items where it predicts another class than the label' },
    ),
    'tensor backend for --student',
  )
    .option('--cron <expr>', 'stay running and relabel on this schedule (cron syntax, 5 fields, or 6 with seconds first)')
    .option('--max-runs <n>', 'with --cron: exit after N scheduled passes', intArg(1))
    .option('--wait', 'if another relabel holds the database, wait for it instead of exiting', false)
    .option(
      '--lease-ttl <seconds>',
      'the lease expires this long after its holder last renewed it (a crashed relabel blocks no longer)',
      numberArg(1),
      300,
    )
    .option('--dry-run', 'print what would be relabeled and its estimated cost; send nothing, write nothing', false),
);

runCli(async () => {
  const opts = program.parse().opts<RelabelFlags>();
  const policies = parsePolicies(opts.policy);
  requireDb(opts.db);
  const task = taskFromArg(opts.task, opts.db);
  // A dry run sends nothing and needs no API key.
  const teacher = teacherSetup(opts, task, { sends: !opts.dryRun });
  const stopSignal = interruptOnSigint();
  const command = `relabel --task ${task.name} --model ${opts.model} --policy ${opts.policy.join(',')}`;

  const cron = opts.cron;
  if (!cron) return pass(opts, teacher, policies, command, stopSignal);

  let job: Cron;
  try {
    job = new Cron(cron, { protect: true, paused: true });
  } catch (e) {
    throw new DistilleryError(`--cron "${cron}": ${(e as Error).message}`);
  }
  log(`relabel scheduled "${cron}": next pass at ${job.nextRun()?.toISOString()}`);
  job.stop();
  let passes = 0;
  await new Promise<void>((resolve) => {
    const done = () => {
      job.stop();
      resolve();
    };
    stopSignal.addEventListener('abort', done);
    job = new Cron(cron, { protect: true }, async () => {
      if (stopSignal.aborted) return;
      try {
        await pass(opts, teacher, policies, command, stopSignal);
      } catch (e) {
        // One failed pass (the lease held by another process, a server down) must not end the schedule.
        log(`pass failed: ${(e as Error).message}`);
      }
      passes++;
      if (opts.maxRuns !== undefined && passes >= opts.maxRuns) done();
      else if (!stopSignal.aborted) log(`next pass at ${job.nextRun()?.toISOString()}`);
    });
  });
  return stopSignal.aborted ? EXIT.interrupted : EXIT.ok;
});

/** One relabel pass under the lease. */
async function pass(
  opts: RelabelFlags,
  teacher: TeacherSetup,
  policies: Policy[],
  command: string,
  stopSignal: AbortSignal,
): Promise<number> {
  const store = Store.open(opts.db);
  try {
    const taskRow = store.findTask(teacher.task.name);
    if (!taskRow) throw new DistilleryError(`${store.path}: task "${teacher.task.name}" has no items yet`);
    const leaseLost = new AbortController();
    const leaseOpts = { ttlMs: opts.leaseTtl * 1000, command };
    const onLost = () => {
      log('lost the relabel lease (this process stalled past --lease-ttl and another took over): stopping');
      leaseLost.abort();
    };
    const lease = opts.dryRun
      ? undefined
      : opts.wait
        ? await Lease.wait(
            store,
            LEASE,
            {
              ...leaseOpts,
              signal: stopSignal,
              onWait: (held) => log(`waiting for the relabel lease held by pid ${held.pid} on ${held.host} (until ${held.expires_at})`),
            },
            onLost,
          )
        : Lease.acquire(store, LEASE, leaseOpts, onLost);
    try {
      const student = opts.student ? await studentPredictions(store, taskRow, teacher.task, opts.student, opts.backend) : undefined;
      const label = labelOptions(teacher, store, taskRow, { stopSignal: AbortSignal.any([stopSignal, leaseLost.signal]) });
      const outcome = await relabelOnce({
        label,
        policies,
        run: (o) => runTeacherPass(teacher, o),
        student,
        limit: opts.limit,
        dryRun: opts.dryRun,
      });
      if (opts.dryRun) {
        say(await dryRunLine(outcome, teacher, label));
        return EXIT.ok;
      }
      say(summary(outcome, policies));
      return outcome.result ? labelExitCode(outcome.result) : EXIT.ok;
    } finally {
      lease?.release();
    }
  } finally {
    store.close();
  }
}

function reasons(o: RelabelOutcome): string {
  return REASON_ORDER.map((r) => `${r} ${o.selected[r]}`).join(', ');
}

function summary(o: RelabelOutcome, policies: Policy[]): string {
  if (!o.relabel || !o.result) return `nothing to relabel (policies: ${policies.map((p) => p.kind).join(', ')}); 0 requests sent`;
  const total = REASON_ORDER.reduce((a, r) => a + o.selected[r], 0);
  const drift = o.drift ? `; drift: ${o.drift.changed} of ${o.drift.compared} label(s) changed` : '';
  return `relabel ${o.relabel.id}${o.resumed ? ' (resumed)' : ''}: ${total} item(s) selected (${reasons(o)}); ${labelSummary(o.result)}${drift}`;
}

async function dryRunLine(o: RelabelOutcome, teacher: TeacherSetup, label: ReturnType<typeof labelOptions>): Promise<string> {
  const total = REASON_ORDER.reduce((a, r) => a + o.selected[r], 0);
  if (total === 0) return 'dry run: nothing to relabel; nothing sent';
  const plan = await planLabeling({
    ...label,
    itemIds: o.itemIds,
    limit: undefined,
    settings: { ...label.settings, keySalt: o.relabel?.salt ?? 'dry-run' },
  });
  const { expected, worst, note } = estimateCost(teacher, plan);
  return (
    `dry run: ${o.relabel ? `unfinished relabel ${o.relabel.id} would resume: ` : ''}${plan.todo.length} item(s) to relabel (${reasons(o)}): ` +
    `~${plan.promptTokens} input tokens, estimated cost $${expected.toFixed(4)} (at most $${worst.toFixed(4)})${note}; nothing sent`
  );
}
