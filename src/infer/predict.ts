/**
 * Predicting with a student: class probabilities for dataset items, batch by batch, with the
 * prediction rule the student was trained for (softmax of the class head, or its distiller's,
 * e.g. DeiT's mean of both heads).
 */
import type { LogitsRow } from '../whitebox/read-logits.ts';
import { tf } from '../train/backend.ts';
import { batchInput, disposeInput, type BatchSource, type Dataset } from '../train/data.ts';
import { findDistiller } from '../train/distill/index.ts';
import type { ForwardOut, Student } from '../train/models/index.ts';
import type { LoadedModel, SavedModelSpec } from './model.ts';

/** Output → class probabilities [B, C]. */
export type PredictRule = (out: ForwardOut) => tf.Tensor2D;

export const softmaxRule: PredictRule = (out) => tf.softmax(out.logits);

/** The rule a distiller name stands for (null: the class head). */
export function predictRule(name: string | null): PredictRule {
  return name === null ? softmaxRule : (findDistiller(name).predict ?? softmaxRule);
}

/** A saved model's rule; models saved before the rule was recorded predicted with DeiT's mean whenever they had its head. */
export function ruleOf(spec: SavedModelSpec): PredictRule {
  if (spec.predict !== undefined) return predictRule(spec.predict);
  return spec.student.kind === 'vit' && spec.student.distillToken ? predictRule('deit') : softmaxRule;
}

/** Class probabilities of the items `idx`, row by row (idx.length × C). */
export async function predictAll(
  student: Student,
  ds: BatchSource,
  idx: number[],
  rule: PredictRule = softmaxRule,
  batchSize = 256,
): Promise<Float32Array> {
  const c = student.spec.numClasses;
  const out = new Float32Array(idx.length * c);
  for (let s = 0; s < idx.length; s += batchSize) {
    const part = idx.slice(s, s + batchSize);
    const x = batchInput(ds, student.spec, part);
    const probs = tf.tidy(() => rule(student.forward(x, { training: false })));
    out.set(await probs.data(), s * c);
    probs.dispose();
    disposeInput(x);
  }
  return out;
}

/** Class probabilities for every item of `ds`, `batchSize` at a time. */
export async function* predictBatches(
  m: LoadedModel,
  ds: BatchSource,
  batchSize = 256,
): AsyncGenerator<{ start: number; probs: Float32Array; logprobs: Float32Array }> {
  const rule = ruleOf(m.spec);
  for (let s = 0; s < ds.n; s += batchSize) {
    const idx = Array.from({ length: Math.min(batchSize, ds.n - s) }, (_, k) => s + k);
    const p = await predictAll(m.student, ds, idx, rule, batchSize);
    yield { start: s, probs: p, logprobs: p.map((v) => Math.log(Math.max(v, 1e-30))) };
  }
}

/** Index of the largest of row i of a row-major [·, c] array (the first on ties). */
export function argmaxRow(p: ArrayLike<number>, i: number, c: number): number {
  let best = 0;
  for (let k = 1; k < c; k++) if (p[i * c + k] > p[i * c + best]) best = k;
  return best;
}

/**
 * A local model as a white-box teacher: its log-probabilities for every item of a dataset, as
 * logits rows for the ingest (log-probabilities are logits up to a constant, so the trainer's
 * temperature applies to them as to any logits).
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
