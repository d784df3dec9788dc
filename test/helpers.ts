/**
 * Shared fixtures for the labeler and CLI tests: temp folders, tiny task files
 * and inputs, LabelOptions with test-friendly defaults, and store queries.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { after } from 'node:test';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { PNG } from 'pngjs';
import { readItems } from '../src/input/read.ts';
import type { LabelOptions } from '../src/label/types.ts';
import { decodeSoft, softToProbs } from '../src/soft/codec.ts';
import { Store, type ImportResult } from '../src/store/store.ts';
import { loadTask, type Task } from '../src/task/task.ts';
import { TeacherClient } from '../src/teacher/client.ts';
import { parseSoftMode } from '../src/teacher/request.ts';
import { DEFAULT_RETRY } from '../src/teacher/retry.ts';
import { lastUserText, startFakeTeacher, type ChatRequest, type FakeTeacher, type FakeTeacherOptions } from './fake-openai.ts';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const fakes: FakeTeacher[] = [];
after(async () => {
  await Promise.all(fakes.map((f) => f.close()));
});

/** A fake OpenAI-compatible server, closed when the test file ends. */
export async function fakeServer(opts: FakeTeacherOptions = {}): Promise<FakeTeacher> {
  const fake = await startFakeTeacher(opts);
  fakes.push(fake);
  return fake;
}

const workDirs: string[] = [];
after(() => {
  for (const d of workDirs) fs.rmSync(d, { recursive: true, force: true });
});

/** A temp folder removed when the test file ends. */
export function workDir(): string {
  const d = tmpDir();
  workDirs.push(d);
  return d;
}

export function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'distillery-'));
}

/** Short labels that never occur inside each other or inside the template. */
export const LABELS = ['cat', 'dog', 'bird'];

/** A task file whose template does NOT list the labels: the fake teacher answers the label the text mentions. */
export function writeTask(
  dir: string,
  opts: { name?: string; labels?: string[] | null; input?: 'text' | 'image'; body?: string; file?: string } = {},
): string {
  const labels = opts.labels === undefined ? LABELS : opts.labels;
  const front = [`name: ${opts.name ?? 'animals'}`];
  if (labels) front.push(`labels: [${labels.join(', ')}]`);
  front.push(`input: ${opts.input ?? 'text'}`);
  const body = opts.body ?? (opts.input === 'image' ? 'Which animal is drawn here?' : 'Which animal is this about?\n\nText: {{text}}');
  const file = path.join(dir, opts.file ?? `${opts.name ?? 'animals'}.md`);
  fs.writeFileSync(file, `---\n${front.join('\n')}\n---\n${body}\n`);
  return file;
}

export function writeJsonl(dir: string, name: string, rows: Array<Record<string, unknown>>): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return file;
}

/** `n` items; item i mentions LABELS[i % 3] (the fake teacher's answer) and is unique by its number. */
export function animalRows(n: number, prefix = 'item'): Array<{ id: string; text: string; label: string }> {
  return Array.from({ length: n }, (_, i) => {
    const label = LABELS[i % LABELS.length];
    return { id: `${prefix}${i}`, text: `number ${i} is about a ${label}`, label };
  });
}

export function pngFile(dir: string, name: string, seed: number): string {
  const png = new PNG({ width: 8, height: 8 });
  for (let i = 0; i < png.data.length; i++) png.data[i] = (i * 13 + seed * 31) & 0xff;
  const file = path.join(dir, name);
  fs.writeFileSync(file, PNG.sync.write(png));
  return file;
}

export async function importFile(store: Store, task: Task, file: string): Promise<ImportResult> {
  return store.importItems(task, readItems(file, task));
}

export function makeClient(url: string, timeoutMs = 5_000): TeacherClient {
  return new TeacherClient({ baseURL: url, apiKeyEnv: 'DISTILLERY_TEST_KEY', timeoutMs, env: { DISTILLERY_TEST_KEY: 'sk-test-key' } });
}

export const PRICE = { input: 2, output: 10, source: 'test' };

/** LabelOptions with fast retries; override anything. */
export function labelOptions(
  store: Store,
  task: Task,
  imported: ImportResult,
  client: TeacherClient,
  over: Partial<Omit<LabelOptions, 'settings'>> & { soft?: string; temperature?: number; maxTokens?: number } = {},
): LabelOptions {
  const { soft = 'logprobs', temperature, maxTokens, ...rest } = over;
  const mode = parseSoftMode(soft);
  return {
    store,
    task,
    taskRow: imported.taskRow,
    client,
    settings: {
      model: 'fake-teacher',
      baseURL: client.baseURL,
      soft: mode,
      temperature: temperature ?? (mode.kind === 'samples' ? 1 : 0),
      maxTokens: maxTokens ?? 20,
      imageDetail: 'low',
    },
    price: PRICE,
    concurrency: 4,
    limits: {},
    retry: { ...DEFAULT_RETRY, maxRetries: 4, baseDelayMs: 5, maxDelayMs: 50 },
    maxInvalid: 2,
    retryFailed: false,
    itemIds: imported.itemIds,
    ...rest,
  };
}

