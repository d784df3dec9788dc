import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
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
