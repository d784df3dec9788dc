/**
 * predict.ts --cascade: the flags wired to src/cascade/run.ts, and its report as a table (stderr) or one JSON object.
 * Loaded only with --cascade, so that the student-only predict never loads the teacher's client.
 */
import type { OptionValues } from 'commander';
import { readCascade, studentDirOf, weightsHash } from '../cascade/schema.ts';
import { runCascade, type CascadeReport } from '../cascade/run.ts';
import { DistilleryError } from '../errors.ts';
import { readItems } from '../input/read.ts';
import type { ItemInput } from '../input/types.ts';
import { checkLabels, itemsDataset, loadModel } from '../infer/model.ts';
import { predictBatches } from '../infer/predict.ts';
import { Store } from '../store/store.ts';
import { defaultMaxTokens } from '../teacher/request.ts';
import { selectBackend, type BackendChoice } from '../train/backend.ts';
import { fieldOptions, requireDb, type InputFlags } from './options.ts';
import { log, say } from './run.ts';
import { formatTable } from './table.ts';
import { taskFromArg } from './task.ts';
import { interruptOnSigint, labelExitCode, labelOptions, runTeacherPass, teacherSetup } from './teacher.ts';

export interface CascadeFlags extends InputFlags, OptionValues {
  cascade: string;
  student?: string;
  input: string;
  db: string;
  task?: string;
  model?: string;
  backend: BackendChoice;
  json: boolean;
}

export async function predictCascade(opts: CascadeFlags): Promise<number> {
  const cascade = readCascade(opts.cascade);
  if (!opts.model)
    throw new DistilleryError(
      '--cascade asks the teacher where the student is unsure: give --model (and the teacher flags label.ts takes)',
    );
  requireDb(opts.db);
  const task = taskFromArg(opts.task ?? cascade.task, opts.db);
  if (task.name !== cascade.task)
    throw new DistilleryError(`${opts.cascade}: the cascade is for task "${cascade.task}", --task is "${task.name}"`);
  const dir = opts.student ?? studentDirOf(opts.cascade, cascade);
  if (weightsHash(dir) !== cascade.student.weights_sha256)
    throw new DistilleryError(`${dir}: the student's weights are not those the cascade was fitted for (${opts.cascade}); fit it again`);
  const teacher = teacherSetup(opts, task);

  log(`backend: ${(await selectBackend(opts.backend)).detail}`);
  const model = await loadModel(dir);
  const store = Store.open(opts.db);
  try {
    checkLabels(model, task);
    opts.maxTokens ??= store.defaultMaxTokens(task.labels, () => defaultMaxTokens(task.labels));
    const items: ItemInput[] = [];
    for await (const it of readItems(opts.input, task, fieldOptions(opts))) items.push(it);
    // Into the store first: the teacher's answers are labels of items, which the next train and relabel read.
    const imported = await store.importItems(
      task,
      (async function* () {
        yield* items;
      })(),
    );
    if (imported.added > 0) log(`imported ${imported.added} new item(s) (${imported.existing} already present)`);
    const ds = itemsDataset(model, items);
    const c = task.labels.length;
    const probs = new Float32Array(items.length * c);
    for await (const b of predictBatches(model, ds)) probs.set(b.probs, b.start * c);

    const { rows, report, result } = await runCascade({
      cascade,
      probs,
      rows: items.map((it, i) => ({ id: it.id, itemId: imported.itemIds[i], ...(it.gold !== undefined ? { gold: it.gold } : {}) })),
      label: labelOptions(teacher, store, imported.taskRow, { stopSignal: interruptOnSigint() }),
      run: (o) => runTeacherPass(teacher, o),
    });
    process.stdout.write(rows.map((r) => `${JSON.stringify(r)}\n`).join(''));
    for (const line of reportLines(report)) log(line);
    if (opts.json) say(JSON.stringify({ cascade: opts.cascade, student: dir, ...report }));
    else log(summaryLine(report));
    return result ? labelExitCode(result) : 0;
  } finally {
    model.student.dispose();
    store.close();
  }
}

const pct = (x: number | null) => (x === null ? '-' : `${(100 * x).toFixed(2)}%`);
const usd = (x: number | null, digits = 4) => (x === null ? '-' : `$${x.toFixed(digits)}`);

/** The report as a table for people. */
export function reportLines(r: CascadeReport): string[] {
  const acc = (a: { n: number; accuracy: number | null }) => (a.n ? `${pct(a.accuracy)} (${a.n} with gold)` : '- (no gold)');
  const rows = [
    ['', 'items', 'share', 'accuracy'],
    ['student', String(r.answered.student), pct(r.coverage), acc(r.accuracy.student)],
    ['teacher', String(r.answered.teacher), pct(r.items ? r.answered.teacher / r.items : null), acc(r.accuracy.teacher)],
    ...(r.answered.none ? [['unanswered', String(r.answered.none), pct(r.answered.none / r.items), '-']] : []),
    ['all', String(r.items), pct(r.items ? 1 : null), acc(r.accuracy.all)],
  ];
  const from = r.cost_per_call_from === 'estimated' ? ' (estimated from tokens: no paid answer yet)' : '';
  return [
    ...formatTable(rows),
    `teacher: ${r.teacher.requests} request(s) sent (${usd(r.teacher.cost)}), ${r.teacher.already_labeled} answer(s) already stored; ${r.teacher.status}` +
      (r.teacher.message ? ` — ${r.teacher.message}` : ''),
    `calls avoided: ${r.calls_avoided} (${r.calls_avoided_per_1000.toFixed(1)} per 1,000 items); teacher cost per call ${usd(r.cost_per_call, 6)}${from}; ` +
      `saved ${usd(r.money_saved)} (${usd(r.money_saved_per_1000)} per 1,000 items)`,
  ];
}

export function summaryLine(r: CascadeReport): string {
  return (
    `cascade: ${r.items} item(s): student ${r.answered.student} (coverage ${pct(r.coverage)}), teacher ${r.answered.teacher}` +
    `${r.answered.none ? `, unanswered ${r.answered.none}` : ''}; accuracy ${pct(r.accuracy.all.accuracy)} on ${r.accuracy.all.n} with gold; ` +
    `${r.calls_avoided_per_1000.toFixed(1)} calls avoided per 1,000 items, saved ${usd(r.money_saved)}`
  );
}
