/**
 * Saving and loading models from Node on every backend.
 *
 * tfjs's `file://` handler exists only with tfjs-node, which we cannot count on (it downloads
 * libtensorflow at install time). Two APIs, one layout (`dir/model.json` + `dir/weights.bin`):
 *
 * - `saveHandler(dir)` / `loadHandler(dir)`: a `tf.io.IOHandler` for Keras-style layers models,
 *   writing tfjs's own model.json (topology + `weightsManifest`), so the files also load in
 *   tfjs-node's `file://` or a browser.
 * - `saveWeights(dir, spec, vars)` / `loadWeights(dir)`: for our custom students, a JSON spec
 *   (whatever the model needs to rebuild itself) plus named tensors.
 *
 * Crash safety: each file is written to a temporary name, fsynced and renamed, so neither file
 * is ever half-written. weights.bin is renamed first and model.json last; model.json records
 * the sha256 of weights.bin, so a crash between the two renames (new weights, old model.json)
 * is detected on load instead of silently pairing mismatched files.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { endianness } from 'node:os';
import { join } from 'node:path';
import { DistilleryError, InputError } from '../errors.ts';
import { tf } from './backend.ts';

export const MODEL_FILE = 'model.json';
export const WEIGHTS_FILE = 'weights.bin';
export const MODEL_FORMAT = 'distillery-model';
export const MODEL_VERSION = 1;

/** Both are 4-byte little-endian in weights.bin; other dtypes have no use in our students. */
export type SavedDtype = 'float32' | 'int32';

/** One tensor in weights.bin; offset and length are in BYTES. */
export interface WeightEntry {
  name: string;
  shape: number[];
  dtype: SavedDtype;
  offset: number;
  length: number;
}

export interface DistilleryModelJson<S = unknown> {
  format: typeof MODEL_FORMAT;
  version: typeof MODEL_VERSION;
  spec: S;
  weights: WeightEntry[];
  /** sha256 (hex) of weights.bin: catches a weights.bin from another save. */
  sha256: string;
}

const HOST_LE = endianness() === 'LE';

// ---------------------------------------------------------------------------------------
// Custom models: a spec plus named tensors

/**
 * Write `dir/weights.bin` (every tensor, float32/int32 little-endian, in the order of `vars`)
 * and `dir/model.json` = {format, version, spec, weights, sha256}. Creates `dir` if needed.
 * Async because reading a tensor's values is async on the wasm and GPU backends.
 */
export async function saveWeights(dir: string, spec: object, vars: Record<string, tf.Tensor>): Promise<DistilleryModelJson> {
  const weights: WeightEntry[] = [];
  const chunks: Buffer[] = [];
  let offset = 0;
  for (const [name, tensor] of Object.entries(vars)) {
    const bytes = littleEndianBytes(name, await tensor.data());
    weights.push({ name, shape: [...tensor.shape], dtype: tensor.dtype as SavedDtype, offset, length: bytes.length });
    chunks.push(bytes);
    offset += bytes.length;
  }
  const data = Buffer.concat(chunks, offset);
  const json: DistilleryModelJson = { format: MODEL_FORMAT, version: MODEL_VERSION, spec, weights, sha256: sha256(data) };
  await mkdir(dir, { recursive: true });
  await writeAtomic(join(dir, WEIGHTS_FILE), data);
  await writeAtomic(join(dir, MODEL_FILE), `${JSON.stringify(json, null, 2)}\n`);
  return json;
}

/**
 * Read what saveWeights wrote. The tensors live on the current backend and belong to the
 * caller (dispose them, or wrap them in tf.variable). The spec is returned as stored: validate
 * it where its shape is known.
 */
export async function loadWeights<S = unknown>(dir: string): Promise<{ spec: S; tensors: Record<string, tf.Tensor> }> {
  const modelPath = join(dir, MODEL_FILE);
  const json = parseDistilleryJson(modelPath, await readJson(modelPath));
  const weightsPath = join(dir, WEIGHTS_FILE);
  const data = await readExisting(weightsPath, `model.json lists ${json.weights.length} tensors`);
  checkWeightsFile(weightsPath, json, data);
  const tensors: Record<string, tf.Tensor> = {};
  for (const w of json.weights) tensors[w.name] = tf.tensor(fromLittleEndian(w, data), w.shape, w.dtype);
  return { spec: json.spec as S, tensors };
}

