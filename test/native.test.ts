/**
 * setup:native's pieces (src/native/setup.ts) on small stand-ins: finding a
 * wheel, staging a wheel-shaped zip (made with Python's zipfile, as the real
 * one is read) into deps/, and DISTILLERY_BACKEND. Where the binding has been
 * built in this checkout (npm run setup:native; .ci/run does it when pip can
 * get the wheel), its check runs for real: an op and gradients on TensorFlow.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { DistilleryError } from '../src/errors.ts';
import { checkNative, stage, wheelFromPath, wheelName } from '../src/native/setup.ts';
import { envBackend } from '../src/train/backend.ts';
import { REPO_ROOT, workDir } from './helpers.ts';
import { nativeBuilt } from './train-backend.ts';

const CPU_WHEEL = 'tensorflow_cpu-2.21.0-cp311-cp311-manylinux_2_27_x86_64.whl';

/** A zip laid out like a TensorFlow wheel: the two libraries, C API headers, and files that must not be staged. */
function fakeWheel(dir: string, members: Record<string, string>): string {
  const file = path.join(dir, CPU_WHEEL);
  const script =
    'import json, sys, zipfile\nwith zipfile.ZipFile(sys.argv[1], "w") as z:\n  for n, t in json.loads(sys.argv[2]).items(): z.writestr(n, t)';
  const r = spawnSync('python3', ['-c', script, file, JSON.stringify(members)], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return file;
}

const WHEEL_MEMBERS = {
  'tensorflow/libtensorflow_cc.so.2': 'cc',
  'tensorflow/libtensorflow_framework.so.2': 'fw',
  'tensorflow/include/tensorflow/c/c_api.h': '// c api',
  'tensorflow/include/tensorflow/c/eager/c_api.h': '// eager',
  'tensorflow/include/tensorflow/core/platform/ctstring.h': '// ctstring',
  'tensorflow/include/tsl/platform/ctstring.h': '// tsl',
  'tensorflow/include/xla/tsl/c/tsl_status.h': '// status',
  'tensorflow/include/tensorflow/core/framework/tensor.h': '// not the C API: left out',
  'tensorflow/python/_pywrap_tensorflow_internal.so': 'left out',
};

test('DISTILLERY_BACKEND: unset gives the fallback, a backend name wins, anything else is a one-line error', () => {
  assert.equal(envBackend('wasm', {}), 'wasm');
  assert.equal(envBackend('wasm', { DISTILLERY_BACKEND: '' }), 'wasm');
  assert.equal(envBackend('wasm', { DISTILLERY_BACKEND: 'tensorflow' }), 'tensorflow');
  assert.equal(envBackend('auto', { DISTILLERY_BACKEND: 'cpu' }), 'cpu');
  assert.throws(
    () => envBackend('auto', { DISTILLERY_BACKEND: 'gpu' }),
    (e: Error) => e instanceof DistilleryError && /DISTILLERY_BACKEND=gpu/.test(e.message),
  );
});

test('wheelFromPath: a .whl, a folder holding the matching one, an installed site-packages; errors name the path', () => {
  const dir = workDir();
  const whl = fakeWheel(dir, WHEEL_MEMBERS);
  assert.equal(wheelFromPath(whl, false, '2.21.0').path, whl);
  assert.deepEqual([wheelFromPath(dir, false, '2.21.0').kind, wheelFromPath(dir, false, '2.21.0').path], ['wheel', whl]);
  assert.throws(
    () => wheelFromPath(dir, true, '2.21.0'),
    /holds neither tensorflow-2\.21\.0/,
    '--gpu wants the tensorflow wheel, not tensorflow-cpu',
  );
  assert.throws(() => wheelFromPath(dir, false, '2.20.0'), /tensorflow-cpu-2\.20\.0/);
  assert.throws(() => wheelFromPath(path.join(dir, 'nope'), false, '2.21.0'), /nope: no such file or folder/);
  const notWheel = path.join(dir, 'notes.txt');
  fs.writeFileSync(notWheel, 'x');
  assert.throws(() => wheelFromPath(notWheel, false, '2.21.0'), /not a \.whl file/);
  const site = path.join(dir, 'site-packages');
  fs.mkdirSync(path.join(site, 'tensorflow'), { recursive: true });
  fs.writeFileSync(path.join(site, 'tensorflow', 'libtensorflow_cc.so.2'), '');
  assert.deepEqual(wheelFromPath(site, true, '2.21.0').kind, 'installed');
  assert.equal(wheelName(true), 'tensorflow');
  assert.equal(wheelName(false), 'tensorflow-cpu');
});

test('stage: the libraries and C API headers land in deps/, under the names the addon build and install script look for', () => {
  const dir = workDir();
  const pkg = path.join(dir, 'tfjs-node');
  fs.mkdirSync(path.join(pkg, 'deps', 'stale'), { recursive: true });
  stage({ kind: 'wheel', path: fakeWheel(dir, WHEEL_MEMBERS), how: 'test' }, pkg, 'python3');
  const deps = path.join(pkg, 'deps');
  assert.ok(!fs.existsSync(path.join(deps, 'stale')), 'an earlier deps/ is replaced');
  assert.equal(fs.readFileSync(path.join(deps, 'lib', 'libtensorflow_cc.so.2'), 'utf8'), 'cc');
  assert.equal(fs.readlinkSync(path.join(deps, 'lib', 'libtensorflow.so')), 'libtensorflow_cc.so.2');
  assert.equal(fs.readlinkSync(path.join(deps, 'lib', 'libtensorflow.so.2.9.1')), 'libtensorflow_cc.so.2');
  assert.equal(fs.readFileSync(path.join(deps, 'lib', 'libtensorflow_framework.so'), 'utf8'), 'fw');
  for (const h of [
    'tensorflow/c/c_api.h',
    'tensorflow/c/eager/c_api.h',
    'tensorflow/core/platform/ctstring.h',
    'tsl/platform/ctstring.h',
    'xla/tsl/c/tsl_status.h',
  ]) {
    assert.ok(fs.existsSync(path.join(deps, 'include', h)), h);
  }
  assert.ok(!fs.existsSync(path.join(deps, 'include', 'tensorflow', 'core', 'framework')), 'headers outside the C API are not staged');
  assert.deepEqual(fs.readdirSync(path.join(deps, 'lib')).sort(), [
    'libtensorflow.so',
    'libtensorflow.so.2.9.1',
    'libtensorflow_cc.so.2',
    'libtensorflow_framework.so',
    'libtensorflow_framework.so.2',
  ]);
});

test('stage: a zip without the libraries or without the C API is refused, naming it', () => {
  const dir = workDir();
  const pkg = path.join(dir, 'tfjs-node');
  const noLib = fakeWheel(dir, { 'tensorflow/include/tensorflow/c/c_api.h': '' });
  assert.throws(
    () => stage({ kind: 'wheel', path: noLib, how: 'test' }, pkg, 'python3'),
    /staging .*\.whl failed: not in .*libtensorflow_cc\.so\.2/,
  );
  const noHeaders = fakeWheel(dir, { 'tensorflow/libtensorflow_cc.so.2': '', 'tensorflow/libtensorflow_framework.so.2': '' });
  assert.throws(
    () => stage({ kind: 'wheel', path: noHeaders, how: 'test' }, pkg, 'python3'),
    /has no tensorflow\/include\/tensorflow\/c\/c_api\.h/,
  );
});

test('the built binding (where setup:native has run): matMul, a gradient and Conv2DBackpropFilter on TensorFlow', (t) => {
  if (!nativeBuilt()) {
    t.skip('tfjs-node is not built here (npm run setup:native)');
    return;
  }
  const got = checkNative(REPO_ROOT);
  assert.equal(got.backend, 'tensorflow');
  assert.match(got.tfVersion, /^2\.\d+/);
});