export interface LabelRowView {
  ext_id: string;
  text: string;
  status: string;
  label: string | null;
  probs: number[] | null;
  soft_method: string;
  raw: string | null;
  error: string | null;
  prompt_tokens: number;
  completion_tokens: number;
  cost: number;
  attempts: number;
  run_id: number;
}

/** Every label row, in item order then label order, soft labels decoded to probabilities. */
export function labelRows(store: Store): LabelRowView[] {
  const rows = sqlOn(store, (db) =>
    db
      .prepare(
        `SELECT i.ext_id, i.input, l.status, l.label, l.soft, l.soft_method, l.raw, l.error, l.prompt_tokens, l.completion_tokens, l.cost, l.attempts, l.run_id
         FROM labels l JOIN items i ON i.id = l.item_id ORDER BY i.id, l.id`,
      )
      .all(),
  ) as any[];
  return rows.map((r) => ({
    ext_id: r.ext_id,
    text: JSON.parse(r.input).text,
    status: r.status,
    label: r.label,
    probs: r.soft ? softToProbs(decodeSoft(r.soft)) : null,
    soft_method: r.soft_method,
    raw: r.raw,
    error: r.error,
    prompt_tokens: r.prompt_tokens,
    completion_tokens: r.completion_tokens,
    cost: r.cost,
    attempts: r.attempts,
    run_id: r.run_id,
  }));
}

export function count(store: Store, sql: string, ...params: unknown[]): number {
  return sqlOn(store, (db) => (db.prepare(sql).get(...params) as { n: number }).n);
}

/**
 * SQL on a store's file through a connection of the test's own (the store keeps its handle private), after the
 * store's queued writes are committed. Also for writing what a test sets up (another holder's lease, old dates).
 */
export function sqlOn<T>(store: Store, use: (db: Database.Database) => T): T {
  store.flush();
  const db = new Database(store.path, { fileMustExist: true });
  try {
    return use(db);
  } finally {
    db.close();
  }
}

/** The item text a request is about: the part of the user message after "Text: ". */
export function itemText(req: ChatRequest): string {
  const t = lastUserText(req);
  const i = t.indexOf('Text: ');
  return i >= 0 ? t.slice(i + 'Text: '.length) : t;
}

/** Fault on the first `times` requests of every item the predicate picks (by item text). */
export function firstRequestsOf<F>(times: number, pick: (text: string) => boolean, fault: F): (req: ChatRequest) => F | undefined {
  const seen = new Map<string, number>();
  return (req) => {
    const text = itemText(req);
    if (!pick(text)) return undefined;
    const k = (seen.get(text) ?? 0) + 1;
    seen.set(text, k);
    return k <= times ? fault : undefined;
  };
}

export function loadTaskFile(file: string): Task {
  return loadTask(file);
}

/** How many requests the server got per item text. */
export function requestsPerItem(requests: ChatRequest[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const r of requests) m.set(itemText(r), (m.get(itemText(r)) ?? 0) + 1);
  return m;
}

// ---------------------------------------------------------------------------------------
// Running the scripts as a user does: `node --import tsx scripts/X.ts ...`, cwd = repo root

export interface ScriptResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** The environment without anything that could point a script at a real API. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('OPENAI_')) delete env[k];
  delete env.NODE_TEST_CONTEXT; // a child must not think it is a test runner's child
  return { ...env, ...extra };
}

/** Start `node --import tsx ARGS...`; `done` resolves when it exits. */
export function startNode(args: string[], env: Record<string, string> = {}): { child: ChildProcess; done: Promise<ScriptResult> } {
  const child = spawn(process.execPath, ['--import', 'tsx', ...args], {
    cwd: REPO_ROOT,
    env: cleanEnv(env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const done = new Promise<ScriptResult>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  return { child, done };
}

/**
 * At most two children at once per test file: each costs ~1.4 s of CPU to start
 * (tsx and the imports), and on two cores more at once only thrash.
 */
const MAX_CHILDREN = 2;
let running = 0;
const waiting: Array<() => void> = [];

export async function runNode(args: string[], env: Record<string, string> = {}): Promise<ScriptResult> {
  if (running >= MAX_CHILDREN) await new Promise<void>((resolve) => waiting.push(resolve));
  else running++;
  try {
    return await startNode(args, env).done;
  } finally {
    const next = waiting.shift();
    if (next) next();
    else running--;
  }
}

export function runScript(script: string, args: string[], env: Record<string, string> = {}): Promise<ScriptResult> {
  return runNode([`scripts/${script}.ts`, ...args], env);
}
