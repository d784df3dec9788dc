/**
 * A Hogwild worker thread (hogwild.ts): on 'init' it wraps the shared weights, bags and
 * objective; on each 'epoch' it takes chunks of the shared order until none is left and
 * replies with its steps and loss sums.
 */
import { parentPort } from 'node:worker_threads';
import { fromShared, trainShare, type EpochShare, type SharedState } from './hogwild.ts';

type Message = { kind: 'init'; state: SharedState } | { kind: 'epoch'; share: EpochShare };

let state: SharedState | null = null;
let run: ReturnType<typeof fromShared> | null = null;

parentPort!.on('message', (m: Message) => {
  try {
    if (m.kind === 'init') {
      state = m.state;
      run = fromShared(state);
      parentPort!.postMessage({ kind: 'ready' });
    } else {
      if (!state || !run) throw new Error('epoch before init');
      parentPort!.postMessage({ kind: 'done', result: trainShare(run.model, run.bags, run.objective, state, m.share) });
    }
  } catch (err) {
    parentPort!.postMessage({ kind: 'error', message: err instanceof Error ? err.message : String(err) });
  }
});
