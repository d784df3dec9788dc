/**
 * The flag vocabulary (notes/cli.md, "Flags every command shares"): a shared
 * flag means the same thing in every script. Read from each script's --help,
 * as a user sees it, two scripts at a time.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { errorLine, flagOf } from '../src/cli/run.ts';
import { taskFromArg, taskInStore } from '../src/cli/task.ts';
import { InputError, SettingError } from '../src/errors.ts';
import { Store } from '../src/store/store.ts';
import { loadTask } from '../src/task/task.ts';
import { REPO_ROOT, runScript, workDir, writeTask, type ScriptResult } from './helpers.ts';

const SCRIPTS = fs
  .readdirSync(path.join(REPO_ROOT, 'scripts'))
  .filter((f) => f.endsWith('.ts'))
  .map((f) => f.slice(0, -3))
  .sort();

/** Scripts that talk to a teacher LLM: the only ones with --model and --temperature. */
const TEACHER_LLM = new Set(['label', 'relabel', 'pilot', 'predict']); // predict: with --cascade

interface Flag {
  /** `<file>`, `<dir...>`, or '' for a switch. */
  arg: string;
  help: string;
}

/** Run `fn` over `xs`, at most `n` at a time. */
async function pool<T, R>(xs: T[], n: number, fn: (x: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(xs.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, xs.length) }, async () => {
      while (next < xs.length) {
        const i = next++;
        out[i] = await fn(xs[i]);
      }
    }),
  );
  return out;
}

/** The Options section of commander's help: flag -> argument and help text (wrapped lines joined). */
function parseHelp(text: string): Map<string, Flag> {
  const flags = new Map<string, Flag>();
  const lines = text.split('\n');
  let inOptions = false;
  let last: Flag | undefined;
  for (const line of lines) {
    if (/^Options:/.test(line)) {
      inOptions = true;
      continue;
    }
    if (!inOptions) continue;
    if (/^\S/.test(line)) break; // the next section
    const m = /^ {2}(?:-\w, )?(--[\w-]+)(?: ([<[][^>\]]+[>\]]))?(?: {2,}(.*))?$/.exec(line);
    if (m) {
      last = { arg: m[2] ?? '', help: (m[3] ?? '').trim() };
      flags.set(m[1], last);
    } else if (last && line.trim()) {
      last.help += ` ${line.trim()}`;
    }
  }
  return flags;
}

const helps = new Map<string, Map<string, Flag>>();

before(async () => {
  const results = await pool(SCRIPTS, 2, (s) => runScript(s, ['--help']));
  SCRIPTS.forEach((s, i) => {
    assert.equal(results[i].code, 0, `${s} --help: ${results[i].stderr}`);
    helps.set(s, parseHelp(results[i].stdout));
  });
  // A script with subcommands (cascade.ts fit) lists only -h itself: its subcommands' flags count as the script's.
  const subs = SCRIPTS.flatMap((s, i) => subcommands(results[i].stdout).map((sub) => [s, sub] as const));
  const subResults = await pool(subs, 2, ([s, sub]) => runScript(s, [sub, '--help']));
  subs.forEach(([s, sub], i) => {
    assert.equal(subResults[i].code, 0, `${s} ${sub} --help: ${subResults[i].stderr}`);
    for (const [flag, f] of parseHelp(subResults[i].stdout)) helps.get(s)!.set(flag, f);
  });
});

/** The Commands section of commander's help: the subcommand names (not `help`). */
function subcommands(text: string): string[] {
  const at = text.split('\n').findIndex((l) => /^Commands:/.test(l));
  if (at < 0) return [];
  const names: string[] = [];
  for (const line of text.split('\n').slice(at + 1)) {
    if (/^\S/.test(line)) break;
    const m = /^ {2}([\w-]+)/.exec(line);
    if (m && m[1] !== 'help') names.push(m[1]);
  }
  return names;
}

/** [script, flag] for every script that declares `name`. */
function uses(name: string): Array<[string, Flag]> {
  return SCRIPTS.flatMap((s) => {
    const f = helps.get(s)!.get(name);
    return f ? [[s, f] as [string, Flag]] : [];
  });
}

