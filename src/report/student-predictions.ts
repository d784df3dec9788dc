import type { Store } from '../store/store.ts';
import { reliabilityOf, type Reliability } from './data.ts';

/**
 * A student's reliability on the test split, from its own predictions (the
 * trainer saves the ECE, not the bins). TensorFlow.js is loaded only here.
 */
export async function studentReliability(store: Store, dir: string): Promise<Reliability | null> {
  const { loadModelForTask } = await import('../infer/model.ts');
  const { splitItems } = await import('../infer/evaluate.ts');
  const { predictAll, ruleOf } = await import('../infer/predict.ts');
  const { model, ds } = await loadModelForTask(store, dir);
  try {
    const test = splitItems(ds, 'test');
    if (test.length === 0) return null;
    const c = ds.task.labels.length;
    const probs = await predictAll(model.student, ds, test, ruleOf(model.spec));
    return reliabilityOf(
      test.map((_, k) => Float64Array.from(probs.subarray(k * c, (k + 1) * c))),
      test.map((i) => ds.gold[i]),
    );
  } finally {
    model.student.dispose();
  }
}
