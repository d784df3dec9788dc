/**
 * Teacher logits from a file, for ingesting white-box teachers whose logits were dumped
 * offline: JSONL rows that carry their own item reference, or a .npy matrix with a
 * separate ids file. Every row is checked (one logit per label, all finite in float32);
 * the first bad row throws an InputError naming the file and line, after the good rows
 * before it were yielded — the caller rolls the whole ingest back.
 */
import { readFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { extname } from 'node:path';
import { InputError } from '../errors.ts';
import { flatten, itemsThenError, type Batch } from '../input/batch.ts';
import { readJsonlRows, type RawRow } from '../input/rows.ts';
import { npyRows, readNpyHeader, type NpyHeader } from './npy.ts';

/** How a row names its item: by the id it was imported with, or by its text. */
export type LogitsRef = { id: string } | { text: string };

export interface LogitsRow {
  ref: LogitsRef;
  logits: Float32Array;
  file: string;
  /** 1-based line in JSONL, or 1-based row in .npy. */
  line: number;
}

export interface ReadLogitsOptions {
  /** The task's number of labels: every row must have exactly this many logits. */
  numClasses: number;
  /** Required for .npy: one item id per line, in row order. */
  idsFile?: string;
}

/** Rows per batch from a .npy, so that promises are paid per batch rather than per row. */
const NPY_BATCH = 1024;

export function readLogits(path: string, opts: ReadLogitsOptions): AsyncGenerator<LogitsRow> {
  return flatten(logitBatches(path, opts));
}

async function* logitBatches(path: string, opts: ReadLogitsOptions): AsyncGenerator<LogitsRow[]> {
  const kind = fileKind(path);
  await checkReadable(path);
  if (kind === 'jsonl') {
    if (opts.idsFile !== undefined) {
      throw new InputError(opts.idsFile, undefined, `an ids file is only used with .npy logits; ${path} names its items itself`);
    }
    for await (const rows of readJsonlRows(path)) yield* itemsThenError(jsonlBatch(rows, path, opts.numClasses));
  } else {
    yield* npyBatches(path, opts);
  }
}

function fileKind(path: string): 'jsonl' | 'npy' {
  const ext = extname(path).toLowerCase();
  if (ext === '.jsonl' || ext === '.ndjson') return 'jsonl';
  if (ext === '.npy') return 'npy';
  throw new InputError(path, undefined, `unsupported logits file type "${ext}" (expected .jsonl, .ndjson or .npy)`);
}

async function checkReadable(path: string): Promise<void> {
  try {
    await stat(path);
  } catch (e) {
    throw new InputError(path, undefined, `cannot read file (${(e as NodeJS.ErrnoException).code ?? e})`);
  }
}

// ---------------------------------------------------------------------------------------
// JSONL

type Fail = (reason: string) => InputError;

function jsonlBatch(rows: RawRow[], path: string, numClasses: number): Batch<LogitsRow> {
  const items: LogitsRow[] = [];
  try {
    for (const row of rows) items.push(jsonlRow(row, path, numClasses));
  } catch (error) {
    return { items, error };
  }
  return { items };
}

function jsonlRow({ values, line }: RawRow, path: string, numClasses: number): LogitsRow {
  const fail: Fail = (reason) => new InputError(path, line, reason);
  return { ref: refOf(values, fail), logits: logitsOf(values.logits, numClasses, fail), file: path, line };
}

/** The id wins when a row has both: it is the exact key, the text only finds the item by content. */
function refOf(values: Record<string, unknown>, fail: Fail): LogitsRef {
  const id = idOf(values.id, fail);
  if (id !== undefined) return { id };
  const text = values.text;
  if (text === undefined || text === null) throw fail('the row has neither "id" nor "text"');
  if (typeof text !== 'string') throw fail('"text" must be a string');
  if (text.trim() === '') throw fail('empty text');
  return { text };
}

/** As item ids are read on import: numbers become their text, an empty id counts as none. */
function idOf(id: unknown, fail: Fail): string | undefined {
  if (id === undefined || id === null || id === '') return undefined;
  if (typeof id === 'string') return id;
  if (typeof id === 'number' && Number.isFinite(id)) return String(id);
  throw fail('"id" must be a string or a number');
}

function logitsOf(given: unknown, numClasses: number, fail: Fail): Float32Array {
  if (given === undefined || given === null) throw fail('missing "logits"');
  if (!Array.isArray(given)) throw fail('"logits" must be an array of numbers');
  if (given.length !== numClasses) throw fail(`has ${plural(given.length, 'logit')}, the task has ${plural(numClasses, 'label')}`);
  const logits = new Float32Array(numClasses);
  for (let i = 0; i < numClasses; i++) {
    const value: unknown = given[i];
    // JSON has no NaN, so it arrives as a string or null; 1e999 parses to Infinity.
    if (typeof value !== 'number') throw fail(`logits[${i}] is not a number (${preview(value)})`);
    if (!Number.isFinite(value)) throw fail(`logits[${i}] is not finite (${value})`);
    logits[i] = value;
    if (!Number.isFinite(logits[i])) throw fail(`logits[${i}] is out of float32 range (${value})`);
  }
  return logits;
}

function preview(value: unknown): string {
  const text = value === undefined ? 'nothing' : JSON.stringify(value);
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

// ---------------------------------------------------------------------------------------
// .npy

function* npyBatches(path: string, opts: ReadLogitsOptions): Generator<LogitsRow[]> {
  if (opts.idsFile === undefined) {
    throw new InputError(path, undefined, 'a .npy logits file needs an ids file: one item id per line, in row order');
  }
  const header = readNpyHeader(path);
  checkClasses(header, path, opts.numClasses);
  const ids = readIds(opts.idsFile, header.shape[0], path);
  let batch: LogitsRow[] = [];
  for (const { row, values } of npyRows(path)) {
    const bad = firstNonFinite(values);
    if (bad >= 0) {
      if (batch.length > 0) yield batch;
      throw new InputError(path, row + 1, `logits[${bad}] is not finite (${values[bad]})`);
    }
    batch.push({ ref: { id: ids[row] }, logits: values, file: path, line: row + 1 });
    if (batch.length === NPY_BATCH) {
      yield batch;
      batch = [];
    }
  }
  if (batch.length > 0) yield batch;
}

function firstNonFinite(values: Float32Array): number {
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i])) return i;
  return -1;
}

