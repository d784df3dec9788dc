import { Command } from 'commander';
import { addBackendOption, addInputOptions, addStudentDirOption, fieldOptions, type InputFlags } from '../src/cli/options.ts';
import { log, runCli } from '../src/cli/run.ts';
import { loadModel, readInputs } from '../src/infer/model.ts';
import { argmaxRow, predictBatches } from '../src/infer/predict.ts';
import { selectBackend, type BackendChoice } from '../src/train/backend.ts';

interface PredictOptions extends InputFlags {
  student: string;
  input: string;
  backend: BackendChoice;
}

const program = addInputOptions(
  addBackendOption(addStudentDirOption(new Command('predict'), { required: true }))
    .description('Run a trained student over an input file; prints JSONL rows {"id","label","probs"} (probs in the task\'s label order).')
    .requiredOption('--input <file>', 'JSONL, CSV or TSV (a text column, or an image column), or a folder of images'),
);

runCli(async () => {
  const opts = program.parse().opts<PredictOptions>();
  log(`backend: ${(await selectBackend(opts.backend)).detail}`);
  const model = await loadModel(opts.student);
  const { items, ds } = await readInputs(model, opts.input, fieldOptions(opts));
  const labels = model.spec.labels;
  const c = labels.length;
  for await (const b of predictBatches(model, ds)) {
    let out = '';
    for (let k = 0; k * c < b.probs.length; k++) {
      const p = Array.from(b.probs.subarray(k * c, (k + 1) * c), (x) => Math.round(x * 1e6) / 1e6);
      out += `${JSON.stringify({ id: items[b.start + k].id, label: labels[argmaxRow(p, 0, c)], probs: p })}\n`;
    }
    process.stdout.write(out);
  }
  model.student.dispose();
});
