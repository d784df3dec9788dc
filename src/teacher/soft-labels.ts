/**
 * Soft labels from the teacher's token log-probabilities.
 *
 * The teacher answers `{"label": "<one of the labels>"}` under a strict JSON
 * schema, with `logprobs: true, top_logprobs: 20`. We turn the candidates the
 * API reports into a probability for every class:
 *
 * 1. Concatenate the generated tokens' bytes and parse the JSON far enough to
 *    find the byte offset where the string value of the top-level `label` key
 *    starts. Find the token p whose bytes contain that offset; `pre` is the part
 *    of token p before it (e.g. `"` when a token is `"b`).
 * 2. At p, every top candidate whose bytes start with `pre` proposes the
 *    fragment after `pre`, with probability exp(logprob). A label l is compared
 *    as its JSON-escaped text plus the closing quote (`billing"`); a fragment is
 *    consistent with l when one of the two is a prefix of the other (so
 *    `billing"}` still counts). Comparison is on UTF-8 bytes, so tokens that
 *    split a character work.
 * 3. A candidate consistent with one label gives it its mass; with none, it is
 *    ignored. A candidate consistent with several labels (a shared first token
 *    such as `bug` for "bug report" / "bug fix") splits its mass by the
 *    distribution over those labels at the next position, computed the same
 *    way, if it is the token that was actually generated; otherwise (no later
 *    positions to look at, or they say nothing about these labels) evenly.
 * 4. At each position the mass outside the top list, 1 - sum of the top
 *    probabilities, is shared evenly by the classes that got no mass there
 *    (the result is then `sparse`), and dropped if every class got some. The
 *    result is normalised to sum to 1.
 * 5. If no class gets mass from any candidate, the answer is not a known label:
 *    SoftLabelError.
 *
 * The generated token is added to the candidates when the top list lacks it
 * (possible when sampling with temperature > 0): its probability is known.
 */

/** One alternative at a position, in the OpenAI `logprobs.content[].top_logprobs` format. */
export interface TopLogprob {
  token: string;
  logprob: number;
  /** UTF-8 bytes of the token; `token` is garbled when it holds part of a character. */
  bytes?: number[] | null;
}

/** One generated token, in the OpenAI `logprobs.content[]` format. */
export interface TokenLogprob extends TopLogprob {
  top_logprobs: TopLogprob[];
}

export interface SoftLabel {
  /** Probability for every class, in the order of `labels`; sums to 1. */
  probs: number[];
  /** True when some classes were never seen among the candidates and share leftover mass evenly. */
  sparse: boolean;
  /** Number of classes that got mass from actual candidates. */
  seen: number;
}

/** The label's value cannot be found in the answer, or no candidate names a known label. */
export class SoftLabelError extends Error {
  override name = 'SoftLabelError';
}

export function softLabelFromLogprobs(tokens: TokenLogprob[], labels: string[], field = 'label'): SoftLabel {
  if (tokens.length === 0) throw new SoftLabelError('the answer has no tokens');
  const answer: Answer = {
    tokens,
    spans: tokens.map(bytesOf),
    targets: labels.map((l) => Buffer.from(JSON.stringify(l).slice(1), 'utf8')),
  };
  const valueStart = findStringValueStart(Buffer.concat(answer.spans), field);
  const { position, pre } = locate(answer.spans, valueStart);

  const { mass, seen } = massAt(
    answer,
    position,
    pre,
    EMPTY,
    labels.map((_, i) => i),
  );
  const seenCount = seen.filter(Boolean).length;
  if (seenCount === 0) {
    throw new SoftLabelError(`no candidate for "${field}" is one of the task's labels`);
  }
  const total = sum(mass);
  return { probs: mass.map((m) => m / total), sparse: seenCount < labels.length, seen: seenCount };
}

interface Answer {
  tokens: TokenLogprob[];
  /** Bytes of each generated token. */
  spans: Buffer[];
  /** Per label: its bytes as they appear inside the JSON string, plus the closing quote. */
  targets: Buffer[];
}

/** Mass per class of a considered subset (same order), and whether it came from real candidates. */
interface Mass {
  mass: number[];
  seen: boolean[];
}

const EMPTY = Buffer.alloc(0);

/**
 * Mass over the labels `subset` (indices into the labels) at `position`, where
 * `consumed` bytes of the value were already generated and `pre` is the part of
 * this position's tokens that precedes the value. Leftover mass is shared, not normalised.
 */
function massAt(answer: Answer, position: number, pre: Buffer, consumed: Buffer, subset: number[]): Mass {
  const mass = subset.map(() => 0);
  const seen = subset.map(() => false);
  const generated = answer.spans[position];
  const candidates = candidatesAt(answer.tokens[position], generated);

  for (const c of candidates) {
    if (c.q === 0 || !startsWith(c.bytes, pre)) continue;
    const sofar = Buffer.concat([consumed, c.bytes.subarray(pre.length)]);
    const matching = subset.flatMap((label, k) => (consistent(sofar, answer.targets[label]) ? [k] : []));
    if (matching.length === 0) continue;
    // Only the generated token has later positions that can tell the labels apart.
    const split =
      matching.length > 1 && c.bytes.equals(generated) && position + 1 < answer.tokens.length
        ? conditionalAt(
            answer,
            position + 1,
            sofar,
            matching.map((k) => subset[k]),
          )
        : undefined;
    matching.forEach((k, j) => {
      mass[k] += c.q * (split ? split.probs[j] : 1 / matching.length);
      seen[k] ||= split ? split.seen[j] : true;
    });
  }

  shareLeftover(mass, 1 - sum(candidates.map((c) => c.q)));
  return { mass, seen };
}

