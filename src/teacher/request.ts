import type {
  ChatCompletionContentPart,
  ChatCompletionCreateParamsNonStreaming,
  ChatCompletionMessageParam,
} from 'openai/resources/chat/completions';
import { createRequire } from 'node:module';
import type * as Tokenizer from 'gpt-tokenizer';
import { DistilleryError } from '../errors.ts';
import { canonicalJson } from '../input/canonical.ts';
import type { ItemRow } from '../store/store.ts';
import { renderTemplate, sha256Hex, type Task } from '../task/task.ts';
import { responseFormat } from './answer.ts';

/**
 * The o200k tokenizer, loaded on first use: building its table takes most of a second, and only token estimates
 * (the default --max-tokens, --tpm, --max-cost, --dry-run) need it, not --help or a run with --max-tokens.
 */
let tokenizer: typeof Tokenizer | undefined;
function encode(text: string): number[] {
  tokenizer ??= createRequire(import.meta.url)('gpt-tokenizer') as typeof Tokenizer;
  return tokenizer.encode(text);
}

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
  /**
   * Set by relabel runs: a fresh value per relabel run, part of every request key, so that asking the same
   * question again is a new paid request (once per relabel run, however often that run is resumed).
   */
  keySalt?: string;
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

/**
 * Builds the requests of one run. What is the same for every item (schema,
 * decoding, soft mode, model, base URL) is digested once; an item's request
 * key is then sha256 over that digest and the item's rendered messages, in
 * canonical JSON so that a refactor cannot silently change keys (and make
 * users pay twice).
 */
export class RequestBuilder {
  private readonly decoding: Omit<ChatCompletionCreateParamsNonStreaming, 'messages'>;
  private readonly configDigest: string;
  readonly maxCompletionTokens: number;

  constructor(
    private readonly task: Task,
    private readonly settings: TeacherSettings,
  ) {
    const n = settings.soft.kind === 'samples' ? settings.soft.n : 1;
    this.decoding = {
      model: settings.model,
      response_format: responseFormat(task.labels),
      temperature: settings.temperature,
      max_tokens: settings.maxTokens,
      ...(n > 1 ? { n } : {}),
      ...(settings.soft.kind === 'logprobs' ? { logprobs: true, top_logprobs: TOP_LOGPROBS } : {}),
    };
    // keySalt only when set: the keys of every plain run stay what they always were.
    this.configDigest = sha256Hex(
      canonicalJson({
        baseURL: settings.baseURL,
        soft: softModeName(settings.soft),
        ...this.decoding,
        ...(settings.keySalt ? { relabel: settings.keySalt } : {}),
      }),
    );
    this.maxCompletionTokens = settings.maxTokens * n;
  }

  /** The request key alone: no image bytes needed, an image stands for its content hash. */
  key(item: ItemRow): string {
    const text = this.render(item);
    return this.keyOf(this.messages(item, text, `sha256:${item.image}`));
  }

  build(item: ItemRow, image?: { mime: string; bytes: Buffer }, knownKey?: string): TeacherRequest {
    const text = this.render(item);
    if (this.task.input === 'image' && (!image || !item.image)) {
      throw new DistilleryError(`item ${item.ext_id} of image task "${this.task.name}" has no image`);
    }
    const messages = this.messages(item, text, image ? `data:${image.mime};base64,${image.bytes.toString('base64')}` : '');
    let key = knownKey;
    let promptTokens: number | undefined;
    const self = this;
    return {
      params: { ...this.decoding, messages },
      get key() {
        return (key ??= self.keyOf(self.messages(item, text, `sha256:${item.image}`)));
      },
      get promptTokens() {
        return (promptTokens ??= estimatePromptTokens(self.task, text, image !== undefined, self.settings.imageDetail));
      },
      maxCompletionTokens: this.maxCompletionTokens,
    };
  }

  private keyOf(messages: ChatCompletionMessageParam[]): string {
    return sha256Hex(canonicalJson({ v: 1, config: this.configDigest, messages }));
  }

  private render(item: ItemRow): string {
    try {
      return renderTemplate(this.task.template, JSON.parse(item.input) as Record<string, unknown>);
    } catch (e) {
      throw new DistilleryError(`${this.task.path}: item ${item.ext_id}: ${(e as Error).message}`);
    }
  }

  private messages(item: ItemRow, text: string, imageUrl: string): ChatCompletionMessageParam[] {
    const messages: ChatCompletionMessageParam[] = [];
    if (this.task.system) messages.push({ role: 'system', content: this.task.system });
    if (this.task.input === 'image') {
      const image: ChatCompletionContentPart = { type: 'image_url', image_url: { url: imageUrl, detail: this.settings.imageDetail } };
      messages.push({ role: 'user', content: [{ type: 'text', text }, image] });
    } else {
      messages.push({ role: 'user', content: text });
    }
    return messages;
  }
}

/** Chat-format token estimate: content tokens, ~4 per message of framing, 3 to prime the reply, images by OpenAI's tile rule. */
function estimatePromptTokens(task: Task, text: string, hasImage: boolean, detail: string): number {
  let tokens = 3 + 4 + encode(text).length + schemaTokens(task.labels);
  if (task.system) tokens += 4 + encode(task.system).length;
  if (hasImage) tokens += detail === 'low' ? 85 : 85 + 170 * 4; // high/auto: assume up to 4 tiles (512px each)
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
