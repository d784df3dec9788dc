/**
 * A reader for NumPy `.npy` files holding a 2-D float32 or float16 array of teacher
 * logits, [rows, classes]. Rows are streamed in chunks so that a file larger than memory
 * can be ingested; every row comes out as its own float32 copy, free to keep.
 *
 * Format: https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { InputError } from '../errors.ts';

export interface NpyHeader {
  dtype: 'float32' | 'float16';
  littleEndian: boolean;
  /** [rows, classes] */
  shape: [number, number];
  /** Byte offset of the first row. */
  dataOffset: number;
}

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // "\x93NUMPY"
/** Big enough that syscalls don't matter, small enough to never strain memory. */
const CHUNK_BYTES = 4 << 20;

const DTYPES: Record<string, Pick<NpyHeader, 'dtype' | 'littleEndian'>> = {
  '<f4': { dtype: 'float32', littleEndian: true },
  '>f4': { dtype: 'float32', littleEndian: false },
  '<f2': { dtype: 'float16', littleEndian: true },
  '>f2': { dtype: 'float16', littleEndian: false },
};

const ITEM_SIZE = { float32: 4, float16: 2 } as const;

export function readNpyHeader(path: string): NpyHeader {
  const fd = openFile(path);
  try {
    return headerOf(fd, path);
  } finally {
    closeSync(fd);
  }
}

/**
 * The rows in order. A file too short for its shape fails before the first row, so a
 * caller never does work for a file it would have to roll back anyway.
 */
export function* npyRows(path: string): Generator<{ row: number; values: Float32Array }> {
  const fd = openFile(path);
  try {
    const header = headerOf(fd, path);
    checkDataLength(fd, path, header);
    yield* rowsOf(fd, path, header);
  } finally {
    closeSync(fd);
  }
}

function openFile(path: string): number {
  try {
    return openSync(path, 'r');
  } catch (e) {
    throw new InputError(path, undefined, `cannot read file (${(e as NodeJS.ErrnoException).code ?? e})`);
  }
}

// ---------------------------------------------------------------------------------------
// Header

function headerOf(fd: number, path: string): NpyHeader {
  const fail = (reason: string) => new InputError(path, undefined, reason);
  const prelude = readAt(fd, 0, 12);
  if (prelude.length < 10 || MAGIC.some((byte, i) => prelude[i] !== byte)) {
    throw fail('not a .npy file (it does not start with "\\x93NUMPY")');
  }
  const major = prelude[6];
  if (major !== 1 && major !== 2 && major !== 3) throw fail(`unsupported .npy format version ${major}.${prelude[7]}`);
  // Version 1 has a 16-bit header length; 2 and 3 widened it to 32 bits.
  const start = major === 1 ? 10 : 12;
  if (prelude.length < start) throw fail('malformed .npy header: the file ends inside it');
  const length = major === 1 ? readUInt16LE(prelude, 8) : readUInt32LE(prelude, 8);
  // Checked before reading so that a garbled length never becomes a 4 GiB allocation.
  if (start + length > fstatSync(fd).size) throw fail('malformed .npy header: the file ends inside it');
  const bytes = readAt(fd, start, length);
  // Version 3 exists only to allow UTF-8 (in structured field names); older ones are latin-1.
  const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString(major === 3 ? 'utf8' : 'latin1');
  return { ...interpretHeader(parseHeader(text, fail), fail), dataOffset: start + length };
}

type Fail = (reason: string) => InputError;

function parseHeader(text: string, fail: Fail): Map<string, PyValue> {
  let value: PyValue;
  try {
    value = new PyLiteral(text).parse();
  } catch (e) {
    if (e instanceof SyntaxError) throw fail(`malformed .npy header: ${e.message}`);
    throw e;
  }
  if (!(value instanceof Map)) throw fail('malformed .npy header: not a dict');
  return value;
}

function interpretHeader(dict: Map<string, PyValue>, fail: Fail): Omit<NpyHeader, 'dataOffset'> {
  const field = (key: string): PyValue => {
    if (!dict.has(key)) throw fail(`malformed .npy header: no '${key}'`);
    return dict.get(key) as PyValue;
  };
  const dtype = dtypeOf(field('descr'), fail);
  checkCOrder(field('fortran_order'), fail);
  return { ...dtype, shape: shapeOf(field('shape'), fail) };
}

function dtypeOf(descr: PyValue, fail: Fail): Pick<NpyHeader, 'dtype' | 'littleEndian'> {
  if (typeof descr !== 'string') throw fail('unsupported dtype: structured arrays are not supported (use float32 or float16)');
  const dtype = DTYPES[descr];
  if (!dtype) throw fail(`unsupported dtype '${descr}' (use float32 or float16)`);
  return dtype;
}

