/**
 * Hashed word and word-bigram features: how every text student (fasttext, and logreg and mlp on a
 * text task) turns a text into the ids of the table rows it averages. One module, so that the three
 * students of a text task see exactly the same features, and a saved model's ids stay valid at
 * inference (the settings travel in its spec: `buckets`, `bigrams`).
 *
 * The hashing trick (Weinberger et al. 2009, as in fastText) puts words and bigrams in one table of
 * `buckets` rows: no vocabulary to build or store, at the cost of occasional collisions.
 */
import { fnv1a, positiveInt } from './params.ts';
import type { TextBatch } from './types.ts';

/** How a text student hashes its input; saved in its spec. */
export interface TextFeatures {
  /** Rows of the hashed table, e.g. 2^18. */
  buckets: number;
  /** Also hash each pair of consecutive words as "w1 w2". Default true. */
  bigrams?: boolean;
}

export interface HashOptions {
  /** Also hash each pair of consecutive words as "w1 w2". Default true. */
  bigrams?: boolean;
}

/** Lowercase, then split on runs of anything that is not a Unicode letter or digit. */
export function words(text: string): string[] {
  return text
    .toLowerCase()
    .split(/[^\p{L}\p{N}]+/u)
    .filter((w) => w.length > 0);
}

/**
 * Bucket ids of a text's words (in order), then of its bigrams "w1 w2":
 * FNV-1a (32-bit, over UTF-8) modulo `buckets`. Deterministic across runs and
 * machines, so ids computed at training time stay valid at inference.
 * Repeated words give repeated ids: the bag mean then weights them by count, as fastText does.
 */
export function hashTokens(text: string, buckets: number, opts: HashOptions = {}): number[] {
  positiveInt('hashTokens buckets', buckets);
  const ws = words(text);
  const ids = ws.map((w) => fnv1a(w) % buckets);
  if (opts.bigrams ?? true) {
    for (let i = 0; i + 1 < ws.length; i++) ids.push(fnv1a(`${ws[i]} ${ws[i + 1]}`) % buckets);
  }
  return ids;
}

/** The input a text student expects, hashed the way its spec says. */
export function textBatch(texts: readonly string[], f: TextFeatures): TextBatch {
  return { bags: texts.map((t) => hashTokens(t, f.buckets, { bigrams: f.bigrams ?? true })) };
}

/**
 * A student spec's text features, or null for a student of images. Structural (any spec with
 * `buckets` reads text) so that this module needs no student type: fasttext always has them,
 * logreg and mlp when built for a text task.
 */
export function textFeaturesOf(spec: { kind: string; buckets?: number; bigrams?: boolean }): Required<TextFeatures> | null {
  return spec.buckets === undefined ? null : { buckets: spec.buckets, bigrams: spec.bigrams ?? true };
}

/** A key naming the hashing, for caches of hashed bags. */
export function featuresKey(f: TextFeatures): string {
  return `${f.buckets}:${f.bigrams ?? true}`;
}

/** A TextBatch rather than a tensor (a tensor has no `bags`). */
export function isTextBatch(x: unknown): x is TextBatch {
  return typeof x === 'object' && x !== null && Array.isArray((x as TextBatch).bags);
}
