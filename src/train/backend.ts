import * as tf from '@tensorflow/tfjs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { DistilleryError } from '../errors.ts';

export { tf };

export const BACKEND_CHOICES = ['auto', 'tensorflow', 'wasm', 'cpu'] as const;
export type BackendChoice = (typeof BACKEND_CHOICES)[number];

/** The environment variable that `auto` obeys: run a whole process (a CLI, a test suite) on one backend. */
export const BACKEND_ENV = 'DISTILLERY_BACKEND';

/**
 * $DISTILLERY_BACKEND when set (and valid), else `fallback`. `auto` resolves
 * through this, so `DISTILLERY_BACKEND=tensorflow` moves every `--backend auto`
 * run onto the native backend; tests pass their own fallback ('wasm').
 */
export function envBackend(fallback: BackendChoice = 'auto', env: NodeJS.ProcessEnv = process.env): BackendChoice {
  const value = env[BACKEND_ENV];
  if (value === undefined || value === '') return fallback;
  if (!(BACKEND_CHOICES as readonly string[]).includes(value)) {
    throw new DistilleryError(`$${BACKEND_ENV}=${value}: expected one of ${BACKEND_CHOICES.join(', ')}`);
  }
  return value as BackendChoice;
}

const require = createRequire(import.meta.url);

/**
 * The native bindings (@tensorflow/tfjs-node-gpu, then @tensorflow/tfjs-node)
 * are optional: they download libtensorflow at install time, which a machine
 * that reaches only the npm registry cannot do. When one is installed and
 * loads, importing it registers the `tensorflow` backend.
 */
async function tryNative(): Promise<string | undefined> {
  // TensorFlow's INFO and WARNING start-up lines (CPU features, …) off unless the user asked for them; read at load.
  process.env.TF_CPP_MIN_LOG_LEVEL ??= '2';
  for (const pkg of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']) {
    try {
      await import(pkg);
      if (tf.findBackend('tensorflow')) return pkg;
    } catch {
      // not installed, or its native library failed to load: try the next one
    }
  }
  return undefined;
}

async function tryWasm(): Promise<boolean> {
  try {
    const wasm = await import('@tensorflow/tfjs-backend-wasm');
    // The .wasm files ship inside the package: point the loader at them (no download at run time).
    wasm.setWasmPaths(`${dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm'))}/`);
    return await tf.setBackend('wasm');
  } catch {
    return false;
  }
}

/**
 * Select the training backend. `auto`: $DISTILLERY_BACKEND when set; else a
 * native TensorFlow binding when one is installed and loads (CUDA first), else
 * wasm, else the pure-JS cpu backend.
 * Returns a line saying what was chosen and why, for the CLI to print.
 */
export async function selectBackend(requested: BackendChoice = 'auto'): Promise<{ backend: string; detail: string }> {
  const choice = requested === 'auto' ? envBackend('auto') : requested;
  if (choice === 'tensorflow' || choice === 'auto') {
    const pkg = await tryNative();
    if (pkg && (await tf.setBackend('tensorflow'))) {
      await tf.ready();
      return { backend: 'tensorflow', detail: `tensorflow (native, from ${pkg})` };
    }
    if (choice === 'tensorflow') {
      throw new DistilleryError(
        '--backend tensorflow: neither @tensorflow/tfjs-node-gpu nor @tensorflow/tfjs-node is installed and loadable (npm run setup:native; see the README)',
      );
    }
  }
  if (choice === 'wasm' || choice === 'auto') {
    if (await tryWasm()) {
      await tf.ready();
      return { backend: 'wasm', detail: `wasm (simd ${tf.env().getBool('WASM_HAS_SIMD_SUPPORT') ? 'on' : 'off'})` };
    }
    if (choice === 'wasm') throw new DistilleryError('--backend wasm: @tensorflow/tfjs-backend-wasm could not be loaded');
  }
  await tf.setBackend('cpu');
  await tf.ready();
  return { backend: 'cpu', detail: choice === 'cpu' ? 'cpu (pure JS)' : 'cpu (pure JS; no native or wasm backend could be loaded)' };
}
