import { Command, Option, type OptionValues } from 'commander';
import { addInputOptions, fieldOptions, type InputFlags } from '../src/cli/options.ts';
import { log, runCli } from '../src/cli/run.ts';
import { selectBackend, type BackendChoice } from '../src/train/backend.ts';
import { loadModel, predictBatches, readInputs } from '../src/train/model.ts';

const program = addInputOptions(
  new Command('predict')
    .description('Run a trained student over an input file; prints JSONL rows {"id","label","probs"} (probs in the task\'s label order).')
    .requiredOption('--model <dir>', 'model folder written by train.ts')
    .requiredOption('--input <file>', 'JSONL, CSV or TSV (a text column, or an image column), or a folder of images')
    .addOption(new Option('--backend <name>', 'tensor backend').choices(['auto', 'tensorflow', 'wasm', 'cpu']).default('auto')),
);

runCli(async () => {
  const opts = program.parse().opts<InputFlags & OptionValues>();
  log(`backend: ${(await selectBackend(opts.backend as BackendChoice)).detail}`);
  const model = await loadModel(opts.model);
  const { items, ds } = await readInputs(model, opts.input, fieldOptions(opts));
  const labels = model.spec.labels;
  const c = labels.length;
  for await (const b of predictBatches(model, ds)) {
    let out = '';
    for (let k = 0; k * c < b.probs.length; k++) {
      const p = Array.from(b.probs.subarray(k * c, (k + 1) * c), (x) => Math.round(x * 1e6) / 1e6);
      const best = p.indexOf(Math.max(...p));
      out += `${JSON.stringify({ id: items[b.start + k].id, label: labels[best], probs: p })}\n`;
    }
    process.stdout.write(out);
  }
});