/** The scripts where `name` breaks `ok`, with what they declare. */
function breaking(name: string, ok: (f: Flag, script: string) => boolean): string[] {
  return uses(name)
    .filter(([s, f]) => !ok(f, s))
    .map(([s, f]) => `${s}: ${name} ${f.arg} ${f.help}`.trim());
}

describe('flag vocabulary', () => {
  test("a script's subcommands are read too (cascade.ts fit's flags)", () => {
    assert.ok(helps.get('cascade')!.has('--student'), 'cascade fit --student');
    assert.ok(helps.get('cascade')!.has('--db'), 'cascade fit --db');
  });

  test('every script has a --help with an Options section', () => {
    assert.ok(SCRIPTS.length >= 20, `${SCRIPTS.length} scripts`);
    for (const s of SCRIPTS) assert.ok(helps.get(s)!.has('--help'), `${s}: no Options section parsed`);
  });

  test('--db: one definition (same argument, same help) wherever it appears', () => {
    assert.ok(uses('--db').length >= 11, `only ${uses('--db').length} scripts take --db`);
    assert.deepEqual(
      breaking('--db', (f) => f.arg === '<file>' && f.help === 'SQLite database (default: "./distill.db")'),
      [],
    );
  });

  test('--task is always <name|file>', () => {
    assert.ok(uses('--task').length >= 8);
    assert.deepEqual(
      breaking('--task', (f) => f.arg === '<name|file>'),
      [],
    );
  });

  test('--model and --temperature only where a teacher LLM is asked', () => {
    assert.ok(uses('--model').length >= 2);
    assert.deepEqual(
      [...breaking('--model', (_, s) => TEACHER_LLM.has(s)), ...breaking('--temperature', (_, s) => TEACHER_LLM.has(s))],
      [],
    );
  });

  test('--student is always a folder', () => {
    assert.ok(uses('--student').length >= 2);
    assert.deepEqual(
      breaking('--student', (f) => /^<dir(\.\.\.)?>$/.test(f.arg)),
      [],
    );
  });

  test('no --teacher-model: the feature teacher is --feature-teacher, a logits teacher --from-model', () => {
    assert.deepEqual(
      breaking('--teacher-model', () => false),
      [],
    );
  });

  test('--backend: the same choices and default everywhere', () => {
    assert.ok(uses('--backend').length >= 6);
    assert.deepEqual(
      breaking('--backend', (f) => f.arg === '<name>' && /\(choices: "auto", "tensorflow", "wasm", "cpu", default: "auto"\)$/.test(f.help)),
      [],
    );
  });

  test('--out is always a folder', () => {
    assert.ok(uses('--out').length >= 5);
    assert.deepEqual(
      breaking('--out', (f) => f.arg === '<dir>'),
      [],
    );
  });

  test('--json is a switch; --teachers takes one list', () => {
    assert.deepEqual([...breaking('--json', (f) => f.arg === ''), ...breaking('--teachers', (f) => f.arg === '<list>')], []);
  });
});

/**
 * Scripts that read a database, with the least arguments that get past
 * commander's own checks (train, eval and predict: the renamed flags).
 */
const READERS: Record<string, string[]> = {
  status: [],
  teachers: [],
  export: ['--out', 'OUT'],
  report: ['--out', 'OUT'],
  'ingest-logits': ['--teacher', 't', '--input', 'x.jsonl'],
  relabel: ['--model', 'm', '--policy', 'changed', '--base-url', 'http://127.0.0.1:9/v1'],
  train: ['--arch', 'logreg', '--out', 'OUT'],
  eval: ['--student', 'S'],
  review: ['--reviewer', 'tester'],
};

