import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { InputError } from '../src/errors.ts';
import { npyRows, readNpyHeader } from '../src/whitebox/npy.ts';
import { readLogits, type LogitsRow } from '../src/whitebox/read-logits.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'distillery-logits-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

let fileCounter = 0;
function write(name: string, content: string | Uint8Array): string {
  const file = path.join(tmp, `${++fileCounter}-${name}`);
  fs.writeFileSync(file, content);
  return file;
}

// ---------------------------------------------------------------------------------------
// .npy fixtures, built byte by byte as numpy.save does

interface NpyFixture {
  descr?: string;
  shape?: number[];
  fortran?: boolean;
  version?: 1 | 2 | 3;
  data?: Uint8Array;
  /** Replaces the dict numpy would write, for malformed headers. */
  header?: string;
  magic?: number[];
}

const NUMPY_MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59];

function pyShape(shape: number[]): string {
  return shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
}

function npyBytes(f: NpyFixture): Buffer {
  const version = f.version ?? 1;
  const dict =
    f.header ??
    `{'descr': '${f.descr ?? '<f4'}', 'fortran_order': ${f.fortran ? 'True' : 'False'}, 'shape': ${pyShape(f.shape ?? [0, 0])}, }`;
  const prelude = version === 1 ? 10 : 12;
  // numpy pads with spaces and a final newline so that the data starts at a multiple of 64.
  const pad = (64 - ((prelude + dict.length + 1) % 64)) % 64;
  const header = Buffer.from(dict + ' '.repeat(pad) + '\n', version === 3 ? 'utf8' : 'latin1');
  const start = Buffer.alloc(prelude);
  Buffer.from(f.magic ?? NUMPY_MAGIC).copy(start);
  start[6] = version;
  start[7] = 0;
  if (version === 1) start.writeUInt16LE(header.length, 8);
  else start.writeUInt32LE(header.length, 8);
  return Buffer.concat([start, header, f.data ?? new Uint8Array(0)]);
}

function float32Data(values: number[], littleEndian = true): Uint8Array {
  const view = new DataView(new ArrayBuffer(4 * values.length));
  values.forEach((v, i) => view.setFloat32(4 * i, v, littleEndian));
  return new Uint8Array(view.buffer);
}

function float16Data(bits: number[], littleEndian = true): Uint8Array {
  const view = new DataView(new ArrayBuffer(2 * bits.length));
  bits.forEach((b, i) => view.setUint16(2 * i, b, littleEndian));
  return new Uint8Array(view.buffer);
}

function writeNpy(f: NpyFixture): string {
  return write('logits.npy', npyBytes(f));
}

function writeIds(ids: string[], trailing = '\n'): string {
  return write('ids.txt', ids.join('\n') + trailing);
}

/** Where the fixture's data starts, checked to be where numpy would put it. */
function dataOffsetOf(file: string, dataBytes: number): number {
  const offset = fs.statSync(file).size - dataBytes;
  assert.equal(offset % 64, 0);
  return offset;
}

function rowsOf(file: string): number[][] {
  return [...npyRows(file)].map(({ values }) => Array.from(values));
}

// ---------------------------------------------------------------------------------------
// readLogits helpers

async function collect(rows: AsyncGenerator<LogitsRow>): Promise<LogitsRow[]> {
  const out: LogitsRow[] = [];
  for await (const row of rows) out.push(row);
  return out;
}

/** The rows yielded before the error, and the error, which must be an InputError. */
async function failure(rows: AsyncGenerator<LogitsRow>): Promise<{ rows: LogitsRow[]; error: InputError }> {
  const out: LogitsRow[] = [];
  try {
    for await (const row of rows) out.push(row);
  } catch (error) {
    assert.ok(error instanceof InputError, `expected an InputError, got ${error}`);
    return { rows: out, error };
  }
  assert.fail('expected an InputError, but every row was accepted');
}

async function errorOf(rows: AsyncGenerator<LogitsRow>): Promise<string> {
  return (await failure(rows)).error.message;
}

