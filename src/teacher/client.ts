import OpenAI, { toFile } from 'openai';
import type { Batch } from 'openai/resources/batches';
import type { FileObject } from 'openai/resources/files';
import type { ChatCompletion, ChatCompletionCreateParamsNonStreaming } from 'openai/resources/chat/completions';
import { DistilleryError } from '../errors.ts';
import { redactSecrets } from '../secrets.ts';

export const OFFICIAL_BASE_URL = 'https://api.openai.com/v1';

export interface TeacherClientOptions {
  baseURL?: string;
  /** Name of the environment variable holding the key; the key itself never leaves this module's client. */
  apiKeyEnv: string;
  timeoutMs: number;
  env?: NodeJS.ProcessEnv;
}

/**
 * The one client object for a teacher. The SDK's own retries are off
 * (`maxRetries: 0`): src/teacher/retry.ts is the only retry policy.
 */
export class TeacherClient {
  readonly baseURL: string;
  private readonly openai: OpenAI;
  private readonly apiKey: string | undefined;
  private readonly apiKeyEnv: string;

  constructor(opts: TeacherClientOptions) {
    const env = opts.env ?? process.env;
    this.baseURL = (opts.baseURL ?? env.OPENAI_BASE_URL ?? OFFICIAL_BASE_URL).replace(/\/+$/, '');
    const apiKey = env[opts.apiKeyEnv];
    this.apiKey = apiKey;
    this.apiKeyEnv = opts.apiKeyEnv;
    this.openai = new OpenAI({
      apiKey: apiKey || 'none',
      baseURL: this.baseURL,
      timeout: opts.timeoutMs,
      maxRetries: 0,
    });
  }

  /**
   * Refuses, in one line, to go on without a key where one is needed (the official API). Checked when a request is
   * really to be sent, not when the client is made: a dry run sends nothing and needs no key. Commands that will
   * send call it before they write anything, so a missing key leaves no trace.
   */
  requireKey(): void {
    if (!this.apiKey && this.baseURL === OFFICIAL_BASE_URL) {
      throw new DistilleryError(
        `no API key: set ${this.apiKeyEnv} (or --api-key-env NAME), or point --base-url at a server that needs none ` +
          '(npm run sim-teacher serves a free simulated teacher)',
      );
    }
  }

  /** One attempt; errors are the SDK's classes, classified by src/teacher/retry.ts. */
  async complete(
    params: ChatCompletionCreateParamsNonStreaming,
    signal?: AbortSignal,
  ): Promise<{ completion: ChatCompletion; latencyMs: number }> {
    this.requireKey();
    const t0 = performance.now();
    try {
      const completion = await this.openai.chat.completions.create(params, { signal });
      return { completion, latencyMs: Math.round(performance.now() - t0) };
    } catch (e) {
      // A server may quote the key in its error message; that message can end up in the store (runs.message).
      if (e instanceof Error) e.message = redactSecrets(e.message, [this.apiKey]);
      throw e;
    }
  }

  // ---- the Batch API (src/batch/): one attempt each, errors redacted like complete()'s ----

  /** Upload a JSONL file of requests (purpose "batch"). */
  uploadBatchFile(name: string, content: Buffer, signal?: AbortSignal): Promise<FileObject> {
    return this.redacted(async () =>
      this.openai.files.create({ file: await toFile(content, name, { type: 'application/jsonl' }), purpose: 'batch' }, { signal }),
    );
  }

  createBatch(inputFileId: string, metadata: Record<string, string>, signal?: AbortSignal): Promise<Batch> {
    return this.redacted(() =>
      this.openai.batches.create(
        { input_file_id: inputFileId, endpoint: '/v1/chat/completions', completion_window: '24h', metadata },
        { signal },
      ),
    );
  }

  retrieveBatch(batchId: string, signal?: AbortSignal): Promise<Batch> {
    return this.redacted(() => this.openai.batches.retrieve(batchId, { signal }));
  }

  cancelBatch(batchId: string, signal?: AbortSignal): Promise<Batch> {
    return this.redacted(() => this.openai.batches.cancel(batchId, { signal }));
  }

  /** Recent batches, newest first, at most `max` of them (to find one created just before a crash). */
  recentBatches(max: number, signal?: AbortSignal): Promise<Batch[]> {
    return this.redacted(async () => {
      const out: Batch[] = [];
      for await (const b of this.openai.batches.list({ limit: Math.min(100, max) }, { signal })) {
        out.push(b);
        if (out.length >= max) break;
      }
      return out;
    });
  }

  /** A file's content as text (batch output and error files). */
  fileText(fileId: string, signal?: AbortSignal): Promise<string> {
    return this.redacted(async () => (await this.openai.files.content(fileId, { signal })).text());
  }

  /** `text` without the key (or anything key-like): for what the API writes in files (batch error lines) that we store or print. */
  redact(text: string): string {
    return redactSecrets(text, [this.apiKey]);
  }

  private async redacted<T>(call: () => Promise<T>): Promise<T> {
    this.requireKey();
    try {
      return await call();
    } catch (e) {
      if (e instanceof Error) e.message = redactSecrets(e.message, [this.apiKey]);
      throw e;
    }
  }
}
