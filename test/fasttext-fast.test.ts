/**
 * The fast fasttext trainer (src/train/fast): its SGD step against finite differences of
 * the loss, its loss against the tfjs losses (losses.ts), learning a separable task,
 * determinism, and that its saved weights predict identically in the tfjs student.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { before, test } from 'node:test';
import { mulberry32 } from '../src/random.ts';
import { selectBackend, tf } from '../src/train/backend.ts';
import type { Dataset } from '../src/train/data.ts';
import { fit, LinearFasttext, packBags, temperTeacher, type Objective } from '../src/train/fast/fasttext.ts';
import { Hogwild } from '../src/train/fast/hogwild.ts';
import { fastPathUnsupported, trainFasttextFast, type FastTrainConfig } from '../src/train/fast/train.ts';
import { loadWeights } from '../src/train/io.ts';
import { crossEntropy, kdLoss } from '../src/train/losses.ts';
import { studentFromWeights, textBatch, type FasttextSpec } from '../src/train/models/index.ts';
import type { SavedModelSpec } from '../src/train/trainer.ts';
import { animalRows, runScript, workDir, writeJsonl, writeTask } from './helpers.ts';

before(async () => {
  await selectBackend('wasm');
});

const C = 3;
const tiny: FasttextSpec = { kind: 'fasttext', numClasses: C, buckets: 64, dim: 8, hidden: [], bigrams: true };

/** A model with a random head too (fastText's zero head would make ∂L/∂E zero at the start). */
function randomModel(seed: number): LinearFasttext {
  const m = LinearFasttext.init(tiny, seed);
  const r = mulberry32(seed + 99);
  for (let i = 0; i < m.headW.length; i++) m.headW[i] = r() - 0.5;
  for (let i = 0; i < m.headB.length; i++) m.headB[i] = r() - 0.5;
  for (let i = 0; i < m.embed.length; i++) m.embed[i] *= 20;
  return m;
}

/** Item 0: ids 3, 17, 3 (a repeated id), 40; item 1 is empty; a soft teacher with a zero, and hard labels. */
function fixture(ce: number, kd: number, T: number): { bags: ReturnType<typeof packBags>; o: Objective } {
  const bags = packBags([[3, 17, 3, 40], []], tiny.buckets);
  const probs = Float32Array.from([0.7, 0.3, 0, 0.2, 0.5, 0.3]);
  return { bags, o: { ceWeight: ce, kdWeight: kd, hard: Int32Array.from([1, 2]), teacher: temperTeacher(probs, C, T) } };
}

test('one SGD step is −lr × the loss gradient (central finite differences), and only the bag’s rows move', () => {
  const { bags, o } = fixture(0.3, 0.7, 2);
  const m = randomModel(5);
  const lr = 1e-3;
  const after = m.clone();
  after.sgdStep(bags, 0, o, lr);
  const params: [string, Float32Array, Float32Array][] = [
    ['embed.w', m.embed, after.embed],
    ['head.w', m.headW, after.headW],
    ['head.b', m.headB, after.headB],
  ];
  const touched = new Set([3, 17, 40]);
  let checked = 0;
  for (const [name, p, q] of params) {
    for (let j = 0; j < p.length; j++) {
      const step = (q[j] - p[j]) / -lr;
      if (name === 'embed.w' && !touched.has(Math.floor(j / tiny.dim))) {
        assert.equal(q[j], p[j], `embed row ${Math.floor(j / tiny.dim)} is not in the bag but moved`);
        continue;
      }
      const eps = 1e-3;
      const keep = p[j];
      p[j] = keep + eps;
      const up = m.loss(bags, 0, o).loss;
      p[j] = keep - eps;
      const down = m.loss(bags, 0, o).loss;
      p[j] = keep;
      const fd = (up - down) / (2 * eps);
      assert.ok(Math.abs(fd - step) <= 2e-3 + 1e-2 * Math.abs(fd), `${name}[${j}]: finite difference ${fd}, step/−lr ${step}`);
      checked++;
    }
  }
  assert.equal(checked, 3 * tiny.dim + tiny.dim * C + C);
});

