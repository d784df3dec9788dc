import { Command } from 'commander';
import { addDbOption, addStoreOption, resolveTask, storeFormat } from '../src/cli/options.ts';
import { runCli, say } from '../src/cli/run.ts';
import { formatName } from '../src/soft/codec.ts';
import { Store } from '../src/store/store.ts';
import { ingestLogits } from '../src/whitebox/ingest.ts';

const program = addStoreOption(
  addDbOption(new Command('ingest-logits'))
    .description("Store a white-box teacher's logits as a run: JSONL rows {\"id\" or \"text\", \"logits\": [C numbers]}, or a .npy array [N, C] (float32 or float16) with --ids.")
    .requiredOption('--task <file>', 'task file (or a name from prompts/); its items must be imported already')
    .requiredOption('--teacher <name>', "the teacher's name (what --teachers refers to later)")
    .requiredOption('--input <file>', 'logits: .jsonl or .npy')
    .option('--ids <file>', 'for .npy: item ids, one per line in row order'),
);

runCli(async () => {
  const opts = program.parse().opts();
  const task = resolveTask(opts.task);
  const format = storeFormat(opts.store, task.labels.length);
  const store = Store.open(opts.db);
  try {
    const res = await ingestLogits({ store, task, teacher: opts.teacher, input: opts.input, idsFile: opts.ids, format });
    say(
      res.alreadyIngested
        ? `nothing to do: ${opts.input} was already ingested as run ${res.run.id} (${res.rows} rows)`
        : `run ${res.run.id}: ingested ${res.rows} rows of logits from ${opts.input} as teacher "${opts.teacher}", stored as ${formatName(format)}`,
    );
  } finally {
    store.close();
  }
});