function writeJsonl(lines: Array<Record<string, unknown> | string>): string {
  return write('logits.jsonl', lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') + '\n');
}

// ---------------------------------------------------------------------------------------

describe('npy reader', () => {
  test('float32, little-endian, version 1', () => {
    const file = writeNpy({ descr: '<f4', shape: [2, 3], data: float32Data([1, -2.5, 0.125, 3, 1e-3, -7]) });
    const header = readNpyHeader(file);
    assert.deepEqual(header, { dtype: 'float32', littleEndian: true, shape: [2, 3], dataOffset: dataOffsetOf(file, 24) });
    assert.deepEqual(
      [...npyRows(file)].map((r) => r.row),
      [0, 1],
    );
    assert.deepEqual(rowsOf(file), [
      [1, -2.5, 0.125],
      [3, Math.fround(1e-3), -7],
    ]);
  });

  test('float32, big-endian, version 2', () => {
    const file = writeNpy({ descr: '>f4', shape: [2, 2], version: 2, data: float32Data([1.5, -2, 1e30, -0.25], false) });
    const header = readNpyHeader(file);
    assert.equal(header.littleEndian, false);
    assert.equal(header.dataOffset, dataOffsetOf(file, 16));
    assert.deepEqual(rowsOf(file), [
      [1.5, -2],
      [Math.fround(1e30), -0.25],
    ]);
  });

  const halfBits = [0x3c00, 0xc000, 0x0001, 0x7c00, 0xfc00, 0x8000, 0x7bff, 0x03ff, 0x0400, 0x3555];
  const halfValues = [1, -2, 2 ** -24, Infinity, -Infinity, -0, 65504, 1023 * 2 ** -24, 2 ** -14, Math.fround(1365 / 4096)];

  for (const [littleEndian, version] of [
    [true, 1],
    [false, 2],
    [true, 3],
  ] as const) {
    test(`float16, ${littleEndian ? 'little' : 'big'}-endian, version ${version}`, () => {
      const descr = littleEndian ? '<f2' : '>f2';
      const file = writeNpy({ descr, shape: [2, 5], version, data: float16Data(halfBits, littleEndian) });
      assert.deepEqual(readNpyHeader(file), { dtype: 'float16', littleEndian, shape: [2, 5], dataOffset: dataOffsetOf(file, 20) });
      const rows = rowsOf(file);
      assert.deepEqual(rows, [halfValues.slice(0, 5), halfValues.slice(5)]);
      assert.ok(Object.is(rows[1][0], -0), '0x8000 is negative zero');
      assert.ok(Math.abs(rows[0][2] - 5.96e-8) < 1e-10);
    });
  }

  test('float16 NaN', () => {
    const file = writeNpy({ descr: '<f2', shape: [1, 2], data: float16Data([0x7e00, 0xfc01]) });
    assert.ok(rowsOf(file)[0].every(Number.isNaN));
  });

  test('rows spanning several read chunks come out whole and in order', () => {
    // 3000 rows of 1000 float32 = 12 MB, several 4 MiB chunks with rows split across their edges.
    const [n, c] = [3000, 1000];
    const values = new Float32Array(n * c);
    for (let i = 0; i < values.length; i++) values[i] = i;
    const file = writeNpy({ shape: [n, c], data: new Uint8Array(values.buffer) });
    let count = 0;
    for (const { row, values: v } of npyRows(file)) {
      assert.equal(row, count++);
      if (v[0] !== row * c || v[c - 1] !== row * c + c - 1) assert.fail(`row ${row} is wrong`);
    }
    assert.equal(count, n);
  });

  test('an empty array has no rows', () => {
    assert.deepEqual(rowsOf(writeNpy({ shape: [0, 4] })), []);
  });

  test('a truncated file names the first incomplete row, before yielding any', () => {
    const file = writeNpy({ shape: [5, 3], data: float32Data([1, 2, 3, 4, 5, 6, 7, 8]) });
    const seen: number[] = [];
    assert.throws(
      () => {
        for (const { row } of npyRows(file)) seen.push(row);
      },
      { name: 'InputError', message: `${file}:3: file ends early (expected 5 rows of 3 float32)` },
    );
    assert.deepEqual(seen, []);
  });

  test('bad magic', () => {
    const file = writeNpy({ magic: [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x5a], shape: [1, 1], data: float32Data([1]) });
    assert.throws(() => readNpyHeader(file), {
      name: 'InputError',
      message: `${file}: not a .npy file (it does not start with "\\x93NUMPY")`,
    });
    const text = write('logits.npy', 'id,logits\n');
    assert.throws(() => [...npyRows(text)], { message: /not a \.npy file/ });
    const empty = write('empty.npy', '');
    assert.throws(() => readNpyHeader(empty), { message: /not a \.npy file/ });
  });

  test('fortran_order True is refused', () => {
    const file = writeNpy({ fortran: true, shape: [2, 2], data: float32Data([1, 2, 3, 4]) });
    assert.throws(() => readNpyHeader(file), {
      name: 'InputError',
      message: `${file}: fortran_order is True: only C-ordered arrays are supported (save np.ascontiguousarray(logits))`,
    });
  });

  test('unsupported dtypes', () => {
    const f8 = writeNpy({ descr: '<f8', shape: [1, 1], data: new Uint8Array(8) });
    assert.throws(() => readNpyHeader(f8), { name: 'InputError', message: `${f8}: unsupported dtype '<f8' (use float32 or float16)` });
    const i4 = writeNpy({ descr: '<i4', shape: [1, 1], data: new Uint8Array(4) });
    assert.throws(() => readNpyHeader(i4), { message: `${i4}: unsupported dtype '<i4' (use float32 or float16)` });
    const structured = writeNpy({ header: "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }" });
    assert.throws(() => readNpyHeader(structured), { message: /unsupported dtype: structured arrays are not supported/ });
  });

  test('only 2-D arrays', () => {
    const three = writeNpy({ shape: [2, 3, 4], data: new Uint8Array(96) });
    assert.throws(() => readNpyHeader(three), {
      name: 'InputError',
      message: `${three}: expected a 2-D array of shape (rows, classes), got shape (2, 3, 4)`,
    });
    const one = writeNpy({ shape: [3], data: new Uint8Array(12) });
    assert.throws(() => readNpyHeader(one), { message: `${one}: expected a 2-D array of shape (rows, classes), got shape (3,)` });
  });

  test('malformed headers', () => {
    const cases = [
      ["{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3}", /malformed \.npy header: expected ',' or '\)'/],
      ["{'descr': '<f4', 'shape': (2, 3), }", /malformed \.npy header: no 'fortran_order'/],
      ["{'descr': '<f4', 'fortran_order': 0, 'shape': (2, 3), }", /'fortran_order' is not True or False/],
      ["{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3), }", /'shape' is not a tuple of sizes/],
      ["{'descr': '<f4, 'fortran_order': False}", /malformed \.npy header/],
      ["['descr']", /malformed \.npy header: not a dict/],
      ['['.repeat(50000), /malformed \.npy header: nested too deeply/],
    ] as const;
    for (const [header, message] of cases) {
      const file = writeNpy({ header });
      assert.throws(
        () => readNpyHeader(file),
        (e: unknown) => {
          assert.ok(e instanceof InputError);
          assert.ok(e.message.startsWith(`${file}: `), e.message);
          assert.match(e.message, message);
          return true;
        },
      );
    }
  });

  test('a header length beyond the end of the file', () => {
    const bytes = npyBytes({ shape: [1, 1], data: float32Data([1]) });
    bytes.writeUInt16LE(5000, 8);
    const file = write('logits.npy', bytes);
    assert.throws(() => readNpyHeader(file), { message: `${file}: malformed .npy header: the file ends inside it` });
  });

  test('unknown format version', () => {
    const bytes = npyBytes({ shape: [1, 1], data: float32Data([1]) });
    bytes[6] = 4;
    const file = write('logits.npy', bytes);
    assert.throws(() => readNpyHeader(file), { message: `${file}: unsupported .npy format version 4.0` });
  });

  test('Python 2 long sizes', () => {
    const file = writeNpy({ header: "{'descr': '<f4', 'fortran_order': False, 'shape': (1L, 2L), }", data: float32Data([1, 2]) });
    assert.deepEqual(rowsOf(file), [[1, 2]]);
  });

  test('a missing file', () => {
    const file = path.join(tmp, 'nope.npy');
    assert.throws(() => readNpyHeader(file), { name: 'InputError', message: `${file}: cannot read file (ENOENT)` });
  });
});

describe('readLogits from .npy', () => {
  test('rows carry their ids and 1-based row numbers', async () => {
    const file = writeNpy({ descr: '<f2', shape: [3, 2], data: float16Data([0x3c00, 0xc000, 0, 0x3c00, 0x4000, 0x4200]) });
    const ids = writeIds(['a', 'b', 'c']);
    const rows = await collect(readLogits(file, { numClasses: 2, idsFile: ids }));
    assert.deepEqual(
      rows.map((r) => ({ ...r, logits: Array.from(r.logits) })),
      [
        { ref: { id: 'a' }, logits: [1, -2], file, line: 1 },
        { ref: { id: 'b' }, logits: [0, 1], file, line: 2 },
        { ref: { id: 'c' }, logits: [2, 3], file, line: 3 },
      ],
    );
    assert.ok(rows[0].logits instanceof Float32Array);
  });

  test('ids files: CRLF and trailing blank lines are fine', async () => {
    const file = writeNpy({ shape: [2, 1], data: float32Data([1, 2]) });
    const ids = write('ids.txt', 'x\r\ny\r\n\r\n');
    const rows = await collect(readLogits(file, { numClasses: 1, idsFile: ids }));
    assert.deepEqual(
      rows.map((r) => r.ref),
      [{ id: 'x' }, { id: 'y' }],
    );
  });

  test('an ids file is required', async () => {
    const file = writeNpy({ shape: [1, 1], data: float32Data([1]) });
    assert.equal(
      await errorOf(readLogits(file, { numClasses: 1 })),
      `${file}: a .npy logits file needs an ids file: one item id per line, in row order`,
    );
  });

  test('the number of classes must match the task', async () => {
    const file = writeNpy({ shape: [2, 9], data: new Uint8Array(72) });
    const ids = writeIds(['a', 'b']);
    assert.equal(
      await errorOf(readLogits(file, { numClasses: 10, idsFile: ids })),
      `${file}: has 9 logits per row (shape (2, 9)), the task has 10 labels`,
    );
  });

  test('the number of ids must match the number of rows', async () => {
    const file = writeNpy({ shape: [3, 1], data: float32Data([1, 2, 3]) });
    const ids = writeIds(['a', 'b']);
    const { rows, error } = await failure(readLogits(file, { numClasses: 1, idsFile: ids }));
    assert.equal(error.message, `${ids}: has 2 ids but ${file} has 3 rows`);
    assert.deepEqual(rows, []);
  });

  test('a blank line among the ids', async () => {
    const file = writeNpy({ shape: [3, 1], data: float32Data([1, 2, 3]) });
    const ids = writeIds(['a', '', 'c']);
    assert.equal(
      await errorOf(readLogits(file, { numClasses: 1, idsFile: ids })),
      `${ids}:2: empty id (one item id per line, in the order of the .npy rows)`,
    );
  });

  test('NaN in row 2 stops after row 1', async () => {
    const file = writeNpy({ shape: [3, 2], data: float32Data([1, 2, 3, NaN, 5, 6]) });
    const ids = writeIds(['a', 'b', 'c']);
    const { rows, error } = await failure(readLogits(file, { numClasses: 2, idsFile: ids }));
    assert.equal(error.message, `${file}:2: logits[1] is not finite (NaN)`);
    assert.deepEqual(
      rows.map((r) => r.ref),
      [{ id: 'a' }],
    );
  });

  test('infinity in float16', async () => {
    const file = writeNpy({ descr: '>f2', shape: [1, 2], data: float16Data([0x3c00, 0xfc00], false) });
    const ids = writeIds(['a']);
    assert.equal(await errorOf(readLogits(file, { numClasses: 2, idsFile: ids })), `${file}:1: logits[1] is not finite (-Infinity)`);
  });

  test('a truncated file, through readLogits', async () => {
    const file = writeNpy({ shape: [4, 2], data: float32Data([1, 2, 3, 4, 5]) });
    const ids = writeIds(['a', 'b', 'c', 'd']);
    const { rows, error } = await failure(readLogits(file, { numClasses: 2, idsFile: ids }));
    assert.equal(error.message, `${file}:3: file ends early (expected 4 rows of 2 float32)`);
    assert.deepEqual(rows, []);
  });

  test('100,000 × 100 float32 streams quickly', async (t) => {
    const [n, c] = [100_000, 100];
    const values = new Float32Array(n * c);
    for (let r = 0; r < n; r++) for (let j = 0; j < c; j++) values[r * c + j] = (r % 1000) + j / 128;
    const file = writeNpy({ shape: [n, c], data: new Uint8Array(values.buffer) });
    const ids = write('ids.txt', Array.from({ length: n }, (_, i) => `item${i}`).join('\n') + '\n');
    const started = performance.now();
    let count = 0;
    let last: LogitsRow | undefined;
    for await (const row of readLogits(file, { numClasses: c, idsFile: ids })) {
      count++;
      last = row;
    }
    t.diagnostic(`read ${count} rows in ${Math.round(performance.now() - started)} ms`);
    assert.equal(count, n);
    assert.deepEqual(last?.ref, { id: `item${n - 1}` });
    assert.equal(last?.line, n);
    assert.equal(last?.logits[99], 999 + 99 / 128);
  });
});

describe('readLogits from JSONL', () => {
  test('rows by id, numeric ids as text', async () => {
    const file = writeJsonl([{ id: 'a', logits: [1, 2, 3] }, '', { id: 7, logits: [-1.5, 0, 1e-3] }]);
    const rows = await collect(readLogits(file, { numClasses: 3 }));
    assert.deepEqual(
      rows.map((r) => ({ ...r, logits: Array.from(r.logits) })),
      [
        { ref: { id: 'a' }, logits: [1, 2, 3], file, line: 1 },
        { ref: { id: '7' }, logits: [-1.5, 0, Math.fround(1e-3)], file, line: 3 },
      ],
    );
  });

  test('rows by text; the id wins when both are given', async () => {
    const file = writeJsonl([
      { text: 'a fine day', logits: [0, 1] },
      { id: 'x', text: 'ignored', logits: [1, 0] },
      { id: '', text: 'empty id counts as none', logits: [1, 1] },
    ]);
    const rows = await collect(readLogits(file, { numClasses: 2 }));
    assert.deepEqual(
      rows.map((r) => r.ref),
      [{ text: 'a fine day' }, { id: 'x' }, { text: 'empty id counts as none' }],
    );
  });

  test('.ndjson too', async () => {
    const file = write('logits.ndjson', '{"id": "a", "logits": [1]}\n');
    assert.equal((await collect(readLogits(file, { numClasses: 1 }))).length, 1);
  });

  const badRows: Array<[string, Record<string, unknown> | string, string]> = [
    ['invalid JSON', '{"id": "b", "logits": [1, 2, 3', 'invalid JSON: '],
    ['not an object', '[1, 2, 3]', 'invalid JSON: expected an object, got an array'],
    ['neither id nor text', { logits: [1, 2, 3] }, 'the row has neither "id" nor "text"'],
    ['null id and text', { id: null, text: null, logits: [1, 2, 3] }, 'the row has neither "id" nor "text"'],
    ['a boolean id', { id: true, logits: [1, 2, 3] }, '"id" must be a string or a number'],
    ['a text that is not a string', { text: 5, logits: [1, 2, 3] }, '"text" must be a string'],
    ['an empty text', { text: '  ', logits: [1, 2, 3] }, 'empty text'],
    ['logits missing', { id: 'b' }, 'missing "logits"'],
    ['logits null', { id: 'b', logits: null }, 'missing "logits"'],
    ['logits not an array', { id: 'b', logits: '1,2,3' }, '"logits" must be an array of numbers'],
    ['logits an object', { id: 'b', logits: { 0: 1 } }, '"logits" must be an array of numbers'],
    ['too few', { id: 'b', logits: [1, 2] }, 'has 2 logits, the task has 3 labels'],
    ['too many', { id: 'b', logits: [1, 2, 3, 4] }, 'has 4 logits, the task has 3 labels'],
    ['a "NaN" string', { id: 'b', logits: [1, 'NaN', 3] }, 'logits[1] is not a number ("NaN")'],
    ['a null logit', { id: 'b', logits: [1, 2, null] }, 'logits[2] is not a number (null)'],
    ['a nested array', { id: 'b', logits: [[1], 2, 3] }, 'logits[0] is not a number ([1])'],
    ['Infinity from 1e999', '{"id": "b", "logits": [1, 1e999, 3]}', 'logits[1] is not finite (Infinity)'],
    ['-Infinity from -1e999', '{"id": "b", "logits": [-1e999, 2, 3]}', 'logits[0] is not finite (-Infinity)'],
    ['beyond float32', { id: 'b', logits: [1, 2, 1e300] }, 'logits[2] is out of float32 range (1e+300)'],
  ];

  for (const [name, bad, reason] of badRows) {
    test(`error: ${name}, with file and line`, async () => {
      // The bad row is on line 3, after a good row and a blank line.
      const file = writeJsonl([{ id: 'a', logits: [1, 2, 3] }, '', bad, { id: 'c', logits: [1, 2, 3] }]);
      const { rows, error } = await failure(readLogits(file, { numClasses: 3 }));
      assert.equal(error.file, file);
      assert.equal(error.line, 3);
      if (reason.endsWith(': ')) assert.ok(error.message.startsWith(`${file}:3: ${reason}`), error.message);
      else assert.equal(error.message, `${file}:3: ${reason}`);
      assert.deepEqual(
        rows.map((r) => r.ref),
        [{ id: 'a' }],
      );
    });
  }

  test('an ids file is refused for JSONL', async () => {
    const file = writeJsonl([{ id: 'a', logits: [1] }]);
    const ids = writeIds(['a']);
    assert.equal(
      await errorOf(readLogits(file, { numClasses: 1, idsFile: ids })),
      `${ids}: an ids file is only used with .npy logits; ${file} names its items itself`,
    );
  });
});

describe('readLogits files', () => {
  test('an unknown extension', async () => {
    const file = write('logits.csv', 'id,logits\n');
    assert.equal(
      await errorOf(readLogits(file, { numClasses: 1 })),
      `${file}: unsupported logits file type ".csv" (expected .jsonl, .ndjson or .npy)`,
    );
  });

  test('a missing file', async () => {
    const file = path.join(tmp, 'missing.jsonl');
    assert.equal(await errorOf(readLogits(file, { numClasses: 1 })), `${file}: cannot read file (ENOENT)`);
  });

  test('a missing ids file', async () => {
    const file = writeNpy({ shape: [1, 1], data: float32Data([1]) });
    const ids = path.join(tmp, 'missing-ids.txt');
    assert.equal(await errorOf(readLogits(file, { numClasses: 1, idsFile: ids })), `${ids}: cannot read ids file (ENOENT)`);
  });

  test('stopping early closes the .npy file', { skip: !fs.existsSync('/proc/self/fd') && 'needs /proc' }, async () => {
    const file = writeNpy({ shape: [3000, 4], data: new Uint8Array(3000 * 16) });
    const ids = write('ids.txt', Array.from({ length: 3000 }, (_, i) => `${i}`).join('\n'));
    const before = fs.readdirSync('/proc/self/fd').length;
    for await (const row of readLogits(file, { numClasses: 4, idsFile: ids })) if (row.line === 10) break;
    assert.equal(fs.readdirSync('/proc/self/fd').length, before);
  });
});
