import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { CsvError, parse, type Info } from 'csv-parse';
import { InputError } from '../errors.ts';
import { itemsThenError, type Batch } from './batch.ts';
import { checkedUtf8 } from './utf8.ts';

/** One record as parsed, before any meaning is given to its columns. */
export interface RawRow {
  values: Record<string, unknown>;
  /** 1-based line where the record starts. */
  line: number;
  /** 1-based record number, not counting a header or blank lines. */
  row: number;
}

/**
 * One JSON object per line; blank lines are skipped but still counted. Rows come in
 * batches (one per chunk read) because a promise per row is what makes reading a large
 * file slow, not the parsing.
 */
export async function* readJsonlRows(path: string): AsyncGenerator<RawRow[]> {
  const file = createReadStream(path, { highWaterMark: 1 << 20 });
  const stream = file.pipe(checkedUtf8(path)).setEncoding('utf8');
  file.on('error', (e) => stream.destroy(e));
  let line = 0;
  let row = 0;
  let partial = '';
  const parseLines = (texts: string[]): Batch<RawRow> => {
    const rows: RawRow[] = [];
    for (const text of texts) {
      line++;
      const json = line === 1 ? text.replace(/^\uFEFF/, '') : text;
      if (json.trim() === '') continue;
      let values: Record<string, unknown>;
      try {
        values = parseJsonObject(json, path, line);
      } catch (error) {
        return { items: rows, error };
      }
      rows.push({ values, line, row: ++row });
    }
    return { items: rows };
  };
  try {
    for await (const chunk of stream as AsyncIterable<string>) {
      const texts = (partial + chunk).split(/\r?\n/);
      partial = texts.pop() ?? '';
      yield* itemsThenError(parseLines(texts));
    }
    if (partial !== '') yield* itemsThenError(parseLines([partial]));
  } finally {
    stream.destroy();
    file.destroy();
  }
}

function parseJsonObject(text: string, path: string, line: number): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new InputError(path, line, `invalid JSON: ${(e as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    const got = value === null ? 'null' : Array.isArray(value) ? 'an array' : `a ${typeof value}`;
    throw new InputError(path, line, `invalid JSON: expected an object, got ${got}`);
  }
  return value as Record<string, unknown>;
}

interface CsvRecord {
  record: Record<string, string>;
  info: Info & { columns: { name: string }[] };
  raw: string;
}

/** CSV or TSV with a header row, in batches like readJsonlRows. */
export async function* readDelimitedRows(path: string, delimiter: ',' | '\t'): AsyncGenerator<RawRow[]> {
  const kind = delimiter === ',' ? 'CSV' : 'TSV';
  const file = createReadStream(path);
  const source = file.pipe(checkedUtf8(path));
  file.on('error', (e) => source.destroy(e));
  const parser = parse({
    columns: true,
    bom: true,
    delimiter,
    info: true,
    raw: true,
    skip_empty_lines: true,
    // Checked below instead, so the rows before a bad one are still yielded and the error has our line number.
    relax_column_count: true,
  });
  source.on('error', (e) => parser.destroy(e));
  source.pipe(parser);
  const lines = new RecordLines();
  let row = 0;
  try {
    for await (const records of batches<CsvRecord>(parser)) {
      const rows: RawRow[] = [];
      let error: unknown;
      for (const { record, info, raw } of records) {
        const line = lines.startLine(raw, info.lines);
        row++;
        if (row === 1) error = checkHeader(info.columns, path, kind);
        // The first bad row stops reading, so any count above zero means this row.
        if (info.invalid_field_length > 0) {
          error = new InputError(path, line, `wrong number of columns (the header has ${info.columns.length})`);
        }
        if (error) break;
        rows.push({ values: record, line, row });
      }
      yield* itemsThenError({ items: rows, error });
    }
  } catch (e) {
    if (e instanceof CsvError) throw new InputError(path, lineOf(e), `invalid ${kind}: ${e.message}`);
    throw e;
  } finally {
    parser.destroy();
    source.destroy();
    file.destroy();
  }
}

/** Everything an object stream has buffered, one await per batch rather than per object. */
async function* batches<T>(stream: Readable): AsyncGenerator<T[]> {
  for await (const first of stream) {
    const batch: T[] = [first as T];
    for (let next = stream.read(); next !== null; next = stream.read()) batch.push(next as T);
    yield batch;
  }
}

function checkHeader(columns: { name: string }[], path: string, kind: string): InputError | undefined {
  const seen = new Set<string>();
  for (const { name } of columns) {
    if (seen.has(name)) return new InputError(path, 1, `duplicate column "${name}" in the ${kind} header`);
    seen.add(name);
  }
  return undefined;
}

function lineOf(e: CsvError): number | undefined {
  return typeof e.lines === 'number' ? e.lines : undefined;
}

const BREAK = /\r\n|\r|\n/g;

/**
 * Where each record starts. csv-parse's `info.lines` is the line a record ends on, but it
 * counts a "\r\n" inside a quoted field as two lines; the raw text of each record lets us
 * undo that and step back over the record's own line breaks.
 */
class RecordLines {
  private overcount = 0;

  startLine(raw: string, endLine: number): number {
    // raw = skipped blank lines + the record + its delimiter (if any); only the record counts.
    const body = raw.replace(/^(?:\r\n|\r|\n)+/, '').replace(/(?:\r\n|\r|\n)$/, '');
    this.overcount += count(body, /\r\n/g);
    return endLine - this.overcount - count(body, BREAK);
  }
}

function count(text: string, pattern: RegExp): number {
  return text.match(pattern)?.length ?? 0;
}
