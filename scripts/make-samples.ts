import { Command } from 'commander';
import { intArg, runCli, say } from '../src/cli/run.ts';
import { writeShapes } from '../src/datasets/shapes.ts';

const program = new Command('make-samples')
  .description('Draw the image sample in datasets/shapes (deterministic: the same bytes every time).')
  .option('--out <dir>', 'output folder', 'datasets/shapes')
  .option('--per-class <n>', 'images per shape', intArg(1, 10000), 6);

runCli(async () => {
  const opts = program.parse().opts();
  say(`wrote ${writeShapes(opts.out, opts.perClass)} images to ${opts.out}`);
});
