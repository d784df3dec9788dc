/**
 * The native backend without Google's CDN: @tensorflow/tfjs-node's install
 * script downloads libtensorflow 2.9.1 (and a prebuilt addon) from a Google
 * host. Its addon only needs TensorFlow's C API, which the shared libraries of
 * a TensorFlow Python wheel also export, so the addon is built here against a
 * wheel taken from pip instead: the libraries and the C API headers are staged
 * into the package's deps/, and node-gyp compiles the addon with the installed
 * Node's own headers. Nothing is fetched but the npm package and the wheel.
 *
 * The GPU path is the same code with the `tensorflow` wheel (whose Linux build
 * carries CUDA kernels) instead of `tensorflow-cpu`.
 */
import { execFileSync, spawnSync, type SpawnSyncOptions } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { DistilleryError } from '../errors.ts';

/** The binding package and the TensorFlow release this was tested with. */
export const TFJS_NODE = '@tensorflow/tfjs-node';
export const TFJS_NODE_VERSION = '4.22.0';
export const TF_VERSION = '2.21.0';

/** Where, in a wheel (or an installed package's site-packages), the pieces are. */
const LIBS = ['tensorflow/libtensorflow_cc.so.2', 'tensorflow/libtensorflow_framework.so.2'];
/** The C API's headers and what they include (tensorflow/c/c_api.h → tf_status.h → xla/tsl/c/tsl_status.h, …). */
const INCLUDE_DIRS = ['tensorflow/c', 'tensorflow/core/platform', 'tsl', 'xla/tsl/c', 'xla/tsl/platform'];

const WHEEL_ARCH: Record<string, string> = { x64: 'x86_64', arm64: 'aarch64' };

export interface WheelSource {
  /** A .whl file, or a site-packages folder holding an installed `tensorflow/`. */
  kind: 'wheel' | 'installed';
  path: string;
  /** How it was found, for the log. */
  how: string;
}

export interface SetupOptions {
  root: string;
  gpu: boolean;
  tfVersion: string;
  python: string;
  /** A .whl, a folder with one, or a site-packages folder; undefined: search. */
  wheel?: string;
  /** Where a pip-downloaded wheel is kept (re-used by the next run). */
  cacheDir: string;
  log: (line: string) => void;
}

export function wheelName(gpu: boolean): string {
  return gpu ? 'tensorflow' : 'tensorflow-cpu';
}

export function defaultCacheDir(): string {
  return path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'distillery', 'wheels');
}

/** The prefix of the running Node, whose include/node must hold node_api.h (node-gyp would download it otherwise). */
export function nodeDir(): string {
  const prefix = path.dirname(path.dirname(process.execPath));
  if (!fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) {
    throw new DistilleryError(
      `${path.join(prefix, 'include', 'node')}: Node's headers are missing (Node's official tarball has them; Debian: apt-get install libnode-dev)`,
    );
  }
  return prefix;
}

