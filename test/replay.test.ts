/**
 * Augmentation replay (TinyViT): seeded views that a seed alone decides, a teacher's outputs stored per
 * epoch and item with the seed of the view it saw, a trainer that replays those views and trains on that
 * epoch's outputs, and the check that re-runs the teacher on the replayed views.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { writeShapes } from '../src/datasets/shapes.ts';
import { loadModel } from '../src/infer/model.ts';
import { modelLogitsRows } from '../src/infer/predict.ts';
import { decodeSoft } from '../src/soft/codec.ts';
import { replayEpochCounts, replayLabels } from '../src/store/replay.ts';
import { Store } from '../src/store/store.ts';
import { augmentImage, augmentImagesSeeded, augmentSeed, formatAugment, parseAugment, type AugmentConfig } from '../src/train/augment.ts';
import { selectBackend, tf } from '../src/train/backend.ts';
import { batchInput, loadDataset, replayAugment, targetsForEpoch } from '../src/train/data.ts';
import { createStudent, type StudentSpec } from '../src/train/models/index.ts';
import { train, type TrainConfig } from '../src/train/trainer.ts';
import { ingestLogits, type ReplayLogitsRow } from '../src/whitebox/ingest.ts';
import {
  checkReplay,
  epochSeeds,
  modelReplay,
  modelViewRows,
  replayItems,
  type ReplayCheck,
  type ViewRow,
} from '../src/whitebox/replay.ts';
import { mulberry32 } from '../src/random.ts';
import { importFile, loadTaskFile, REPO_ROOT, runScript, workDir, type ScriptResult } from './helpers.ts';
import { TRAIN_BACKEND } from './train-backend.ts';

const SHAPES_TASK = path.join(REPO_ROOT, 'prompts', 'shapes.md');

function ok(r: ScriptResult): ScriptResult {
  assert.equal(r.code, 0, `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
}

/** A database of 16×16 shapes, every third row in the test split. */
async function shapesDb(perClass: number): Promise<{ dir: string; db: string; input: string }> {
  const dir = workDir();
  writeShapes(dir, perClass, 16);
  const input = path.join(dir, 'shapes.jsonl');
  const rows = fs.readFileSync(input, 'utf8').trim().split('\n');
  fs.writeFileSync(
    input,
    rows.map((l, i) => JSON.stringify({ ...(JSON.parse(l) as object), split: i % 3 === 0 ? 'test' : 'train' })).join('\n') + '\n',
  );
  const db = path.join(dir, 'distill.db');
  const store = Store.open(db);
  try {
    await importFile(store, loadTaskFile(SHAPES_TASK), input);
  } finally {
    store.close();
  }
  return { dir, db, input };
}

const baseConfig: TrainConfig = {
  epochs: 2,
  batchSize: 16,
  lr: 0.01,
  weightDecay: 0,
  warmup: 0,
  seed: 1,
  clip: 1,
  patience: 0,
  distill: ['kd'],
  testEachEpoch: false,
};

