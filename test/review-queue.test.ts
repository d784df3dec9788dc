/**
 * The review queue on a hand-built store: each policy's order (teachers that disagree, unsure targets, a label
 * the out-of-fold prediction contradicts), the reasons, reviewers' labels never counted as a teacher, and what
 * the page is handed for one item.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { selfConfidence } from '../src/review/label-issues.ts';
import { ItemView } from '../src/review/api.ts';
import { itemView } from '../src/review/item-view.ts';
import { buildQueue, buildReviewContext, parseReviewPolicy, type ReviewContext } from '../src/review/queue.ts';
import { decide } from '../src/store/reviews.ts';
import { encodeSoft } from '../src/soft/codec.ts';
import { writeOutOfFold } from '../src/train/out-of-fold.ts';
import { Store, type TaskRow } from '../src/store/store.ts';
import { importFile, LABELS, loadTaskFile, pngFile, runScript, workDir, writeJsonl, writeTask } from './helpers.ts';
import { TRAIN_BACKEND } from './train-backend.ts';

const [CAT, DOG, BIRD] = [0, 1, 2];

/** Log-probabilities putting `p` on class k, the rest evenly. */
function peaked(k: number, p: number): Float32Array {
  return Float32Array.from(LABELS, (_, j) => Math.log(j === k ? p : (1 - p) / (LABELS.length - 1)));
}

/** A completed run of `teacher` labeling items (by index) with [class, confidence]; confidence null = a hard label only. */
function addRun(
  store: Store,
  task: TaskRow,
  ids: number[],
  teacher: string,
  kind: string,
  labels: Record<number, [number, number | null]>,
) {
  const run = store.createRun({
    task_id: task.id,
    kind,
    teacher,
    base_url: null,
    prompt_version: null,
    config_hash: `cfg-${teacher}`,
    params: '{}',
    labels: JSON.stringify(task.labels),
    items_total: Object.keys(labels).length,
  });
  for (const [i, [k, p]] of Object.entries(labels)) {
    store.insertLabel({
      itemId: ids[Number(i)],
      runId: run.id,
      requestKey: `key-${teacher}-${i}`,
      status: 'ok',
      label: task.labels[k],
      soft: p === null ? null : encodeSoft({ kind: 'logprobs', values: peaked(k, p) }, { kind: 'dense32' }),
      softMethod: p === null ? 'none' : 'logprobs',
      sparse: false,
      raw: null,
      promptTokens: 0,
      completionTokens: 0,
      cost: 0,
      latencyMs: 0,
      attempts: 1,
      error: null,
    });
  }
  store.finishRun(run.id, 'completed', null);
  return run;
}

/** A student folder holding only out-of-fold predictions (train-split items carry their fold, as train.ts --folds writes). */
function studentFolder(dir: string, task: TaskRow, items: Array<{ id: number; probs: number[]; fold: number | null }>): string {
  writeOutOfFold(dir, { task: task.name, labels: task.labels, folds: 2, seed: 1, items });
  return dir;
}

interface Fixture {
  store: Store;
  task: TaskRow;
  ids: number[];
  dir: string;
}

/**
 * Eight items. gpt-a gives log-probabilities, gpt-b hard labels only, and a reviewer (a human run) labels items 0
 * and 5 "dog": were it a teacher, item 0 would be a disagreement and item 5 would have a target.
 *
 *   item  gpt-a       gpt-b   mean target       split
 *   0     cat 0.9     cat     cat 0.95          train
 *   1     dog 0.6     cat     cat 0.6           train   (teachers disagree)
 *   2     bird 0.95   bird    bird 0.975        test
 *   3     cat 0.5     cat     cat 0.75          train
 *   4     dog 0.4     -       dog 0.4           test
 *   5     -           -       none              train
 *   6     bird 0.9    cat     cat 0.525         train   (teachers disagree)
 *   7     cat 0.8     cat     cat 0.9           train   (the out-of-fold student says dog)
 */
