/**
 * The backend the trainer's suites train on: wasm (the default everywhere),
 * or what $DISTILLERY_BACKEND names, so .ci/run can run the same assertions on
 * the native backend (`DISTILLERY_BACKEND=tensorflow`). cpu stays the reference.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { envBackend } from '../src/train/backend.ts';

export const TRAIN_BACKEND = envBackend('wasm') as 'wasm' | 'tensorflow' | 'cpu';

/** Whether a tfjs-node binding has been built in this checkout (npm run setup:native, or npm install where the CDN is reachable). */
export function nativeBuilt(): boolean {
  const require = createRequire(import.meta.url);
  for (const pkg of ['@tensorflow/tfjs-node', '@tensorflow/tfjs-node-gpu']) {
    try {
      const lib = path.join(path.dirname(require.resolve(`${pkg}/package.json`)), 'lib');
      if (fs.readdirSync(lib).some((d) => fs.existsSync(path.join(lib, d, 'tfjs_binding.node')))) return true;
    } catch {
      // not installed, or installed without its binding
    }
  }
  return false;
}

/**
 * TensorFlow's C++ start-up log (absl's "WARNING: All log messages before
 * absl::InitializeLog()…" and `I0000 … port.cc] oneDNN custom operations are
 * on…`), written to fd 2 by libtensorflow when tfjs-node loads: not ours, and
 * TF_CPP_MIN_LOG_LEVEL does not silence it in TF 2.21.
 */
export function isTensorflowLog(line: string): boolean {
  return (
    line.startsWith('WARNING: All log messages before absl::InitializeLog()') ||
    line.startsWith('To enable the following instructions:') || // cpu_feature_guard's second line
    /^[IWE]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] /.test(line)
  );
}
