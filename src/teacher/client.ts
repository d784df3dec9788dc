import OpenAI from 'openai';
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

  constructor(opts: TeacherClientOptions) {
    const env = opts.env ?? process.env;
    this.baseURL = (opts.baseURL ?? env.OPENAI_BASE_URL ?? OFFICIAL_BASE_URL).replace(/\/+$/, '');
    const apiKey = env[opts.apiKeyEnv];
    this.apiKey = apiKey;
    if (!apiKey && this.baseURL === OFFICIAL_BASE_URL) {
      throw new DistilleryError(`no API key: set ${opts.apiKeyEnv} (or --api-key-env NAME), or point --base-url at a server that needs none`);
    }
    this.openai = new OpenAI({
      apiKey: apiKey || 'none',
      baseURL: this.baseURL,
      timeout: opts.timeoutMs,
      maxRetries: 0,
    });
  }

  /** One attempt; errors are the SDK's classes, classified by src/teacher/retry.ts. */
  async complete(params: ChatCompletionCreateParamsNonStreaming, signal?: AbortSignal): Promise<{ completion: ChatCompletion; latencyMs: number }> {
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
}
