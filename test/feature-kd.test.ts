/**
 * Feature-level KD from a local ViT teacher (src/train/distill/{hidden,attn,manifold}.ts, `scripts/train.ts
 * --feature-teacher`): the terms as a library on tiny random ViTs, then the CLI on 16×16 shapes.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { writeShapes } from '../src/datasets/shapes.ts';
import { DistilleryError, SettingError } from '../src/errors.ts';
import { Store } from '../src/store/store.ts';
import { selectBackend, tf } from '../src/train/backend.ts';
import { createDistillers, loadFeatureTeacher, parseLayerMap, type Batch, type Distiller } from '../src/train/distill/index.ts';
import { saveWeights } from '../src/train/io.ts';
import type { LossTerms } from '../src/train/losses.ts';
import { loadModel } from '../src/infer/model.ts';
import { createStudent, type ForwardOut, type StudentSpec, type VitSpec } from '../src/train/models/index.ts';
import { AdamW } from '../src/train/optim.ts';
import type { EpochRecord } from '../src/train/trainer.ts';
import { importFile, loadTaskFile, REPO_ROOT, runScript, type ScriptResult, workDir } from './helpers.ts';
import { isTensorflowLog, TRAIN_BACKEND } from './train-backend.ts';

before(async () => {
  await selectBackend(TRAIN_BACKEND);
});

const vit = (o: Partial<VitSpec> = {}): VitSpec => ({
  kind: 'vit',
  numClasses: 3,
  inputShape: [16, 16, 1],
  patchSize: 4,
  width: 8,
  depth: 2,
  heads: 2,
  mlpRatio: 2,
  ...o,
});

/** A saved model folder holding a fresh student of `spec` (what loadWeights / loadFeatureTeacher reads). */
async function savedTeacher(spec: StudentSpec, seed: number): Promise<string> {
  const dir = workDir();
  const s = createStudent(spec, seed);
  await saveWeights(dir, { student: spec, task: 'shapes', labels: ['circle', 'square', 'triangle'] }, s.weights);
  s.dispose();
  return dir;
}

interface FeatureKdConfig {
  teacherModel: string;
  hiddenWeight: number;
  attnWeight: number;
  manifoldWeight: number;
  layers?: Array<[number, number]>;
}
const cfg = (teacherModel: string, o: Partial<FeatureKdConfig> = {}): FeatureKdConfig => ({
  teacherModel,
  hiddenWeight: 1,
  attnWeight: 1,
  manifoldWeight: 1,
  ...o,
});

/** The hidden, attn and manifold distillers against the teacher in `c.teacherModel`, as the trainer composes them. */
async function featureKd(c: FeatureKdConfig, studentSpec: StudentSpec, seed: number) {
  const teacher = await loadFeatureTeacher(c.teacherModel);
  let distillers: Distiller[];
  try {
    distillers = createDistillers(
      ['hidden', 'attn', 'manifold'],
      { hiddenWeight: c.hiddenWeight, attnWeight: c.attnWeight, manifoldWeight: c.manifoldWeight, hiddenLayers: c.layers ?? null },
      { student: studentSpec, seed, featureTeacher: teacher },
    );
  } catch (e) {
    teacher.model.dispose();
    throw e;
  }
  const weights: Record<string, tf.Variable> = Object.assign({}, ...distillers.map((d) => d.weights));
  return {
    weights,
    /** The batch with the frozen teacher's features (outside the tape), and each distiller's prepared part. */
    batch(x: tf.Tensor): { batch: Batch; prepared: unknown[] } {
      const batch: Batch = { idx: [], x, featureTeacher: tf.tidy(() => teacher.model.forward(x, { training: false, collect: true })) };
      return { batch, prepared: distillers.map((d) => d.prepare?.(batch)) };
    },
    terms(out: ForwardOut, b: { batch: Batch; prepared: unknown[] }): LossTerms {
      return Object.assign({}, ...distillers.map((d, i) => d.terms(out, b.batch, b.prepared[i])));
    },
    release(b: { batch: Batch }) {
      tf.dispose(b.batch.featureTeacher!);
    },
    dispose() {
      for (const d of distillers) d.dispose();
      teacher.model.dispose();
    },
  };
}