describe('seeded augmentation: a seed decides the view', () => {
  const [h, w, c] = [12, 10, 3];
  const image = Float32Array.from({ length: h * w * c }, (_, i) => Math.sin(i * 0.37) + 0.1 * (i % 7));
  const view = (cfg: AugmentConfig, seed: number, black = -1) => {
    const x = Float32Array.from(image);
    augmentImage(x, h, w, c, cfg, mulberry32(seed), black);
    return x;
  };
  const bytes = (x: Float32Array) => Buffer.from(x.buffer, x.byteOffset, x.byteLength);

  test('parse and format: crop:P, erase:p[:pixel] next to shift and flip; the spec text is canonical', () => {
    assert.deepEqual(parseAugment('crop:4'), { shift: 0, flip: false, crop: 4 });
    assert.deepEqual(parseAugment('erase:0.25'), { shift: 0, flip: false, erase: { p: 0.25, fill: 'const' } });
    assert.deepEqual(parseAugment('flip,erase:0.5:pixel'), { shift: 0, flip: true, erase: { p: 0.5, fill: 'pixel' } });
    assert.equal(parseAugment('crop:0,erase:0'), undefined);
    assert.throws(() => parseAugment('erase:1.5'), /probability must be in \[0, 1\]/);
    assert.throws(() => parseAugment('crop:17'), /at most 16/);
    assert.equal(formatAugment(parseAugment('erase:0.25,flip,crop:4,shift:1')), 'shift:1,crop:4,flip,erase:0.25');
    assert.equal(formatAugment(parseAugment(formatAugment(parseAugment('flip,erase:0.5:pixel')))), 'flip,erase:0.5:pixel');
  });

  test('the same seed gives a byte-identical view, other seeds other views, for every transform', () => {
    for (const spec of ['shift:2', 'flip', 'crop:4', 'erase:1', 'erase:1:pixel', 'shift:1,crop:4,flip,erase:0.5:pixel']) {
      const cfg = parseAugment(spec)!;
      const a = view(cfg, 1234);
      assert.ok(bytes(a).equals(bytes(view(cfg, 1234))), `${spec}: same seed, same bytes`);
      const views = new Set([1, 2, 3, 4, 5, 6, 7, 8].map((s) => bytes(view(cfg, s)).toString('hex')));
      assert.ok(views.size >= (spec === 'flip' ? 2 : 3), `${spec}: 8 seeds give ${views.size} distinct views`);
    }
  });

  test('crop pads with black and keeps the image otherwise; erasing clears one rectangle of 2%–33% of the image', () => {
    const cfg = parseAugment('crop:4')!;
    let sawPadding = 0;
    for (let s = 0; s < 50; s++) {
      const x = view(cfg, s, -7);
      // Every pixel is black padding or some pixel of the image (a pure translation).
      const known = new Set(Array.from(image));
      for (const v of x) assert.ok(v === -7 || known.has(v));
      if (x.includes(-7)) sawPadding++;
    }
    assert.ok(sawPadding > 30, `padding shows in ${sawPadding}/50 crops`);
    const erase = parseAugment('erase:1')!;
    for (let s = 0; s < 50; s++) {
      const x = view(erase, s);
      let zeroPixels = 0;
      for (let p = 0; p < h * w; p++) if (x[p * c] === 0 && x[p * c + 1] === 0 && x[p * c + 2] === 0) zeroPixels++;
      assert.ok(zeroPixels === 0 || (zeroPixels >= 1 && zeroPixels <= Math.ceil((h * w) / 3) + w), `seed ${s}: ${zeroPixels} erased`);
    }
  });

  test('augmentSeed: deterministic, a non-negative int32, different across items and epochs', () => {
    const seeds = new Set<number>();
    for (let item = 1; item <= 50; item++)
      for (let e = 0; e < 4; e++) {
        const s = augmentSeed(7, item, e);
        assert.equal(s, augmentSeed(7, item, e));
        assert.ok(Number.isInteger(s) && s >= 0 && s < 2 ** 31);
        seeds.add(s);
      }
    assert.equal(seeds.size, 200);
    assert.notEqual(augmentSeed(7, 1, 0), augmentSeed(8, 1, 0));
  });
});