async function fixture(): Promise<Fixture> {
  const dir = workDir();
  const store = Store.open(path.join(dir, 'db.sqlite'));
  const taskFile = loadTaskFile(writeTask(dir));
  const rows = Array.from({ length: 8 }, (_, i) => ({
    id: `it${i}`,
    text: i === 3 ? '<img src=x onerror=alert(1)> & </script><script>alert(2)</script>' : `item number ${i}`,
    split: i === 2 || i === 4 ? 'test' : 'train',
  }));
  const imported = await importFile(store, taskFile, writeJsonl(dir, 'items.jsonl', rows));
  const task = imported.taskRow;
  const ids = imported.itemIds;
  addRun(store, task, ids, 'gpt-a', 'llm', {
    0: [CAT, 0.9],
    1: [DOG, 0.6],
    2: [BIRD, 0.95],
    3: [CAT, 0.5],
    4: [DOG, 0.4],
    6: [BIRD, 0.9],
    7: [CAT, 0.8],
  });
  addRun(store, task, ids, 'gpt-b', 'llm', {
    0: [CAT, null],
    1: [CAT, null],
    2: [BIRD, null],
    3: [CAT, null],
    6: [CAT, null],
    7: [CAT, null],
  });
  // A reviewer's answers, stored as the page stores them.
  for (const i of [0, 5]) assert.equal(decide(store, { task, reviewer: 'alice', itemId: ids[i], label: 'dog' }).status, 'stored');
  return { store, task, ids, dir };
}

function close(actual: number[], expected: number[]): void {
  assert.equal(actual.length, expected.length);
  actual.forEach((a, k) => assert.ok(Math.abs(a - expected[k]) < 1e-6, `${actual.join(', ')} vs ${expected.join(', ')}`));
}

/** The queue as item indices of the fixture. */
function order(f: Fixture, ctx: ReviewContext, policy: Parameters<typeof buildQueue>[1]): number[] {
  return buildQueue(ctx, policy).map((e) => f.ids.indexOf(e.itemId));
}

