/**
 * The flag vocabulary: one definition per shared flag, so that a flag means
 * the same thing in every script (see notes/cli.md, "Flags every command shares").
 */
import { existsSync } from 'node:fs';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { defaultSoftFormat, parseSoftFormat, type SoftFormat } from '../soft/codec.ts';
import { DistilleryError } from '../errors.ts';
import { DEFAULT_FIELDS, type FieldOptions } from '../input/types.ts';
import { Store } from '../store/store.ts';

/** --db, shared by every script. */
export function addDbOption(cmd: Command): Command {
  return cmd.option('--db <file>', 'SQLite database', './distill.db');
}

/** Scripts that only read a database refuse a missing one (opening it would create an empty file). */
export function requireDb(path: string): void {
  if (!existsSync(path)) throw new DistilleryError(`${path}: no such database (create one with import.ts or label.ts)`);
}

/** `requireDb`, then the store. */
export function openExistingStore(path: string, opts: { readonly?: boolean } = {}): Store {
  requireDb(path);
  return Store.open(path, opts);
}

/** The tensor backends (`BackendChoice` in src/train/backend.ts, which loads TensorFlow.js: not imported here). */
export const BACKENDS = ['auto', 'tensorflow', 'wasm', 'cpu'] as const;
export type BackendFlag = (typeof BACKENDS)[number];

/** --backend auto|tensorflow|wasm|cpu. */
export function addBackendOption(cmd: Command, help = 'tensor backend'): Command {
  return cmd.addOption(new Option('--backend <name>', help).choices(BACKENDS).default('auto'));
}

/** --task NAME|FILE, resolved by src/cli/task.ts. */
export function addTaskOption(cmd: Command, help = "task name, or task file (default: the database's only task)"): Command {
  return cmd.option('--task <name|file>', help);
}

/** --teachers LIST. */
export function addTeachersOption(cmd: Command): Command {
  return cmd.option(
    '--teachers <list>',
    "comma list of teacher names or run ids (default: every teacher of the task; a target leaves the reviewers' runs, human:NAME, out unless named)",
  );
}

/** --student DIR: a student folder written by train.ts; `multiple` for repeatable (report). */
export function addStudentDirOption(cmd: Command, o: { multiple?: boolean; required?: boolean; help?: string } = {}): Command {
  const help =
    o.help ?? (o.multiple ? 'student folders written by train.ts (repeat, or list several)' : 'a student folder written by train.ts');
  if (o.multiple) return cmd.option('--student <dir...>', help, []);
  return o.required ? cmd.requiredOption('--student <dir>', help) : cmd.option('--student <dir>', help);
}

/** --out DIR: always a folder. */
export function addOutDirOption(cmd: Command, help = 'output folder', o: { default?: string; required?: boolean } = {}): Command {
  if (o.required) return cmd.requiredOption('--out <dir>', help);
  return o.default === undefined ? cmd.option('--out <dir>', help) : cmd.option('--out <dir>', help, o.default);
}

/** --json: one JSON object for machines; without it a table for people. */
export function addJsonOption(cmd: Command): Command {
  return cmd.option('--json', 'one JSON object for machines instead of a table for people', false);
}

/** The input-file flags shared by import.ts and label.ts. */
export function addInputOptions(cmd: Command): Command {
  return cmd
    .option('--text-field <name>', 'column holding the text', DEFAULT_FIELDS.textField)
    .option('--id-field <name>', 'column holding the item id (else the row number)', DEFAULT_FIELDS.idField)
    .option('--gold-field <name>', 'column holding the gold label (evaluation only, never sent)', DEFAULT_FIELDS.goldField)
    .option('--split-field <name>', 'column holding the split (else 90/10 train/test by content hash)', DEFAULT_FIELDS.splitField);
}

/** The flags `addInputOptions` declares, as commander parses them. */
export interface InputFlags {
  textField: string;
  idField: string;
  goldField: string;
  splitField: string;
}

export function fieldOptions(o: InputFlags): FieldOptions {
  return { textField: o.textField, idField: o.idField, goldField: o.goldField, splitField: o.splitField };
}

/** --teachers, --aggregate, --weights, --calibrate: how the training target is built (export, train). */
export function addTargetOptions(cmd: Command): Command {
  return addTeachersOption(cmd)
    .addOption(
      new Option('--aggregate <method>', 'how several teachers become one target').choices(['mean', 'weighted', 'vote', 'dawid-skene']),
    )
    .option(
      '--weights <list>',
      "per-teacher weights for --aggregate weighted (default: each teacher's accuracy on gold, train split)",
      parseWeights,
    )
    .option('--calibrate', 'fit one temperature per teacher on the gold labels of the train split before aggregating', false);
}

/** The flags `addTargetOptions` declares, as commander parses them. */
export interface TargetFlags {
  teachers?: string;
  aggregate?: 'mean' | 'weighted' | 'vote' | 'dawid-skene';
  weights?: number[];
  calibrate: boolean;
}

function parseWeights(v: string): number[] {
  const ws = v.split(',').map((x) => Number(x.trim()));
  if (ws.some((w) => !Number.isFinite(w) || w < 0)) throw new InvalidArgumentError('expected a comma list of non-negative numbers');
  return ws;
}

/** --store for producers of soft labels: the codec format. */
export function addStoreOption(cmd: Command): Command {
  return cmd.option(
    '--store <format>',
    'soft-label storage: dense32 | dense16 | topk:K (default: topk:20 when the task has more than 20 labels, else dense16)',
  );
}

export function storeFormat(arg: string | undefined, numClasses: number): SoftFormat {
  if (arg === undefined) return defaultSoftFormat(numClasses);
  try {
    return parseSoftFormat(arg);
  } catch (e) {
    throw new DistilleryError(`--store: ${(e as Error).message}`);
  }
}
