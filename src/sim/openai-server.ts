/**
 * A local, deterministic stand-in for an OpenAI-compatible chat completions API.
 *
 * The tests (through test/fake-openai.ts) and bench-label talk to it, and `npm run sim-teacher` serves it to users
 * (scripts/sim-teacher.ts, with src/sim/gold-teacher.ts deciding the answers), through the real `openai` client over
 * real HTTP, so everything the pipeline depends on is reproduced on the wire: the
 * response shape, `logprobs.content[].top_logprobs` that agree with a known class
 * distribution, `usage`, `x-request-id`, and the ways real servers fail
 * (429/5xx with retry headers, dropped sockets, requests that never finish,
 * answers that are not JSON or not a label).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { mulberry32 as prng } from '../random.ts';

// ---------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------

export interface ChatContentPart {
  type: string;
  text?: string;
  [key: string]: unknown;
}

export interface ChatMessage {
  role: string;
  content?: string | ChatContentPart[] | null;
  [key: string]: unknown;
}

/** The request body as sent by the client. Untrusted JSON: every field may be missing or wrong. */
export interface ChatRequestBody {
  model?: string;
  messages?: ChatMessage[];
  n?: number | null;
  temperature?: number | null;
  logprobs?: boolean | null;
  top_logprobs?: number | null;
  response_format?: {
    type?: string;
    json_schema?: {
      name?: string;
      strict?: boolean;
      schema?: { properties?: { label?: { type?: string; enum?: unknown[] } } };
    };
  };
  [key: string]: unknown;
}

export interface ChatRequest {
  body: ChatRequestBody;
  headers: Record<string, string | string[] | undefined>;
  /** Set for a line of a batch job: the batch's id. */
  batchId?: string;
}

/** What a teacher decides: a class distribution (and its argmax), or a literal answer. */
export type TeacherAnswer = { label: string; probs: Record<string, number> } | { raw: string };

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export interface FakeTeacherOptions {
  /** Decide the class distribution for a request. Default: {@link defaultTeacher}. */
  teacher?: (req: ChatRequest) => TeacherAnswer;
  /** Called for every request before answering; returning a Fault makes the server misbehave for that request. */
  fault?: (req: ChatRequest, n: number /* 1-based index of this request on the server */) => Fault | undefined;
  /** Delay in ms before answering each request (default 0). */
  latencyMs?: number;
  /** Reject requests that ask for logprobs with HTTP 400 like servers that do not support them. */
  rejectLogprobs?: boolean;
  /**
   * Usage per request. Default: prompt tokens are ceil(chars/4) of all message text,
   * completion tokens the number of generated tokens over all choices.
   */
  usage?: (req: ChatRequest, contents: string[]) => { prompt_tokens: number; completion_tokens: number };
  /**
   * How each batch job behaves (the Batch API: /v1/files and /v1/batches). Default: it answers every line and is
   * `completed` at its first poll. Lines are answered by the same chat logic as live requests (teacher, fault,
   * usage, logprobs), and count in `requests` and `answered` like them.
   */
  batch?: (info: { id: string; index: number /* 1-based */; lines: number; metadata: Record<string, string> }) => BatchScript | undefined;
  /**
   * Called for every /v1/files and /v1/batches call (n: 1-based count of such calls). `status`: answer that error
   * and do nothing; `drop`: do the work, then drop the connection instead of answering (the client never learns
   * the result, as when a process dies just after the call).
   */
  apiFault?: (call: { method: string; path: string }, n: number) => ApiFault | undefined;
  /** TCP port on 127.0.0.1 (default 0: any free port). The server never binds another interface. */
  port?: number;
  /**
   * The models served. Default: any name, echoed in the answer. When given, a request for another model is refused
   * with 404 model_not_found (as vLLM and OpenAI do) and GET /v1/models lists `list`.
   */
  models?: { list: string[]; serves: (model: string) => boolean; refusal: (model: string) => string };
  /** Keep every request in `requests` (default true; a long-running server passes false, and `requests` stays empty). */
  keepRequests?: boolean;
  /** `system_fingerprint` of every answer (default fp_fake). */
  systemFingerprint?: string;
}

export type ApiFault = { kind: 'status'; status: 429 | 500 | 502 | 503 | 400 | 401 } | { kind: 'drop' };

/** The script of one batch job. Polls are `GET /v1/batches/{id}` calls. */
export interface BatchScript {
  /** Polls that still show each state (default 0: straight through to the end at the first poll). */
  validatingPolls?: number;
  inProgressPolls?: number;
  finalizingPolls?: number;
  /**
   * How the job ends: `completed` (default); `failed` (validation failed, no output, `errors` shown on the batch);
   * `expired` (the first `answered` lines are in the output file, the rest in the error file as `batch_expired`).
   */
  outcome?: 'completed' | 'failed' | 'expired';
  /** Lines answered before the job expires or is cancelled (default 0). */
  answered?: number;
  errors?: Array<{ code: string; message: string }>;
  /** A line (0-based) that fails: in the error file with this HTTP status, as a real API reports a request it refused. */
  lineError?: (
    line: { custom_id: string; body: ChatRequestBody },
    index: number,
  ) => { status: number; code?: string; message?: string } | undefined;
}