describe('review queue', () => {
  let f: Fixture;
  before(async () => {
    f = await fixture();
  });

  test('disagree: teachers that disagree, the weaker majority first; agreeing items and reviewers are left out', async () => {
    const ctx = await buildReviewContext(f.store, f.task);
    assert.deepEqual(
      ctx.targets.teachers.map((t) => t.name),
      ['gpt-a', 'gpt-b'],
    );
    // Both are 1-1 splits (score 0.5); the less confident target comes first: item 6 (cat 0.525), item 1 (cat 0.6).
    const q = buildQueue(ctx, 'disagree');
    assert.deepEqual(
      q.map((e) => f.ids.indexOf(e.itemId)),
      [6, 1],
    );
    assert.deepEqual(
      q.map((e) => e.score),
      [0.5, 0.5],
    );
    assert.equal(q[0].reason, 'The teachers disagree: gpt-a says bird, gpt-b says cat.');
  });

  test('low-confidence: the target top probability, lowest first; an item without a target is never queued', async () => {
    const ctx = await buildReviewContext(f.store, f.task);
    const q = buildQueue(ctx, 'low-confidence');
    assert.deepEqual(
      q.map((e) => f.ids.indexOf(e.itemId)),
      [4, 6, 1, 3, 7, 0, 2],
    );
    const scores = q.map((e) => e.score);
    [0.4, 0.525, 0.6, 0.75, 0.9, 0.95, 0.975].forEach((want, k) => assert.ok(Math.abs(scores[k] - want) < 1e-6, `${scores[k]} vs ${want}`));
    assert.equal(q[0].reason, "The teachers' target is dog at 40% (next: cat 30%).");
    assert.ok(q.every((e) => e.reason.length > 0));
  });

  test('label-issues: the out-of-fold prediction ranks the label it contradicts first', async () => {
    const probs = (k: number, p: number) => LABELS.map((_, j) => (j === k ? p : (1 - p) / 2));
    // Out of fold, item 7 looks like a dog (self-confidence of "cat" 0.05) and item 1 is unsure (cat 0.3).
    const oof = [0, 1, 2, 3, 4, 5, 6, 7].map((i) => ({
      id: f.ids[i],
      probs: i === 7 ? probs(DOG, 0.9) : i === 1 ? [0.3, 0.4, 0.3] : probs([CAT, 0, BIRD, CAT, DOG, CAT, CAT][i], 0.8),
      fold: i === 2 || i === 4 ? null : i % 2,
    }));
    const studentDir = studentFolder(path.join(f.dir, 'student'), f.task, oof);
    // Every item is covered out of fold, so no model is loaded: the folder holds no model at all.
    const ctx = await buildReviewContext(f.store, f.task, { studentDir });
    const q = buildQueue(ctx, 'label-issues');
    assert.deepEqual(
      q.slice(0, 2).map((e) => f.ids.indexOf(e.itemId)),
      [7, 1],
    );
    assert.ok(Math.abs(q[0].score - 0.05) < 1e-9);
    assert.equal(q[0].reason, "The student (out of fold) gives the target's label cat 5%; it predicts dog (90%).");
    // Item 6's target is cat 0.525 and the student gives cat 0.8: the ties are broken by the target's confidence.
    assert.deepEqual(
      q.slice(2).map((e) => f.ids.indexOf(e.itemId)),
      [4, 6, 3, 0, 2],
    );
    assert.equal(q.length, 7);
    // A test-split item has no fold: the final student predicted it, never having trained on it.
    assert.equal(
      q.find((e) => e.itemId === f.ids[4])!.reason,
      "The student (never trained on this item) gives the target's label dog 80%; its top class too.",
    );

    // The same student makes item 7 a disagreement, the strongest one.
    const d = buildQueue(ctx, 'disagree');
    assert.deepEqual(
      d.map((e) => f.ids.indexOf(e.itemId)),
      [7, 1, 6],
    );
    assert.match(d[0].reason, /^The student \(out of fold\) predicts dog \(90%\), the target says cat \(90%\)\.$/);
    // Item 1: the teachers split 1-1 (0.5) and the student gives cat 0.3: the weaker evidence counts.
    assert.ok(Math.abs(d[1].score - 0.3) < 1e-9);
    assert.match(d[1].reason, /^The teachers disagree: .*\. The student \(out of fold\) predicts dog/);
  });

  test("another task's out-of-fold file is refused in one line", async () => {
    const dir = studentFolder(path.join(f.dir, 'other-student'), { ...f.task, name: 'other' }, [
      { id: f.ids[0], probs: [1, 0, 0], fold: 0 },
    ]);
    await assert.rejects(
      buildReviewContext(f.store, f.task, { studentDir: dir }),
      /out-of-fold\.json is for task "other" \(cat, dog, bird\), not "animals"/,
    );
  });

  test('label-issues without a student: the target scores its own label (self-confidence of the target)', async () => {
    const ctx = await buildReviewContext(f.store, f.task);
    const q = buildQueue(ctx, 'label-issues');
    assert.deepEqual(
      q.map((e) => f.ids.indexOf(e.itemId)),
      [4, 6, 1, 3, 7, 0, 2],
    );
    assert.match(q[0].reason, /^No student prediction for this item: the teachers' target gives its own label dog 40%\.$/);
  });

  test('--teachers, --aggregate and --split shape the queue as they shape training', async () => {
    const one = await buildReviewContext(f.store, f.task, { teachers: 'gpt-a' });
    assert.deepEqual(buildQueue(one, 'disagree'), []);
    const vote = await buildReviewContext(f.store, f.task, { aggregate: 'vote' });
    // A vote's target on item 6 is a 1-1 tie: both probabilities 0.5.
    const low = buildQueue(vote, 'low-confidence');
    assert.deepEqual(
      low.slice(0, 2).map((e) => f.ids.indexOf(e.itemId)),
      [1, 6],
    );
    const test = await buildReviewContext(f.store, f.task, { split: 'test' });
    assert.deepEqual(order(f, test, 'low-confidence'), [4, 2]);
    await assert.rejects(buildReviewContext(f.store, f.task, { split: 'nope' }), /split "nope".*splits: test, train/);
  });

  test('disagree: items the reviewers disagree on come first, for a third person to settle', async () => {
    const g = await fixture();
    // alice said dog on items 0 and 5; bob says cat on item 0 and agrees on item 5.
    decide(g.store, { task: g.task, reviewer: 'bob', itemId: g.ids[0], label: 'cat' });
    decide(g.store, { task: g.task, reviewer: 'bob', itemId: g.ids[5], label: 'dog' });
    const q = buildQueue(await buildReviewContext(g.store, g.task), 'disagree');
    assert.deepEqual(
      q.map((e) => g.ids.indexOf(e.itemId)),
      [0, 6, 1],
    );
    assert.equal(q[0].score, -0.5);
    assert.equal(q[0].reason, 'The reviewers disagree: alice says dog, bob says cat.');
  });

  test("a reviewer's run is never a teacher, even when named", async () => {
    await assert.rejects(
      buildReviewContext(f.store, f.task, { teachers: 'gpt-a,human:alice' }),
      /human:alice is a reviewer, not a teacher/,
    );
    const ctx = await buildReviewContext(f.store, f.task);
    assert.equal(ctx.targets.probs[5], null);
    for (const p of ['disagree', 'low-confidence', 'label-issues'] as const) assert.ok(!order(f, ctx, p).includes(5));
    // A task only reviewers have labeled has nothing to review against.
    const dir = workDir();
    const solo = await importFile(
      f.store,
      loadTaskFile(writeTask(dir, { name: 'solo' })),
      writeJsonl(dir, 'solo.jsonl', [{ id: 's0', text: 'x' }]),
    );
    decide(f.store, { task: solo.taskRow, reviewer: 'alice', itemId: solo.itemIds[0], label: 'cat' });
    await assert.rejects(
      buildReviewContext(f.store, solo.taskRow),
      /task "solo" has no teacher runs to review \(only reviewers' labels: human:alice\)/,
    );
  });

  test('the item view: the text as stored (not escaped), every teacher, the target, why and the suggestion', async () => {
    const ctx = await buildReviewContext(f.store, f.task);
    const entry = buildQueue(ctx, 'low-confidence').find((e) => e.itemId === f.ids[3])!;
    const view = ItemView.parse(itemView(f.store, ctx, entry));
    // Escaping is the page's job: the view carries the characters themselves.
    assert.deepEqual(view.fields, [{ name: 'text', value: '<img src=x onerror=alert(1)> & </script><script>alert(2)</script>' }]);
    assert.deepEqual([view.id, view.extId, view.split, view.image], [f.ids[3], 'it3', 'train', null]);
    assert.deepEqual(
      view.teachers.map((t) => [t.name, t.label]),
      [
        ['gpt-a', 'cat'],
        ['gpt-b', 'cat'],
      ],
    );
    close(view.teachers[0].probs!, [0.5, 0.25, 0.25]);
    assert.deepEqual(view.teachers[1].probs, [1, 0, 0]); // a hard-label-only teacher: one-hot
    assert.equal(view.target!.label, 'cat');
    close(view.target!.probs, [0.75, 0.125, 0.125]);
    assert.equal(view.suggestion, 'cat');
    assert.equal(view.student, null);
    assert.deepEqual(view.reason, { policy: 'low-confidence', text: entry.reason, score: entry.score });
    assert.match(view.reason.text, /^The teachers' target is cat at 75% \(next: dog 1[23]%\)\.$/); // 0.125 in float16/32

    // A teacher that did not label the item is there, with nothing to show.
    const four = itemView(f.store, ctx, buildQueue(ctx, 'low-confidence')[0]);
    assert.equal(four.id, f.ids[4]);
    assert.deepEqual(four.teachers[1], { name: 'gpt-b', label: null, probs: null });
  });

  test("the item view: the student's prediction and whether a fold model made it", async () => {
    const items = [0, 1, 2, 3, 4, 6, 7].map((i) => ({
      id: f.ids[i],
      probs: i === 7 ? [0.05, 0.9, 0.05] : [0.8, 0.1, 0.1],
      fold: i === 4 ? null : 0,
    }));
    const ctx = await buildReviewContext(f.store, f.task, { studentDir: studentFolder(path.join(f.dir, 'student-view'), f.task, items) });
    const q = buildQueue(ctx, 'label-issues');
    const seven = ItemView.parse(
      itemView(
        f.store,
        ctx,
        q.find((e) => e.itemId === f.ids[7])!,
      ),
    );
    assert.deepEqual(seven.student, { label: 'dog', probs: [0.05, 0.9, 0.05], outOfFold: true });
    assert.equal(seven.suggestion, 'cat');
    assert.equal(seven.reason.policy, 'label-issues');
    // A test-split item is predicted by the final student: held out, but not by a fold model.
    assert.equal(
      itemView(
        f.store,
        ctx,
        q.find((e) => e.itemId === f.ids[4])!,
      ).student!.outOfFold,
      false,
    );
  });

  test("a trained student's own predictions fill in what out-of-fold.json does not cover", async () => {
    const out = path.join(f.dir, 'trained');
    const args = ['--db', path.join(f.dir, 'db.sqlite'), '--task', 'animals', '--teachers', 'gpt-a,gpt-b', '--arch', 'fasttext'];
    const r = await runScript('train', [
      ...args,
      '--buckets',
      '1024',
      '--dim',
      '8',
      '--epochs',
      '1',
      '--backend',
      TRAIN_BACKEND,
      '--out',
      out,
    ]);
    assert.equal(r.code, 0, r.stderr);
    let ctx = await buildReviewContext(f.store, f.task, { studentDir: out, backend: TRAIN_BACKEND });
    const queued = [0, 1, 2, 3, 4, 6, 7];
    for (const i of queued) assert.equal(ctx.student!.probs[i]!.length, 3, `item ${i} has the student's prediction`);
    assert.deepEqual(
      queued.map((i) => ctx.student!.source[i]),
      ['in-sample', 'in-sample', 'held-out', 'in-sample', 'held-out', 'in-sample', 'in-sample'],
    );
    assert.match(
      buildQueue(ctx, 'label-issues').find((e) => e.itemId === f.ids[0])!.reason,
      /^The student \(in-sample: it trained on this item\)/,
    );
    // Out-of-fold predictions for two items: those two come from the file, the rest from the student.
    studentFolder(out, f.task, [
      { id: f.ids[7], probs: [0.1, 0.8, 0.1], fold: 1 },
      { id: f.ids[0], probs: [0.6, 0.2, 0.2], fold: 0 },
    ]);
    ctx = await buildReviewContext(f.store, f.task, { studentDir: out, backend: TRAIN_BACKEND });
    assert.deepEqual(Array.from(ctx.student!.probs[7]!), [0.1, 0.8, 0.1]);
    assert.deepEqual(
      queued.map((i) => ctx.student!.source[i]),
      ['out-of-fold', 'in-sample', 'held-out', 'in-sample', 'held-out', 'in-sample', 'out-of-fold'],
    );
    const seven = buildQueue(ctx, 'label-issues').find((e) => e.itemId === f.ids[7])!;
    assert.ok(Math.abs(seven.score - 0.1) < 1e-9);
    assert.match(seven.reason, /^The student \(out of fold\) gives the target's label cat 10%; it predicts dog \(80%\)\.$/);
  });

  test('the item view of an image: its URL on the review server, not its path', async () => {
    const dir = workDir();
    pngFile(dir, 'a.png', 1);
    const taskFile = loadTaskFile(writeTask(dir, { name: 'pics', input: 'image' }));
    const imported = await importFile(f.store, taskFile, writeJsonl(dir, 'pics.jsonl', [{ id: 'p0', image: 'a.png', note: 'blurry' }]));
    addRun(f.store, imported.taskRow, imported.itemIds, 'vision', 'logits', { 0: [BIRD, 0.7] });
    const ctx = await buildReviewContext(f.store, imported.taskRow);
    const view = ItemView.parse(itemView(f.store, ctx, buildQueue(ctx, 'low-confidence')[0]));
    assert.equal(view.image, `/api/image/${imported.itemIds[0]}`);
    assert.deepEqual(view.fields, [{ name: 'note', value: 'blurry' }]);
    assert.equal(view.suggestion, 'bird');
  });

  test('--policy and the self-confidence score', () => {
    assert.equal(parseReviewPolicy('label-issues'), 'label-issues');
    assert.throws(() => parseReviewPolicy('random'), /unknown policy "random"/);
    assert.equal(selfConfidence([0.2, 0.5, 0.3], 0), 0.2);
    // fp16-rounded distributions are renormalised.
    assert.ok(Math.abs(selfConfidence([0.25, 0.5, 0.25000001], 1) - 0.5) < 1e-6);
    assert.throws(() => selfConfidence([0.5, 0.5], 2), /given label is 2/);
  });
});
