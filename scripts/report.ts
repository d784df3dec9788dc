import { Command } from 'commander';
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  addBackendOption,
  addDbOption,
  addOutDirOption,
  addStudentDirOption,
  openExistingStore,
  type BackendFlag,
} from '../src/cli/options.ts';
import { log, runCli, say } from '../src/cli/run.ts';
import { cascadeView, readStudentCascade } from '../src/report/cascade.ts';
import { gatherReport, readStudent, type StudentReport } from '../src/report/data.ts';
import { renderReport } from '../src/report/html.ts';
import { studentPredictions } from '../src/report/student-predictions.ts';

interface ReportFlags {
  db: string;
  student: string[];
  out: string;
  predict: boolean;
  backend: BackendFlag;
}

/** What report.ts writes inside --out. */
const REPORT_FILE = 'report.html';

const program = addBackendOption(
  addOutDirOption(addStudentDirOption(addDbOption(new Command('report')), { multiple: true }), `output folder: writes DIR/${REPORT_FILE}`, {
    default: '.',
  })
    .description(
      'One self-contained HTML file: a headline (the best student on the test split), runs and costs, teachers and students on the test split, training curves, confusion matrices, reliability diagrams, accuracy-coverage curves, and the cascade of a student folder that has a cascade.json.',
    )
    .option('--no-predict', 'skip running the students on their test split (no reliability diagram for them, no TensorFlow.js)'),
  'tensor backend for the predictions',
);

runCli(async () => {
  const opts = program.parse().opts<ReportFlags>();
  const dirs = opts.student;
  const store = openExistingStore(opts.db);
  try {
    const read = dirs.map((d) => readStudent(d));
    const cascades = dirs.map((d) => readStudentCascade(d));
    if (opts.predict && dirs.length) {
      const { selectBackend } = await import('../src/train/backend.ts');
      log(`backend: ${(await selectBackend(opts.backend)).detail}`);
    }
    const students: StudentReport[] = [];
    for (let i = 0; i < dirs.length; i++) {
      const predicted = opts.predict ? await studentPredictions(store, dirs[i]) : null;
      const found = cascades[i];
      students.push({
        ...read[i],
        reliability: predicted?.reliability ?? null,
        evaluation: predicted?.evaluation ?? null,
        cascade: found ? cascadeView(dirs[i], found, predicted?.split) : null,
      });
    }
    const html = renderReport(gatherReport(store, students));
    const out = resolve(join(opts.out, REPORT_FILE));
    mkdirSync(resolve(opts.out), { recursive: true });
    writeFileSync(`${out}.tmp`, html);
    renameSync(`${out}.tmp`, out);
    say(`wrote ${out} (${html.length} bytes, ${(html.match(/<svg /g) ?? []).length} charts)`);
  } finally {
    store.close();
  }
});