describe('replay runs: storing, training, checking', () => {
  before(async () => {
    await selectBackend(TRAIN_BACKEND);
  });

  /**
   * A teacher whose epochs differ: the ordinary labels say "triangle" (2) for every item, epoch 0's views
   * are uniform and epoch 1's say "square" (1), each strongly.
   */
  async function epochTeacher(perClass = 10) {
    const { dir, db, input } = await shapesDb(perClass);
    const store = Store.open(db);
    const task = loadTaskFile(SHAPES_TASK);
    const taskRow = store.findTask('shapes')!;
    const items = store.taskItemRows(taskRow.id);
    const train = items.filter((it) => it.split === 'train');
    const epochLogits = [Float32Array.of(0, 0, 0), Float32Array.of(0, 8, 0)];
    async function* rows(epoch: number): AsyncGenerator<ReplayLogitsRow> {
      for (const it of train) yield { itemId: it.id, seed: it.id * 10 + epoch, logits: epochLogits[epoch], file: input, line: it.id };
    }
    async function* base() {
      for (const [i, it] of items.entries()) yield { ref: { id: it.ext_id }, logits: Float32Array.of(0, 0, 8), file: input, line: i + 1 };
    }
    const res = await ingestLogits({
      store,
      task,
      teacher: 'epochs',
      input,
      format: { kind: 'dense32' },
      sourceFiles: [input],
      rows: base,
      replay: { params: { augment: 'flip', epochs: 2, seed: 0 }, rows },
    });
    return { dir, db, store, taskRow, train, run: res.run };
  }

  test('ingest stores one row per train item and epoch with its seed, the run records its replay settings', async () => {
    const { store, train: trainItems, run } = await epochTeacher();
    try {
      assert.deepEqual(replayEpochCounts(store, run.id), [
        { epoch: 0, rows: trainItems.length },
        { epoch: 1, rows: trainItems.length },
      ]);
      assert.deepEqual(JSON.parse(run.params).replay, { augment: 'flip', epochs: 2, seed: 0 });
      for (const r of replayLabels(store, run.id)) {
        assert.equal(r.aug_seed, r.item_id * 10 + r.epoch);
        assert.deepEqual(Array.from(decodeSoft(r.soft).values), r.epoch === 0 ? [0, 0, 0] : [0, 8, 0]);
      }
      assert.equal(run.items_total, store.taskItemRows(run.task_id).length, 'the ordinary labels: every item once');
    } finally {
      store.close();
    }
  });

  test("training epoch e uses stored epoch e's targets (e mod E beyond them) and each item's stored view", async (t) => {
    const { dir, store, taskRow, run } = await epochTeacher();
    try {
      const ds = loadDataset(store, taskRow, { supervised: false, targets: { calibrate: false } });
      assert.ok(ds.replay && ds.replay.run === run.id && ds.replay.epochs === 2);
      const trainIdx = ds.splits.flatMap((s, i) => (s === 'train' ? [i] : []));
      const i = trainIdx[0];
      assert.equal(ds.targetHard[i], 2, 'the ordinary target: the unaugmented label');
      assert.equal(targetsForEpoch(ds, 0).targetHard[i], 0, 'epoch 0: uniform (argmax: the first)');
      assert.equal(targetsForEpoch(ds, 1).targetHard[i], 1);
      assert.deepEqual(targetsForEpoch(ds, 3).targetProbs, targetsForEpoch(ds, 1).targetProbs, 'epoch 3 = stored epoch 1');
      // The batch shows each item's stored view: the flip its seed draws.
      const spec: StudentSpec = { kind: 'logreg', numClasses: 3, inputShape: [16, 16, ds.preprocess.image!.channels] };
      const x = batchInput(ds, spec, trainIdx, replayAugment(ds, 1));
      const got = await (x as tf.Tensor).data();
      (x as tf.Tensor).dispose();
      const per = 16 * 16 * ds.preprocess.image!.channels;
      const view = new Float32Array(trainIdx.length * per);
      trainIdx.forEach((j, k) => view.set(ds.pixels!.subarray(j * per, (j + 1) * per), k * per));
      const plain = Float32Array.from(view);
      const seeds = trainIdx.map((j) => ds.replay!.seeds[ds.n + j]);
      const dbIds = store.taskItemRows(taskRow.id).map((r) => r.id);
      assert.deepEqual(
        seeds,
        trainIdx.map((j) => dbIds[j] * 10 + 1),
        "epoch 1's stored seeds",
      );
      augmentImagesSeeded(view, trainIdx.length, 16, 16, ds.preprocess.image!.channels, { shift: 0, flip: true }, seeds);
      assert.deepEqual(Float32Array.from(got), view);
      assert.notDeepEqual(view, plain, 'some items are flipped');

      // A student that does not move (lr ≈ 0) scores each epoch's KD term against that epoch's targets on that
      // epoch's views: the term equals KL(target_e ‖ student(view_e)) averaged over the train items, computed here
      // from the student's initial weights (epoch 2 replays stored epoch 0).
      const init = createStudent(spec, baseConfig.seed);
      const expected = async (epoch: number | 'base') => {
        const input = batchInput(ds, spec, trainIdx, epoch === 'base' ? undefined : replayAugment(ds, epoch));
        const p = tf.tidy(() => tf.softmax(init.forward(input, { training: false }).logits));
        const probs = await p.data();
        tf.dispose([p, input as tf.Tensor]);
        const target = epoch === 'base' ? ds.targetProbs : targetsForEpoch(ds, epoch).targetProbs;
        let kl = 0;
        trainIdx.forEach((j, k) => {
          for (let y = 0; y < 3; y++) {
            const t = target[j * 3 + y];
            if (t > 0) kl += t * (Math.log(t) - Math.log(probs[k * 3 + y]));
          }
        });
        return kl / trainIdx.length;
      };
      const want = [await expected(0), await expected(1), await expected(0)];
      const ordinary = await expected('base');
      init.dispose();
      const res = await train(
        ds,
        spec,
        { ...baseConfig, epochs: 3, lr: 1e-12, settings: { kdWeight: 1, kdTemperature: 1 } },
        path.join(dir, 'm'),
      );
      const kd = res.history.map((r) => r.terms.kd);
      t.diagnostic(`kd per epoch ${kd}; expected ${want}; with the ordinary targets ${ordinary}`);
      kd.forEach((v, e) => assert.ok(Math.abs(v - want[e]) < 1e-4, `epoch ${e}: kd ${v}, expected ${want[e]}`));
      assert.ok(Math.abs(want[1] - want[0]) > 0.05 && Math.abs(want[1] - ordinary) > 0.05, 'the epochs are told apart');

      await assert.rejects(
        train(ds, spec, { ...baseConfig, augment: parseAugment('shift:2') }, path.join(dir, 'n')),
        /the teacher, run \d+, is an augmentation-replay run of flip: its views are replayed from their seeds/,
      );
      // Repeating the run's own augmentation is allowed.
      await train(ds, spec, { ...baseConfig, epochs: 1, augment: parseAugment('flip') }, path.join(dir, 'o'));
    } finally {
      store.close();
    }
  });

  test('a replay run is trained on alone', async () => {
    const { store, taskRow, db } = await epochTeacher();
    try {
      const input = path.join(path.dirname(db), 'shapes.jsonl');
      async function* other() {
        for (const [i, it] of store.taskItemRows(taskRow.id).entries())
          yield { ref: { id: it.ext_id }, logits: Float32Array.of(1, 0, 0), file: input, line: i + 1 };
      }
      await ingestLogits({ store, task: loadTaskFile(SHAPES_TASK), teacher: 'plain', input, format: { kind: 'dense32' }, rows: other });
      assert.throws(
        () => loadDataset(store, taskRow, { supervised: false, targets: { calibrate: false } }),
        /augmentation-replay run: train on it alone \(--teachers \d+\)/,
      );
      assert.equal(loadDataset(store, taskRow, { supervised: false, targets: { teachers: 'plain', calibrate: false } }).replay, undefined);
    } finally {
      store.close();
    }
  });

  test('from a model: ingest-logits --augment --epochs stores the views, --check-replay finds 0 mismatch for shifts and flips', async (t) => {
    const { dir, db } = await shapesDb(20);
    const T = path.join(dir, 'teacher');
    const store = Store.open(db);
    try {
      const taskRow = store.findTask('shapes')!;
      const ds = loadDataset(store, taskRow, { supervised: true, targets: { calibrate: false } });
      await train(
        ds,
        { kind: 'mlp', numClasses: 3, hidden: [16], inputShape: [16, 16, ds.preprocess.image!.channels] },
        { ...baseConfig, epochs: 3, distill: ['ce'], settings: { ceWeight: 1 } },
        T,
      );
    } finally {
      store.close();
    }
    const args = ['--db', db, '--teacher', 'mlp', '--from-model', T, '--backend', TRAIN_BACKEND];
    const replay = ['--augment', 'shift:2,flip', '--epochs', '2', '--seed', '3'];
    const r = ok(await runScript('ingest-logits', [...args, ...replay]));
    assert.match(r.stdout, /and 2 epochs of the train items' shift:2,flip views with their seeds/);

    const s = Store.open(db);
    let nTrain: number;
    try {
      const run = s.runs()[0];
      const taskRow = s.findTask('shapes')!;
      nTrain = s.taskItemRows(taskRow.id).filter((it) => it.split === 'train').length;
      assert.deepEqual(replayEpochCounts(s, run.id), [
        { epoch: 0, rows: nTrain },
        { epoch: 1, rows: nTrain },
      ]);
      for (const row of replayLabels(s, run.id)) assert.equal(row.aug_seed, augmentSeed(3, row.item_id, row.epoch));
    } finally {
      s.close();
    }
    const check = ok(await runScript('ingest-logits', [...args, ...replay, '--check-replay', '--json']));
    const report = JSON.parse(check.stdout.trim().split('\n').at(-1)!) as ReplayCheck;
    t.diagnostic(`shift:2,flip check: ${JSON.stringify(report)}`);
    assert.equal(report.rows, 2 * nTrain);
    assert.equal(report.replayed.indexMismatch, 0);
    assert.equal(report.replayed.top1Mismatch, 0);
    assert.ok(report.replayed.meanAbsDiff < 1e-3, 'only fp16 rounding');
    assert.ok(report.independent.meanAbsDiff > report.replayed.meanAbsDiff, 'views drawn anew are not what was stored');

    const missing = await runScript('ingest-logits', [...args, '--augment', 'flip', '--epochs', '2', '--check-replay']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /no run was ingested from .* with these --augment, --epochs, --seed and --store; ingest it first/);
  });

  test('crop and erase: the check of a replay run in-process (replayed views vs independently drawn)', async (t) => {
    const { dir, db } = await shapesDb(12);
    const T = path.join(dir, 'teacher');
    const store = Store.open(db);
    try {
      const taskRow = store.findTask('shapes')!;
      const task = loadTaskFile(SHAPES_TASK);
      const sup = loadDataset(store, taskRow, { supervised: true, targets: { calibrate: false } });
      await train(
        sup,
        { kind: 'mlp', numClasses: 3, hidden: [16], inputShape: [16, 16, sup.preprocess.image!.channels] },
        { ...baseConfig, epochs: 2, distill: ['ce'], settings: { ceWeight: 1 } },
        T,
      );
      const m = await loadModel(T);
      try {
        const ds = loadDataset(store, taskRow, {
          supervised: false,
          evaluate: true,
          preprocess: m.spec.preprocess,
          targets: { calibrate: false },
        });
        const settings = { augment: parseAugment('crop:4,flip,erase:0.5:pixel')!, epochs: 2, seed: 11 };
        const res = await ingestLogits({
          store,
          task,
          teacher: 'mlp',
          input: T,
          format: { kind: 'topk', k: 2 },
          sourceFiles: [path.join(T, 'model.json')],
          rows: () => modelLogitsRows(m, ds),
          replay: modelReplay(store, taskRow, m, ds, settings),
        });
        // Decode round trip: each stored top-2 is the teacher's on the view of its seed.
        const items = replayItems(store, taskRow, ds);
        const fresh: ViewRow[] = [];
        for await (const v of modelViewRows(m, ds, epochSeeds(items, settings, 1), settings.augment)) fresh.push(v);
        const stored = [...replayLabels(store, res.run.id)].filter((r) => r.epoch === 1);
        assert.equal(stored.length, items.length);
        stored.forEach((r, k) => {
          assert.equal(r.item_id, fresh[k].itemId);
          const top = Array.from(fresh[k].logprobs)
            .map((v, j) => [v, j])
            .sort((a, b) => b[0] - a[0])[0];
          assert.ok(Math.abs(decodeSoft(r.soft).values[top[1]] - top[0]) < 1e-2 * Math.max(1, Math.abs(top[0])));
        });
        const report = await checkReplay(store, res.run, m, ds);
        t.diagnostic(`crop:4,flip,erase:0.5:pixel check: ${JSON.stringify(report)}`);
        assert.equal(report.k, 2);
        assert.equal(report.replayed.indexMismatch, 0);
        assert.ok(report.independent.meanAbsDiff > report.replayed.meanAbsDiff);

        // Online KD, the reference row: the same teacher run frozen on every augmented batch.
        const spec: StudentSpec = { kind: 'logreg', numClasses: 3, inputShape: [16, 16, sup.preprocess.image!.channels] };
        const online = await train(
          sup,
          spec,
          { ...baseConfig, epochs: 3, lr: 0.01, distill: ['online-kd'], featureTeacher: T, augment: parseAugment('crop:2,flip') },
          path.join(dir, 'online'),
        );
        const terms = online.history.map((h) => h.terms['online-kd']);
        t.diagnostic(`online-kd per epoch ${terms}`);
        assert.deepEqual(Object.keys(online.history[0].terms), ['online-kd']);
        assert.ok(terms[2] < terms[0], `online-kd goes down: ${terms}`);
        await assert.rejects(
          train(sup, spec, { ...baseConfig, distill: ['online-kd'] }, path.join(dir, 'no-teacher')),
          /needs --feature-teacher DIR/,
        );
      } finally {
        m.student.dispose();
      }
    } finally {
      store.close();
    }
  });
});
