/**
 * The backend the trainer's suites train on: wasm (the default everywhere),
 * or what $DISTILLERY_BACKEND names, so .ci/run can run the same assertions on
 * the native backend (`DISTILLERY_BACKEND=tensorflow`). cpu stays the reference.
 */
import { envBackend } from '../src/train/backend.ts';

export const TRAIN_BACKEND = envBackend('wasm') as 'wasm' | 'tensorflow' | 'cpu';
