import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { InputError } from '../src/errors.ts';
import { selectBackend, tf } from '../src/train/backend.ts';
import { TRAIN_BACKEND } from './train-backend.ts';
import { loadHandler, loadWeights, MODEL_FILE, saveHandler, saveWeights, WEIGHTS_FILE } from '../src/train/io.ts';

const dirs: string[] = [];
function tmpDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'distillery-io-'));
  dirs.push(dir);
  return dir;
}

before(async () => {
  await selectBackend('cpu');
});
after(async () => {
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
  await selectBackend('cpu');
});

const SPEC = { kind: 'mlp', inputs: 3, hidden: [4], classes: 2 };

function makeVars(): Record<string, tf.Tensor> {
  return {
    'layer0/w': tf.tensor2d([0.5, -1.25, 3e-8, 1e30, -0, 7], [2, 3]),
    'layer0/b': tf.tensor1d([0.1, 0.2, 0.3]),
    step: tf.tensor1d([123456789], 'int32'),
    empty: tf.zeros([0, 4]),
  };
}

async function assertSameTensors(actual: Record<string, tf.Tensor>, expected: Record<string, tf.Tensor>): Promise<void> {
  assert.deepEqual(Object.keys(actual), Object.keys(expected));
  for (const [name, t] of Object.entries(expected)) {
    const a = actual[name];
    assert.deepEqual(a.shape, t.shape, name);
    assert.equal(a.dtype, t.dtype, name);
    assert.deepEqual(Array.from(await a.data()), Array.from(await t.data()), name);
  }
}

function expectInputError(file: string, message: RegExp) {
  return (err: unknown) => {
    assert.ok(err instanceof InputError, `expected an InputError, got ${String(err)}`);
    assert.equal(err.file, file);
    assert.match(err.message, message);
    return true;
  };
}

test('saveWeights / loadWeights round trip on cpu: spec, names, shapes, dtypes and exact values', async () => {
  const dir = path.join(tmpDir(), 'nested', 'student');
  const vars = makeVars();
  await saveWeights(dir, SPEC, vars);
  assert.deepEqual(fs.readdirSync(dir).sort(), [MODEL_FILE, WEIGHTS_FILE], 'no temp files left behind');
  const json = JSON.parse(fs.readFileSync(path.join(dir, MODEL_FILE), 'utf8'));
  assert.equal(json.format, 'distillery-model');
  assert.equal(json.version, 1);
  assert.deepEqual(json.weights[0], { name: 'layer0/w', shape: [2, 3], dtype: 'float32', offset: 0, length: 24 });
  assert.equal(fs.statSync(path.join(dir, WEIGHTS_FILE)).size, 24 + 12 + 4);
  // Little-endian on disk whatever the host.
  assert.equal(fs.readFileSync(path.join(dir, WEIGHTS_FILE)).readFloatLE(4), -1.25);

  const { spec, tensors } = await loadWeights<typeof SPEC>(dir);
  assert.deepEqual(spec, SPEC);
  await assertSameTensors(tensors, vars);
});

test(`weights saved on cpu load on ${TRAIN_BACKEND} and back, with the same values`, async () => {
  const vars = makeVars();
  const fromCpu = tmpDir();
  await saveWeights(fromCpu, SPEC, vars);
  await selectBackend(TRAIN_BACKEND);
  try {
    assert.equal(tf.getBackend(), TRAIN_BACKEND);
    const onWasm = (await loadWeights(fromCpu)).tensors;
    await assertSameTensors(onWasm, vars);
    const fromWasm = tmpDir();
    await saveWeights(fromWasm, SPEC, onWasm);
    assert.deepEqual(fs.readFileSync(path.join(fromWasm, WEIGHTS_FILE)), fs.readFileSync(path.join(fromCpu, WEIGHTS_FILE)));
    await selectBackend('cpu');
    await assertSameTensors((await loadWeights(fromWasm)).tensors, vars);
  } finally {
    await selectBackend('cpu');
  }
});

function kerasModel(): tf.Sequential {
  const model = tf.sequential();
  model.add(tf.layers.dense({ units: 4, activation: 'relu', inputShape: [3] }));
  model.add(tf.layers.dense({ units: 2, activation: 'softmax' }));
  return model;
}

test('a Keras model saved through saveHandler loads through loadHandler with the same predictions', async () => {
  const dir = tmpDir();
  const model = kerasModel();
  const x = tf.tensor2d([
    [1, 2, 3],
    [-1, 0.5, 0],
  ]);
  const before = Array.from(await (model.predict(x) as tf.Tensor).data());
  const result = await model.save(saveHandler(dir));
  assert.equal(result.modelArtifactsInfo.weightDataBytes, (3 * 4 + 4 + 4 * 2 + 2) * 4);
  const json = JSON.parse(fs.readFileSync(path.join(dir, MODEL_FILE), 'utf8'));
  assert.deepEqual(json.weightsManifest[0].paths, ['./weights.bin']);

  const loaded = await tf.loadLayersModel(loadHandler(dir));
  assert.deepEqual(Array.from(await (loaded.predict(x) as tf.Tensor).data()), before);
  await selectBackend(TRAIN_BACKEND);
  try {
    const onWasm = await tf.loadLayersModel(loadHandler(dir));
    const p = Array.from(await (onWasm.predict(x) as tf.Tensor).data());
    p.forEach((v, i) => assert.ok(Math.abs(v - before[i]) < 1e-6, `${TRAIN_BACKEND} prediction ${v} vs ${before[i]}`));
  } finally {
    await selectBackend('cpu');
  }
});

