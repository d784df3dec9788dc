/**
 * bench-kd --claims: the claims table of issue 12 runs every claim's rows end to end (tiny sizes: a real, short
 * training), a rerun with the same --keep folder reuses every run, and a rerun with another setting is refused.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { runNode, workDir } from './helpers.ts';
import { TRAIN_BACKEND } from './train-backend.ts';

const TINY = [
  '--train',
  '120',
  '--test',
  '30',
  '--seeds',
  '1',
  '--epochs',
  '1',
  '--teacher-epochs',
  '1',
  '--vit-patch',
  '14',
  '--vit-width',
  '16',
  '--vit-depth',
  '2',
  '--vit-heads',
  '2',
  '--fractions',
  '0.5',
  '--m2mkd-teacher-epochs',
  '1',
  '--m2mkd-module-epochs',
  '1',
  '--m2mkd-e2e-epochs',
  '1',
  '--backend',
  TRAIN_BACKEND,
];

interface Row {
  claim: string;
  key: string;
  accuracies: number[];
  mean: number;
}

test('bench-kd --claims: every claim trains its rows; a rerun reuses them; another setting is refused', async () => {
  const keep = join(workDir(), 'claims');
  const args = ['scripts/bench-kd.ts', '--claims', 'all', ...TINY, '--keep', keep, '--json'];
  const r = await runNode(args);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
  assert.equal(out.dataset, 'mnist');
  const keys = (claim: string) => out.rows.filter((x: Row) => x.claim === claim).map((x: Row) => x.key);
  assert.deepEqual(keys('deit'), ['ce-f1', 'kd-f1', 'deit-soft', 'deit-hard']);
  assert.deepEqual(keys('dearkd'), ['ce-f0.5', 'kd-f0.5', 'dearkd-f0.5']);
  assert.deepEqual(keys('civt'), ['civt-cnn-inv', 'civt-cnn-cnn', 'civt-cnn']);
  assert.deepEqual(keys('m2mkd'), ['m2mkd-kd', 'm2mkd']);
  assert.deepEqual(keys('replay'), ['replay-stored', 'replay-independent', 'replay-online', 'replay-none']);
  for (const row of out.rows as Row[]) {
    assert.equal(row.accuracies.length, 1, row.key);
    assert.ok(row.accuracies[0] >= 0 && row.accuracies[0] <= 1, `${row.key}: ${row.accuracies[0]}`);
  }
  assert.deepEqual(
    out.teachers.map((t: { name: string; kind: string }) => `${t.name}:${t.kind}`),
    ['cnn:cnn', 'cnn-s2:cnn', 'inv:involution', 'vit-teacher:vit', 'cnn-aug:cnn'],
  );
  assert.ok(existsSync(join(keep, 'runs', 'deit-hard-s1.json')));
  // The m2mKD row records its phases (the hybrid teacher before and after incubation).
  assert.equal(out.extra.m2mkd_phases.length, 1);

  // The same setting again: every run is read back, nothing trains, the figures are the same.
  const again = await runNode(args);
  assert.equal(again.code, 0, again.stderr);
  assert.doesNotMatch(again.stderr, / epoch 1: loss/);
  const out2 = JSON.parse(again.stdout.trim().split('\n').at(-1)!);
  assert.deepEqual(
    out2.rows.map((x: Row) => x.accuracies),
    out.rows.map((x: Row) => x.accuracies),
  );

  // Another setting in the same folder would mix runs: refused in one line.
  const other = await runNode(['scripts/bench-kd.ts', '--claims', 'deit', ...TINY, '--epochs', '2', '--keep', keep]);
  assert.equal(other.code, 1);
  const lines = other.stderr.trim().split('\n');
  assert.match(lines.at(-1)!, /^error: .*claims-setting\.json: this folder holds runs of another setting .*use a new --keep folder$/);
  assert.ok(!other.stderr.includes('imported'), other.stderr);
});

test('bench-kd --claims: an unknown claim is refused', async () => {
  const r = await runNode(['scripts/bench-kd.ts', '--claims', 'deit,nope']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /unknown claim "nope"/);
});
