import { Command } from 'commander';
import { runCli, say } from '../src/cli/run.ts';
import { addDbOption, addInputOptions, addTaskOption, fieldOptions, type InputFlags } from '../src/cli/options.ts';
import { taskFromArg } from '../src/cli/task.ts';
import { readItems } from '../src/input/read.ts';
import { usingStore } from '../src/store/open.ts';

interface ImportFlags extends InputFlags {
  db: string;
  task?: string;
  input: string;
}

const program = addInputOptions(
  addTaskOption(addDbOption(new Command('import')), "task file, or a name from prompts/ (default: the database's only task)")
    .description('Import inputs into the store without labeling them. Importing the same content twice adds nothing.')
    .requiredOption('--input <path>', 'JSONL, CSV or TSV file, or a folder of class sub-folders of images'),
);

runCli(async () => {
  const opts = program.parse().opts<ImportFlags>();
  const task = taskFromArg(opts.task, opts.db);
  // A first import whose input turns out bad removes the database it created.
  await usingStore(opts.db, async (store) => {
    const res = await store.importItems(task, readItems(opts.input, task, fieldOptions(opts)));
    say(
      `imported ${res.added} new item(s), ${res.existing} already present; task "${task.name}" has ${store.countItems(res.taskRow.id)} item(s)`,
    );
  });
});
