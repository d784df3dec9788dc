import { Command, type OptionValues } from 'commander';
import {
  addBackendOption,
  addDbOption,
  addInputOptions,
  addJsonOption,
  addStudentDirOption,
  addTaskOption,
  fieldOptions,
  type InputFlags,
} from '../src/cli/options.ts';
import { log, runCli } from '../src/cli/run.ts';
import { addTeacherOptions } from '../src/cli/teacher-options.ts';
import { DistilleryError } from '../src/errors.ts';
import { loadModel, readInputs } from '../src/infer/model.ts';
import { argmaxRow, predictBatches } from '../src/infer/predict.ts';
import { selectBackend, type BackendChoice } from '../src/train/backend.ts';

/** predict's own flags; with --cascade the teacher flags (src/cli/teacher-options.ts) ride along in OptionValues. */
interface PredictOptions extends InputFlags, OptionValues {
  student?: string;
  input: string;
  backend: BackendChoice;
  cascade?: string;
  db: string;
  task?: string;
  model?: string;
  json: boolean;
}

const program = addTeacherOptions(
  addJsonOption(
    addTaskOption(
      addDbOption(
        addInputOptions(
          addBackendOption(
            addStudentDirOption(new Command('predict'), {
              help: "a student folder written by train.ts (with --cascade: default, the cascade's)",
            }),
          )
            .description(
              'Run a trained student over an input file; prints JSONL rows {"id","label","probs"} (probs in the task\'s label order). ' +
                'With --cascade: the student answers where it is confident, the teacher (--model …) the rest, stored as labels in --db; ' +
                'rows {"id","label","by","student_label","student_confidence"} and a report on stderr.',
            )
            .requiredOption('--input <file>', 'JSONL, CSV or TSV (a text column, or an image column), or a folder of images')
            .option(
              '--cascade <file>',
              'a cascade.json from cascade.ts fit: ask the teacher only where the student is below its threshold',
            ),
        ),
      ),
      "with --cascade: task name or file (default: the database's only task)",
    ),
  ),
  { requireModel: false },
);

runCli(async () => {
  const opts = program.parse().opts<PredictOptions>();
  if (opts.cascade) {
    const { predictCascade } = await import('../src/cli/cascade.ts');
    return predictCascade({ ...opts, cascade: opts.cascade });
  }
  // Without --cascade every teacher flag would silently do nothing: refuse the first one given.
  const own = new Set(['student', 'backend', 'input', 'textField', 'idField', 'goldField', 'splitField']);
  for (const o of program.options)
    if (!own.has(o.attributeName()) && program.getOptionValueSource(o.attributeName()) === 'cli')
      throw new DistilleryError(`${o.long} is for --cascade (the student alone needs no teacher)`);
  if (!opts.student) throw new DistilleryError('give --student DIR (or --cascade FILE)');
  log(`backend: ${(await selectBackend(opts.backend)).detail}`);
  const model = await loadModel(opts.student);
  const { items, ds } = await readInputs(model, opts.input, fieldOptions(opts));
  const labels = model.spec.labels;
  const c = labels.length;
  for await (const b of predictBatches(model, ds)) {
    let out = '';
    for (let k = 0; k * c < b.probs.length; k++) {
      const p = Array.from(b.probs.subarray(k * c, (k + 1) * c), (x) => Math.round(x * 1e6) / 1e6);
      out += `${JSON.stringify({ id: items[b.start + k].id, label: labels[argmaxRow(p, 0, c)], probs: p })}\n`;
    }
    process.stdout.write(out);
  }
  model.student.dispose();
});
