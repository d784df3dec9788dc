/**
 * A trained student as a folder (model.json + weights.bin): what it holds besides its weights,
 * loading it, and loading it for a task (labels checked, the task's items as a dataset with the
 * model's own preprocessing). Eval, predict, ingest-logits --from-model, relabel and the report
 * all start here; none of this needs the training loop.
 */
import { join } from 'node:path';
import { DistilleryError } from '../errors.ts';
import { decodePixels } from '../input/image.ts';
import { readItems } from '../input/read.ts';
import { DEFAULT_FIELDS, type FieldOptions, type ItemInput } from '../input/types.ts';
import type { Store, TaskRow } from '../store/store.ts';
import type { Task } from '../task/task.ts';
import { tf } from '../train/backend.ts';
import { loadDataset, toPixels, type BatchSource, type Dataset, type Preprocess } from '../train/data.ts';
import { loadWeights, MODEL_FILE, WEIGHTS_FILE } from '../train/io.ts';
import { studentFromWeights, type Student, type StudentSpec } from '../train/models/index.ts';

/** What a saved model holds besides its weights: enough for eval and predict to rebuild its inputs. */
export interface SavedModelSpec {
  student: StudentSpec;
  task: string;
  labels: string[];
  preprocess: Preprocess;
  /**
   * The distiller whose prediction rule the student uses (DeiT: 'deit', the mean of both heads);
   * null: softmax of the class head. Absent in models saved before it existed: DeiT's rule when the
   * student has a distillation head, as those were trained.
   */
  predict?: string | null;
}

export interface LoadedModel {
  dir: string;
  spec: SavedModelSpec;
  student: Student;
}

/** A trained student from its folder, on the current backend. */
export async function loadModel(dir: string): Promise<LoadedModel> {
  const { spec, tensors } = await loadWeights<SavedModelSpec>(dir);
  if (!spec?.student || !Array.isArray(spec.labels)) {
    tf.dispose(Object.values(tensors));
    throw new DistilleryError(`${join(dir, MODEL_FILE)}: not a distillery student (no student spec or labels)`);
  }
  try {
    return { dir, spec, student: studentFromWeights(spec.student, tensors) };
  } finally {
    tf.dispose(Object.values(tensors));
  }
}

export function modelFiles(dir: string): string[] {
  return [join(dir, MODEL_FILE), join(dir, WEIGHTS_FILE)];
}

/** The model's labels must be the task's, in the same order (probabilities are in label order). */
export function checkLabels(m: LoadedModel, task: { name: string; labels: string[] }): void {
  if (JSON.stringify(m.spec.labels) !== JSON.stringify(task.labels)) {
    throw new DistilleryError(
      `${m.dir}: the model's labels (${m.spec.labels.join(', ')}) differ from task "${task.name}"'s (${task.labels.join(', ')})`,
    );
  }
}

export interface ModelForTask {
  model: LoadedModel;
  task: TaskRow;
  /** Every item of the task, preprocessed as the model was trained. */
  ds: Dataset;
}

/**
 * A model and its task's items, ready to predict: the task is the model's own (by name) unless
 * given; the labels must match. `teachers` selects the runs for the agreement figure.
 */
export async function loadModelForTask(store: Store, dir: string, o: { task?: TaskRow; teachers?: string } = {}): Promise<ModelForTask> {
  const model = await loadModel(dir);
  try {
    const task = o.task ?? store.findTask(model.spec.task);
    if (!task) throw new DistilleryError(`${dir}: task "${model.spec.task}" is not in ${store.path}`);
    checkLabels(model, task);
    const ds = loadDataset(store, task, {
      supervised: false,
      evaluate: true,
      preprocess: model.spec.preprocess,
      targets: { teachers: o.teachers, calibrate: false },
    });
    return { model, task, ds };
  } catch (e) {
    model.student.dispose();
    throw e;
  }
}

/** The task a saved model was trained on, as far as reading new inputs needs it. */
export function modelTask(m: LoadedModel): Task {
  const input = m.spec.preprocess.input;
  return {
    name: m.spec.task,
    labels: m.spec.labels,
    input,
    path: join(m.dir, MODEL_FILE),
    template: input === 'text' ? '{{text}}' : 'image',
    version: '',
  };
}

/** Read an input file (JSONL, CSV, TSV or an image folder) into what the model takes. */
export async function readInputs(
  m: LoadedModel,
  path: string,
  fields: FieldOptions = DEFAULT_FIELDS,
): Promise<{ items: ItemInput[]; ds: BatchSource }> {
  const items: ItemInput[] = [];
  for await (const it of readItems(path, modelTask(m), fields)) items.push(it);
  return { items, ds: itemsDataset(m, items) };
}

/** Items already read (with the model's task or the task file) as what the model takes, preprocessed as in training. */
export function itemsDataset(m: LoadedModel, items: ItemInput[]): BatchSource {
  const pre = m.spec.preprocess;
  if (pre.input === 'text') return { n: items.length, texts: items.map((it) => String(it.fields.text)), preprocess: pre };
  const pixels = toPixels(
    items.map((it) => decodePixels(it.image!.bytes)),
    pre.image!,
    items.map((it) => it.id),
  );
  return { n: items.length, pixels, preprocess: pre };
}