test('loadWeights: missing, truncated, corrupted, mismatched and foreign files give errors naming the file', async () => {
  const missingDir = path.join(tmpDir(), 'nothing-here');
  await assert.rejects(loadWeights(missingDir), expectInputError(path.join(missingDir, MODEL_FILE), /missing/));

  const dir = tmpDir();
  const modelPath = path.join(dir, MODEL_FILE);
  const weightsPath = path.join(dir, WEIGHTS_FILE);
  await saveWeights(dir, SPEC, makeVars());
  const good = fs.readFileSync(weightsPath);

  fs.rmSync(weightsPath);
  await assert.rejects(loadWeights(dir), expectInputError(weightsPath, /missing/));

  fs.writeFileSync(weightsPath, good.subarray(0, good.length - 4));
  await assert.rejects(loadWeights(dir), expectInputError(weightsPath, /size mismatch: model.json expects 40 bytes, the file has 36/));

  const flipped = Buffer.from(good);
  flipped[5] ^= 0xff;
  fs.writeFileSync(weightsPath, flipped);
  await assert.rejects(loadWeights(dir), expectInputError(weightsPath, /sha256/));

  // A weights.bin from another save (the crash-between-renames case) is caught the same way.
  const other = tmpDir();
  await saveWeights(other, SPEC, { ...makeVars(), 'layer0/b': tf.tensor1d([9, 9, 9]) });
  fs.copyFileSync(path.join(other, WEIGHTS_FILE), weightsPath);
  await assert.rejects(loadWeights(dir), expectInputError(weightsPath, /different saves/));
  fs.writeFileSync(weightsPath, good);

  const json = JSON.parse(fs.readFileSync(modelPath, 'utf8'));
  fs.writeFileSync(modelPath, JSON.stringify({ ...json, format: 'pickle' }));
  await assert.rejects(loadWeights(dir), expectInputError(modelPath, /unknown format "pickle"/));
  fs.writeFileSync(modelPath, JSON.stringify({ ...json, version: 2 }));
  await assert.rejects(loadWeights(dir), expectInputError(modelPath, /unsupported distillery-model version 2/));
  fs.writeFileSync(modelPath, JSON.stringify({ ...json, weights: [{ ...json.weights[0], length: 8 }] }));
  await assert.rejects(loadWeights(dir), expectInputError(modelPath, /weights\[0\] \("layer0\/w"\) is malformed/));
  fs.writeFileSync(modelPath, '{"format": "distillery-mod');
  await assert.rejects(loadWeights(dir), expectInputError(modelPath, /not valid JSON/));

  // Each API points to the other when handed the other's files.
  const kerasDir = tmpDir();
  await kerasModel().save(saveHandler(kerasDir));
  await assert.rejects(
    loadWeights(kerasDir),
    expectInputError(path.join(kerasDir, MODEL_FILE), /tfjs layers model, load it with loadHandler/),
  );
  fs.writeFileSync(modelPath, JSON.stringify(json));
  await assert.rejects(tf.loadLayersModel(loadHandler(dir)), expectInputError(modelPath, /load it with loadWeights/));
});

test('loadHandler: a missing or short weights shard is an error naming it', async () => {
  const dir = tmpDir();
  const weightsPath = path.join(dir, WEIGHTS_FILE);
  await kerasModel().save(saveHandler(dir));
  const good = fs.readFileSync(weightsPath);
  fs.writeFileSync(weightsPath, good.subarray(0, 10));
  await assert.rejects(tf.loadLayersModel(loadHandler(dir)), expectInputError(weightsPath, /size mismatch/));
  fs.rmSync(weightsPath);
  await assert.rejects(tf.loadLayersModel(loadHandler(dir)), expectInputError(weightsPath, /missing/));
});

test('saving again over a model replaces it whole', async () => {
  const dir = tmpDir();
  await saveWeights(dir, SPEC, makeVars());
  const second = { w: tf.tensor1d([1, 2]) };
  await saveWeights(dir, { kind: 'other' }, second);
  const { spec, tensors } = await loadWeights(dir);
  assert.deepEqual(spec, { kind: 'other' });
  await assertSameTensors(tensors, second);
  assert.deepEqual(fs.readdirSync(dir).sort(), [MODEL_FILE, WEIGHTS_FILE]);
});