describe('a missing database', () => {
  test('every script that reads a database refuses a missing one: one line, exit 1, no file created', async () => {
    const dir = workDir();
    const db = path.join(dir, 'missing.db');
    const cases = Object.entries(READERS);
    const results: ScriptResult[] = await pool(cases, 2, ([s, args]) =>
      runScript(s, ['--db', db, ...args.map((a) => (a === 'OUT' || a === 'S' ? path.join(dir, `${s}-${a}`) : a))], {
        OPENAI_API_KEY: 'sk-test',
      }),
    );
    const failures: string[] = [];
    cases.forEach(([s], i) => {
      const r = results[i];
      const want = `error: ${db}: no such database (create one with import.ts or label.ts)\n`;
      if (r.code !== 1 || r.stderr !== want) failures.push(`${s}: exit ${r.code}, stderr ${JSON.stringify(r.stderr.slice(0, 300))}`);
    });
    assert.ok(!fs.existsSync(db), 'a missing database was created');
    assert.deepEqual(failures, []);
  });
});

describe('--task NAME|FILE: one resolver', () => {
  /** A database holding the tasks of these files. */
  function dbWith(files: string[]): Store {
    const store = Store.open(path.join(workDir(), 'tasks.db'));
    for (const f of files) store.ensureTask(loadTask(f));
    return store;
  }

  test('taskInStore: a name, a file (matched by its name, labels checked), prompts/NAME; omitted: the only task', () => {
    const dir = workDir();
    const animals = writeTask(dir);
    const store = dbWith([animals, 'prompts/shapes.md']);
    try {
      assert.equal(taskInStore(store, 'animals').name, 'animals');
      assert.equal(taskInStore(store, animals).name, 'animals');
      assert.equal(taskInStore(store, 'shapes').name, 'shapes');
      assert.throws(() => taskInStore(store), /several tasks \(animals, shapes\); choose one with --task$/);
      assert.throws(() => taskInStore(store, 'nope'), /no task "nope" \(tasks: animals, shapes\)$/);
      const other = writeTask(dir, { labels: ['cat', 'dog'], file: 'other.md' });
      assert.throws(
        () => taskInStore(store, other),
        /task "animals" is in .* with labels \["cat","dog","bird"\] \(text\), the file says \["cat","dog"\]/,
      );
    } finally {
      store.close();
    }
    const one = dbWith([animals]);
    try {
      assert.equal(taskInStore(one).name, 'animals');
    } finally {
      one.close();
    }
  });

  test('taskFromArg: a file, prompts/NAME; omitted: the only task when its file is prompts/NAME.md', () => {
    const dir = workDir();
    const animals = writeTask(dir);
    assert.equal(taskFromArg(animals).path, animals);
    assert.equal(taskFromArg('shapes').path, path.join('prompts', 'shapes.md'));
    assert.throws(() => taskFromArg(undefined), /give --task NAME\|FILE \(the database holds no tasks\)$/);

    const shapes = dbWith(['prompts/shapes.md']);
    try {
      assert.equal(taskFromArg(undefined, shapes).name, 'shapes');
    } finally {
      shapes.close();
    }
    const store = dbWith([animals]);
    try {
      assert.throws(() => taskFromArg(undefined, store), /give --task FILE: the task file of "animals" is not prompts\/animals\.md/);
      assert.throws(() => taskFromArg('animals', store), /--task animals: the task is in .* but its file is not prompts\/animals\.md/);
      assert.equal(taskFromArg(animals, store.path).name, 'animals');
    } finally {
      store.close();
    }
  });
});

describe('settings become flags only in the CLI layer', () => {
  test('SettingError carries the setting and value; errorLine spells the flag', () => {
    const e = new SettingError('kdTemperature', 0, 'must be above 0');
    assert.deepEqual([e.setting, e.value, e.message], ['kdTemperature', 0, 'kdTemperature: must be above 0']);
    assert.equal(errorLine(e), '--kd-temperature: must be above 0');
    assert.equal(flagOf('studentDir'), '--student');
    assert.equal(flagOf('featureTeacher'), '--feature-teacher');
    assert.equal(
      errorLine(new InputError('a.csv', 2, 'missing column "text" (columns: body)', 'textField')),
      'a.csv:2: missing column "text" (columns: body); set --text-field',
    );
  });
});
