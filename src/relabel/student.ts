import type { Store, TaskRow } from '../store/store.ts';
import { taskItems } from '../targets/from-store.ts';
import type { Task } from '../task/task.ts';
import type { SelectContext } from './policy.ts';

/**
 * A trained student's prediction for every item of the task (for `disagree`).
 * Inference is loaded only here, so that relabeling without --student never
 * starts TensorFlow.js.
 */
export async function studentPredictions(
  store: Store,
  taskRow: TaskRow,
  task: Pick<Task, 'name' | 'labels'>,
  dir: string,
  backend: string,
): Promise<NonNullable<SelectContext['student']>> {
  const { selectBackend } = await import('../train/backend.ts');
  const { checkLabels, loadModelForTask } = await import('../infer/model.ts');
  const { argmaxRow, predictBatches } = await import('../infer/predict.ts');
  await selectBackend(backend as never);
  const { model, ds } = await loadModelForTask(store, dir, { task: taskRow });
  try {
    checkLabels(model, task);
    const c = task.labels.length;
    // The dataset holds the task's items in taskItems' order.
    const itemIds = taskItems(store, taskRow).items.map((it) => it.id);
    const out: NonNullable<SelectContext['student']> = new Map();
    for await (const { start, probs } of predictBatches(model, ds)) {
      for (let k = 0; k * c < probs.length; k++)
        out.set(itemIds[start + k], { hard: argmaxRow(probs, k, c), probs: probs.slice(k * c, (k + 1) * c) });
    }
    return out;
  } finally {
    model.student.dispose();
  }
}