export type FakeBatchStatus = 'validating' | 'failed' | 'in_progress' | 'finalizing' | 'completed' | 'expired' | 'cancelling' | 'cancelled';

/** A batch as the fake keeps it (tests read these). */
export interface FakeBatch {
  id: string;
  index: number;
  status: FakeBatchStatus;
  input_file_id: string;
  metadata: Record<string, string>;
  /** custom_id of every line of its input file, in order. */
  customIds: string[];
  /** Size of its input file. */
  bytes: number;
  /** Polls so far (retrieve calls). */
  polls: number;
  output_file_id?: string;
  error_file_id?: string;
}

export interface FakeFile {
  id: string;
  filename: string;
  purpose: string;
  bytes: Buffer;
}

export type Fault =
  | { kind: 'status'; status: 429 | 500 | 502 | 503; headers?: Record<string, string>; body?: unknown }
  | { kind: 'drop' } // destroy the socket without answering
  | { kind: 'hang' } // never answer (until the client gives up); must not keep the server from closing
  | { kind: 'invalid-json' } // 200 with message content that is not JSON
  | { kind: 'unknown-label' }; // 200 with {"label": "<not a label>"}

export interface FakeTeacher {
  /** Base URL including /v1 (pass as `baseURL` to the openai client). */
  url: string;
  /** Every chat request received, including faulted and rejected ones. */
  requests: ChatRequest[];
  /** Number of 200 chat answers sent (what a real API would bill), batch lines included. */
  answered: number;
  /** Batch jobs created, in order. */
  batches: FakeBatch[];
  /** Uploaded and generated files by id. */
  files: Map<string, FakeFile>;
  /** Every request to /v1/files and /v1/batches: method and path. */
  apiCalls: Array<{ method: string; path: string; headers: Record<string, string | string[] | undefined> }>;
  /** Closes the server and all sockets, including hung ones. */
  close(): Promise<void>;
}

export const FAKE_MODEL = 'fake-teacher';

// ---------------------------------------------------------------------------
// Tokeniser
// ---------------------------------------------------------------------------

/** The fixed tokens around the label value of `{"label":"<value>"}`. */
const OPEN = ['{"', 'label', '":"'] as const;
const CLOSE = '"}';

/** Words longer than this are split into chunks of WORD_CHUNK characters, like BPE does with rare words. */
const MAX_WORD = 6;
const WORD_CHUNK = 4;

/**
 * Split text into word pieces: whitespace stays attached to the following word
 * (" report"), and long words are chunked ("billing" → "bill", "ing").
 * Concatenating the pieces gives back the text exactly.
 */
function wordPieces(text: string): string[] {
  const pieces: string[] = [];
  for (const match of text.matchAll(/(\s*)(\S*)/g)) {
    const [whole, lead, word] = match;
    if (whole === '') continue;
    // Chunk by code point so multi-byte characters are never split.
    const chars = Array.from(word);
    if (chars.length <= MAX_WORD) {
      pieces.push(whole);
      continue;
    }
    for (let i = 0; i < chars.length; i += WORD_CHUNK) {
      const chunk = chars.slice(i, i + WORD_CHUNK).join('');
      pieces.push(i === 0 ? lead + chunk : chunk);
    }
  }
  return pieces;
}

/** The pieces a label's value becomes inside the JSON answer (JSON-escaped, as it appears on the wire). */
function labelPieces(label: string): string[] {
  return wordPieces(JSON.stringify(label).slice(1, -1));
}

/** The label if `content` is exactly the compact answer `{"label":"..."}`, else undefined. */
function parseLabelContent(content: string): string | undefined {
  if (!content.startsWith('{"label":"')) return undefined;
  try {
    const parsed: unknown = JSON.parse(content);
    if (typeof parsed !== 'object' || parsed === null) return undefined;
    const label = (parsed as { label?: unknown }).label;
    if (typeof label !== 'string' || JSON.stringify({ label }) !== content) return undefined;
    return label;
  } catch {
    return undefined;
  }
}

/**
 * Deterministic BPE-like tokenisation of an answer. `{"label":"bug report"}` becomes
 * `{"`, `label`, `":"`, `bug`, ` report`, `"}`; anything else is split into word pieces.
 */
export function fakeTokenize(content: string): string[] {
  const label = parseLabelContent(content);
  if (label === undefined) return wordPieces(content);
  return [...OPEN, ...labelPieces(label), CLOSE];
}

// ---------------------------------------------------------------------------
// Class distributions
// ---------------------------------------------------------------------------

