/**
 * setup:native: the native TensorFlow backend (@tensorflow/tfjs-node) built
 * against a TensorFlow Python wheel, for machines that cannot reach the host
 * its own install script downloads libtensorflow from.
 *
 *   npm run setup:native [-- --gpu] [-- --wheel PATH] [-- --tf-version 2.21.0]
 *
 * Finds a wheel (--wheel, else an installed `tensorflow` Python package, else
 * `pip download`), stages its libraries and C headers into the package,
 * builds the addon with node-gyp, and checks it with a small op and gradients.
 */
import { Command } from 'commander';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { log, runCli, say } from '../src/cli/run.ts';
import {
  buildAddon,
  checkNative,
  checkTools,
  defaultCacheDir,
  diskUsage,
  ensureBindingPackage,
  findWheel,
  nodeDir,
  stage,
  TF_VERSION,
  TFJS_NODE,
  type SetupOptions,
} from '../src/native/setup.ts';

const program = new Command('setup:native')
  .description('Build the native TensorFlow backend from a TensorFlow Python wheel (no download from Google hosts).')
  .option('--gpu', 'the `tensorflow` wheel (CUDA 12 kernels on Linux) instead of `tensorflow-cpu`', false)
  .option('--wheel <path>', 'a .whl, a folder holding one, or a site-packages folder with tensorflow/ installed')
  .option('--tf-version <v>', 'TensorFlow version to pip download', TF_VERSION)
  .option('--python <path>', 'the Python for pip and node-gyp', process.env.DISTILLERY_PYTHON || 'python3')
  .option('--cache-dir <dir>', 'where a downloaded wheel is kept', defaultCacheDir())
  .option('--check-only', 'only load the built binding and run the check', false);

runCli(async () => {
  const opts = program.parse().opts();
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const o: SetupOptions = {
    root,
    gpu: opts.gpu,
    tfVersion: opts.tfVersion,
    python: opts.python,
    wheel: opts.wheel,
    cacheDir: opts.cacheDir,
    log,
  };
  if (!opts.checkOnly) {
    checkTools(o.python);
    nodeDir();
    const source = findWheel(o);
    log(`wheel: ${source.how}`);
    const pkgDir = ensureBindingPackage(o);
    log(`staging its libraries and C headers into ${path.relative(root, pkgDir)}/deps`);
    stage(source, pkgDir, o.python);
    log(`staged ${(diskUsage(path.join(pkgDir, 'deps')) / 2 ** 20).toFixed(0)} MiB; building the addon (node-gyp)`);
    buildAddon(pkgDir, root);
  }
  const check = checkNative(root);
  say(
    `native backend ready: ${TFJS_NODE} on TensorFlow ${check.tfVersion}${opts.gpu ? `, GPU device ${check.gpu ? 'in use' : 'NOT in use (see the README)'}` : ''}`,
  );
  say('matMul, a gradient and Conv2DBackpropFilter agree with the expected values; --backend auto now picks tensorflow');
});