test('the loss is the tfjs trainer’s: ce·crossEntropy + kd·kdLoss(log p) on the same logits; an empty text has logits b', async () => {
  const { bags, o } = fixture(0.4, 0.6, 4);
  const m = randomModel(7);
  const s = studentFromWeights(tiny, Object.fromEntries(Object.entries(m.named()).map(([k, v]) => [k, tf.tensor(v.values, v.shape)])));
  for (const i of [0, 1]) {
    const bag = Array.from(bags.ids.subarray(bags.offsets[i], bags.offsets[i + 1]));
    const expected = tf.tidy(() => {
      const logits = s.forward({ bags: [bag] }).logits;
      const teacher = tf.log(tf.tensor2d([[0.7, 0.3, 0, 0.2, 0.5, 0.3].slice(3 * i, 3 * i + 3)]));
      const ce = crossEntropy(logits, tf.tensor1d([o.hard[i]], 'int32'));
      const kd = kdLoss(logits, teacher, 4);
      return [ce.dataSync()[0], kd.dataSync()[0]];
    });
    const got = m.loss(bags, i, o);
    assert.ok(Math.abs(got.ce - expected[0]) < 1e-5, `item ${i} ce ${got.ce} vs ${expected[0]}`);
    assert.ok(Math.abs(got.kd - expected[1]) < 1e-4, `item ${i} kd ${got.kd} vs ${expected[1]}`);
    assert.ok(Math.abs(got.loss - (0.4 * got.ce + 0.6 * got.kd)) < 1e-12);
  }
  s.dispose();
});

/** An in-memory text Dataset: class k's texts contain the word `key${k}` among random filler. */
function separable(n: number, seed: number): Dataset {
  const r = mulberry32(seed);
  const filler = Array.from({ length: 200 }, (_, i) => `filler${i}`);
  const texts: string[] = [];
  const gold = new Int32Array(n);
  const splits: string[] = [];
  for (let i = 0; i < n; i++) {
    const k = i % C;
    const ws = Array.from({ length: 3 + Math.floor(r() * 5) }, () => filler[Math.floor(r() * filler.length)]);
    ws.splice(Math.floor(r() * ws.length), 0, `key${k}`);
    texts.push(ws.join(' '));
    gold[i] = k;
    splits.push(i % 5 === 4 ? 'test' : 'train');
  }
  const targetProbs = new Float32Array(n * C);
  gold.forEach((g, i) => (targetProbs[i * C + g] = 1));
  return {
    task: { id: 1, name: 'keys', labels: ['a', 'b', 'c'], input_kind: 'text' },
    n,
    ids: texts.map((_, i) => `t${i}`),
    splits,
    gold,
    targetProbs,
    targetHard: gold,
    teacherHard: new Int32Array(n).fill(-1),
    texts,
    preprocess: { input: 'text' },
  };
}

const config: FastTrainConfig = { epochs: 20, lr: 0.5, seed: 3, patience: 0, ceWeight: 1, kdWeight: 0, kdTemperature: 4 };
const spec: FasttextSpec = { kind: 'fasttext', numClasses: C, buckets: 4096, dim: 16, hidden: [], bigrams: true };

test('learns a separable text task to 100% (train, validation and test), and reports like the tfjs trainer', async () => {
  const ds = separable(300, 1);
  const dir = workDir();
  const r = await trainFasttextFast(ds, spec, config, dir);
  assert.equal(r.history.length, 20);
  const last = r.history.at(-1)!;
  assert.equal(last.train_accuracy, 1);
  assert.equal(last.val_accuracy, 1);
  assert.equal(r.test.accuracy, 1);
  assert.equal(r.test.n, 60);
  assert.ok(r.history[0].terms.ce > last.terms.ce, `ce ${r.history[0].terms.ce} → ${last.terms.ce}`);
  assert.deepEqual(Object.keys(last.terms), ['ce']);
  assert.ok(last.lr > 0 && last.lr < config.lr / 10, `linear decay: last lr ${last.lr}`);
  assert.equal(r.params, 4096 * 16 + 16 * C + C);
  assert.ok(fs.existsSync(path.join(dir, 'model.json')) && fs.existsSync(path.join(dir, 'weights.bin')));
});

test('KD alone (soft targets, T = 2) also learns it, and its loss falls', async () => {
  const ds = separable(300, 2);
  // A teacher that is right but unsure: 0.6 on the gold class, 0.2 elsewhere.
  ds.targetProbs = ds.targetProbs.map((p) => (p === 1 ? 0.6 : 0.2));
  const r = await trainFasttextFast(ds, spec, { ...config, ceWeight: 0, kdWeight: 1, kdTemperature: 2 }, workDir());
  assert.equal(r.test.accuracy, 1);
  assert.deepEqual(Object.keys(r.history[0].terms), ['kd']);
  assert.ok(r.history.at(-1)!.terms.kd < r.history[0].terms.kd);
});

