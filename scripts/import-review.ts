import { Command, Option } from 'commander';
import { addDbOption, addTaskOption, openExistingStore } from '../src/cli/options.ts';
import { EXIT, runCli, say } from '../src/cli/run.ts';
import { taskInStore } from '../src/cli/task.ts';
import { importLabelStudio, readLabelStudioExport, taskOfExport } from '../src/review/import-labelstudio.ts';

interface ImportReviewFlags {
  db: string;
  task?: string;
  format: 'labelstudio';
  reviewer?: string;
  dryRun: boolean;
  replace: boolean;
}

const program = addTaskOption(
  addDbOption(new Command('import-review')),
  "task name, or task file (default: the task the file names, else the database's only task)",
)
  .description(
    "Store the completed annotations of Label Studio's JSON export as human labels (one decision per annotation, as the review page stores them). Cancelled (skipped) and empty annotations are not labels. Importing the same file twice adds nothing; a bad file stores nothing.",
  )
  .argument('<file>', "Label Studio's JSON export of the project (Export > JSON)")
  .addOption(new Option('--format <name>', 'the file format').choices(['labelstudio']).default('labelstudio'))
  .option(
    '--reviewer <name>',
    "every annotation is this reviewer's (default: each annotation's completed_by: its email, or labelstudio-<user id>)",
  )
  .option(
    '--replace',
    "on a conflict (the reviewer answered the item otherwise, e.g. on the review page), undo that answer and store the file's",
    false,
  )
  .option('--dry-run', 'check the file and count what would be stored; store nothing', false);

runCli(async () => {
  program.parse();
  const file = program.args[0];
  const opts = program.opts<ImportReviewFlags>();
  const tasks = readLabelStudioExport(file);
  const store = openExistingStore(opts.db);
  try {
    const task = opts.task !== undefined ? taskInStore(store, opts.task) : taskOfExport(store, tasks, () => taskInStore(store, undefined));
    const r = importLabelStudio(store, task, file, tasks, { reviewer: opts.reviewer, dryRun: opts.dryRun, replace: opts.replace });
    const skipped = r.skipped.cancelled + r.skipped.empty + r.skipped.unannotated;
    say(
      `${opts.dryRun ? 'would store' : 'stored'} ${r.stored} human label(s) for task "${r.task}"` +
        `${r.reviewers.length ? ` (reviewers: ${r.reviewers.join(', ')})` : ''}; ${r.updated} updated (changed in Label Studio), ` +
        `${r.replaced ? `${r.replaced} replaced, ` : ''}${r.already} already there, ${r.conflicts.length} conflict(s), ${skipped} skipped ` +
        `(${r.skipped.cancelled} cancelled, ${r.skipped.empty} without a choice, ${r.skipped.unannotated} task(s) without annotations)`,
    );
    for (const c of r.conflicts) {
      say(
        `conflict: task [${c.index}] ${c.sourceKey}: ${c.reviewer} chose "${c.label}" for item "${c.itemId}", ` +
          `but their live answer is "${c.live.label ?? 'skip'}" (${c.live.source}${c.live.sourceKey ? ` ${c.live.sourceKey}` : ''}); kept (--replace stores the file's)`,
      );
    }
    // Conflicts are answers to reconcile, not a failure: the rest is stored.
    return EXIT.ok;
  } finally {
    store.close();
  }
});