/** Distribution over `subset` at `position`, summing to 1; undefined when no candidate there names one of them. */
function conditionalAt(
  answer: Answer,
  position: number,
  consumed: Buffer,
  subset: number[],
): { probs: number[]; seen: boolean[] } | undefined {
  const { mass, seen } = massAt(answer, position, EMPTY, consumed, subset);
  if (!seen.some(Boolean)) return undefined;
  const total = sum(mass);
  return { probs: mass.map((m) => m / total), seen };
}

/** Tokens outside the top list may be any class: give their mass to the classes that got none. */
function shareLeftover(mass: number[], leftover: number): void {
  const empty = mass.flatMap((m, k) => (m === 0 ? [k] : []));
  if (empty.length === 0 || leftover <= 0) return;
  for (const k of empty) mass[k] += leftover / empty.length;
}

function candidatesAt(token: TokenLogprob, generated: Buffer): { bytes: Buffer; q: number }[] {
  const candidates = (token.top_logprobs ?? []).map((c) => ({ bytes: bytesOf(c), q: Math.exp(c.logprob) }));
  if (!candidates.some((c) => c.bytes.equals(generated))) {
    candidates.push({ bytes: generated, q: Math.exp(token.logprob) });
  }
  return candidates;
}

/** The token position whose bytes contain `offset`, and its bytes before it. */
function locate(spans: Buffer[], offset: number): { position: number; pre: Buffer } {
  let start = 0;
  for (const [position, span] of spans.entries()) {
    if (offset < start + span.length) return { position, pre: span.subarray(0, offset - start) };
    start += span.length;
  }
  throw new SoftLabelError('the answer ends where the label should start');
}

function bytesOf(t: TopLogprob): Buffer {
  return t.bytes ? Buffer.from(t.bytes) : Buffer.from(t.token, 'utf8');
}

/** The fragment can still become, or has just completed, this label (it may run past the closing quote). */
function consistent(sofar: Buffer, target: Buffer): boolean {
  return startsWith(target, sofar) || startsWith(sofar, target);
}

function startsWith(bytes: Buffer, prefix: Buffer): boolean {
  return bytes.length >= prefix.length && bytes.subarray(0, prefix.length).equals(prefix);
}

function sum(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0);
}

// --- Just enough JSON to find a top-level key's string value. Structural
// characters are ASCII, so scanning bytes is safe with UTF-8 content.

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COLON = 0x3a;
const COMMA = 0x2c;
const OPEN = new Set([0x7b, 0x5b]); // { [
const CLOSE = new Set([0x7d, 0x5d]); // } ]
const WHITESPACE = new Set([0x20, 0x09, 0x0a, 0x0d]);

/** Byte offset just after the opening quote of the string value of top-level key `field`. */
function findStringValueStart(json: Buffer, field: string): number {
  const missing = () => new SoftLabelError(`the answer has no string value for top-level "${field}"`);
  let i = skipWhitespace(json, 0);
  if (json[i] !== 0x7b) throw missing();
  i++;
  for (;;) {
    i = skipWhitespace(json, i);
    if (json[i] !== QUOTE) throw missing(); // `}` or truncated: no more keys
    const keyEnd = endOfString(json, i);
    const key = parseKey(json.subarray(i, keyEnd));
    i = skipWhitespace(json, keyEnd);
    if (json[i] !== COLON) throw missing();
    i = skipWhitespace(json, i + 1);
    if (key === field) {
      if (json[i] !== QUOTE) throw missing();
      return i + 1;
    }
    i = skipWhitespace(json, endOfValue(json, i));
    if (json[i] !== COMMA) throw missing();
    i++;
  }
}

function parseKey(raw: Buffer): string {
  try {
    return JSON.parse(raw.toString('utf8')) as string;
  } catch {
    throw new SoftLabelError(`the answer is not valid JSON near ${raw.toString('utf8')}`);
  }
}

function skipWhitespace(json: Buffer, i: number): number {
  while (i < json.length && WHITESPACE.has(json[i])) i++;
  return i;
}

/** Offset just past the string starting at `i` (its opening quote). */
function endOfString(json: Buffer, i: number): number {
  for (let j = i + 1; j < json.length; j++) {
    if (json[j] === BACKSLASH) j++;
    else if (json[j] === QUOTE) return j + 1;
  }
  throw new SoftLabelError('the answer ends inside a JSON string');
}

/** Offset just past the value starting at `i`: a string, an object/array, or a bare literal. */
function endOfValue(json: Buffer, i: number): number {
  if (json[i] === QUOTE) return endOfString(json, i);
  if (OPEN.has(json[i])) {
    let depth = 0;
    for (let j = i; j < json.length;) {
      if (json[j] === QUOTE) {
        j = endOfString(json, j);
        continue;
      }
      if (OPEN.has(json[j])) depth++;
      else if (CLOSE.has(json[j]) && --depth === 0) return j + 1;
      j++;
    }
    throw new SoftLabelError('the answer ends inside a JSON value');
  }
  let j = i;
  while (j < json.length && json[j] !== COMMA && !CLOSE.has(json[j]) && !WHITESPACE.has(json[j])) j++;
  return j;
}
