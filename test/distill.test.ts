/**
 * The distiller registry (src/train/distill) and a distiller that reads each teacher's own
 * distribution (multi-kd): its formula against a plain-JS reference, and the trainer building
 * per-teacher batches from a store with two teachers.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { before, test } from 'node:test';
import { SettingError } from '../src/errors.ts';
import { Store } from '../src/store/store.ts';
import { selectBackend, tf } from '../src/train/backend.ts';
import { loadDataset } from '../src/train/data.ts';
import {
  createDistillers,
  distillDefaults,
  distillerNames,
  distillFlags,
  parseDistillList,
  type Batch,
} from '../src/train/distill/index.ts';
import { kdLoss } from '../src/train/losses.ts';
import type { StudentSpec } from '../src/train/models/index.ts';
import { train } from '../src/train/trainer.ts';
import { ingestLogits } from '../src/whitebox/ingest.ts';
import { importFile, LABELS, loadTaskFile, workDir, writeJsonl, writeTask } from './helpers.ts';

before(async () => {
  await selectBackend('cpu');
});

const mlp: StudentSpec = { kind: 'mlp', numClasses: 3, inputShape: [2], hidden: [] };
const ctx = { student: mlp, seed: 1 };

test('registry: names, one flag per setting, the old defaults, list parsing', () => {
  assert.deepEqual(distillerNames(), ['ce', 'kd', 'multi-kd', 'deit', 'civt', 'hidden', 'attn', 'manifold', 'dearkd', 'online-kd']);
  const keys = distillFlags().map((f) => f.key);
  assert.equal(new Set(keys).size, keys.length, 'a setting shared by two distillers is one flag');
  assert.deepEqual(distillFlags().find((f) => f.key === 'kdTemperature')?.users, ['kd', 'multi-kd', 'deit', 'dearkd', 'online-kd']);
  const d = distillDefaults();
  assert.deepEqual([d.ceWeight, d.kdWeight, d.kdTemperature, d.deitMode, d.deitWeight], [0.1, 0.9, 4, 'hard', 1]);
  assert.deepEqual(parseDistillList('kd, ce'), ['ce', 'kd'], 'registry order, whatever the order given');
  assert.throws(
    () => parseDistillList('ce,fitnet'),
    (e: Error) => e instanceof SettingError && e.setting === 'distill' && /unknown distiller/.test(e.message),
  );
  assert.throws(() => parseDistillList('ce,ce'), /listed twice/);
  // Weight 0 turns a distiller off; all off is an error, not a run that learns nothing.
  assert.deepEqual(
    createDistillers(['ce', 'kd'], { kdWeight: 0 }, ctx).map((x) => x.name),
    ['ce'],
  );
  assert.throws(() => createDistillers(['ce'], { ceWeight: 0 }, ctx), /all are 0/);
  assert.throws(() => createDistillers(['deit'], {}, ctx), /needs a ViT with a distillation token/);
});

test('multi-kd: the mean over the teachers that labeled each item of T²·KL, against a plain-JS reference', () => {
  const softmax = (z: number[]) => {
    const m = Math.max(...z);
    const e = z.map((x) => Math.exp(x - m));
    const s = e.reduce((a, b) => a + b, 0);
    return e.map((x) => x / s);
  };
  const kl = (t: number[], s: number[], T: number) => {
    const p = softmax(t.map((x) => x / T));
    const q = softmax(s.map((x) => x / T));
    return p.reduce((a, pi, i) => a + pi * Math.log(pi / q[i]), 0);
  };
  const student = [
    [1, 0, -1],
    [0.5, 0.5, 0],
  ];
  // Teacher A labels both items, teacher B only the first (its second row is a placeholder).
  const teachers = [
    [
      [2, 0, 0],
      [0, 3, 0],
    ],
    [
      [0, 0, 2],
      [0, 0, 0],
    ],
  ];
  const present = [
    [1, 1],
    [1, 0],
  ];
  const [T, w] = [2, 0.5];
  const [d] = createDistillers(['multi-kd'], { multiKdWeight: w, kdTemperature: T }, ctx);
  const batch: Batch = {
    idx: [0, 1],
    x: tf.zeros([2, 2]),
    perTeacher: { names: ['a', 'b'], logits: tf.tensor3d(teachers), present: tf.tensor2d(present) },
  };
  const got = tf.tidy(() => d.terms({ logits: tf.tensor2d(student) }, batch, undefined)['multi-kd'].dataSync()[0]);
  const item0 = (kl(teachers[0][0], student[0], T) + kl(teachers[1][0], student[0], T)) / 2;
  const item1 = kl(teachers[0][1], student[1], T);
  const want = w * T * T * ((item0 + item1) / 2);
  assert.ok(Math.abs(got - want) < 1e-5, `multi-kd ${got} vs ${want}`);

  // With one teacher on every item it is Hinton's KD to that teacher.
  const one: Batch = {
    idx: [0, 1],
    x: batch.x,
    perTeacher: { names: ['a'], logits: tf.tensor3d([teachers[0]]), present: tf.tensor2d([[1, 1]]) },
  };
  const [a, b] = tf.tidy(() => [
    d.terms({ logits: tf.tensor2d(student) }, one, undefined)['multi-kd'].dataSync()[0],
    kdLoss(tf.tensor2d(student), tf.tensor2d(teachers[0]), T).dataSync()[0] * w,
  ]);
  assert.ok(Math.abs(a - b) < 1e-6, `one teacher: ${a} vs kd ${b}`);
  tf.dispose([batch.x as tf.Tensor, batch.perTeacher!.logits, batch.perTeacher!.present, one.perTeacher!.logits, one.perTeacher!.present]);
});

test('the dataset carries each teacher next to the aggregate; the trainer trains multi-kd from it', async () => {
  const dir = workDir();
  const task = loadTaskFile(writeTask(dir, { name: 'animals' }));
  const rows = Array.from({ length: 48 }, (_, i) => ({
    id: `s${i}`,
    text: `a ${LABELS[i % 3]} number ${i}`,
    label: LABELS[i % 3],
    split: i % 4 === 0 ? 'test' : 'train',
  }));
  const store = Store.open(path.join(dir, 'distill.db'));
  try {
    await importFile(store, task, writeJsonl(dir, 'animals.jsonl', rows));
    // Two keyword teachers; the second labels only the even items.
    const logits = (k: number) => LABELS.map((_, j) => (j === k ? 2 : 0));
    await ingestLogits({
      store,
      task,
      teacher: 'one',
      input: writeJsonl(
        dir,
        'one.jsonl',
        rows.map((r, i) => ({ id: r.id, logits: logits(i % 3) })),
      ),
      format: { kind: 'dense32' },
    });
    await ingestLogits({
      store,
      task,
      teacher: 'two',
      input: writeJsonl(
        dir,
        'two.jsonl',
        rows.filter((_, i) => i % 2 === 0).map((r, i) => ({ id: r.id, logits: logits((2 * i) % 3) })),
      ),
      format: { kind: 'dense32' },
    });
    const ds = loadDataset(store, store.findTask('animals')!, { supervised: false, targets: { calibrate: false } });
    const p = ds.perTeacher!;
    assert.deepEqual(p.names, ['one', 'two']);
    const at = (item: number) => Number(ds.ids[item].slice(1));
    for (let item = 0; item < ds.n; item++)
      assert.deepEqual(Array.from(p.present.subarray(item * 2, item * 2 + 2)), [1, at(item) % 2 === 0 ? 1 : 0]);
    const first = Array.from(p.logprobs.subarray(0, 3));
    assert.ok(Math.abs(first.reduce((a, x) => a + Math.exp(x), 0) - 1) < 1e-6, 'log-probabilities');

    const spec: StudentSpec = { kind: 'fasttext', numClasses: 3, buckets: 256, dim: 8, hidden: [] };
    const res = await train(
      ds,
      spec,
      {
        epochs: 4,
        batchSize: 8,
        lr: 0.05,
        weightDecay: 0,
        warmup: 0,
        seed: 1,
        clip: 1,
        patience: 0,
        distill: ['ce', 'multi-kd'],
        settings: { kdTemperature: 2 },
      },
      path.join(dir, 'model'),
    );
    assert.deepEqual(Object.keys(res.history[0].terms), ['ce', 'multi-kd']);
    for (const h of res.history)
      assert.ok(Math.abs(h.loss - (h.terms.ce + h.terms['multi-kd'])) < 1e-6, 'the terms are weighted and sum to the loss');
    assert.ok(
      res.history[3].terms['multi-kd'] < res.history[0].terms['multi-kd'],
      `multi-kd goes down: ${res.history.map((h) => h.terms['multi-kd'])}`,
    );
  } finally {
    store.close();
  }
});
