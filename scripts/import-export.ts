import { Command } from 'commander';
import { addDbOption } from '../src/cli/options.ts';
import { runCli, say } from '../src/cli/run.ts';
import { importExport } from '../src/export/import.ts';

interface ImportExportFlags {
  db: string;
  input: string;
}

const program = addDbOption(new Command('import-export'))
  .description(
    'Load a per-teacher export (scripts/export.ts) into a new or empty database: the task, its items (and images), the runs and the labels, so that training from it gives the same targets. The export is verified first.',
  )
  .requiredOption('--input <dir>', 'the export folder (with manifest.json)');

runCli(async () => {
  const opts = program.parse().opts<ImportExportFlags>();
  const r = await importExport(opts.input, opts.db);
  say(
    `imported task "${r.task}" into ${opts.db}: ${r.items} item(s)${r.images ? ` (${r.images} image(s))` : ''}, ${r.runs} run(s), ${r.labels} label(s)`,
  );
});
