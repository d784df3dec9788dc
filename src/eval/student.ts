/**
 * A trained student scored like a teacher (./evaluate.ts's `Evaluation`): its
 * answers are its prediction rule's argmax, its cost is no API call, and its
 * latency is measured here while it predicts the split.
 */
import { performance } from 'node:perf_hooks';
import { splitItems, teacherAgreement } from '../infer/evaluate.ts';
import type { ModelForTask } from '../infer/model.ts';
import { argmaxRow, predictAll, ruleOf } from '../infer/predict.ts';
import { noGoldItems, type Evaluation } from './evaluate.ts';
import { classificationMetrics } from './metrics.ts';

/** Items predicted once before timing, so the first call's kernel compilation is not charged per item. */
const WARM_UP = 16;

export async function evaluateStudent(m: ModelForTask, split: string, name = m.model.dir): Promise<Evaluation> {
  const { ds, task } = m;
  const c = task.labels.length;
  const idx = splitItems(ds, split);
  if (idx.length === 0) throw noGoldItems(task, split, [...new Set(ds.splits)].sort());
  const rule = ruleOf(m.model.spec);
  await predictAll(m.model.student, ds, idx.slice(0, WARM_UP), rule);
  const t0 = performance.now();
  const probs = await predictAll(m.model.student, ds, idx, rule);
  const ms = performance.now() - t0;
  const pred = idx.map((_, k) => argmaxRow(probs, k, c));
  return {
    kind: 'student',
    name,
    split,
    gold: idx.length,
    answered: idx.length,
    metrics: classificationMetrics(
      task.labels,
      idx.map((i) => ds.gold[i]),
      pred,
      idx.map((_, k) => probs.subarray(k * c, (k + 1) * c)),
    ),
    cost: { paid: 0, labeled: 0, per1000: 0 },
    latencyMsPerItem: ms / idx.length,
    teacherAgreement: teacherAgreement(ds, idx, pred),
  };
}