function checkClasses(header: NpyHeader, path: string, numClasses: number): void {
  const [rows, classes] = header.shape;
  if (classes !== numClasses) {
    throw new InputError(
      path,
      undefined,
      `has ${plural(classes, 'logit')} per row (shape (${rows}, ${classes})), the task has ${plural(numClasses, 'label')}`,
    );
  }
}

/**
 * Read whole: an id is a few bytes against a row's C floats, so the ids of any .npy that
 * can be streamed fit in memory; counting them first catches a misaligned file before any row.
 */
function readIds(idsFile: string, rows: number, npyPath: string): string[] {
  const ids = idLines(idsFile);
  const blank = ids.findIndex((id) => id.trim() === '');
  if (blank >= 0) throw new InputError(idsFile, blank + 1, 'empty id (one item id per line, in the order of the .npy rows)');
  if (ids.length !== rows) {
    throw new InputError(idsFile, undefined, `has ${plural(ids.length, 'id')} but ${npyPath} has ${plural(rows, 'row')}`);
  }
  return ids;
}

function idLines(idsFile: string): string[] {
  let text: string;
  try {
    text = readFileSync(idsFile, 'utf8');
  } catch (e) {
    throw new InputError(idsFile, undefined, `cannot read ids file (${(e as NodeJS.ErrnoException).code ?? e})`);
  }
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  // Editors and `print` leave a final newline, sometimes more.
  while (lines.length > 0 && lines[lines.length - 1].trim() === '') lines.pop();
  return lines;
}
