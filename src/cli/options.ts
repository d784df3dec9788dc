import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { defaultSoftFormat, parseSoftFormat, type SoftFormat } from '../soft/codec.ts';
import { DistilleryError } from '../errors.ts';
import { DEFAULT_FIELDS, type FieldOptions } from '../input/types.ts';
import { loadTask, type Task } from '../task/task.ts';

/** --db, shared by every script. */
export function addDbOption(cmd: Command): Command {
  return cmd.option('--db <file>', 'SQLite database', './distill.db');
}

/** The input-file flags shared by import.ts and label.ts. */
export function addInputOptions(cmd: Command): Command {
  return cmd
    .option('--text-field <name>', 'column holding the text', DEFAULT_FIELDS.textField)
    .option('--id-field <name>', 'column holding the item id (else the row number)', DEFAULT_FIELDS.idField)
    .option('--gold-field <name>', 'column holding the gold label (evaluation only, never sent)', DEFAULT_FIELDS.goldField)
    .option('--split-field <name>', 'column holding the split (else 90/10 train/test by content hash)', DEFAULT_FIELDS.splitField);
}

export function fieldOptions(o: Record<string, any>): FieldOptions {
  return { textField: o.textField, idField: o.idField, goldField: o.goldField, splitField: o.splitField };
}

/** --task takes a path, or the name of a file in prompts/ ("tickets" -> prompts/tickets.md). */
export function resolveTask(arg: string): Task {
  if (existsSync(arg)) return loadTask(arg);
  for (const candidate of [join('prompts', arg), join('prompts', `${arg}.md`)]) if (existsSync(candidate)) return loadTask(candidate);
  throw new DistilleryError(`${arg}: no such task file (give a path, or a name from prompts/)`);
}

/** --teachers, --aggregate, --weights, --calibrate: how the training target is built (export, train). */
export function addTargetOptions(cmd: Command): Command {
  return cmd
    .option('--teachers <list>', 'comma list of teacher names or run ids (default: every teacher of the task)')
    .addOption(new Option('--aggregate <method>', 'how several teachers become one target').choices(['mean', 'weighted', 'vote', 'dawid-skene']))
    .option('--weights <list>', "per-teacher weights for --aggregate weighted (default: each teacher's accuracy on gold, train split)", parseWeights)
    .option('--calibrate', 'fit one temperature per teacher on the gold labels of the train split before aggregating', false);
}

function parseWeights(v: string): number[] {
  const ws = v.split(',').map((x) => Number(x.trim()));
  if (ws.some((w) => !Number.isFinite(w) || w < 0)) throw new InvalidArgumentError('expected a comma list of non-negative numbers');
  return ws;
}

/** --store for producers of soft labels: the codec format. */
export function addStoreOption(cmd: Command): Command {
  return cmd.option('--store <format>', 'soft-label storage: dense32 | dense16 | topk:K (default: topk:20 when the task has more than 20 labels, else dense16)');
}

export function storeFormat(arg: string | undefined, numClasses: number): SoftFormat {
  if (arg === undefined) return defaultSoftFormat(numClasses);
  try {
    return parseSoftFormat(arg);
  } catch (e) {
    throw new DistilleryError(`--store: ${(e as Error).message}`);
  }
}