/** The feature terms of `student` (seed) against the teacher in `dir`, on a random batch, as numbers. */
async function termsFor(
  studentSpec: VitSpec,
  seed: number,
  dir: string,
  o: Partial<FeatureKdConfig> = {},
): Promise<{ values: Record<string, number>; proj: string[] }> {
  const fkd = await featureKd(cfg(dir, o), studentSpec, 1);
  const student = createStudent(studentSpec, seed);
  const x = tf.randomNormal([4, 16, 16, 1], 0, 1, 'float32', 7);
  const f = fkd.batch(x);
  const values = tf.tidy(() => {
    const terms = fkd.terms(student.forward(x, { collect: true }), f);
    return Object.fromEntries(Object.entries(terms).map(([k, t]) => [k, t.dataSync()[0]]));
  });
  const proj = Object.keys(fkd.weights);
  fkd.release(f);
  tf.dispose(x);
  student.dispose();
  fkd.dispose();
  return { values, proj };
}

describe('feature KD: terms', () => {
  test('every term is 0 against an identical copy of the student, positive against another teacher', async () => {
    const spec = vit();
    const same = await termsFor(spec, 3, await savedTeacher(spec, 3));
    assert.deepEqual(Object.keys(same.values).sort(), ['attn', 'hidden', 'manifold']);
    assert.deepEqual(same.proj, [], 'no projection when the widths match');
    for (const [k, v] of Object.entries(same.values)) assert.ok(Math.abs(v) < 1e-6, `${k} = ${v} against itself`);

    const other = await termsFor(spec, 3, await savedTeacher(spec, 4));
    for (const [k, v] of Object.entries(other.values)) assert.ok(v > 1e-6, `${k} = ${v} against another teacher`);

    // A wider teacher with more heads: a learned projection for hidden, relation heads for attn.
    const wide = await termsFor(spec, 3, await savedTeacher(vit({ width: 16, heads: 4, depth: 3 }), 5), {
      layers: [
        [0, 0],
        [1, 2],
      ],
    });
    assert.deepEqual(wide.proj.sort(), ['proj.hidden.0.w', 'proj.hidden.1.w']);
    for (const [k, v] of Object.entries(wide.values)) assert.ok(Number.isFinite(v) && v > 1e-6, `${k} = ${v} against a wider teacher`);
  });

  test('only the terms with a weight are computed', async () => {
    const spec = vit();
    const r = await termsFor(spec, 3, await savedTeacher(vit({ width: 16 }), 5), { attnWeight: 0, manifoldWeight: 0 });
    assert.deepEqual(Object.keys(r.values), ['hidden']);
  });

  test('errors: a CNN teacher, mismatched token counts, bad layer maps, no weight', async () => {
    const cnn = await savedTeacher({ kind: 'cnn', numClasses: 3, inputShape: [16, 16, 1] }, 1);
    await assert.rejects(
      featureKd(cfg(cnn, { hiddenWeight: 0, manifoldWeight: 0 }), vit(), 1),
      (e: Error) => e instanceof DistilleryError && /--distill attn: needs a ViT student and a ViT teacher.*teacher.*cnn/.test(e.message),
    );
    const patch8 = await savedTeacher(vit({ patchSize: 8 }), 1);
    await assert.rejects(featureKd(cfg(patch8, { manifoldWeight: 0 }), vit(), 1), /token counts differ, student 17 .* teacher 5/);
    await assert.rejects(featureKd(cfg(patch8, { hiddenWeight: 0, attnWeight: 0 }), vit(), 1), /patch counts differ/);
    const same = await savedTeacher(vit(), 1);
    await assert.rejects(featureKd(cfg(same, { layers: [[2, 0]] }), vit(), 1), /the student has blocks 0\.\.1/);
    await assert.rejects(featureKd(cfg(same, { hiddenWeight: 0, attnWeight: 0, manifoldWeight: 0 }), vit(), 1), /all are 0/);
    assert.deepEqual(parseLayerMap('1:3,0:0'), [
      [1, 3],
      [0, 0],
    ]);
    assert.throws(
      () => parseLayerMap('1-3'),
      (e: Error) => e instanceof SettingError && e.setting === 'hiddenLayers' && /student:teacher block pairs/.test(e.message),
    );
  });

  test('the projection gets gradients: training on the hidden term alone lowers it', async () => {
    const spec = vit();
    const fkd = await featureKd(cfg(await savedTeacher(vit({ width: 16, heads: 4 }), 9), { attnWeight: 0, manifoldWeight: 0 }), spec, 1);
    const student = createStudent(spec, 2);
    const trained = { ...student.weights, ...fkd.weights };
    const projOnly = new AdamW(fkd.weights, { weightDecay: 0 });
    const x = tf.randomNormal([8, 16, 16, 1], 0, 1, 'float32', 11);
    const f = fkd.batch(x);
    const losses: number[] = [];
    for (let step = 0; step < 25; step++) {
      const { value, grads } = tf.variableGrads(() => fkd.terms(student.forward(x, { collect: true }), f).hidden, Object.values(trained));
      losses.push(value.dataSync()[0]);
      const projGrad = grads[fkd.weights['proj.hidden.1.w'].name];
      assert.ok(projGrad && tf.tidy(() => tf.sum(tf.abs(projGrad)).dataSync()[0]) > 0, 'the projection has a non-zero gradient');
      // Train the projection only: the loss can only go down through it.
      projOnly.apply({ 'proj.hidden.1.w': projGrad }, 0.01);
      tf.dispose([value, ...Object.values(grads)]);
    }
    assert.ok(losses[losses.length - 1] < 0.8 * losses[0], `hidden term decreases: ${losses.map((l) => l.toFixed(4)).join(' ')}`);
    projOnly.dispose();
    fkd.release(f);
    tf.dispose(x);
    student.dispose();
    fkd.dispose();
  });
});

