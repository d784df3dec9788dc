import { Command } from 'commander';
import { addOutDirOption } from '../src/cli/options.ts';
import { intArg, runCli, say } from '../src/cli/run.ts';
import { writeShapes } from '../src/datasets/shapes.ts';

interface MakeSamplesFlags {
  out: string;
  perClass: number;
}

const program = addOutDirOption(new Command('make-samples'), 'output folder', { default: 'datasets/shapes' })
  .description('Draw the image sample in datasets/shapes (deterministic: the same bytes every time).')
  .option('--per-class <n>', 'images per shape', intArg(1, 10000), 6);

runCli(async () => {
  const opts = program.parse().opts<MakeSamplesFlags>();
  say(`wrote ${writeShapes(opts.out, opts.perClass)} images to ${opts.out}`);
});
