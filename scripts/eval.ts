import { Command, Option } from 'commander';
import { existsSync } from 'node:fs';
import { addDbOption } from '../src/cli/options.ts';
import { log, runCli, say } from '../src/cli/run.ts';
import { DistilleryError } from '../src/errors.ts';
import { taskInStore } from '../src/cli/task.ts';
import { Store } from '../src/store/store.ts';
import { selectBackend, type BackendChoice } from '../src/train/backend.ts';
import { loadDataset } from '../src/train/data.ts';
import { loadModel, predictBatches } from '../src/train/model.ts';
import { testReport } from '../src/train/trainer.ts';

const program = addDbOption(new Command('eval'))
  .description("A trained student on a split of its task: accuracy against gold, agreement with the teachers' label, ECE (15 bins), confusion matrix. Prints one JSON object.")
  .requiredOption('--model <dir>', 'model folder written by train.ts')
  .option('--split <name>', 'split to evaluate', 'test')
  .option('--teachers <list>', 'teachers for the agreement figure (default: all)')
  .addOption(new Option('--backend <name>', 'tensor backend').choices(['auto', 'tensorflow', 'wasm', 'cpu']).default('auto'));

runCli(async () => {
  const opts = program.parse().opts();
  if (!existsSync(opts.db)) throw new DistilleryError(`${opts.db}: no such database`);
  log(`backend: ${(await selectBackend(opts.backend as BackendChoice)).detail}`);
  const model = await loadModel(opts.model);
  const store = Store.open(opts.db);
  let ds;
  try {
    const task = taskInStore(store, model.spec.task);
    if (JSON.stringify(task.labels) !== JSON.stringify(model.spec.labels)) throw new DistilleryError(`${opts.model}: the model's labels differ from task "${task.name}"'s`);
    ds = loadDataset(store, task, { supervised: false, evaluate: true, preprocess: model.spec.preprocess, targets: { teachers: opts.teachers, calibrate: false } });
  } finally {
    store.close();
  }
  const idx = Array.from({ length: ds.n }, (_, i) => i).filter((i) => ds.splits[i] === opts.split && ds.gold[i] >= 0);
  if (idx.length === 0) throw new DistilleryError(`task "${ds.task.name}" has no gold-labelled items in split "${opts.split}"`);
  const c = ds.task.labels.length;
  const all = new Float32Array(ds.n * c);
  for await (const b of predictBatches(model, ds)) all.set(b.probs, b.start * c);
  const probs = new Float32Array(idx.length * c);
  idx.forEach((i, k) => probs.set(all.subarray(i * c, (i + 1) * c), k * c));
  say(JSON.stringify({ model: opts.model, split: opts.split, ...testReport(probs, ds, idx) }));
});