function littleEndianBytes(name: string, values: tf.TypedArray | string[]): Buffer {
  if (!(values instanceof Float32Array || values instanceof Int32Array)) {
    throw new DistilleryError(`saveWeights: tensor "${name}" is not float32 or int32`);
  }
  if (HOST_LE) return Buffer.from(values.buffer, values.byteOffset, values.byteLength);
  const out = Buffer.alloc(values.length * 4);
  values.forEach((v, i) => (values instanceof Float32Array ? out.writeFloatLE(v, i * 4) : out.writeInt32LE(v, i * 4)));
  return out;
}

/** A fresh, aligned copy: Buffers from readFile may start at any byte offset of a shared pool. */
function fromLittleEndian(w: WeightEntry, data: Buffer): Float32Array | Int32Array {
  const bytes = data.subarray(w.offset, w.offset + w.length);
  const float = w.dtype === 'float32';
  if (HOST_LE) {
    const copy = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length);
    return float ? new Float32Array(copy) : new Int32Array(copy);
  }
  const out = float ? new Float32Array(w.length / 4) : new Int32Array(w.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = float ? bytes.readFloatLE(i * 4) : bytes.readInt32LE(i * 4);
  return out;
}

function parseDistilleryJson(path: string, json: unknown): DistilleryModelJson {
  const j = json as Partial<DistilleryModelJson> & { modelTopology?: unknown };
  if (j?.format !== MODEL_FORMAT) {
    const hint = j?.modelTopology !== undefined ? ': this is a tfjs layers model, load it with loadHandler' : '';
    throw new InputError(path, undefined, `unknown format ${JSON.stringify(j?.format)} (expected "${MODEL_FORMAT}")${hint}`);
  }
  if (j.version !== MODEL_VERSION) {
    throw new InputError(
      path,
      undefined,
      `unsupported ${MODEL_FORMAT} version ${JSON.stringify(j.version)} (this build reads version ${MODEL_VERSION})`,
    );
  }
  if (!Array.isArray(j.weights) || typeof j.sha256 !== 'string') throw new InputError(path, undefined, 'missing "weights" or "sha256"');
  j.weights.forEach((w, i) => checkEntry(path, w, i));
  return j as DistilleryModelJson;
}

function checkEntry(path: string, w: WeightEntry, i: number): void {
  const ok =
    typeof w?.name === 'string' &&
    Array.isArray(w.shape) &&
    w.shape.every((d) => Number.isInteger(d) && d >= 0) &&
    (w.dtype === 'float32' || w.dtype === 'int32') &&
    Number.isInteger(w.offset) &&
    w.offset >= 0 &&
    w.length === 4 * w.shape.reduce((a, b) => a * b, 1);
  if (!ok) throw new InputError(path, undefined, `weights[${i}] (${JSON.stringify(w?.name)}) is malformed: ${JSON.stringify(w)}`);
}

function checkWeightsFile(path: string, json: DistilleryModelJson, data: Buffer): void {
  const expected = json.weights.reduce((end, w) => Math.max(end, w.offset + w.length), 0);
  if (data.length !== expected) {
    throw new InputError(path, undefined, `size mismatch: model.json expects ${expected} bytes, the file has ${data.length}`);
  }
  if (sha256(data) !== json.sha256) {
    throw new InputError(
      path,
      undefined,
      'does not match model.json (sha256 differs): a save was interrupted, or the files come from different saves',
    );
  }
}

// ---------------------------------------------------------------------------------------
// Keras-style layers models: a tf.io.IOHandler