/** Rows are streamed, so each row's values must be contiguous. */
function checkCOrder(fortranOrder: PyValue, fail: Fail): void {
  if (typeof fortranOrder !== 'boolean') throw fail("malformed .npy header: 'fortran_order' is not True or False");
  if (fortranOrder) {
    throw fail('fortran_order is True: only C-ordered arrays are supported (save np.ascontiguousarray(logits))');
  }
}

function shapeOf(shape: PyValue, fail: Fail): [number, number] {
  if (!Array.isArray(shape) || !shape.every((d) => typeof d === 'number' && Number.isSafeInteger(d) && d >= 0)) {
    throw fail("malformed .npy header: 'shape' is not a tuple of sizes");
  }
  const dims = shape as number[];
  if (dims.length !== 2) {
    const text = dims.length === 1 ? `(${dims[0]},)` : `(${dims.join(', ')})`;
    throw fail(`expected a 2-D array of shape (rows, classes), got shape ${text}`);
  }
  return [dims[0], dims[1]];
}

type PyValue = string | number | boolean | null | PyValue[] | Map<string, PyValue>;

/**
 * The Python literals NumPy writes in a header: a dict of strings, booleans and tuples
 * of ints. Parsed properly rather than by regex so that a structured dtype (a list) is
 * told apart from a garbled header. Throws SyntaxError.
 */
class PyLiteral {
  private pos = 0;
  /** Bounded so that a hostile header is a SyntaxError, not a stack overflow. */
  private depth = 0;

  constructor(private readonly text: string) {}

  parse(): PyValue {
    const value = this.value();
    this.skipSpace();
    if (this.pos < this.text.length) throw this.error('unexpected text');
    return value;
  }

  private value(): PyValue {
    this.skipSpace();
    const c = this.text[this.pos];
    if (c === '{') return this.dict();
    if (c === '(') return this.sequence(')');
    if (c === '[') return this.sequence(']');
    if (c === "'" || c === '"') return this.string();
    return this.word();
  }

  private dict(): Map<string, PyValue> {
    const dict = new Map<string, PyValue>();
    this.items('}', () => {
      const key = this.value();
      if (typeof key !== 'string') throw this.error('a dict key is not a string');
      this.expect(':');
      dict.set(key, this.value());
    });
    return dict;
  }

  private sequence(close: string): PyValue[] {
    const items: PyValue[] = [];
    this.items(close, () => items.push(this.value()));
    return items;
  }

  /** Comma-separated items up to `close`, a trailing comma allowed (as in `(3,)`). */
  private items(close: string, item: () => void): void {
    if (++this.depth > 32) throw this.error('nested too deeply');
    this.pos++;
    for (;;) {
      this.skipSpace();
      if (this.text[this.pos] === close) break;
      item();
      this.skipSpace();
      if (this.text[this.pos] === ',') this.pos++;
      else if (this.text[this.pos] !== close) throw this.error(`expected ',' or '${close}'`);
    }
    this.pos++;
    this.depth--;
  }

  private string(): string {
    const quote = this.text[this.pos];
    let end = this.pos + 1;
    while (end < this.text.length && this.text[end] !== quote) end += this.text[end] === '\\' ? 2 : 1;
    if (end >= this.text.length) throw this.error('unterminated string');
    const value = this.text.slice(this.pos + 1, end);
    this.pos = end + 1;
    return value;
  }

  private word(): PyValue {
    const match = /[A-Za-z0-9_+\-.]+/y;
    match.lastIndex = this.pos;
    const word = match.exec(this.text)?.[0];
    if (word === undefined) throw this.error(this.pos < this.text.length ? 'unexpected character' : 'unexpected end');
    this.pos += word.length;
    if (word === 'True') return true;
    if (word === 'False') return false;
    if (word === 'None') return null;
    // Python 2 wrote sizes as longs: (3L, 4L).
    if (/^-?\d+L?$/.test(word)) return Number(word.replace('L', ''));
    throw this.error(`unexpected '${word}'`);
  }

  private expect(c: string): void {
    this.skipSpace();
    if (this.text[this.pos] !== c) throw this.error(`expected '${c}'`);
    this.pos++;
  }

  private skipSpace(): void {
    while (/\s/.test(this.text[this.pos] ?? '')) this.pos++;
  }

  private error(what: string): SyntaxError {
    return new SyntaxError(`${what} at character ${this.pos + 1}`);
  }
}

