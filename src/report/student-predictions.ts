import { DistilleryError } from '../errors.ts';
import type { Store } from '../store/store.ts';
import { reliabilityOf, type Reliability } from './data.ts';

/**
 * A student's reliability on the test split, from its own predictions (the
 * trainer saves the ECE, not the bins). TensorFlow.js is loaded only here.
 */
export async function studentReliability(store: Store, dir: string): Promise<Reliability | null> {
  const { loadModel, predictBatches } = await import('../train/model.ts');
  const { loadDataset } = await import('../train/data.ts');
  const model = await loadModel(dir);
  const task = store.findTask(model.spec.task);
  if (!task) throw new DistilleryError(`${dir}: task "${model.spec.task}" is not in ${store.path}`);
  if (JSON.stringify(task.labels) !== JSON.stringify(model.spec.labels)) throw new DistilleryError(`${dir}: the model's labels differ from task "${task.name}"'s`);
  const ds = loadDataset(store, task, { supervised: false, evaluate: true, preprocess: model.spec.preprocess, targets: { calibrate: false } });
  const c = task.labels.length;
  // Only the test items are predicted: a view of the dataset holding just them.
  const test = Array.from({ length: ds.n }, (_, i) => i).filter((i) => ds.splits[i] === 'test' && ds.gold[i] >= 0);
  if (test.length === 0) return null;
  const view: Pick<typeof ds, 'pixels' | 'texts' | 'preprocess' | 'n'> = { preprocess: ds.preprocess, n: test.length };
  if (ds.texts) view.texts = test.map((i) => ds.texts![i]);
  if (ds.pixels) {
    const per = ds.pixels.length / ds.n;
    view.pixels = new Float32Array(test.length * per);
    test.forEach((i, k) => view.pixels!.set(ds.pixels!.subarray(i * per, (i + 1) * per), k * per));
  }
  const probs: (Float64Array | null)[] = [];
  const gold: (number | null)[] = [];
  for await (const b of predictBatches(model, view)) {
    for (let k = 0; k * c < b.probs.length; k++) {
      probs.push(Float64Array.from(b.probs.subarray(k * c, (k + 1) * c)));
      gold.push(ds.gold[test[b.start + k]]);
    }
  }
  return probs.length ? reliabilityOf(probs, gold) : null;
}
