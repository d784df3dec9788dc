import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { basename } from 'node:path';
import { DistilleryError, InputError } from '../errors.ts';
import { canonicalJson } from '../input/canonical.ts';
import { encodeSoft, formatName, SoftCodecError, type SoftFormat } from '../soft/codec.ts';
import { insertReplayLabel, type ReplayParams } from '../store/replay.ts';
import { unpaidLabel, type RunRow, type Store, type TaskRow } from '../store/store.ts';
import { sha256Hex, type Task } from '../task/task.ts';
import { readLogits, type LogitsRow } from './read-logits.ts';

export interface IngestOptions {
  store: Store;
  task: Task;
  /** The teacher's name, as later given to --teachers. */
  teacher: string;
  input: string;
  /** Item ids, one per line in row order (required for .npy). */
  idsFile?: string;
  format: SoftFormat;
  /** Logits from elsewhere than a file (a local model): the rows, and the files whose hash identifies the source. */
  rows?: () => AsyncIterable<LogitsRow>;
  sourceFiles?: string[];
  /**
   * Augmentation replay (src/whitebox/replay.ts): also store, per epoch, each train item's augmentation seed and
   * the teacher's logits on that view. The run's ordinary labels stay the teacher's on the unaugmented image.
   */
  replay?: { params: ReplayParams; rows: (epoch: number) => AsyncIterable<ReplayLogitsRow> };
}

/** The teacher's logits on one item's augmented view in one epoch. */
export interface ReplayLogitsRow {
  itemId: number;
  seed: number;
  logits: Float32Array;
  file: string;
  line: number;
}

export interface IngestResult {
  run: RunRow;
  rows: number;
  /** True when this exact file was already ingested for this teacher: nothing was written. */
  alreadyIngested: boolean;
}

/**
 * Store a teacher's logits as a run of kind `logits`: one label per row (the
 * argmax, and the logits through the soft-label codec). All or nothing: the
 * run and its labels are written in one transaction, so a bad row anywhere
 * leaves the database as it was. Ingesting the same file again is a no-op.
 */
export async function ingestLogits(o: IngestOptions): Promise<IngestResult> {
  const taskRow = o.store.findTask(o.task.name);
  if (!taskRow) throw new DistilleryError(`${o.store.path}: task "${o.task.name}" has no items; import them first (scripts/import.ts)`);
  o.store.ensureTask(o.task); // same labels as stored, or a clear error
  const { sourceHash, configHash } = await runIdentity(o);
  const done = o.store.completedRun(configHash);
  if (done) return { run: done, rows: done.items_total, alreadyIngested: true };

  return o.store.transaction(async () => {
    const run = o.store.createRun({
      task_id: taskRow.id,
      kind: 'logits',
      teacher: o.teacher,
      base_url: null,
      prompt_version: null,
      source: basename(o.input),
      source_hash: sourceHash,
      config_hash: configHash,
      labels: JSON.stringify(o.task.labels),
      items_total: 0,
      params: JSON.stringify({
        store: formatName(o.format),
        ids: o.idsFile ? basename(o.idsFile) : null,
        ...(o.replay ? { replay: o.replay.params } : {}),
      }),
    });
    const resolve = itemResolver(o.store, taskRow);
    const seen = new Map<number, number>();
    let rows = 0;
    const logitRows = o.rows ? o.rows() : readLogits(o.input, { numClasses: o.task.labels.length, idsFile: o.idsFile });
    for await (const row of logitRows) {
      const itemId = resolve(row);
      const earlier = seen.get(itemId);
      if (earlier !== undefined) throw new InputError(row.file, row.line, `the same item as row ${earlier} (each item once per ingest)`);
      seen.set(itemId, row.line);
      o.store.insertLabel(
        unpaidLabel({
          itemId,
          runId: run.id,
          requestKey: `logits:${sourceHash}:${row.line}`,
          label: o.task.labels[argmax(row.logits)],
          soft: encodeRow(row, o.format),
          softMethod: 'logits',
          sparse: o.format.kind === 'topk' && o.format.k < o.task.labels.length,
        }),
      );
      rows++;
    }
    if (rows === 0) throw new InputError(o.input, undefined, 'no rows');
    if (o.replay) await ingestReplayRows(o, run.id);
    o.store.setItemsTotal(run.id, rows);
    o.store.finishRun(run.id, 'completed', null);
    return { run: o.store.run(run.id)!, rows, alreadyIngested: false };
  });
}