/** FNV-1a, 32 bit: a stable hash so answers do not change between runs. */
function hash(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

function messageText(message: ChatMessage | undefined): string {
  const content = message?.content;
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content
    .filter((part) => part?.type === 'text' && typeof part.text === 'string')
    .map((part) => part.text)
    .join('\n');
}

function messages(req: ChatRequest): ChatMessage[] {
  return Array.isArray(req.body.messages) ? req.body.messages : [];
}

/** The text the teacher classifies: the last user message. */
export function lastUserText(req: ChatRequest): string {
  const users = messages(req).filter((m) => m?.role === 'user');
  return messageText(users[users.length - 1]);
}

/** The allowed labels, from the strict json_schema response format; undefined if there are none. */
export function requestLabels(req: ChatRequest): string[] | undefined {
  const values = req.body.response_format?.json_schema?.schema?.properties?.label?.enum;
  if (!Array.isArray(values) || values.length === 0) return undefined;
  if (!values.every((v): v is string => typeof v === 'string')) return undefined;
  return values;
}

/** One label gets `top`, the others share the rest evenly. */
function peaked(labels: string[], chosen: string, top: number): Record<string, number> {
  const rest = labels.length > 1 ? (1 - top) / (labels.length - 1) : 0;
  return Object.fromEntries(labels.map((l) => [l, l === chosen ? (labels.length > 1 ? top : 1) : rest]));
}

/**
 * The default teacher: a label mentioned in the text (longest first, case-insensitive)
 * gets 0.8; otherwise a label picked by hashing the text gets 0.6.
 */
export function defaultTeacher(req: ChatRequest): TeacherAnswer {
  const labels = requestLabels(req) ?? [];
  if (labels.length === 0) return { raw: '' };
  const text = lastUserText(req).toLowerCase();
  const mentioned = [...labels].sort((a, b) => b.length - a.length).find((l) => text.includes(l.toLowerCase()));
  if (mentioned !== undefined) return { label: mentioned, probs: peaked(labels, mentioned, 0.8) };
  const hashed = labels[hash(text) % labels.length];
  return { label: hashed, probs: peaked(labels, hashed, 0.6) };
}

/** Probabilities in label order, normalised; labels the teacher did not mention get 0. */
function normalise(labels: string[], probs: Record<string, number>): number[] {
  const raw = labels.map((l) => {
    const p = probs[l];
    return typeof p === 'number' && Number.isFinite(p) && p > 0 ? p : 0;
  });
  const total = raw.reduce((a, b) => a + b, 0);
  return total > 0 ? raw.map((p) => p / total) : raw;
}

function sample(labels: string[], dist: number[], random: () => number): string | undefined {
  let r = random();
  for (let i = 0; i < labels.length; i++) {
    r -= dist[i];
    if (r < 0) return labels[i];
  }
  // Rounding can leave r a hair above 0: fall back to the last label with mass.
  for (let i = labels.length - 1; i >= 0; i--) if (dist[i] > 0) return labels[i];
  return undefined;
}

// ---------------------------------------------------------------------------
// Logprobs
// ---------------------------------------------------------------------------

interface TopLogprob {
  token: string;
  logprob: number;
  bytes: number[];
}
interface TokenLogprob extends TopLogprob {
  top_logprobs: TopLogprob[];
}

/** Class distribution behind an answer, for logprobs at the label positions. */
interface LabelDistribution {
  labels: string[];
  probs: number[]; // in label order, sums to 1 (or all 0)
  pieces: string[][]; // labelPieces of each label, computed once per request
}

/** Real APIs report -9999 rather than -Infinity for impossible tokens; JSON cannot carry -Infinity. */
const MIN_LOGPROB = -9999;
/** Structural tokens are near-certain. */
const SURE_LOGPROB = -1e-6;
/** Low-mass alternatives offered next to structural tokens, so top_logprobs look like a real model's. */
const STRUCTURAL_ALTERNATIVES: Record<string, string[]> = {
  '{"': ['{', '{\n'],
  label: ['lab', 'Label'],
  '":"': ['":', '": "'],
  '"}': ['"', '"}\n'],
};
const ALTERNATIVE_LOGPROBS = [-14.5, -16];
/** Mass given to a generated token that no label explains (e.g. the unknown-label fault). */
const OFF_DISTRIBUTION_P = 0.01;
/** Filler alternatives for free text tokens. */
const FILLER = [' the', ' a', ',', '.'];

type Candidates = Array<[token: string, logprob: number]>;

const toLogprob = (p: number) => (p > 0 ? Math.max(Math.log(p), MIN_LOGPROB) : MIN_LOGPROB);

function structuralCandidates(token: string): Candidates {
  const alternatives = (STRUCTURAL_ALTERNATIVES[token] ?? FILLER).filter((t) => t !== token).slice(0, 2);
  return [[token, SURE_LOGPROB], ...alternatives.map((t, i): [string, number] => [t, ALTERNATIVE_LOGPROBS[i]])];
}

/** Free text (non-JSON answers): a plausible, deterministic confidence per token. */
function freeTextCandidates(token: string, position: number): Candidates {
  const p = 0.55 + (0.4 * hash(`${position}:${token}`)) / 2 ** 32;
  const alternatives = FILLER.filter((t) => t !== token).slice(0, 2);
  const masses = [0.6, 0.3].map((share) => (1 - p) * share);
  return [[token, Math.log(p)], ...alternatives.map((t, i): [string, number] => [t, Math.log(masses[i])])];
}

/**
 * Next-token distribution inside the label value, given the value pieces generated
 * so far: every label that shares the prefix contributes its mass to its next piece
 * (or to the closing token if it ends here). Mass of labels sharing a token is summed,
 * and the result is conditional on the prefix. Empty if no label has this prefix.
 */
function labelCandidates(dist: LabelDistribution, prefix: string[]): Map<string, number> {
  const mass = new Map<string, number>();
  const sharing: string[] = [];
  dist.pieces.forEach((pieces, i) => {
    if (pieces.length < prefix.length || prefix.some((piece, j) => pieces[j] !== piece)) return;
    const next = pieces[prefix.length] ?? CLOSE;
    mass.set(next, (mass.get(next) ?? 0) + dist.probs[i]);
    sharing.push(next);
  });
  const total = [...mass.values()].reduce((a, b) => a + b, 0);
  // All sharing labels have zero mass (a custom teacher chose one anyway): spread evenly.
  for (const [token, m] of mass) {
    mass.set(token, total > 0 ? m / total : sharing.filter((t) => t === token).length / sharing.length);
  }
  return mass;
}

/** Candidates at position `i` of a structured `{"label":"..."}` answer. */
function structuredCandidates(tokens: string[], i: number, dist: LabelDistribution | undefined): Candidates {
  const token = tokens[i];
  const inValue = i >= OPEN.length; // value pieces and the closing token
  const conditional = inValue && dist ? labelCandidates(dist, tokens.slice(OPEN.length, i)) : new Map<string, number>();
  // No label continues here, or the label is complete for sure: a plain structural token.
  if (conditional.size === 0) {
    return inValue && i < tokens.length - 1 ? freeTextCandidates(token, i) : structuralCandidates(token);
  }
  if (conditional.size === 1 && conditional.has(CLOSE) && token === CLOSE) return structuralCandidates(token);
  if (conditional.has(token)) return [...conditional].map(([t, p]) => [t, toLogprob(p)]);
  // The token is not one of the labels (unknown-label fault): the model "slipped" with a small probability.
  return [
    [token, toLogprob(OFF_DISTRIBUTION_P)],
    ...[...conditional].map(([t, p]): [string, number] => [t, toLogprob(p * (1 - OFF_DISTRIBUTION_P))]),
  ];
}

const bytesOf = (token: string) => Array.from(Buffer.from(token, 'utf8'));

/** `choices[i].logprobs.content` for an answer, consistent with its class distribution. */
function contentLogprobs(content: string, dist: LabelDistribution | undefined, topK: number): TokenLogprob[] {
  const tokens = fakeTokenize(content);
  const structured = parseLabelContent(content) !== undefined;
  return tokens.map((token, i) => {
    const candidates = structured ? structuredCandidates(tokens, i, dist) : freeTextCandidates(token, i);
    const own = candidates.find(([t]) => t === token)?.[1] ?? SURE_LOGPROB;
    // Stable sort: ties keep label order, so output is deterministic.
    const top = [...candidates].sort((a, b) => b[1] - a[1]).slice(0, topK);
    return {
      token,
      logprob: own,
      bytes: bytesOf(token),
      top_logprobs: top.map(([t, logprob]) => ({ token: t, logprob, bytes: bytesOf(t) })),
    };
  });
}

// ---------------------------------------------------------------------------
// HTTP plumbing
// ---------------------------------------------------------------------------

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly type = 'invalid_request_error',
    readonly code: string | null = null,
  ) {
    super(message);
  }
  body() {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

function sendJson(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

async function readBody(req: http.IncomingMessage): Promise<string> {
  return (await readRaw(req)).toString('utf8');
}

async function readRaw(req: http.IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

function parseBody(text: string): ChatRequestBody {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new HttpError(400, 'We could not parse the JSON body of your request.');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new HttpError(400, 'The request body must be a JSON object.');
  }
  return parsed as ChatRequestBody;
}

const DEFAULT_STATUS_ERRORS: Record<number, { message: string; type: string; code: string | null }> = {
  429: { message: 'Rate limit reached for requests (fake).', type: 'requests', code: 'rate_limit_exceeded' },
  500: { message: 'The server had an error while processing your request (fake).', type: 'server_error', code: null },
  502: { message: 'Bad gateway (fake).', type: 'server_error', code: null },
  503: { message: 'The engine is currently overloaded (fake).', type: 'server_error', code: null },
};

// ---------------------------------------------------------------------------
// Chat completions
// ---------------------------------------------------------------------------

interface Choice {
  content: string;
  dist?: LabelDistribution;
}

interface Validated {
  labels: string[];
  n: number;
  temperature: number;
  topK: number | undefined; // undefined: logprobs not requested
}

/** Reject what a real API would reject, and what this fake cannot answer (no label enum). */
function validate(req: ChatRequest, opts: FakeTeacherOptions): Validated {
  const { body } = req;
  if (body.stream) throw new HttpError(400, 'The fake teacher does not support streaming.', 'stream');
  const model = typeof body.model === 'string' ? body.model : '';
  if (opts.models && !opts.models.serves(model)) {
    throw new HttpError(404, opts.models.refusal(model), 'model', 'invalid_request_error', 'model_not_found');
  }
  const wantsLogprobs = body.logprobs === true;
  if (opts.rejectLogprobs && (wantsLogprobs || body.top_logprobs != null)) {
    throw new HttpError(400, 'logprobs is not supported by this model', 'logprobs');
  }
  const labels = requestLabels(req);
  if (!labels) {
    throw new HttpError(
      400,
      'response_format must be a json_schema with properties.label.enum (the fake teacher needs the labels).',
      'response_format',
    );
  }
  const n = body.n ?? 1;
  if (!Number.isInteger(n) || n < 1 || n > 128) throw new HttpError(400, `Invalid n: ${n}`, 'n');
  const temperature = body.temperature ?? 0;
  if (typeof temperature !== 'number' || temperature < 0 || temperature > 2) {
    throw new HttpError(400, `Invalid temperature: ${temperature}`, 'temperature');
  }
  const k = body.top_logprobs ?? 0;
  if (!Number.isInteger(k) || k < 0 || k > 20) throw new HttpError(400, `Invalid top_logprobs: ${k}`, 'top_logprobs');
  if (body.top_logprobs != null && !wantsLogprobs) {
    throw new HttpError(400, 'logprobs must be set to true when top_logprobs is used.', 'top_logprobs');
  }
  return { labels, n, temperature, topK: wantsLogprobs ? k : undefined };
}

/**
 * The n answers for a request: greedy (the teacher's label) at temperature 0,
 * otherwise samples seeded by the text and the request index so reruns repeat.
 */
function chooseAnswers(req: ChatRequest, v: Validated, index: number, opts: FakeTeacherOptions, fault?: Fault): Choice[] {
  const answer = (opts.teacher ?? defaultTeacher)(req);
  const dist: LabelDistribution | undefined =
    'raw' in answer ? undefined : { labels: v.labels, probs: normalise(v.labels, answer.probs), pieces: v.labels.map(labelPieces) };
  const random = prng(hash(lastUserText(req)) + index);
  return Array.from({ length: v.n }, (): Choice => {
    if (fault?.kind === 'invalid-json') return { content: INVALID_JSON_CONTENT, dist };
    if (fault?.kind === 'unknown-label') return { content: JSON.stringify({ label: notALabel(v.labels) }), dist };
    if ('raw' in answer) return { content: answer.raw };
    const sampled = v.temperature > 0 && dist ? sample(v.labels, dist.probs, random) : undefined;
    return { content: JSON.stringify({ label: sampled ?? answer.label }), dist };
  });
}

/** What the invalid-json fault answers: prose instead of the JSON object. */
export const INVALID_JSON_CONTENT = 'I think it is billing';

function notALabel(labels: string[]): string {
  let label = 'banana';
  while (labels.includes(label)) label += 's';
  return label;
}

function promptChars(req: ChatRequest): number {
  return messages(req).reduce((sum, m) => sum + messageText(m).length, 0);
}

function usageFor(req: ChatRequest, choices: Choice[], opts: FakeTeacherOptions): Usage {
  const contents = choices.map((c) => c.content);
  const { prompt_tokens, completion_tokens } = opts.usage
    ? opts.usage(req, contents)
    : {
        prompt_tokens: Math.ceil(promptChars(req) / 4),
        completion_tokens: contents.reduce((sum, c) => sum + fakeTokenize(c).length, 0),
      };
  return { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens };
}

function completionBody(req: ChatRequest, v: Validated, choices: Choice[], index: number, opts: FakeTeacherOptions) {
  return {
    id: `chatcmpl-fake-${index}`,
    object: 'chat.completion',
    created: Math.floor(Date.now() / 1000),
    model: typeof req.body.model === 'string' ? req.body.model : FAKE_MODEL,
    choices: choices.map((choice, i) => ({
      index: i,
      message: { role: 'assistant', content: choice.content, refusal: null },
      logprobs: v.topK === undefined ? null : { content: contentLogprobs(choice.content, choice.dist, v.topK), refusal: null },
      finish_reason: 'stop',
    })),
    usage: usageFor(req, choices, opts),
    system_fingerprint: opts.systemFingerprint ?? 'fp_fake',
  };
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

export async function startFakeTeacher(opts: FakeTeacherOptions = {}): Promise<FakeTeacher> {
  // Aborted by close() so requests waiting out latencyMs do not keep timers alive.
  const closing = new AbortController();

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (closing.signal.aborted) return res.destroy();
      const error = err instanceof HttpError ? err : new HttpError(500, String(err), null, 'server_error');
      if (!res.headersSent) sendJson(res, error.status, error.body());
      else res.destroy();
    });
  });

  async function handle(req: http.IncomingMessage, res: http.ServerResponse) {
    const path = (req.url ?? '/').split('?')[0].replace(/\/+$/, '');
    if (req.method === 'GET' && path === '/v1/models') {
      return sendJson(res, 200, {
        object: 'list',
        data: (opts.models?.list ?? [FAKE_MODEL]).map((id) => ({ id, object: 'model', created: 0, owned_by: 'distillery' })),
      });
    }
    if (path.startsWith('/v1/files') || path.startsWith('/v1/batches')) return handleBatchApi(req, res, path);
    if (req.method !== 'POST' || path !== '/v1/chat/completions') {
      await readBody(req); // drain, so keep-alive connections stay usable
      throw new HttpError(404, `Unknown request URL: ${req.method} ${req.url}`, null, 'invalid_request_error', 'unknown_url');
    }

    const chat: ChatRequest = { body: parseBody(await readBody(req)), headers: req.headers };
    const index = record(chat);
    const requestId = `req_fake_${index}`;

    const fault = opts.fault?.(chat, index);
    if (opts.latencyMs) await sleep(opts.latencyMs, undefined, { signal: closing.signal });

    if (fault?.kind === 'drop') return req.socket.destroy();
    if (fault?.kind === 'hang') return; // close() destroys the socket
    const { status, body, headers } = chatAnswer(chat, index, fault);
    sendJson(res, status, body, { 'x-request-id': requestId, ...headers });
  }

  /** The answer to one chat request (live, or a batch line): the status and body a real API would send. */
  function chatAnswer(
    chat: ChatRequest,
    index: number,
    fault: Fault | undefined,
  ): { status: number; body: unknown; headers?: Record<string, string> } {
    if (fault?.kind === 'status') {
      return {
        status: fault.status,
        body: fault.body ?? { error: { ...DEFAULT_STATUS_ERRORS[fault.status], param: null } },
        headers: fault.headers,
      };
    }
    let v: Validated;
    try {
      v = validate(chat, opts);
    } catch (err) {
      if (!(err instanceof HttpError)) throw err;
      return { status: err.status, body: err.body() };
    }
    const choices = chooseAnswers(chat, v, index, opts, fault);
    const body = completionBody(chat, v, choices, index, opts);
    fake.answered++;
    return { status: 200, body };
  }

  let requestCount = 0;
  /** Count a chat request (and keep it, unless told not to); its 1-based index. */
  function record(chat: ChatRequest): number {
    if (opts.keepRequests !== false) fake.requests.push(chat);
    return ++requestCount;
  }

  // ---- the Batch API -------------------------------------------------------

  let fileCount = 0;
  let lineCount = 0;
  const scripts = new Map<string, BatchScript>();
  const inState = new Map<string, number>(); // polls seen in the current state

  function addFile(filename: string, purpose: string, bytes: Buffer): FakeFile {
    const f: FakeFile = { id: `file-fake-${++fileCount}`, filename, purpose, bytes };
    fake.files.set(f.id, f);
    return f;
  }

  const fileObject = (f: FakeFile) => ({
    id: f.id,
    object: 'file',
    bytes: f.bytes.length,
    created_at: 0,
    filename: f.filename,
    purpose: f.purpose,
    status: 'processed',
  });

  function batchObject(b: FakeBatch) {
    return {
      id: b.id,
      object: 'batch',
      endpoint: '/v1/chat/completions',
      input_file_id: b.input_file_id,
      completion_window: '24h',
      status: b.status,
      output_file_id: b.output_file_id ?? null,
      error_file_id: b.error_file_id ?? null,
      created_at: b.index,
      metadata: b.metadata,
      errors:
        b.status === 'failed'
          ? {
              object: 'list',
              data: (scripts.get(b.id)?.errors ?? [{ code: 'invalid_request', message: 'The batch failed validation (fake).' }]).map(
                (e) => ({ ...e, line: null, param: null }),
              ),
            }
          : null,
      request_counts: { total: b.customIds.length, completed: 0, failed: 0 },
    };
  }

  /** Answer the first `count` lines of a batch with the chat logic; the rest go to the error file with `restCode`. */
  function runLines(b: FakeBatch, count: number, restCode: string | undefined, headers: ChatRequest['headers']) {
    const script = scripts.get(b.id) ?? {};
    const input = fake.files
      .get(b.input_file_id)!
      .bytes.toString('utf8')
      .split('\n')
      .filter((l) => l.trim() !== '');
    const out: string[] = [];
    const errors: string[] = [];
    input.forEach((text, i) => {
      const line = JSON.parse(text) as { custom_id: string; body: ChatRequestBody };
      const id = `batch_req_fake_${++lineCount}`;
      if (i >= count) {
        if (restCode)
          errors.push(
            JSON.stringify({
              id,
              custom_id: line.custom_id,
              response: null,
              error: { code: restCode, message: `This request could not be executed (${restCode}, fake).` },
            }),
          );
        return;
      }
      const scripted = script.lineError?.(line, i);
      if (scripted) {
        const body = {
          error: {
            message: scripted.message ?? `request failed (fake ${scripted.status})`,
            type: 'invalid_request_error',
            param: null,
            code: scripted.code ?? null,
          },
        };
        errors.push(
          JSON.stringify({ id, custom_id: line.custom_id, response: { status_code: scripted.status, request_id: id, body }, error: null }),
        );
        return;
      }
      const chat: ChatRequest = { body: line.body, headers, batchId: b.id };
      const index = record(chat);
      const fault = opts.fault?.(chat, index);
      const answer =
        fault?.kind === 'drop' || fault?.kind === 'hang'
          ? { status: 500, body: { error: { ...DEFAULT_STATUS_ERRORS[500], param: null } } }
          : chatAnswer(chat, index, fault);
      const entry = JSON.stringify({
        id,
        custom_id: line.custom_id,
        response: { status_code: answer.status, request_id: `req_fake_${index}`, body: answer.body },
        error: null,
      });
      (answer.status === 200 ? out : errors).push(entry);
    });
    if (out.length > 0) b.output_file_id = addFile(`${b.id}_output.jsonl`, 'batch_output', Buffer.from(out.join('\n') + '\n')).id;
    if (errors.length > 0) b.error_file_id = addFile(`${b.id}_error.jsonl`, 'batch_output', Buffer.from(errors.join('\n') + '\n')).id;
  }

  /** One poll: move through every state whose polls are used up, then count this poll in the state reached. */
  function poll(b: FakeBatch, headers: ChatRequest['headers']) {
    const script = scripts.get(b.id) ?? {};
    for (;;) {
      const seen = inState.get(b.id) ?? 0;
      let next: FakeBatchStatus | undefined;
      if (b.status === 'validating' && seen >= (script.validatingPolls ?? 0)) next = script.outcome === 'failed' ? 'failed' : 'in_progress';
      else if (b.status === 'in_progress' && seen >= (script.inProgressPolls ?? 0)) {
        if (script.outcome === 'expired') {
          runLines(b, script.answered ?? 0, 'batch_expired', headers);
          next = 'expired';
        } else {
          runLines(b, Infinity, undefined, headers);
          next = 'finalizing';
        }
      } else if (b.status === 'finalizing' && seen >= (script.finalizingPolls ?? 0)) next = 'completed';
      else if (b.status === 'cancelling') {
        runLines(b, script.answered ?? 0, 'batch_cancelled', headers);
        next = 'cancelled';
      }
      if (!next) break;
      b.status = next;
      inState.set(b.id, 0);
      if (next === 'completed' || next === 'failed' || next === 'expired' || next === 'cancelled') return;
    }
    inState.set(b.id, (inState.get(b.id) ?? 0) + 1);
  }

  async function handleBatchApi(req: http.IncomingMessage, res: http.ServerResponse, path: string) {
    const method = req.method ?? 'GET';
    fake.apiCalls.push({ method, path, headers: req.headers });
    const raw = await readRaw(req);
    const apiFault = opts.apiFault?.({ method, path }, fake.apiCalls.length);
    if (apiFault?.kind === 'status') {
      const e = DEFAULT_STATUS_ERRORS[apiFault.status] ?? {
        message: `Request refused (fake ${apiFault.status}).`,
        type: 'invalid_request_error',
        code: null,
      };
      return sendJson(res, apiFault.status, { error: { ...e, param: null } });
    }
    if (apiFault?.kind === 'drop') {
      // Do the work against a response that goes nowhere, then cut the connection.
      const sink = Object.assign(Object.create(res) as http.ServerResponse, { writeHead: () => sink, end: () => sink });
      await batchApi(req, sink, path, method, raw).catch(() => undefined);
      return req.socket.destroy();
    }
    return batchApi(req, res, path, method, raw);
  }

  async function batchApi(req: http.IncomingMessage, res: http.ServerResponse, path: string, method: string, raw: Buffer) {
    const parts = path.split('/').filter(Boolean); // v1, files|batches, id?, action?
    if (parts[1] === 'files') {
      if (method === 'POST' && parts.length === 2) {
        const form = await new Response(new Uint8Array(raw), { headers: { 'content-type': String(req.headers['content-type'] ?? '') } })
          .formData()
          .catch(() => undefined);
        const file = form?.get('file');
        const purpose = form?.get('purpose');
        if (!form || typeof file === 'string' || !file) throw new HttpError(400, "'file' is a required property", 'file');
        if (purpose !== 'batch')
          throw new HttpError(400, `Invalid purpose: ${String(purpose)} (the fake takes batch files only)`, 'purpose');
        return sendJson(res, 200, fileObject(addFile(file.name, 'batch', Buffer.from(await file.arrayBuffer()))));
      }
      const f = parts[2] ? fake.files.get(parts[2]) : undefined;
      if (method === 'GET' && parts.length === 2)
        return sendJson(res, 200, { object: 'list', data: [...fake.files.values()].map(fileObject), has_more: false });
      if (!f) throw new HttpError(404, `No such File object: ${parts[2]}`, 'id');
      if (method === 'GET' && parts.length === 3) return sendJson(res, 200, fileObject(f));
      if (method === 'GET' && parts[3] === 'content') {
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': f.bytes.length });
        return res.end(f.bytes);
      }
    }
    if (parts[1] === 'batches') {
      if (method === 'POST' && parts.length === 2) {
        const body = parseBody(raw.toString('utf8')) as {
          input_file_id?: string;
          endpoint?: string;
          completion_window?: string;
          metadata?: Record<string, string>;
        };
        const input = body.input_file_id ? fake.files.get(body.input_file_id) : undefined;
        if (!input) throw new HttpError(400, `Invalid input_file_id: ${body.input_file_id}`, 'input_file_id');
        if (body.endpoint !== '/v1/chat/completions') throw new HttpError(400, `Unsupported endpoint: ${body.endpoint}`, 'endpoint');
        if (body.completion_window !== '24h')
          throw new HttpError(400, `Invalid completion_window: ${body.completion_window}`, 'completion_window');
        const customIds: string[] = [];
        for (const [i, text] of input.bytes.toString('utf8').split('\n').entries()) {
          if (text.trim() === '') continue;
          let line: { custom_id?: unknown; method?: unknown; url?: unknown; body?: unknown };
          try {
            line = JSON.parse(text);
          } catch {
            throw new HttpError(400, `Line ${i + 1} of the input file is not JSON`, 'input_file_id');
          }
          if (
            typeof line.custom_id !== 'string' ||
            line.method !== 'POST' ||
            line.url !== '/v1/chat/completions' ||
            typeof line.body !== 'object'
          ) {
            throw new HttpError(400, `Line ${i + 1} of the input file is not a chat completions request`, 'input_file_id');
          }
          if (customIds.includes(line.custom_id)) throw new HttpError(400, `Duplicate custom_id ${line.custom_id}`, 'input_file_id');
          customIds.push(line.custom_id);
        }
        const index = fake.batches.length + 1;
        const b: FakeBatch = {
          id: `batch_fake_${index}`,
          index,
          status: 'validating',
          input_file_id: input.id,
          metadata: body.metadata ?? {},
          customIds,
          bytes: input.bytes.length,
          polls: 0,
        };
        fake.batches.push(b);
        const script = opts.batch?.({ id: b.id, index, lines: customIds.length, metadata: b.metadata });
        if (script) scripts.set(b.id, script);
        return sendJson(res, 200, batchObject(b));
      }
      if (method === 'GET' && parts.length === 2) {
        const data = [...fake.batches].reverse().map(batchObject);
        return sendJson(res, 200, {
          object: 'list',
          data,
          first_id: data[0]?.id ?? null,
          last_id: data[data.length - 1]?.id ?? null,
          has_more: false,
        });
      }
      const b = fake.batches.find((x) => x.id === parts[2]);
      if (!b) throw new HttpError(404, `No batch found with id '${parts[2]}'.`, 'id');
      if (method === 'GET' && parts.length === 3) {
        b.polls++;
        poll(b, req.headers);
        return sendJson(res, 200, batchObject(b));
      }
      if (method === 'POST' && parts[3] === 'cancel') {
        if (b.status === 'validating' || b.status === 'in_progress' || b.status === 'finalizing') b.status = 'cancelling';
        return sendJson(res, 200, batchObject(b));
      }
    }
    throw new HttpError(404, `Unknown request URL: ${method} ${req.url}`, null, 'invalid_request_error', 'unknown_url');
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  let closed: Promise<void> | undefined;
  const fake: FakeTeacher = {
    url: `http://127.0.0.1:${port}/v1`,
    requests: [],
    answered: 0,
    batches: [],
    files: new Map(),
    apiCalls: [],
    close() {
      closed ??= new Promise<void>((resolve) => {
        closing.abort();
        server.close(() => resolve());
        // Destroys every socket, including idle keep-alive ones and hung requests,
        // which would otherwise hold server.close() open.
        server.closeAllConnections();
      });
      return closed;
    },
  };
  return fake;
}
