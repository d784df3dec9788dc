/** Scoring predictions against gold: the test report the trainer writes and eval.ts prints. */
import { noGoldItems } from '../eval/evaluate.ts';
import { agreement, classificationMetrics } from '../eval/metrics.ts';
import type { Dataset } from '../train/data.ts';
import type { ModelForTask } from './model.ts';
import { argmaxRow, predictAll, ruleOf } from './predict.ts';

export interface TestReport {
  n: number;
  accuracy: number | null;
  teacher_agreement: number | null;
  ece: number | null;
  confusion: number[][];
}

/** Accuracy against gold, agreement with the teachers' label, ECE (15 bins) and the confusion matrix (rows: gold). */
export function testReport(probs: Float32Array, ds: Dataset, idx: number[]): TestReport {
  const c = ds.task.labels.length;
  const pred = idx.map((_, k) => argmaxRow(probs, k, c));
  const m = classificationMetrics(
    ds.task.labels,
    idx.map((item) => ds.gold[item]),
    pred,
    idx.map((_, k) => probs.subarray(k * c, (k + 1) * c)),
  );
  return {
    n: m.n,
    accuracy: m.n ? m.accuracy : null,
    teacher_agreement: teacherAgreement(ds, idx, pred),
    ece: m.ece,
    confusion: m.confusion,
  };
}

/** How often the predictions pred[k] (of items idx[k]) equal the teachers' aggregated label, over the items that have one. */
export function teacherAgreement(ds: Dataset, idx: number[], pred: number[]): number | null {
  const { n, rate } = agreement(
    pred,
    idx.map((item) => (ds.teacherHard[item] >= 0 ? ds.teacherHard[item] : null)),
  );
  return n ? rate : null;
}

/** The gold-labelled items of a split. */
export function splitItems(ds: Dataset, split: string): number[] {
  return Array.from({ length: ds.n }, (_, i) => i).filter((i) => ds.splits[i] === split && ds.gold[i] >= 0);
}

/** A loaded model's test report on one split of its task. */
export async function evaluateSplit(m: ModelForTask, split: string): Promise<TestReport> {
  const idx = splitItems(m.ds, split);
  if (idx.length === 0) throw noGoldItems(m.ds.task, split, [...new Set(m.ds.splits)].sort());
  return testReport(await predictAll(m.model.student, m.ds, idx, ruleOf(m.model.spec)), m.ds, idx);
}