// ---------------------------------------------------------------------------------------
// The CLI

type Result = ScriptResult;
const run = runScript;

const show = (r: Result) => `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
const ok = (r: Result) => (assert.equal(r.code, 0, show(r)), r);

function oneLineError(r: Result, pattern: RegExp): void {
  assert.equal(r.code, 1, show(r));
  const lines = r.stderr.split('\n').filter((l) => l !== '' && !isTensorflowLog(l));
  const errors = lines.filter((l) => l.startsWith('error: '));
  assert.equal(errors.length, 1, `one error line: ${JSON.stringify(r.stderr)}`);
  assert.ok(
    lines.every((l) => l.startsWith('error: ') || l.startsWith('backend: ')),
    `nothing but the error: ${JSON.stringify(r.stderr)}`,
  );
  assert.match(errors[0], pattern);
}

async function shapesDb(): Promise<{ dir: string; db: string }> {
  const dir = workDir();
  writeShapes(dir, 20, 16);
  const file = path.join(dir, 'shapes.jsonl');
  const rows = fs
    .readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  fs.writeFileSync(file, rows.map((r, i) => JSON.stringify({ ...r, split: i % 4 === 0 ? 'test' : 'train' })).join('\n') + '\n');
  const db = path.join(dir, 'distill.db');
  const store = Store.open(db);
  try {
    await importFile(store, loadTaskFile(path.join(REPO_ROOT, 'prompts', 'shapes.md')), file);
  } finally {
    store.close();
  }
  return { dir, db };
}

describe('feature KD: CLI', () => {
  test('a ViT student learns from a wider local ViT teacher with hidden, attn and manifold terms; errors are one line', async () => {
    const { dir, db } = await shapesDb();
    const T = path.join(dir, 'teacher');
    const S = path.join(dir, 'student');
    const base = [
      '--db',
      db,
      '--task',
      'shapes',
      '--supervised',
      '--batch-size',
      '8',
      '--backend',
      TRAIN_BACKEND,
      '--lr',
      '0.005',
      '--warmup',
      '0',
    ];
    ok(
      await run('train', [
        ...base,
        '--arch',
        'vit',
        '--patch',
        '4',
        '--width',
        '16',
        '--depth',
        '2',
        '--heads',
        '4',
        '--epochs',
        '2',
        '--out',
        T,
      ]),
    );

    const sArgs = [
      ...base,
      '--arch',
      'vit',
      '--patch',
      '4',
      '--width',
      '8',
      '--depth',
      '2',
      '--heads',
      '2',
      '--epochs',
      '4',
      '--distill',
      'ce,hidden,attn,manifold',
      '--feature-teacher',
      T,
      '--hidden-weight',
      '1',
      '--attn-weight',
      '1',
      '--manifold-weight',
      '1',
      '--hidden-layers',
      '0:0,1:1',
      '--out',
      S,
    ];
    const cnnTeacher = await savedTeacher({ kind: 'cnn', numClasses: 3, inputShape: [16, 16, 1] }, 1);
    const patch8 = await savedTeacher(vit({ patchSize: 8 }), 1);
    const [rs, rCnn, rTokens, rNoTeacher] = await Promise.all([
      run('train', sArgs),
      run('train', [
        ...base,
        '--arch',
        'vit',
        '--width',
        '8',
        '--epochs',
        '1',
        '--feature-teacher',
        cnnTeacher,
        '--distill',
        'ce,attn',
        '--attn-weight',
        '1',
        '--out',
        path.join(dir, 'x'),
      ]),
      run('train', [
        ...base,
        '--arch',
        'vit',
        '--width',
        '8',
        '--epochs',
        '1',
        '--feature-teacher',
        patch8,
        '--distill',
        'ce,hidden',
        '--hidden-weight',
        '1',
        '--out',
        path.join(dir, 'y'),
      ]),
      run('train', [
        ...base,
        '--arch',
        'vit',
        '--width',
        '8',
        '--epochs',
        '1',
        '--distill',
        'ce,manifold',
        '--manifold-weight',
        '1',
        '--out',
        path.join(dir, 'z'),
      ]),
    ]);
    ok(rs);
    oneLineError(rCnn, /--distill attn: needs a ViT student and a ViT teacher/);
    oneLineError(rTokens, /token counts differ/);
    oneLineError(rNoTeacher, /--distill manifold: needs --feature-teacher/);
    for (const d of ['x', 'y', 'z']) assert.ok(!fs.existsSync(path.join(dir, d, 'model.json')), `no model written to ${d}`);

    const m = JSON.parse(fs.readFileSync(path.join(S, 'metrics.json'), 'utf8')) as {
      config: { featureTeacher: string; distill: string[]; settings: Record<string, unknown> };
      history: EpochRecord[];
    };
    assert.equal(m.config.featureTeacher, T);
    assert.deepEqual(m.config.distill, ['ce', 'hidden', 'attn', 'manifold']);
    assert.deepEqual(m.config.settings, {
      ceWeight: 1,
      hiddenWeight: 1,
      attnWeight: 1,
      manifoldWeight: 1,
      hiddenLayers: [
        [0, 0],
        [1, 1],
      ],
    });
    assert.equal(m.history.length, 4);
    for (const h of m.history) {
      assert.deepEqual(Object.keys(h.terms).sort(), ['attn', 'ce', 'hidden', 'manifold']);
      for (const v of Object.values(h.terms)) assert.ok(Number.isFinite(v) && v >= 0);
    }
    const first = m.history[0];
    const last = m.history[m.history.length - 1];
    assert.ok(last.loss < first.loss, `the loss goes down: ${m.history.map((h) => h.loss)}`);
    assert.ok(last.terms.hidden < first.terms.hidden, `hidden goes down: ${m.history.map((h) => h.terms.hidden)}`);

    // The saved model is the student alone (loads as before); the checkpoint keeps the projections.
    const saved = JSON.parse(fs.readFileSync(path.join(S, 'model.json'), 'utf8')) as { weights: Array<{ name: string }> };
    assert.ok(!saved.weights.some((w) => w.name.startsWith('proj.')), 'no projection in the saved student');
    const ckpt = JSON.parse(fs.readFileSync(path.join(S, 'checkpoint', 'model.json'), 'utf8')) as { weights: Array<{ name: string }> };
    assert.ok(
      ckpt.weights.some((w) => w.name === 'proj.hidden.0.w') && ckpt.weights.some((w) => w.name === 'adam.m.proj.hidden.1.w'),
      'the checkpoint keeps the projections and their moments',
    );
    const loaded = await loadModel(S);
    assert.equal(loaded.spec.student.kind, 'vit');
    loaded.student.dispose();

    // --resume restores the projections from the checkpoint.
    ok(await run('train', [...sArgs.map((a, i) => (sArgs[i - 1] === '--epochs' ? '5' : a)), '--resume']));
    const resumed = JSON.parse(fs.readFileSync(path.join(S, 'metrics.json'), 'utf8')) as { history: EpochRecord[] };
    assert.equal(resumed.history.length, 5);
    assert.deepEqual(resumed.history[3], last);

    // --resume refuses a checkpoint trained with other feature-KD settings, as it does for another student:
    // another weight, another layer map, no feature KD at all, another teacher folder.
    const more = sArgs.map((a, i) => (sArgs[i - 1] === '--epochs' ? '6' : a));
    const swap = (flag: string, value: string) => more.map((a, i) => (more[i - 1] === flag ? value : a));
    const fkdFlags = ['--distill', '--feature-teacher', '--hidden-weight', '--attn-weight', '--manifold-weight', '--hidden-layers'];
    const withoutFkd = more.filter((a, i) => !fkdFlags.includes(a) && !fkdFlags.includes(more[i - 1]));
    const otherTeacher = path.join(dir, 'teacher-copy');
    fs.cpSync(T, otherTeacher, { recursive: true });
    const refused = await Promise.all([
      run('train', [...swap('--hidden-weight', '0.5'), '--resume']),
      run('train', [...swap('--hidden-layers', '1:1'), '--resume']),
      run('train', [...withoutFkd, '--resume']),
      run('train', [...swap('--feature-teacher', otherTeacher), '--resume']),
    ]);
    for (const r of refused) oneLineError(r, /checkpoint was trained with another objective/);
    assert.equal(
      (JSON.parse(fs.readFileSync(path.join(S, 'metrics.json'), 'utf8')) as { history: EpochRecord[] }).history.length,
      5,
      'the model folder is left as it was',
    );
  });
});
