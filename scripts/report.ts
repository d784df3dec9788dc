import { Command, Option } from 'commander';
import { existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { addDbOption } from '../src/cli/options.ts';
import { log, runCli, say } from '../src/cli/run.ts';
import { DistilleryError } from '../src/errors.ts';
import { gatherReport, readStudent, type StudentReport } from '../src/report/data.ts';
import { renderReport } from '../src/report/html.ts';
import { studentReliability } from '../src/report/student-predictions.ts';
import { Store } from '../src/store/store.ts';

const program = addDbOption(new Command('report'))
  .description('One self-contained HTML file: runs and costs, teacher quality and calibration, training curves, confusion matrices, students side by side, reliability diagrams.')
  .option('--model <dir...>', 'model folders written by train.ts (repeat or list several)', [])
  .option('--out <file>', 'the HTML file to write', 'report.html')
  .option('--no-predict', "skip running the students on their test split (no reliability diagram for them, no TensorFlow.js)")
  .addOption(new Option('--backend <name>', 'tensor backend for the predictions').choices(['auto', 'tensorflow', 'wasm', 'cpu']).default('auto'));

runCli(async () => {
  const opts = program.parse().opts();
  if (!existsSync(opts.db)) throw new DistilleryError(`${opts.db}: no such database`);
  const dirs: string[] = opts.model;
  const read = dirs.map((d) => readStudent(d));
  const store = Store.open(opts.db);
  try {
    if (opts.predict && dirs.length) {
      const { selectBackend } = await import('../src/train/backend.ts');
      log(`backend: ${(await selectBackend(opts.backend)).detail}`);
    }
    const students: StudentReport[] = [];
    for (let i = 0; i < dirs.length; i++) {
      students.push({ ...read[i], reliability: opts.predict ? await studentReliability(store, dirs[i]) : null });
    }
    const html = renderReport(gatherReport(store, students));
    const out = resolve(opts.out);
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(`${out}.tmp`, html);
    renameSync(`${out}.tmp`, out);
    say(`wrote ${out} (${html.length} bytes, ${(html.match(/<svg /g) ?? []).length} charts)`);
  } finally {
    store.close();
  }
});
