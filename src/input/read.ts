import { stat } from 'node:fs/promises';
import { dirname, extname, isAbsolute, resolve } from 'node:path';
import { InputError } from '../errors.ts';
import type { Task } from '../task/task.ts';
import { readClassFolders } from './folders.ts';
import { loadImage, type Fail } from './image.ts';
import { checkTemplateFields, contentHash } from './item.ts';
import { readDelimitedRows, readJsonlRows, type RawRow } from './rows.ts';
import { assignSplit } from './split.ts';
import { DEFAULT_FIELDS, type FieldOptions, type ImageInput, type ItemInput } from './types.ts';

/**
 * Items from a JSONL/CSV/TSV file, or from a folder of class folders (image tasks).
 * Streams: rows are parsed and checked one at a time, and the first bad row throws an
 * InputError naming the file and line.
 */
export async function* readItems(path: string, task: Task, opts: FieldOptions = DEFAULT_FIELDS): AsyncGenerator<ItemInput> {
  if (await isDirectory(path)) {
    yield* readClassFolders(path, task);
    return;
  }
  for await (const rows of readRows(path)) {
    for (const row of rows) {
      const image = task.input === 'image' ? await loadRowImage(row, path) : undefined;
      yield rowToItem(row, path, task, opts, image);
    }
  }
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
  throw new InputError(path, undefined, `unsupported input file type "${ext}" (expected .jsonl, .ndjson, .csv, .tsv or a folder of class folders)`);
}

function rowFail(path: string, row: RawRow): Fail {
  return (reason) => new InputError(path, row.line, reason);
}

/** Synchronous for text rows: a promise per row is the main cost of reading a large file. */
function rowToItem(raw: RawRow, path: string, task: Task, opts: FieldOptions, image: ImageInput | undefined): ItemInput {
  const { values, line, row } = raw;
  const fail = rowFail(path, raw);
  const id = scalarText(values[opts.idField], `id column "${opts.idField}"`, fail) || String(row);
  const gold = checkGold(scalarText(values[opts.goldField], `gold column "${opts.goldField}"`, fail), task, fail);
  const givenSplit = scalarText(values[opts.splitField], `split column "${opts.splitField}"`, fail);
  const fields = contentFields(values, opts);
  if (task.input === 'text') exposeText(fields, opts.textField, fail);
  checkTemplateFields(fields, task, fail);
  const hash = contentHash(fields, image);
  const item: ItemInput = { id, hash, fields, split: assignSplit(givenSplit, hash), source: { file: path, line } };
  if (image) item.image = image;
  if (gold !== undefined) item.gold = gold;
  return item;
}

/** What the teacher may see: everything but the bookkeeping columns. */
function contentFields(values: Record<string, unknown>, opts: FieldOptions): Record<string, unknown> {
  const bookkeeping = new Set([opts.idField, opts.goldField, opts.splitField]);
  // fromEntries, not assignment, so a "__proto__" key stays an ordinary field.
  return Object.fromEntries(Object.entries(values).filter(([k]) => !bookkeeping.has(k)));
}

/** Strings as given; JSON numbers and booleans as their text; absent or null as undefined. */
function scalarText(value: unknown, what: string, fail: Fail): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  throw fail(`${what} must be a string or a number`);
}

function checkGold(gold: string | undefined, task: Task, fail: Fail): string | undefined {
  if (gold === undefined || gold === '') return undefined;
  if (!task.labels.includes(gold)) {
    throw fail(`gold label "${gold}" is not one of the task's labels (${task.labels.join(', ')})`);
  }
  return gold;
}

/** Templates say {{text}} whatever the column is called; the chosen column wins over a column named "text". */
function exposeText(fields: Record<string, unknown>, textField: string, fail: Fail): void {
  const text = fields[textField];
  if (text === undefined || text === null) throw fail(`missing column "${textField}"`);
  if (typeof text !== 'string') throw fail(`column "${textField}" must be a string`);
  if (text.trim() === '') throw fail('empty text');
  if (textField !== 'text') fields.text = text;
}

/** The image column is a path relative to the input file's folder, so a dataset can be moved as a whole. */
async function loadRowImage(row: RawRow, path: string): Promise<ImageInput> {
  const fail = rowFail(path, row);
  const given = row.values.image;
  if (given === undefined || given === null) throw fail('missing column "image"');
  if (typeof given !== 'string') throw fail('column "image" must be a path');
  if (given.trim() === '') throw fail('empty image path');
  return loadImage(isAbsolute(given) ? given : resolve(dirname(path), given), given, fail);
}
