/**
 * The demo's settings are the single source for `npm run demo` and `bench-kd --preset demo`: the preset must
 * run the demo's student and loss, while flags given explicitly still win. Tiny sizes (a real, short training).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DEMO_FULL, DEMO_QUICK, studentFlags } from '../src/demo/settings.ts';
import { runNode } from './helpers.ts';
import { TRAIN_BACKEND } from './train-backend.ts';

test('studentFlags spells the demo student as train.ts flags', () => {
  const full = studentFlags(DEMO_FULL);
  assert.equal(DEMO_FULL.student.kind, 'vit');
  assert.deepEqual(full.slice(0, 2), ['--arch', 'vit']);
  assert.equal(full[full.indexOf('--lr') + 1], String(DEMO_FULL.lr));
  assert.equal(full[full.indexOf('--epochs') + 1], String(DEMO_FULL.studentEpochs));
  // --quick distils an MLP (a ViT does not reach 90% in its 2 minutes): the flags must say so.
  const quick = studentFlags(DEMO_QUICK);
  assert.deepEqual(quick.slice(0, 4), ['--arch', 'mlp', '--hidden', '256,128']);
  assert.ok(!quick.includes('--patch'));
});

test('bench-kd --preset demo runs the demo ViT and KD weights; explicit flags win', async () => {
  const r = await runNode([
    'scripts/bench-kd.ts',
    '--preset',
    'demo',
    '--train',
    '60',
    '--test',
    '20',
    '--epochs',
    '1',
    '--teacher-epochs',
    '1',
    '--seeds',
    '1',
    '--backend',
    TRAIN_BACKEND,
    '--json',
  ]);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
  assert.equal(out.preset, 'demo');
  assert.deepEqual(out.sizes, { train: 60, test: 20 });
  assert.equal(out.epochs.students, 1);
  assert.ok(DEMO_FULL.student.kind === 'vit');
  const v = DEMO_FULL.student;
  assert.deepEqual(out.vit.shape, { patch: v.patch, width: v.width, depth: v.depth, heads: v.heads, mlp_ratio: v.mlpRatio });
  assert.equal(out.vit.lr, DEMO_FULL.lr);
  assert.equal(out.vit.batch_size, DEMO_FULL.batchSize);
  assert.deepEqual(out.kd_weights, { ce: DEMO_FULL.ceWeight, kd: DEMO_FULL.kdWeight });
  assert.deepEqual(out.teacher.spec.channels, DEMO_FULL.teacherChannels);
  // ViT rows only: the distilled ViT and its hard-label twin.
  assert.deepEqual(
    out.rows.map((row: { student: string; loss: string; temperature: number | null }) => [row.student, row.loss, row.temperature]),
    [
      ['vit', 'kd', DEMO_FULL.kdTemperature],
      ['vit', 'hard', null],
    ],
  );
});
