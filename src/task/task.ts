import crypto, { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseDocument, LineCounter } from 'yaml';
import { z } from 'zod';
import { InputError } from '../errors.ts';

/** The YAML front matter of a task file in prompts/. */
export const TaskFrontMatter = z
  .object({
    name: z.string().min(1),
    labels: z
      .array(z.union([z.string(), z.number()]).transform(String))
      .min(2, 'a task needs at least 2 labels')
      .refine((ls) => new Set(ls).size === ls.length, 'labels must be unique')
      .refine((ls) => ls.every((l) => l.trim().length > 0), 'labels must not be empty'),
    input: z.enum(['text', 'image']).default('text'),
    system: z.string().optional(),
  })
  .strict();

export type TaskFrontMatter = z.infer<typeof TaskFrontMatter>;

export interface Task extends TaskFrontMatter {
  /** Path the task was loaded from. */
  path: string;
  /** The user-message template (the Markdown body). */
  template: string;
  /** sha256 of the task file's bytes: the prompt version recorded with every label. */
  version: string;
}

const FRONT_MATTER = /^---\r?\n([\s\S]*?)\r?\n---\r?\n?/;

export function loadTask(path: string): Task {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    throw new InputError(path, undefined, `cannot read task file (${(e as NodeJS.ErrnoException).code ?? e})`);
  }
  return parseTask(bytes.toString('utf8'), path, sha256Hex(bytes));
}

export function parseTask(source: string, path: string, version = sha256Hex(source)): Task {
  const m = FRONT_MATTER.exec(source);
  if (!m) throw new InputError(path, 1, 'a task file starts with YAML front matter between two "---" lines');
  const lineCounter = new LineCounter();
  const doc = parseDocument(m[1], { lineCounter });
  if (doc.errors.length > 0) {
    const err = doc.errors[0];
    const line = lineCounter.linePos(err.pos[0]).line + 1; // +1 for the opening ---
    throw new InputError(path, line, `invalid YAML: ${err.message.split('\n')[0]}`);
  }
  const parsed = TaskFrontMatter.safeParse(doc.toJS() ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const key = issue.path[0];
    let line = 2;
    if (typeof key === 'string') {
      const node = doc.contents && 'items' in doc.contents ? (doc.contents.items as any[]).find((p) => p.key?.value === key) : undefined;
      if (node?.key?.range) line = lineCounter.linePos(node.key.range[0]).line + 1;
    }
    const where = issue.path.length > 0 ? `${issue.path.join('.')}: ` : '';
    throw new InputError(path, line, `invalid task: ${where}${issue.message}`);
  }
  const template = source.slice(m[0].length).trim();
  if (template.length === 0) throw new InputError(path, undefined, 'the task has no body (the user message template)');
  return { ...parsed.data, path, template, version };
}

/** Fields the template refers to, in order of first use. */
export function templateFields(template: string): string[] {
  return [...new Set([...template.matchAll(/\{\{\s*([\w.-]+)\s*\}\}/g)].map((m) => m[1]))];
}

/** Fill `{{field}}` placeholders from the input row. A missing field is the caller's error to report. */
export function renderTemplate(template: string, fields: Record<string, unknown>): string {
  return template.replace(/\{\{\s*([\w.-]+)\s*\}\}/g, (_, name: string) => {
    const v = fields[name];
    if (v === undefined || v === null) throw new Error(`missing field "${name}"`);
    return typeof v === 'string' ? v : JSON.stringify(v);
  });
}

// crypto.hash (Node >= 20.12) is several times faster than createHash for the small inputs hashed per item.
const oneShotHash = (crypto as { hash?: (alg: string, data: string | Buffer | Uint8Array, enc: 'hex') => string }).hash;

export function sha256Hex(data: string | Buffer | Uint8Array): string {
  return oneShotHash ? oneShotHash('sha256', data, 'hex') : createHash('sha256').update(data).digest('hex');
}