/** What makes two ingests the same run: the source's bytes and the settings. */
async function runIdentity(o: IngestOptions): Promise<{ sourceHash: string; configHash: string }> {
  const sourceHash = await hashFiles(o.sourceFiles ?? [o.input, ...(o.idsFile ? [o.idsFile] : [])]);
  const configHash = sha256Hex(
    canonicalJson({
      kind: 'logits',
      task: o.task.name,
      teacher: o.teacher,
      sourceHash,
      format: formatName(o.format),
      ...(o.replay ? { replay: o.replay.params } : {}),
    }),
  );
  return { sourceHash, configHash };
}

/** The completed run these options ingested (for --check-replay): the same source, teacher, format and replay settings. */
export async function replayRunFor(o: IngestOptions): Promise<RunRow> {
  const run = o.store.completedRun((await runIdentity(o)).configHash);
  if (!run)
    throw new DistilleryError(
      `${o.store.path}: no run was ingested from ${o.input} as teacher "${o.teacher}" with these --augment, --epochs, --seed and --store; ingest it first (the same command without --check-replay)`,
    );
  return run;
}

/** Every epoch's views, through the same codec as the run's labels (one row per epoch and item). */
async function ingestReplayRows(o: IngestOptions, runId: number): Promise<void> {
  for (let epoch = 0; epoch < o.replay!.params.epochs; epoch++) {
    for await (const r of o.replay!.rows(epoch)) {
      insertReplayLabel(o.store, {
        run_id: runId,
        epoch,
        item_id: r.itemId,
        aug_seed: r.seed,
        label: o.task.labels[argmax(r.logits)],
        soft: encodeRow({ ref: { id: String(r.itemId) }, logits: r.logits, file: r.file, line: r.line }, o.format),
      });
    }
  }
}

/** Rows name their item by id, or by text (matched like the text column of the items). */
function itemResolver(store: Store, task: TaskRow): (row: LogitsRow) => number {
  let byText: Map<string, number> | undefined;
  return (row) => {
    if ('id' in row.ref) {
      const id = store.itemIdByExtId(task.id, row.ref.id);
      if (id === undefined) throw new InputError(row.file, row.line, `no item with id "${row.ref.id}" in task "${task.name}"`);
      return id;
    }
    byText ??= store.itemIdsByText(task.id);
    const id = byText.get(row.ref.text);
    if (id === undefined) throw new InputError(row.file, row.line, `no item with this text in task "${task.name}"`);
    return id;
  };
}

/** A row the chosen format cannot hold (a logit beyond fp16's range in dense16 or topk) is bad input at that row. */
function encodeRow(row: LogitsRow, format: SoftFormat): Buffer {
  try {
    return encodeSoft({ kind: 'logits', values: row.logits }, format);
  } catch (e) {
    if (e instanceof SoftCodecError) throw new InputError(row.file, row.line, `${e.message} (--store ${formatName(format)})`);
    throw e;
  }
}

export function argmax(xs: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < xs.length; i++) if (xs[i] > xs[best]) best = i;
  return best;
}

async function hashFiles(paths: string[]): Promise<string> {
  const h = createHash('sha256');
  for (const p of paths) {
    await new Promise<void>((resolve, reject) => {
      createReadStream(p)
        .on('data', (chunk) => h.update(chunk))
        .on('end', () => resolve())
        .on('error', (e: NodeJS.ErrnoException) => reject(new InputError(p, undefined, `cannot read (${e.code ?? e.message})`)));
    });
  }
  return h.digest('hex');
}
