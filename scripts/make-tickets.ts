import { Command } from 'commander';
import { addOutDirOption } from '../src/cli/options.ts';
import { intArg, runCli, say } from '../src/cli/run.ts';
import { writeTickets } from '../src/datasets/tickets.ts';

interface MakeTicketsFlags {
  out: string;
  count: number;
  seed: number;
}

const program = addOutDirOption(new Command('make-tickets'), 'output folder (writes DIR/tickets.jsonl)', { default: 'tickets' })
  .description(
    'Write synthetic support tickets with gold labels for the tickets task (deterministic for a seed): enough labeled text to try ' +
      'labeling (with npm run sim-teacher, for free), training and evaluation. Drawn from templates: not a benchmark.',
  )
  .option('--count <n>', 'tickets (the four labels in turn)', intArg(4, 1_000_000), 2000)
  .option('--seed <n>', 'seed of the draw', intArg(0, 0x7fffffff), 0);

runCli(async () => {
  const opts = program.parse().opts<MakeTicketsFlags>();
  say(`wrote ${opts.count} tickets to ${writeTickets(opts.out, opts.count, opts.seed)}`);
});
