import { DistilleryError } from '../errors.ts';
import type { Store, TaskRow } from '../store/store.ts';
import { taskItems } from '../targets/from-store.ts';
import type { Task } from '../task/task.ts';
import type { SelectContext } from './policy.ts';

/**
 * A trained student's prediction for every item of the task (for `disagree`).
 * The trainer is loaded only here, so that relabeling without --student never
 * starts TensorFlow.js.
 */
export async function studentPredictions(store: Store, taskRow: TaskRow, task: Task, dir: string, backend: string): Promise<NonNullable<SelectContext['student']>> {
  const { selectBackend } = await import('../train/backend.ts');
  const { loadModel, predictBatches } = await import('../train/model.ts');
  const { loadDataset } = await import('../train/data.ts');
  await selectBackend(backend as never);
  const model = await loadModel(dir);
  if (JSON.stringify(model.spec.labels) !== JSON.stringify(task.labels)) throw new DistilleryError(`${dir}: the student's labels differ from task "${task.name}"'s`);
  const ids = taskItems(store, taskRow).items.map((it) => it.id);
  const ds = loadDataset(store, taskRow, { supervised: false, evaluate: true, preprocess: model.spec.preprocess, targets: { calibrate: false } });
  const c = task.labels.length;
  const out: NonNullable<SelectContext['student']> = new Map();
  for await (const { start, probs } of predictBatches(model, ds)) {
    for (let k = 0; k * c < probs.length; k++) {
      const p = probs.slice(k * c, (k + 1) * c);
      let hard = 0;
      for (let j = 1; j < c; j++) if (p[j] > p[hard]) hard = j;
      out.set(ids[start + k], { hard, probs: p });
    }
  }
  return out;
}
