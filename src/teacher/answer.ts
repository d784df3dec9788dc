import { z } from 'zod';
import { zodResponseFormat } from 'openai/helpers/zod';

/**
 * The teacher's answer: one label of the task. This zod schema is the single
 * source of truth: it is sent to the server as a strict `json_schema`
 * response format, and every answer is parsed back with it.
 */
export function answerSchema(labels: readonly string[]) {
  return memo(schemas, labels, () => buildSchema(labels));
}

// Building a schema costs more than a whole request's other work: build each once per label set.
const schemas = new Map<string, ReturnType<typeof buildSchema>>();
const formats = new Map<string, ReturnType<typeof buildFormat>>();
function buildSchema(labels: readonly string[]) {
  return z.object({ label: z.enum(labels as [string, ...string[]]) }).strict();
}
function buildFormat(labels: readonly string[]) {
  const format = zodResponseFormat(answerSchema(labels), 'classification');
  // Only the wire format: zodResponseFormat also attaches parser functions, which must not leak into request keys.
  return { type: format.type, json_schema: format.json_schema };
}
function memo<T>(cache: Map<string, T>, labels: readonly string[], make: () => T): T {
  const key = JSON.stringify(labels);
  let v = cache.get(key);
  if (v === undefined) cache.set(key, (v = make()));
  return v;
}

export type Answer = z.infer<ReturnType<typeof answerSchema>>;

export function responseFormat(labels: readonly string[]) {
  return memo(formats, labels, () => buildFormat(labels));
}

export type ParsedAnswer = { ok: true; label: string } | { ok: false; error: string };

/** Parse an answer; an answer that is not JSON or names no known label is invalid. */
export function parseAnswer(content: string | null | undefined, labels: readonly string[]): ParsedAnswer {
  if (content === null || content === undefined || content.trim() === '') return { ok: false, error: 'empty answer' };
  let json: unknown;
  try {
    json = JSON.parse(content);
  } catch {
    return { ok: false, error: `answer is not valid JSON: ${truncate(content)}` };
  }
  const parsed = answerSchema(labels).safeParse(json);
  if (!parsed.success) return { ok: false, error: `answer names no known label: ${truncate(content)}` };
  return { ok: true, label: parsed.data.label };
}

function truncate(s: string, n = 120): string {
  const flat = s.replace(/\s+/g, ' ');
  return flat.length > n ? `${flat.slice(0, n)}…` : flat;
}
