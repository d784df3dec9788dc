import type { Store } from '../store/store.ts';
import { argmaxLabels, evaluationOf, reliabilityOf, REPORT_SPLIT, type Evaluation, type Reliability } from './data.ts';

/** A student's probabilities on the report's split (one row of the task's classes per item) and the items' gold. */
export interface SplitPredictions {
  name: string;
  probs: Float32Array;
  gold: number[];
}

/**
 * A student's reliability and evaluation on the report's split, from its own predictions (the
 * trainer saves the ECE, not the bins). TensorFlow.js is loaded only here.
 */
export async function studentPredictions(
  store: Store,
  dir: string,
): Promise<{ reliability: Reliability; evaluation: Evaluation | null; split: SplitPredictions } | null> {
  const { loadModelForTask } = await import('../infer/model.ts');
  const { splitItems } = await import('../infer/evaluate.ts');
  const { predictAll, ruleOf } = await import('../infer/predict.ts');
  const { model, ds } = await loadModelForTask(store, dir);
  try {
    const test = splitItems(ds, REPORT_SPLIT);
    if (test.length === 0) return null;
    const c = ds.task.labels.length;
    const probs = await predictAll(model.student, ds, test, ruleOf(model.spec));
    const rows = test.map((_, k) => Float64Array.from(probs.subarray(k * c, (k + 1) * c)));
    const gold = test.map((i) => ds.gold[i]);
    return {
      reliability: reliabilityOf(rows, gold),
      evaluation: evaluationOf(ds.task.labels, argmaxLabels(rows), rows, gold, REPORT_SPLIT),
      split: { name: REPORT_SPLIT, probs, gold },
    };
  } finally {
    model.student.dispose();
  }
}