// ---------------------------------------------------------------------------------------
// Data

function checkDataLength(fd: number, path: string, header: NpyHeader): void {
  const [rows] = header.shape;
  const rowBytes = rowBytesOf(header);
  const available = Math.max(0, fstatSync(fd).size - header.dataOffset);
  if (available < rows * rowBytes) throw endsEarly(path, header, Math.floor(available / rowBytes));
}

function endsEarly(path: string, header: NpyHeader, completeRows: number): InputError {
  const [rows, classes] = header.shape;
  return new InputError(path, completeRows + 1, `file ends early (expected ${rows} rows of ${classes} ${header.dtype})`);
}

function* rowsOf(fd: number, path: string, header: NpyHeader): Generator<{ row: number; values: Float32Array }> {
  const [rows, classes] = header.shape;
  const rowBytes = rowBytesOf(header);
  const rowsPerChunk = Math.max(1, Math.floor(CHUNK_BYTES / Math.max(rowBytes, 1)));
  // Reused: decodeRow copies, so no row refers to it. Fresh (offset 0) so float views are aligned.
  const chunk = new Uint8Array(Math.min(rowsPerChunk, rows) * rowBytes);
  const decodeRow = rowDecoder(header, chunk);
  let position = header.dataOffset;
  for (let first = 0; first < rows; first += rowsPerChunk) {
    const count = Math.min(rowsPerChunk, rows - first);
    const got = readInto(fd, chunk, count * rowBytes, position);
    // Checked up front too; this is for a file that shrinks while it is read.
    if (got < count * rowBytes) throw endsEarly(path, header, first + Math.floor(got / rowBytes));
    position += got;
    for (let i = 0; i < count; i++) yield { row: first + i, values: decodeRow(i * rowBytes, classes) };
  }
}

function rowBytesOf(header: NpyHeader): number {
  return header.shape[1] * ITEM_SIZE[header.dtype];
}

type RowDecoder = (offset: number, classes: number) => Float32Array;

function rowDecoder(header: NpyHeader, chunk: Uint8Array): RowDecoder {
  const view = new DataView(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  const le = header.littleEndian;
  if (header.dtype === 'float32') {
    // Native byte order is the common case and is a plain copy.
    if (le === HOST_LITTLE_ENDIAN) return (offset, classes) => new Float32Array(chunk.buffer, chunk.byteOffset + offset, classes).slice();
    return (offset, classes) => decodeEach(classes, (j) => view.getFloat32(offset + 4 * j, le));
  }
  const table = halfTable();
  return (offset, classes) => decodeEach(classes, (j) => table[view.getUint16(offset + 2 * j, le)]);
}

function decodeEach(classes: number, value: (j: number) => number): Float32Array {
  const out = new Float32Array(classes);
  for (let j = 0; j < classes; j++) out[j] = value(j);
  return out;
}

const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

let HALF_TABLE: Float32Array | undefined;

/** Every float16 bit pattern decoded once (256 KiB): cheaper than bit-twiddling each value. */
function halfTable(): Float32Array {
  if (!HALF_TABLE) {
    HALF_TABLE = new Float32Array(65536);
    for (let bits = 0; bits < 65536; bits++) HALF_TABLE[bits] = halfToFloat(bits);
  }
  return HALF_TABLE;
}

/** IEEE 754 binary16: 1 sign bit, 5 exponent bits (bias 15), 10 fraction bits. */
function halfToFloat(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24; // zero and subnormals: no implicit leading 1
  if (exponent === 0x1f) return fraction === 0 ? sign * Infinity : NaN;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}

// ---------------------------------------------------------------------------------------
// I/O

/** Up to `length` bytes at `position`; fewer only at the end of the file. */
function readAt(fd: number, position: number, length: number): Uint8Array {
  const buffer = new Uint8Array(length);
  return buffer.subarray(0, readInto(fd, buffer, length, position));
}

function readInto(fd: number, buffer: Uint8Array, length: number, position: number): number {
  let got = 0;
  while (got < length) {
    const n = readSync(fd, buffer, got, length - got, position + got);
    if (n === 0) break;
    got += n;
  }
  return got;
}

function readUInt16LE(bytes: Uint8Array, offset: number): number {
  return bytes[offset] | (bytes[offset + 1] << 8);
}

function readUInt32LE(bytes: Uint8Array, offset: number): number {
  return (bytes[offset] | (bytes[offset + 1] << 8) | (bytes[offset + 2] << 16)) + bytes[offset + 3] * 2 ** 24;
}
