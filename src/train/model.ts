import { join } from 'node:path';
import { DistilleryError } from '../errors.ts';
import { readItems } from '../input/read.ts';
import { decodePixels } from '../input/image.ts';
import type { ItemInput } from '../input/types.ts';
import { DEFAULT_FIELDS, type FieldOptions } from '../input/types.ts';
import type { Task } from '../task/task.ts';
import type { LogitsRow } from '../whitebox/read-logits.ts';
import { tf } from './backend.ts';
import { toPixels, type Dataset } from './data.ts';
import { loadWeights, MODEL_FILE, WEIGHTS_FILE } from './io.ts';
import { studentFromWeights, type Student } from './models/index.ts';
import { batchInput, predictProbs, type SavedModelSpec } from './trainer.ts';

export interface LoadedModel {
  dir: string;
  spec: SavedModelSpec;
  student: Student;
}

/** A trained student from its folder (model.json + weights.bin), on the current backend. */
export async function loadModel(dir: string): Promise<LoadedModel> {
  const { spec, tensors } = await loadWeights<SavedModelSpec>(dir);
  if (!spec?.student || !Array.isArray(spec.labels)) throw new DistilleryError(`${join(dir, MODEL_FILE)}: not a distillery student (no student spec or labels)`);
  const student = studentFromWeights(spec.student, tensors);
  tf.dispose(Object.values(tensors));
  return { dir, spec, student };
}

export function modelFiles(dir: string): string[] {
  return [join(dir, MODEL_FILE), join(dir, WEIGHTS_FILE)];
}

/** Class probabilities for dataset items, `batchSize` at a time. */
export async function* predictBatches(m: LoadedModel, ds: Pick<Dataset, 'pixels' | 'texts' | 'preprocess' | 'n'>, batchSize = 256): AsyncGenerator<{ start: number; probs: Float32Array; logprobs: Float32Array }> {
  for (let s = 0; s < ds.n; s += batchSize) {
    const idx = Array.from({ length: Math.min(batchSize, ds.n - s) }, (_, k) => s + k);
    const x = batchInput(ds as Dataset, m.student.spec, idx);
    const probs = tf.tidy(() => predictProbs(m.student.forward(x, { training: false })));
    const p = (await probs.data()) as Float32Array;
    probs.dispose();
    if (x instanceof tf.Tensor) x.dispose();
    yield { start: s, probs: p, logprobs: p.map((v) => Math.log(Math.max(v, 1e-30))) };
  }
}

/**
 * A local model as a white-box teacher: its log-probabilities for every item of
 * a dataset, as logits rows for the ingest (log-probabilities are logits up to
 * a constant, so the trainer's temperature applies to them as to any logits).
 */
export async function* modelLogitsRows(m: LoadedModel, ds: Dataset): AsyncGenerator<LogitsRow> {
  const c = m.spec.labels.length;
  for await (const { start, logprobs } of predictBatches(m, ds)) {
    for (let k = 0; k * c < logprobs.length; k++) {
      const i = start + k;
      yield { ref: { id: ds.ids[i] }, logits: logprobs.slice(k * c, (k + 1) * c), file: m.dir, line: i + 1 };
    }
  }
}

/** The task a saved model was trained on, as far as reading new inputs needs it. */
export function modelTask(m: LoadedModel): Task {
  const input = m.spec.preprocess.input;
  return { name: m.spec.task, labels: m.spec.labels, input, path: join(m.dir, MODEL_FILE), template: input === 'text' ? '{{text}}' : 'image', version: '' };
}

/** Read an input file (JSONL, CSV, TSV or an image folder) into what the model takes. */
export async function readInputs(m: LoadedModel, path: string, fields: FieldOptions = DEFAULT_FIELDS): Promise<{ items: ItemInput[]; ds: Pick<Dataset, 'pixels' | 'texts' | 'preprocess' | 'n'> }> {
  const items: ItemInput[] = [];
  for await (const it of readItems(path, modelTask(m), fields)) items.push(it);
  const pre = m.spec.preprocess;
  if (pre.input === 'text') return { items, ds: { n: items.length, texts: items.map((it) => String(it.fields.text)), preprocess: pre } };
  const pixels = toPixels(
    items.map((it) => decodePixels(it.image!.bytes)),
    pre.image!,
    items.map((it) => it.id),
  );
  return { items, ds: { n: items.length, pixels, preprocess: pre } };
}