test('deterministic: the same seed gives byte-identical weights.bin, another seed other weights', async () => {
  const ds = separable(200, 4);
  const [a, b, other] = [workDir(), workDir(), workDir()];
  await trainFasttextFast(ds, spec, config, a);
  await trainFasttextFast(ds, spec, config, b);
  await trainFasttextFast(ds, spec, { ...config, seed: 4 }, other);
  const bytes = (d: string) => fs.readFileSync(path.join(d, 'weights.bin'));
  assert.ok(bytes(a).equals(bytes(b)), 'same seed, different weights');
  assert.ok(!bytes(a).equals(bytes(other)), 'another seed, same weights');
});

test('Hogwild on 2 threads: both threads step, every item once per epoch, finite weights, the loss of one thread', async () => {
  const ds = separable(300, 6);
  const bags = packBags(textBatch(ds.texts!, spec).bags, spec.buckets);
  const items = Int32Array.from({ length: ds.n }, (_, i) => i);
  const o: Objective = { ceWeight: 1, kdWeight: 0, hard: ds.targetHard };
  const run = { epochs: 5, lr: 0.5, seed: 1 };
  const losses = (into: number[]) => ({ ...run, onEpoch: (_: number, l: { loss: number }) => void into.push(l.loss) });
  const one: number[] = [];
  const single = LinearFasttext.init(spec, 1);
  fit(single, bags, items, o, losses(one));
  const two: number[] = [];
  const shared = LinearFasttext.init(spec, 1, { shared: true });
  const pool = Hogwild.start(2);
  let stats;
  try {
    stats = await pool.fit(shared, bags, items, o, losses(two));
  } finally {
    await pool.close();
  }
  assert.equal(stats.threads, 2);
  assert.equal(stats.steps[0] + stats.steps[1], run.epochs * ds.n, `steps per thread ${stats.steps}`);
  assert.ok(stats.steps[1] > 0, `the worker thread took no step (steps ${stats.steps})`);
  for (const [name, { values }] of Object.entries(shared.named()))
    assert.ok(
      values.every((x) => Number.isFinite(x)),
      `${name} has a non-finite weight`,
    );
  assert.equal(two.length, run.epochs);
  assert.ok(two[4] < two[0] / 10, `the threaded loss falls: ${two}`);
  // Hogwild's races and another interleaving: not the same numbers, but the same training.
  assert.ok(Math.abs(two[4] - one[4]) < 0.05 + 0.5 * one[4], `last epoch loss: 2 threads ${two[4]}, 1 thread ${one[4]}`);
  const acc = (m: LinearFasttext) => {
    const p = m.predict(bags, items);
    return ds.targetHard.filter((y, i) => [0, 1, 2].every((k) => p[i * C + k] <= p[i * C + y])).length / ds.n;
  };
  assert.equal(acc(single), 1);
  assert.equal(acc(shared), 1);
  await assert.rejects(pool.fit(LinearFasttext.init(spec, 1), bags, items, o, run), /shared memory/);
});

test('trainFasttextFast with workers 2 learns the separable task like 1 worker; workers 0 is refused by name', async () => {
  const ds = separable(300, 1);
  const r = await trainFasttextFast(ds, spec, { ...config, workers: 2 }, workDir());
  assert.equal(r.history.length, 20);
  assert.equal(r.history.at(-1)!.train_accuracy, 1);
  assert.equal(r.test.accuracy, 1);
  await assert.rejects(
    trainFasttextFast(ds, spec, { ...config, workers: 0 }, workDir()),
    (e: Error & { setting?: string }) => e.setting === 'workers',
  );
});

test('the saved model loads with studentFromWeights and the tfjs forward gives the fast trainer’s probabilities', async () => {
  const ds = separable(200, 5);
  const dir = workDir();
  await trainFasttextFast(ds, spec, config, dir);
  const { spec: saved, tensors } = await loadWeights<SavedModelSpec>(dir);
  assert.deepEqual(saved.student, spec);
  assert.deepEqual(saved.labels, ds.task.labels);
  const model = new LinearFasttext(
    spec,
    ...(['embed.w', 'head.w', 'head.b'].map((k) => tensors[k].dataSync() as Float32Array) as [Float32Array, Float32Array, Float32Array]),
  );
  const student = studentFromWeights(saved.student as FasttextSpec, tensors);
  tf.dispose(Object.values(tensors));
  const texts = [...ds.texts!.slice(0, 20), 'an unseen text entirely', '', 'key1 key2 key0 key1'];
  const ours = model.predict(
    packBags(textBatch(texts, spec).bags, spec.buckets),
    texts.map((_, i) => i),
  );
  const theirs = tf.tidy(() => tf.softmax(student.forward(textBatch(texts, spec)).logits).dataSync());
  student.dispose();
  assert.equal(ours.length, theirs.length);
  for (let j = 0; j < ours.length; j++) assert.ok(Math.abs(ours[j] - theirs[j]) < 1e-5, `probability ${j}: ${ours[j]} vs ${theirs[j]}`);
});