function onPath(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/** node-gyp needs python3, make and a C++ compiler. */
export function checkTools(python: string): void {
  const missing = [python, 'make', process.env.CXX || 'g++'].filter((c) => !onPath(c));
  if (missing.length > 0)
    throw new DistilleryError(`setup:native needs ${missing.join(', ')} on PATH (Debian: apt-get install python3 make g++)`);
}

function has(dir: string, rel: string): boolean {
  return fs.existsSync(path.join(dir, rel));
}

function matchingWheel(dir: string, gpu: boolean, version: string): string | undefined {
  const prefix = `${wheelName(gpu).replace('-', '_')}-${version}-`;
  const hit = fs
    .readdirSync(dir)
    .filter(
      (f) => f.startsWith(prefix) && f.endsWith('.whl') && f.includes('linux') && f.includes(WHEEL_ARCH[process.arch] ?? process.arch),
    )
    .sort();
  return hit.length > 0 ? path.join(dir, hit[hit.length - 1]) : undefined;
}

/** A path the user gave: a .whl, a folder holding the matching .whl, or a site-packages with tensorflow/ in it. */
export function wheelFromPath(given: string, gpu: boolean, version: string): WheelSource {
  const p = path.resolve(given);
  if (!fs.existsSync(p)) throw new DistilleryError(`--wheel ${given}: no such file or folder`);
  if (fs.statSync(p).isFile()) {
    if (!p.endsWith('.whl')) throw new DistilleryError(`--wheel ${given}: not a .whl file`);
    return { kind: 'wheel', path: p, how: `the wheel given (${p})` };
  }
  if (has(p, LIBS[0])) return { kind: 'installed', path: p, how: `the TensorFlow installed in ${p}` };
  if (has(p, path.basename(LIBS[0])))
    return { kind: 'installed', path: path.dirname(p), how: `the TensorFlow installed in ${path.dirname(p)}` };
  const whl = matchingWheel(p, gpu, version);
  if (whl) return { kind: 'wheel', path: whl, how: `the wheel given (${whl})` };
  throw new DistilleryError(
    `--wheel ${given}: holds neither ${wheelName(gpu)}-${version} (*.whl) nor an installed tensorflow/${path.basename(LIBS[0])}`,
  );
}

/**
 * An installed TensorFlow of `python`, without importing it (that takes
 * seconds and may print CUDA warnings). For --gpu only the `tensorflow`
 * distribution will do: `tensorflow-cpu` has no CUDA kernels.
 */
export function installedTensorflow(python: string, gpu: boolean): WheelSource | undefined {
  const script = [
    'import importlib.util, importlib.metadata as md, os, sys',
    "s = importlib.util.find_spec('tensorflow')",
    'if s is None or not s.submodule_search_locations: sys.exit(0)',
    "names = {(d.metadata['Name'] or '').lower() for d in md.distributions()}",
    "print(os.path.dirname(list(s.submodule_search_locations)[0])); print(','.join(n for n in ('tensorflow', 'tensorflow-cpu') if n in names))",
  ].join('\n');
  const r = spawnSync(python, ['-c', script], { encoding: 'utf8' });
  if (r.status !== 0 || !r.stdout.trim()) return undefined;
  const [site, dists = ''] = r.stdout.trim().split('\n');
  if (!has(site, LIBS[0]) || !has(site, LIBS[1])) return undefined;
  if (gpu && !dists.split(',').includes('tensorflow')) return undefined;
  return { kind: 'installed', path: site, how: `the TensorFlow installed for ${python} (${site})` };
}

/** `pip download <wheel>==<version> --no-deps` into the cache (skipped when the wheel is already there). */
export function pipDownload(o: SetupOptions): WheelSource {
  fs.mkdirSync(o.cacheDir, { recursive: true });
  const cached = matchingWheel(o.cacheDir, o.gpu, o.tfVersion);
  if (cached) return { kind: 'wheel', path: cached, how: `the wheel downloaded earlier (${cached})` };
  const spec = `${wheelName(o.gpu)}==${o.tfVersion}`;
  o.log(`pip download ${spec} --no-deps -d ${o.cacheDir}`);
  const r = spawnSync(o.python, ['-m', 'pip', 'download', spec, '--no-deps', '--only-binary=:all:', '-d', o.cacheDir], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const whl = matchingWheel(o.cacheDir, o.gpu, o.tfVersion);
  if (r.status !== 0 || !whl) throw new DistilleryError(`pip download ${spec} failed (exit ${r.status}): give a wheel with --wheel PATH`);
  return { kind: 'wheel', path: whl, how: `pip download ${spec}` };
}

export function findWheel(o: SetupOptions): WheelSource {
  if (o.wheel) return wheelFromPath(o.wheel, o.gpu, o.tfVersion);
  return installedTensorflow(o.python, o.gpu) ?? pipDownload(o);
}

/** The installed binding package's folder, installing it (scripts off: its own would go to the CDN) when missing. */
export function ensureBindingPackage(o: SetupOptions): string {
  const find = (): string | undefined => {
    try {
      const pj = createRequire(path.join(o.root, 'package.json')).resolve(`${TFJS_NODE}/package.json`);
      return (JSON.parse(fs.readFileSync(pj, 'utf8')) as { version: string }).version === TFJS_NODE_VERSION ? path.dirname(pj) : undefined;
    } catch {
      return undefined;
    }
  };
  const found = find();
  if (found) return found;
  o.log(`npm install --no-save --ignore-scripts ${TFJS_NODE}@${TFJS_NODE_VERSION}`);
  run('npm', ['install', '--no-save', '--ignore-scripts', '--no-audit', '--no-fund', `${TFJS_NODE}@${TFJS_NODE_VERSION}`], { cwd: o.root });
  const installed = find();
  if (!installed) throw new DistilleryError(`npm install ${TFJS_NODE}@${TFJS_NODE_VERSION} did not leave it in ${o.root}/node_modules`);
  return installed;
}

/**
 * Copy the libraries into deps/lib and the C API headers into deps/include,
 * straight out of the wheel (a zip) with Python's zipfile, which streams: the
 * main library is ~750 MB. The names the addon's build expects are links:
 * `-ltensorflow` wants libtensorflow.so, and tfjs-node's install script looks
 * for libtensorflow.so.2.9.1 before it would download anything.
 */
export function stage(source: WheelSource, pkgDir: string, python: string): void {
  const deps = path.join(pkgDir, 'deps');
  fs.rmSync(deps, { recursive: true, force: true });
  fs.mkdirSync(path.join(deps, 'lib'), { recursive: true });
  fs.mkdirSync(path.join(deps, 'include'), { recursive: true });
  const script = `
import json, os, shutil, sys, zipfile
kind, src, deps, libs, incs = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), json.loads(sys.argv[5])
def dest(name):
    if name in libs: return os.path.join(deps, 'lib', os.path.basename(name))
    for d in incs:
        p = 'tensorflow/include/' + d + '/'
        if name.startswith(p) and not name.endswith('/'): return os.path.join(deps, 'include', name[len('tensorflow/include/'):])
    return None
def copy(fsrc, name):
    out = dest(name)
    if out is None: return 0
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, 'wb') as fdst: shutil.copyfileobj(fsrc, fdst, 1 << 20)
    return 1
n = 0
if kind == 'wheel':
    with zipfile.ZipFile(src) as z:
        for info in z.infolist():
            if dest(info.filename):
                with z.open(info) as f: n += copy(f, info.filename)
else:
    for top, _, files in os.walk(os.path.join(src, 'tensorflow')):
        for f in files:
            full = os.path.join(top, f); name = os.path.relpath(full, src).replace(os.sep, '/')
            if dest(name):
                with open(full, 'rb') as fh: n += copy(fh, name)
missing = [l for l in libs if not os.path.exists(os.path.join(deps, 'lib', os.path.basename(l)))]
if missing: sys.exit('not in ' + src + ': ' + ', '.join(missing))
print(n)
`;
  const r = spawnSync(python, ['-c', script, source.kind, source.path, deps, JSON.stringify(LIBS), JSON.stringify(INCLUDE_DIRS)], {
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new DistilleryError(`staging ${source.path} failed: ${(r.stderr || r.stdout).trim().split('\n').pop()}`);
  if (!fs.existsSync(path.join(deps, 'include', 'tensorflow', 'c', 'c_api.h'))) {
    throw new DistilleryError(`${source.path}: has no tensorflow/include/tensorflow/c/c_api.h (not a TensorFlow wheel?)`);
  }
  const lib = path.join(deps, 'lib');
  for (const [link, target] of [
    ['libtensorflow.so', 'libtensorflow_cc.so.2'],
    ['libtensorflow.so.2.9.1', 'libtensorflow_cc.so.2'],
    ['libtensorflow_framework.so', 'libtensorflow_framework.so.2'],
  ]) {
    fs.symlinkSync(target, path.join(lib, link));
  }
}

/**
 * Build the addon: `npm rebuild` runs tfjs-node's install script, which finds
 * the staged library and calls node-pre-gyp. custom-binary.json (its own hook
 * for custom libtensorflow builds) makes that --build-from-source, so it does
 * not first try to download a prebuilt addon; npm_config_nodedir points
 * node-gyp at the installed Node's headers instead of downloading them.
 */
export function buildAddon(pkgDir: string, root: string): void {
  fs.writeFileSync(
    path.join(pkgDir, 'scripts', 'custom-binary.json'),
    `${JSON.stringify({ 'tf-lib': 'staged by npm run setup:native' })}\n`,
  );
  fs.rmSync(path.join(pkgDir, 'lib'), { recursive: true, force: true });
  fs.rmSync(path.join(pkgDir, 'build'), { recursive: true, force: true });
  run('npm', ['rebuild', '--foreground-scripts', TFJS_NODE], { cwd: root, env: { ...process.env, npm_config_nodedir: nodeDir() } });
}

/** What the check in a child process found. */
export interface NativeCheck {
  backend: string;
  tfVersion: string;
  matMul: number[][];
  grad: number[];
  convFilterGrad: number[];
  gpu: boolean;
}

/**
 * Load the built binding in a fresh Node and run a small op and two gradients,
 * one through a native kernel wasm lacks (Conv2DBackpropFilter). Throws unless
 * the numbers are right.
 */
export function checkNative(root: string): NativeCheck {
  const script = `
const tf = require('${TFJS_NODE}');
const out = { backend: tf.getBackend(), tfVersion: tf.backend().binding.TF_Version };
out.matMul = tf.matMul(tf.tensor2d([[1, 2], [3, 4]]), tf.tensor2d([[5, 6], [7, 8]])).arraySync();
out.grad = tf.grad((x) => tf.sum(tf.square(x)))(tf.tensor1d([1, 2, 3])).arraySync();
const x = tf.ones([1, 3, 3, 1]);
out.convFilterGrad = Array.from(tf.grad((w) => tf.sum(tf.conv2d(x, w, 1, 'valid')))(tf.zeros([2, 2, 1, 1])).dataSync());
out.gpu = typeof tf.backend().isUsingGpuDevice === 'boolean' ? tf.backend().isUsingGpuDevice : false;
process.stdout.write(JSON.stringify(out) + '\\n');
`;
  const r = spawnSync(process.execPath, ['-e', script], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, TF_CPP_MIN_LOG_LEVEL: '2' },
  });
  if (r.status !== 0) throw new DistilleryError(`the built ${TFJS_NODE} does not load: ${lastLine(r.stderr)}`);
  const got = JSON.parse(lastLine(r.stdout)) as NativeCheck;
  const want = {
    backend: 'tensorflow',
    matMul: [
      [19, 22],
      [43, 50],
    ],
    grad: [2, 4, 6],
    convFilterGrad: [4, 4, 4, 4],
  };
  for (const [k, v] of Object.entries(want)) {
    if (JSON.stringify(got[k as keyof NativeCheck]) !== JSON.stringify(v)) {
      throw new DistilleryError(
        `the built ${TFJS_NODE} computes wrong ${k}: ${JSON.stringify(got[k as keyof NativeCheck])}, expected ${JSON.stringify(v)}`,
      );
    }
  }
  return got;
}

function lastLine(s: string): string {
  return s.trim().split('\n').pop() ?? '';
}

function run(cmd: string, args: string[], opts: SpawnSyncOptions): void {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'], ...opts });
  if (r.status !== 0) throw new DistilleryError(`${cmd} ${args.join(' ')} failed (exit ${r.status ?? r.signal})`);
}

/** Bytes under a folder (following no links), for the disk-cost line. */
export function diskUsage(dir: string): number {
  return Number(execFileSync('du', ['-sb', dir], { encoding: 'utf8' }).split('\t')[0]);
}
