import type { ChatCompletionContentPart, ChatCompletionCreateParamsNonStreaming, ChatCompletionMessageParam } from 'openai/resources/chat/completions';
import { encode } from 'gpt-tokenizer';
import { DistilleryError } from '../errors.ts';
import { canonicalJson } from '../input/canonical.ts';
import type { ItemRow } from '../store/store.ts';
import { renderTemplate, sha256Hex, type Task } from '../task/task.ts';
import { responseFormat } from './answer.ts';

/** How the per-class distribution is obtained. */
export type SoftMode = { kind: 'logprobs' } | { kind: 'samples'; n: number } | { kind: 'none' };

export function parseSoftMode(s: string): SoftMode {
  if (s === 'logprobs' || s === 'none') return { kind: s };
  const m = /^samples:(\d+)$/.exec(s);
  if (m && Number(m[1]) >= 2 && Number(m[1]) <= 128) return { kind: 'samples', n: Number(m[1]) };
  throw new DistilleryError(`--soft must be logprobs, none or samples:N with 2 <= N <= 128 (got "${s}")`);
}

export function softModeName(m: SoftMode): string {
  return m.kind === 'samples' ? `samples:${m.n}` : m.kind;
}

/** Everything about a teacher call that is the same for every item of a run. */
export interface TeacherSettings {
  model: string;
  baseURL: string;
  soft: SoftMode;
  temperature: number;
  maxTokens: number;
  imageDetail: 'low' | 'high' | 'auto';
}

export interface TeacherRequest {
  params: ChatCompletionCreateParamsNonStreaming;
  /** sha256 of what determines the answer: model, base URL, rendered messages, schema, decoding, soft mode. */
  key: string;
  /** Estimated prompt tokens (for --tpm, --max-cost and --dry-run); computed on first use, the tokenizer is not free. */
  readonly promptTokens: number;
  /** Completion tokens the request may use at most (max_tokens for every choice). */
  maxCompletionTokens: number;
}

const TOP_LOGPROBS = 20;

/** Default max_tokens: the longest possible answer plus a margin for whitespace. */
export function defaultMaxTokens(labels: readonly string[]): number {
  const longest = Math.max(...labels.map((l) => encode(JSON.stringify({ label: l })).length));
  return longest + 16;
}

export function buildRequest(task: Task, item: ItemRow, settings: TeacherSettings, image?: { mime: string; bytes: Buffer }): TeacherRequest {
  const fields = JSON.parse(item.input) as Record<string, unknown>;
  let text: string;
  try {
    text = renderTemplate(task.template, fields);
  } catch (e) {
    throw new DistilleryError(`${task.path}: item ${item.ext_id}: ${(e as Error).message}`);
  }
  const messages: ChatCompletionMessageParam[] = [];
  if (task.system) messages.push({ role: 'system', content: task.system });
  // In the key, an image stands for its content hash: the same bytes give the same key.
  const keyMessages: unknown[] = [...messages];
  if (task.input === 'image') {
    if (!image || !item.image) throw new DistilleryError(`item ${item.ext_id} of image task "${task.name}" has no image`);
    const part = (url: string): ChatCompletionContentPart => ({ type: 'image_url', image_url: { url, detail: settings.imageDetail } });
    messages.push({ role: 'user', content: [{ type: 'text', text }, part(`data:${image.mime};base64,${image.bytes.toString('base64')}`)] });
    keyMessages.push({ role: 'user', content: [{ type: 'text', text }, part(`sha256:${item.image}`)] });
  } else {
    messages.push({ role: 'user', content: text });
    keyMessages.push({ role: 'user', content: text });
  }

  const n = settings.soft.kind === 'samples' ? settings.soft.n : 1;
  const params: ChatCompletionCreateParamsNonStreaming = {
    model: settings.model,
    messages,
    response_format: responseFormat(task.labels),
    temperature: settings.temperature,
    max_tokens: settings.maxTokens,
    ...(n > 1 ? { n } : {}),
    ...(settings.soft.kind === 'logprobs' ? { logprobs: true, top_logprobs: TOP_LOGPROBS } : {}),
  };
  const { messages: _omit, ...decoding } = params;
  const key = sha256Hex(
    canonicalJson({ v: 1, baseURL: settings.baseURL, soft: softModeName(settings.soft), messages: keyMessages, ...decoding }),
  );
  let promptTokens: number | undefined;
  return {
    params,
    key,
    get promptTokens() {
      return (promptTokens ??= estimatePromptTokens(task, text, image ? item : undefined, settings.imageDetail));
    },
    maxCompletionTokens: settings.maxTokens * n,
  };
}

/** Chat-format token estimate: content tokens, ~4 per message of framing, 3 to prime the reply, images by OpenAI's tile rule. */
function estimatePromptTokens(task: Task, text: string, imageItem: ItemRow | undefined, detail: string): number {
  let tokens = 3 + 4 + encode(text).length + schemaTokens(task.labels);
  if (task.system) tokens += 4 + encode(task.system).length;
  if (imageItem) tokens += detail === 'low' ? 85 : 85 + 170 * 4; // high/auto: assume up to 4 tiles (512px each)
  return tokens;
}

/** Servers count the response schema as prompt: an estimate from its JSON text, once per label set. */
const schemaTokenCache = new Map<string, number>();
function schemaTokens(labels: readonly string[]): number {
  const key = JSON.stringify(labels);
  let n = schemaTokenCache.get(key);
  if (n === undefined) schemaTokenCache.set(key, (n = encode(JSON.stringify(responseFormat(labels).json_schema.schema)).length));
  return n;
}