test('fit runs the given epochs over the given items only; the fast path refuses what it does not do', () => {
  const bags = packBags([[1, 2], [3], [4, 5]], tiny.buckets);
  const m = LinearFasttext.init(tiny, 1);
  const before = m.clone();
  const epochs: number[] = [];
  fit(
    m,
    bags,
    Int32Array.from([0, 2]),
    { ceWeight: 1, kdWeight: 0, hard: Int32Array.from([0, 1, 2]) },
    { epochs: 2, lr: 0.1, seed: 1, onEpoch: (e) => void epochs.push(e) },
  );
  assert.deepEqual(epochs, [0, 1]);
  for (let d = 0; d < tiny.dim; d++) assert.equal(m.embed[3 * tiny.dim + d], before.embed[3 * tiny.dim + d], 'item 1 is not trained on');
  assert.notDeepEqual(m.headW, before.headW);
  assert.throws(() => packBags([[64]], tiny.buckets), /outside \[0, 64\)/);
  assert.throws(() => LinearFasttext.init({ ...tiny, hidden: [8] }, 1), /linear head only/);
  assert.match(fastPathUnsupported({ ...tiny, hidden: [8] }, { distill: ['ce', 'kd'] }) ?? '', /linear head/);
  assert.match(fastPathUnsupported(tiny, { distill: ['ce'] }, true) ?? '', /resume/);
  assert.match(fastPathUnsupported(tiny, { distill: ['ce', 'multi-kd'] }) ?? '', /ce and kd distillers only/);
  assert.equal(fastPathUnsupported(tiny, { distill: ['ce', 'kd'], epochs: 3 }), null);
});

test('train.ts picks the fast trainer for a linear fasttext student (--trainer auto), and --trainer tfjs/fast choose', async () => {
  const dir = workDir();
  const task = writeTask(dir, { name: 'animals' });
  const rows = animalRows(60).map((r, i) => ({ ...r, split: i % 4 === 0 ? 'test' : 'train' }));
  const input = writeJsonl(dir, 'animals.jsonl', rows);
  const db = path.join(dir, 'distill.db');
  const imported = await runScript('import', ['--db', db, '--task', task, '--input', input]);
  assert.equal(imported.code, 0, imported.stderr);
  const common = ['--db', db, '--arch', 'fasttext', '--supervised', '--epochs', '2', '--buckets', '1024', '--dim', '8', '--backend', 'cpu'];
  const [auto, tfjs, fastMlp] = await Promise.all([
    // --workers 2: the Hogwild path from the CLI (its worker thread loads the TypeScript modules itself).
    runScript('train', [...common, '--workers', '2', '--out', path.join(dir, 'auto')]),
    runScript('train', [...common, '--trainer', 'tfjs', '--out', path.join(dir, 'tfjs')]),
    runScript('train', [...common, '--trainer', 'fast', '--hidden', '8', '--out', path.join(dir, 'mlp')]),
  ]);
  assert.equal(auto.code, 0, auto.stderr);
  assert.equal(tfjs.code, 0, tfjs.stderr);
  const metrics = (name: string) => JSON.parse(fs.readFileSync(path.join(dir, name, 'metrics.json'), 'utf8'));
  assert.equal(metrics('auto').trainer, 'fast');
  assert.match(metrics('auto').command, /--workers 2/);
  assert.equal(metrics('auto').config.lr, 0.5, 'SGD starts at fastText-style rate unless --lr is given');
  assert.equal(metrics('tfjs').trainer, 'tfjs');
  assert.equal(metrics('tfjs').config.lr, 1e-3);
  assert.deepEqual(Object.keys(metrics('auto').history[0].terms), ['ce']);
  assert.equal(fastMlp.code, 1);
  assert.match(fastMlp.stderr, /--trainer fast: it trains a linear head only/);
});
