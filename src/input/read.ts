import { stat } from 'node:fs/promises';
import { dirname, extname, isAbsolute, resolve } from 'node:path';
import { InputError } from '../errors.ts';
import { templateFields, type Task } from '../task/task.ts';
import { flatten, itemsThenError, type Batch } from './batch.ts';
import { readClassFolders } from './folders.ts';
import { loadImage } from './image.ts';
import { checkTemplateFields, contentHash, type Fail } from './item.ts';
import { readDelimitedRows, readJsonlRows, type RawRow } from './rows.ts';
import { assignSplit } from './split.ts';
import { DEFAULT_FIELDS, type FieldOptions, type ImageInput, type ItemInput } from './types.ts';

/**
 * Items from a JSONL/CSV/TSV file, or from a folder of class folders (image tasks).
 * Streams: rows are parsed and checked as they are read, and the first bad row throws an
 * InputError naming the file and line (after the good rows before it were yielded).
 */
export function readItems(path: string, task: Task, opts: FieldOptions = DEFAULT_FIELDS): AsyncGenerator<ItemInput> {
  return flatten(itemBatches(path, task, opts));
}

async function* itemBatches(path: string, task: Task, opts: FieldOptions): AsyncGenerator<ItemInput[]> {
  if (await isDirectory(path)) {
    for await (const item of readClassFolders(path, task)) yield [item];
    return;
  }
  const ctx = rowContext(path, task, opts);
  for await (const rows of readRows(path)) {
    if (task.input === 'text') {
      yield* itemsThenError(textItems(rows, ctx));
    } else {
      // One at a time: a chunk of rows can name more image bytes than should sit in memory.
      for (const row of rows) yield [rowToItem(row, ctx, await loadRowImage(row, ctx))];
    }
  }
}

function textItems(rows: RawRow[], ctx: RowContext): Batch<ItemInput> {
  const items: ItemInput[] = [];
  try {
    for (const row of rows) items.push(rowToItem(row, ctx, undefined));
  } catch (error) {
    return { items, error };
  }
  return { items };
}

/** What every row of one file is checked against, worked out once. */
interface RowContext {
  path: string;
  task: Task;
  opts: FieldOptions;
  templateFields: string[];
  /** Columns that say things about the row rather than being its content. */
  bookkeeping: Set<string>;
}

function rowContext(path: string, task: Task, opts: FieldOptions): RowContext {
  return {
    path,
    task,
    opts,
    templateFields: templateFields(task.template),
    bookkeeping: new Set([opts.idField, opts.goldField, opts.splitField]),
  };
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch (e) {
    throw new InputError(path, undefined, `cannot read input (${(e as NodeJS.ErrnoException).code ?? e})`);
  }
}

function readRows(path: string): AsyncGenerator<RawRow[]> {
  const ext = extname(path).toLowerCase();
  if (ext === '.jsonl' || ext === '.ndjson') return readJsonlRows(path);
  if (ext === '.csv') return readDelimitedRows(path, ',');
  if (ext === '.tsv') return readDelimitedRows(path, '\t');
  throw new InputError(
    path,
    undefined,
    `unsupported input file type "${ext}" (expected .jsonl, .ndjson, .csv, .tsv or a folder of class folders)`,
  );
}

function rowFail(ctx: RowContext, row: RawRow): Fail {
  return (reason, setting) => new InputError(ctx.path, row.line, reason, setting);
}

function rowToItem(row: RawRow, ctx: RowContext, image: ImageInput | undefined): ItemInput {
  const { values, line } = row;
  const { opts, task } = ctx;
  const fail = rowFail(ctx, row);
  const id = scalarText(values, opts.idField, fail) || String(row.row);
  const gold = checkGold(scalarText(values, opts.goldField, fail), task, fail);
  const givenSplit = scalarText(values, opts.splitField, fail);
  const fields = contentFields(values, ctx.bookkeeping);
  if (task.input === 'text') exposeText(fields, opts.textField, fail, Object.keys(values));
  checkTemplateFields(fields, ctx.templateFields, fail);
  const hash = contentHash(fields, image);
  const item: ItemInput = { id, hash, fields, split: assignSplit(givenSplit, hash), source: { file: ctx.path, line } };
  if (image) item.image = image;
  if (gold !== undefined) item.gold = gold;
  return item;
}

/** What the teacher may see: everything but the bookkeeping columns. */
function contentFields(values: Record<string, unknown>, bookkeeping: Set<string>): Record<string, unknown> {
  const fields: Record<string, unknown> = {};
  for (const key of Object.keys(values)) {
    if (bookkeeping.has(key)) continue;
    // Not plain assignment: a "__proto__" column must stay an ordinary field.
    if (key === '__proto__')
      Object.defineProperty(fields, key, { value: values[key], enumerable: true, writable: true, configurable: true });
    else fields[key] = values[key];
  }
  return fields;
}

/** Strings as given; JSON numbers and booleans as their text; absent or null as undefined. */
function scalarText(values: Record<string, unknown>, column: string, fail: Fail): string | undefined {
  const value = values[column];
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  throw fail(`column "${column}" must be a string or a number`);
}

function checkGold(gold: string | undefined, task: Task, fail: Fail): string | undefined {
  if (gold === undefined || gold === '') return undefined;
  if (!task.labels.includes(gold)) {
    throw fail(`gold label "${gold}" is not one of the task's labels (${task.labels.join(', ')})`);
  }
  return gold;
}

/** Templates say {{text}} whatever the column is called; the chosen column wins over a column named "text". */
function exposeText(fields: Record<string, unknown>, textField: string, fail: Fail, columns: string[]): void {
  const text = fields[textField];
  if (text === undefined || text === null)
    throw fail(`missing column "${textField}" (columns: ${columns.join(', ') || 'none'})`, 'textField');
  if (typeof text !== 'string') throw fail(`column "${textField}" must be a string`);
  if (text.trim() === '') throw fail('empty text');
  if (textField !== 'text') fields.text = text;
}

/** The image column is a path relative to the input file's folder, so a dataset can be moved as a whole. */
async function loadRowImage(row: RawRow, ctx: RowContext): Promise<ImageInput> {
  const fail = rowFail(ctx, row);
  const given = row.values.image;
  if (given === undefined || given === null) throw fail('missing column "image"');
  if (typeof given !== 'string') throw fail('column "image" must be a path');
  if (given.trim() === '') throw fail('empty image path');
  return loadImage(isAbsolute(given) ? given : resolve(dirname(ctx.path), given), given, fail);
}