/** `model.save(saveHandler(dir))`: tfjs's model.json + one weights.bin shard. */
export function saveHandler(dir: string): tf.io.IOHandler {
  return {
    save: async (artifacts: tf.io.ModelArtifacts): Promise<tf.io.SaveResult> => {
      if (artifacts.modelTopology instanceof ArrayBuffer) {
        throw new DistilleryError('saveHandler: binary (GraphDef) model topologies are not supported, only JSON ones');
      }
      const data = Buffer.from(tf.io.CompositeArrayBuffer.join(artifacts.weightData ?? []));
      const modelJson = {
        modelTopology: artifacts.modelTopology,
        format: artifacts.format,
        generatedBy: artifacts.generatedBy,
        convertedBy: artifacts.convertedBy,
        trainingConfig: artifacts.trainingConfig,
        signature: artifacts.signature,
        userDefinedMetadata: artifacts.userDefinedMetadata,
        modelInitializer: artifacts.modelInitializer,
        initializerSignature: artifacts.initializerSignature,
        weightsManifest: [{ paths: [`./${WEIGHTS_FILE}`], weights: artifacts.weightSpecs ?? [] }],
      };
      await mkdir(dir, { recursive: true });
      await writeAtomic(join(dir, WEIGHTS_FILE), data);
      await writeAtomic(join(dir, MODEL_FILE), JSON.stringify(modelJson));
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
    },
  };
}

/** `tf.loadLayersModel(loadHandler(dir))`: reads tfjs's model.json and its weight shards. */
export function loadHandler(dir: string): tf.io.IOHandler {
  return {
    load: async (): Promise<tf.io.ModelArtifacts> => {
      const modelPath = join(dir, MODEL_FILE);
      const json = (await readJson(modelPath)) as tf.io.ModelJSON & { format?: string };
      if (json?.format === MODEL_FORMAT)
        throw new InputError(modelPath, undefined, `a ${MODEL_FORMAT} (custom student): load it with loadWeights`);
      if (json?.modelTopology === undefined) throw new InputError(modelPath, undefined, 'not a tfjs model.json: no "modelTopology"');
      return tf.io.getModelArtifactsForJSON(json, (manifest) => readShards(dir, modelPath, manifest));
    },
  };
}

async function readShards(
  dir: string,
  modelPath: string,
  manifest: tf.io.WeightsManifestConfig,
): Promise<[tf.io.WeightsManifestEntry[], ArrayBuffer]> {
  const specs = tf.io.getWeightSpecs(manifest);
  const paths = manifest.flatMap((group) => group.paths.map((p) => join(dir, p)));
  const shards = await Promise.all(paths.map((p) => readExisting(p, `listed in ${modelPath}`)));
  const data = Buffer.concat(shards);
  const expected = weightSpecBytes(specs);
  if (expected !== undefined && expected !== data.length) {
    throw new InputError(
      paths.join(', '),
      undefined,
      `size mismatch: ${modelPath} expects ${expected} bytes of weights, found ${data.length}`,
    );
  }
  return [specs, data.buffer.slice(data.byteOffset, data.byteOffset + data.length)];
}

const DTYPE_BYTES: Record<string, number> = { float32: 4, int32: 4, bool: 1, complex64: 8, uint8: 1, uint16: 2, float16: 2 };

/** Bytes the specs need, or undefined when that is not knowable up front (string tensors). */
function weightSpecBytes(specs: tf.io.WeightsManifestEntry[]): number | undefined {
  let total = 0;
  for (const s of specs) {
    const per = DTYPE_BYTES[s.quantization?.dtype ?? s.dtype];
    if (per === undefined) return undefined;
    total += per * s.shape.reduce((a, b) => a * b, 1);
  }
  return total;
}

// ---------------------------------------------------------------------------------------
// Files

/** Temp name, fsync, rename: readers see the old file or the new one, never a prefix. */
async function writeAtomic(path: string, data: Buffer | string): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    const fh = await open(tmp, 'w');
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

async function readExisting(path: string, context: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new InputError(path, undefined, `missing (${context})`);
    throw err;
  }
}

async function readJson(path: string): Promise<unknown> {
  const text = (await readExisting(path, 'no saved model in this directory')).toString('utf8');
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new InputError(path, undefined, `not valid JSON (${(err as Error).message})`);
  }
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}
