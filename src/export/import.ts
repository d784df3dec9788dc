/**
 * `import-export.ts DIR --db FILE`: load a per-teacher export into a new or
 * empty database, so that `buildTargets` over it gives what it gave over the
 * database the export came from. The export is verified first; the task, its
 * items (and images), the runs (same ids, models and parameters) and every
 * label (same run, hard label, stored soft label, cost and request key) are
 * written in one transaction: a failure leaves the database empty.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DistilleryError, InputError } from '../errors.ts';
import { decodeImage } from '../input/image.ts';
import { contentHash } from '../input/item.ts';
import type { ItemInput } from '../input/types.ts';
import { decodeSoft } from '../soft/codec.ts';
import { usingStore } from '../store/open.ts';
import { unpaidLabel } from '../store/store.ts';
import type { Task } from '../task/task.ts';
import { IMAGE_EXT } from './export.ts';
import { MANIFEST } from './manifest.ts';
import type { ExportRow } from './rows.ts';
import { verifyExport } from './verify.ts';

export interface ImportExportResult {
  task: string;
  items: number;
  runs: number;
  labels: number;
  images: number;
}

export async function importExport(dir: string, dbPath: string): Promise<ImportExportResult> {
  const v = await verifyExport(dir);
  if (v.problems.length) {
    const more = v.problems.length > 1 ? ` (and ${v.problems.length - 1} more problem(s); see export.ts --verify)` : '';
    throw new DistilleryError(`${v.problems[0]}${more}; nothing imported`);
  }
  const m = v.manifest!;
  const rows = v.rows ?? [];
  const rowsFile = v.rowsFile ?? join(dir, MANIFEST);
  if (m.rows === 'aggregate') {
    throw new DistilleryError(
      `${dir}: an aggregated export (${m.aggregation?.method}) holds targets, not the teachers' labels; import a per-teacher export (without --aggregate)`,
    );
  }
  if (m.task.input === 'image' && !m.options.with_images) {
    throw new DistilleryError(`${dir}: an image task's export needs its images/ folder; export it again with --with-images`);
  }
  const runIds = new Set(m.runs.map((r) => r.id));
  const C = m.task.labels.length;
  rows.forEach((r, i) => {
    const fail = (reason: string) => new InputError(rowsFile, i + 1, reason);
    if (r.run === undefined || r.cost === undefined || r.request_key === undefined || r.soft === undefined) {
      throw fail('the row has no run, cost, request_key or soft (an export from an older distillery cannot be imported)');
    }
    if (!runIds.has(r.run)) throw fail(`run ${r.run} is not among the runs in ${MANIFEST}`);
    if (r.soft !== null) {
      let n: number;
      try {
        n = decodeSoft(Buffer.from(r.soft, 'base64')).values.length;
      } catch (e) {
        throw fail(`soft: ${(e as Error).message}`);
      }
      if (n !== C) throw fail(`soft: ${n} classes, the task has ${C}`);
    }
  });

  // A new database the import fails to fill is removed (usingStore); an existing one must be empty (checked first).
  return usingStore(dbPath, async (store) => {
    const used = store.tableCounts();
    const held = Object.entries(used).filter(([, n]) => n > 0);
    if (held.length) {
      throw new DistilleryError(
        `${dbPath}: the database is not empty (${held.map(([k, n]) => `${n} ${k}`).join(', ')}); import-export loads an export into a new or empty database`,
      );
    }
    const task = {
      name: m.task.name,
      labels: m.task.labels,
      input: m.task.input,
      path: join(dir, MANIFEST),
      template: '',
      version: m.task.prompt_version ?? '',
    } as unknown as Task;
    const items = itemInputs(dir, rows, rowsFile, m.task.input === 'image');
    let labels = 0;
    const result = await store.importItems(task, iterate(items), {
      beforeCommit: async (r) => {
        if (r.existing > 0) {
          const k = items.findIndex((_, i) => r.itemIds.indexOf(r.itemIds[i]) !== i);
          throw new InputError(
            rowsFile,
            undefined,
            `item "${items[k]?.id}" has the same content as an earlier item (the original had columns the export does not carry); it cannot be imported`,
          );
        }
        const idOf = new Map(items.map((it, i) => [it.id, r.itemIds[i]]));
        for (const run of m.runs) {
          store.restoreRun({
            id: run.id,
            task_id: r.taskRow.id,
            kind: run.kind,
            teacher: run.teacher,
            base_url: run.base_url,
            prompt_version: run.prompt_version,
            source: run.source,
            source_hash: run.source_hash,
            config_hash: run.config_hash,
            params: JSON.stringify(run.params),
            labels: JSON.stringify(m.task.labels),
            status: run.status,
            items_total: run.items_total,
          });
        }
        for (const row of rows) {
          store.insertLabel(
            unpaidLabel({
              itemId: idOf.get(row.id)!,
              runId: row.run!,
              requestKey: row.request_key!,
              label: row.label,
              soft: row.soft ? Buffer.from(row.soft, 'base64') : null,
              softMethod: row.soft_method,
              cost: row.cost!,
            }),
          );
          labels++;
        }
      },
    });
    return {
      task: result.taskRow.name,
      items: result.added,
      runs: m.runs.length,
      labels,
      images: new Set(items.map((it) => it.image?.sha256).filter(Boolean)).size,
    };
  });
}

/** One item per id, in row order (the original item order), checked to agree across its rows. */
function itemInputs(dir: string, rows: ExportRow[], rowsFile: string, images: boolean): ItemInput[] {
  const byId = new Map<string, { row: ExportRow; item: ItemInput }>();
  const out: ItemInput[] = [];
  rows.forEach((row, i) => {
    const fail = (reason: string) => new InputError(rowsFile, i + 1, reason);
    const seen = byId.get(row.id);
    if (seen) {
      const a = seen.row;
      if (a.text !== row.text || a.image !== row.image || a.gold !== row.gold || a.split !== row.split)
        throw fail(`item "${row.id}" differs from its earlier row (text, image, gold or split)`);
      return;
    }
    let item: ItemInput;
    if (images) {
      const sha = row.image!;
      const ext = Object.values(IMAGE_EXT).find((e) => existsSync(join(dir, 'images', `${sha}.${e}`)));
      if (!ext) throw fail(`image ${sha} is not in ${join(dir, 'images')}`);
      const rel = `images/${sha}.${ext}`;
      const image = decodeImage(readFileSync(join(dir, rel)), rel, fail);
      if (image.sha256 !== sha) throw fail(`${rel} does not hash to its name`);
      const fields = { image: rel };
      item = {
        id: row.id,
        hash: contentHash(fields, image),
        fields,
        image,
        gold: row.gold ?? undefined,
        split: row.split,
        source: { file: rowsFile, line: i + 1 },
      };
    } else {
      const fields = { text: row.text! };
      item = {
        id: row.id,
        hash: contentHash(fields),
        fields,
        gold: row.gold ?? undefined,
        split: row.split,
        source: { file: rowsFile, line: i + 1 },
      };
    }
    byId.set(row.id, { row, item });
    out.push(item);
  });
  return out;
}

async function* iterate<T>(xs: T[]): AsyncGenerator<T> {
  yield* xs;
}
