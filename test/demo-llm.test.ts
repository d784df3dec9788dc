/**
 * `npm run demo -- --llm` against the simulated teacher (started here, in-process, as a user starts
 * `npm run sim-teacher`): a pilot of two sim models, the rest labeled with its choice, three text students, a cascade
 * on the best, new tickets through predict --cascade, and the text report with its pilot, evaluation and cascade
 * sections. The server's request log shows that no ticket is asked twice of one model (the pilot's answers are
 * reused). The MNIST part runs at its smallest.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { writeTickets } from '../src/datasets/tickets.ts';
import { readItems } from '../src/input/read.ts';
import { GoldIndex, goldTeacher, servesModel, type SimTally } from '../src/sim/gold-teacher.ts';
import { loadTask } from '../src/task/task.ts';
import { lastUserText } from './fake-openai.ts';
import { fakeServer, REPO_ROOT, runScript, workDir } from './helpers.ts';
import { TRAIN_BACKEND } from './train-backend.ts';

test('demo --llm with the simulator: pilot, labels paid once, three text students, a cascade, the text report', async () => {
  const dir = workDir();
  const items = 180;
  const held = 20; // the demo keeps max(20, items/9) new tickets aside for the cascade
  const task = loadTask(path.join(REPO_ROOT, 'prompts', 'tickets.md'));
  // The simulator's gold: make-tickets' default draw, of which the demo's tickets are a prefix.
  const index = await GoldIndex.build(task, readItems(writeTickets(path.join(dir, 'sim'), items + held, 0), task));
  const sim = await fakeServer({
    teacher: goldTeacher(index, { accuracy: 0.85, seed: 0 }, new Map<string, SimTally>()),
    models: { list: ['sim-teacher'], serves: servesModel, refusal: (m) => `${m}: not a simulator model` },
  });

  const out = path.join(dir, 'demo');
  const r = await runScript(
    'demo',
    [
      ...['--quick', '--train', '100', '--test', '50', '--student-epochs', '1', '--backend', TRAIN_BACKEND, '--out', out],
      ...['--llm', '--llm-model', 'sim-a,sim-b', '--llm-items', String(items)],
    ],
    { OPENAI_BASE_URL: sim.url },
  );
  assert.equal(r.code, 0, r.stderr.slice(-3000));

  // The summary names the pilot's choice, the three students and the cascade.
  const chosen = /pilot: 2 configuration\(s\) on 20 tickets; chosen: (sim-[ab]) · tickets\.md \(run \d+\)/.exec(r.stdout)?.[1];
  assert.ok(chosen, r.stdout);
  const other = chosen === 'sim-a' ? 'sim-b' : 'sim-a';
  assert.match(r.stdout, /text students, test accuracy: fasttext \d+\.\d\d%, logreg \d+\.\d\d%, mlp \d+\.\d\d%/);
  assert.match(r.stdout, new RegExp(`cascade \\((fasttext|logreg|mlp), target \\d+\\.\\d\\d% per class\\) on ${held} new tickets`));

  // Per model, every ticket asked once: the pilot's 20 for the other model; for the chosen one, the pilot's 20, the
  // other 160 of the pool (the sample not paid again) and the cascade's teacher share of the 20 new tickets.
  const asked = new Map<string, Map<string, number>>();
  for (const req of sim.requests) {
    const model = String(req.body.model);
    const perItem = asked.get(model) ?? new Map<string, number>();
    perItem.set(lastUserText(req), (perItem.get(lastUserText(req)) ?? 0) + 1);
    asked.set(model, perItem);
  }
  assert.deepEqual([...asked.keys()].sort(), ['sim-a', 'sim-b']);
  for (const [model, perItem] of asked) {
    for (const [text, n] of perItem) assert.equal(n, 1, `${model} asked ${n} times about ${text.slice(-80)}`);
  }
  assert.equal(asked.get(other)!.size, 20, 'the other configuration: the pilot sample only');
  const poolTexts = fs
    .readFileSync(path.join(out, 'tickets', 'pool.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => (JSON.parse(l) as { text: string }).text);
  const newTexts = fs
    .readFileSync(path.join(out, 'tickets', 'new.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => (JSON.parse(l) as { text: string }).text);
  assert.equal(poolTexts.length, items);
  assert.equal(newTexts.length, held);
  const about = (texts: string[]) => [...asked.get(chosen)!.keys()].filter((t) => texts.some((x) => t.endsWith(x))).length;
  assert.equal(about(poolTexts), items, 'the chosen model: every pool ticket once (pilot sample + the rest)');
  const answers = fs
    .readFileSync(path.join(out, 'tickets', 'new-answers.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { by: string });
  assert.equal(answers.length, held);
  assert.equal(about(newTexts), answers.filter((a) => a.by === 'teacher').length, 'the cascade asks only about what the student leaves');
  assert.equal(asked.get(chosen)!.size, items + about(newTexts));

  // The text report: the pilot, the three students, their evaluation and the cascade.
  const html = fs.readFileSync(path.join(out, 'text-report', 'report.html'), 'utf8');
  assert.match(html, /<h2>Pilot of task <code>tickets<\/code><\/h2>/);
  assert.match(html, new RegExp(`<td[^>]*>${other}</td>(?:(?!</tr>)[^])*no \\(the sample only\\)`));
  assert.match(html, /yes: 180 items labeled/);
  assert.match(html, /<h2>Students side by side<\/h2>/);
  for (const k of ['fasttext', 'logreg', 'mlp']) assert.match(html, new RegExp(`text-${k}`));
  assert.match(html, /<h2>Evaluation on the test split<\/h2>/);
  assert.match(html, /<h2>Cascades: which items the student answers alone<\/h2>/);
  const best = /cascade \((fasttext|logreg|mlp),/.exec(r.stdout)![1];
  assert.ok(fs.existsSync(path.join(out, 'models', `text-${best}`, 'cascade.json')));
  // The MNIST report is still written.
  assert.ok(fs.existsSync(path.join(out, 'report.html')));
});
