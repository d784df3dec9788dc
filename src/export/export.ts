import { mkdirSync, existsSync, readdirSync, rmdirSync, rmSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { DistilleryError, SettingError } from '../errors.ts';
import { decodeSoft } from '../soft/codec.ts';
import type { LatestLabelRow, RunRow, Store, TaskRow } from '../store/store.ts';
import {
  buildTargets,
  resolveTeachers,
  taskItems,
  toLogprobs,
  type TargetsOptions,
  type TeacherSource,
  type TaskItems,
} from '../targets/from-store.ts';
import { isHumanRun } from '../store/reviews.ts';
import { snapshotAsOf } from './as-of.ts';
import { byCodeUnit, fileSha256, PendingFile, removeStaleTemps } from './files.ts';
import {
  countRows,
  DATA_FILES,
  Manifest,
  MANIFEST,
  manifestText,
  roundUsd,
  rowsCost,
  toolVersion,
  type Format,
  type ManifestFile,
  type ManifestRun,
} from './manifest.ts';
import { parquetBytes } from './parquet.ts';
import { ExportRow } from './rows.ts';

export interface ExportOptions {
  /** Comma list of teacher names or run ids (default: every teacher of the task, the reviewers' runs included for per-teacher rows). */
  teachers?: string;
  /** Present: one row per item with the aggregated target instead of one per item and teacher. */
  targets?: Omit<TargetsOptions, 'teachers'>;
  /** Include the stored logits of white-box teachers (per-teacher rows only). */
  logits?: boolean;
}

export interface WriteOptions extends ExportOptions {
  /** Default: jsonl. */
  formats?: Format[];
  /** The state after this run: labels of runs with id <= asOf, items imported by the end of that run. */
  asOf?: number;
  /** Write the images of an image task to images/<sha256>.<ext>. */
  withImages?: boolean;
}

/** Six decimals: enough for any teacher, and the same bytes every time (never -0). */
function round6(x: number): number {
  return Math.round(x * 1e6) / 1e6 + 0;
}

function itemFields(task: TaskRow, it: TaskItems['items'][number]): Pick<ExportRow, 'id' | 'text' | 'image' | 'gold' | 'split'> {
  const content =
    task.input_kind === 'image' ? { image: it.image ?? '' } : { text: String((JSON.parse(it.input) as Record<string, unknown>).text) };
  return { id: it.ext_id, ...content, gold: it.gold, split: it.split };
}

/** A teacher's latest valid label on an item: the row `loadView` reads, with what the export also carries. */
type LatestLabel = LatestLabelRow;

/** Per item, the teacher's latest valid label over its runs (the largest label id wins, as in `loadView`). */
function latestLabels(store: Store, runs: RunRow[]): Map<number, LatestLabel> {
  return new Map(Array.from(store.latestLabels(runs.map((r) => r.id)), (r) => [r.item_id, r]));
}

/** What an export is made of: its rows, and what the manifest says about where they came from. */
export interface Collected {
  rows: ExportRow[];
  sources: TeacherSource[];
  /** Per source: the labels in the export (per-teacher rows) or behind its targets (aggregated). */
  labels: LatestLabel[][];
  aggregation: Manifest['aggregation'];
}

/**
 * The export's rows, in item order (the database's item order: the order the
 * items were imported in), then teacher order: per item and teacher its
 * latest valid label, or per item the target aggregated from the teachers
 * (`buildTargets`, the module the trainer uses, so an export trains the same
 * student).
 */
export function collectRows(store: Store, task: TaskRow, o: ExportOptions = {}): Collected {
  const items = taskItems(store, task);
  if (o.targets && o.logits) throw new SettingError('logits', true, 'goes with per-teacher rows, not with an aggregated target');
  // Per-teacher rows carry the reviewers' runs (human:NAME) like any teacher's; an aggregated target is the teachers'.
  const t = o.targets ? buildTargets(store, task, { ...o.targets, teachers: o.teachers }) : null;
  const sources = t ? t.teachers : resolveTeachers(store, task, o.teachers, { humans: true });
  const latest = sources.map((s) => latestLabels(store, s.runs));
  const valid = (l: LatestLabel | undefined): l is LatestLabel => l !== undefined && task.labels.includes(l.label);
  const rows: ExportRow[] = [];
  const used: LatestLabel[][] = sources.map(() => []);
  if (o.targets && t) {
    const name = `${o.targets.aggregate}(${t.teachers.map((s) => s.name).join(',')})`;
    for (let i = 0; i < items.items.length; i++) {
      const probs = t.probs[i];
      const hard = t.hard[i];
      latest.forEach((m, k) => {
        const l = m.get(items.items[i].id);
        if (valid(l)) used[k].push(l);
      });
      if (!probs || hard === null) continue;
      rows.push(
        ExportRow.parse({
          ...itemFields(task, items.items[i]),
          teacher: name,
          prompt_version: null,
          label: task.labels[hard],
          probs: Array.from(probs, round6),
          soft_method: `aggregate:${o.targets.aggregate}${o.targets.calibrate ? '+calibrated' : ''}`,
        }),
      );
    }
    const aggregation = {
      method: o.targets.aggregate,
      teachers: t.teachers.map((s) => s.name),
      calibrate: o.targets.calibrate,
      weights: t.weights ? t.weights.map(round6) : null,
      temperatures: t.temperatures ? t.temperatures.map(round6) : null,
    };
    return { rows, sources, labels: used, aggregation };
  }
  const runs = new Map(store.runs(task.id).map((r) => [r.id, r]));
  for (const it of items.items) {
    sources.forEach((source, k) => {
      const l = latest[k].get(it.id);
      if (!valid(l)) return;
      used[k].push(l);
      const run = runs.get(l.run_id)!;
      const soft = l.soft ? decodeSoft(l.soft) : null;
      rows.push(
        ExportRow.parse({
          ...itemFields(task, it),
          teacher: source.name,
          prompt_version: run.prompt_version,
          label: l.label,
          probs: soft ? Array.from(toLogprobs(soft), (z) => round6(Math.exp(z))) : null,
          soft_method: softMethodOf(run),
          ...(o.logits ? { logits: soft?.kind === 'logits' ? Array.from(soft.values, round6) : null } : {}),
          run: l.run_id,
          cost: l.cost,
          request_key: l.request_key,
          soft: l.soft ? l.soft.toString('base64') : null,
        }),
      );
    });
  }
  return { rows, sources, labels: used, aggregation: null };
}

/**
 * `collect` over the database, or with `asOf` over its state after that run (a throwaway in-memory copy, see
 * as-of.ts); errors name the database and the run rather than the copy.
 */
export function collectAsOf<T>(store: Store, task: TaskRow, asOf: number | undefined, collect: (source: Store) => T): T {
  if (asOf === undefined) return collect(store);
  const source = snapshotAsOf(store, task, asOf);
  try {
    return collect(source);
  } catch (e) {
    const where = `${store.path} as of run ${asOf}`;
    if (e instanceof SettingError) throw new SettingError(e.setting, e.value, e.reason.replaceAll(':memory:', where));
    if (e instanceof DistilleryError) throw new DistilleryError(e.message.replaceAll(':memory:', where));
    throw e;
  } finally {
    source.close();
  }
}

/** The export's rows (see `collectRows`). */
export function* exportRows(store: Store, task: TaskRow, o: ExportOptions = {}): Generator<ExportRow> {
  yield* collectRows(store, task, o).rows;
}

function softMethodOf(run: { kind: string; params: string }): string {
  if (run.kind === 'logits') return 'logits';
  // A reviewer's decision is a hard label; its run's params hold the reviewer, not a soft-label method.
  if (isHumanRun(run)) return 'human';
  return (JSON.parse(run.params) as { soft: string }).soft;
}

/** A base URL without user:password@ (the key never is in the database, but a URL may carry credentials). */
export function stripUserinfo(url: string | null): string | null {
  if (url === null) return null;
  try {
    const u = new URL(url);
    if (!u.username && !u.password) return url;
    u.username = '';
    u.password = '';
    return u.toString();
  } catch {
    return url.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/@]*@/i, '$1');
  }
}

const ABSOLUTE = /^(\/|[A-Za-z]:[\\/]|\\\\)/;

/** Run parameters with any absolute path cut to its file name: an export names no folder of the machine it came from. */
function scrubPaths(v: unknown): unknown {
  if (typeof v === 'string') return ABSOLUTE.test(v) ? basename(v.replace(/\\/g, '/')) : v;
  if (Array.isArray(v)) return v.map(scrubPaths);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, scrubPaths(x)]));
  return v;
}

function manifestRun(r: RunRow, labels: number): ManifestRun {
  return {
    id: r.id,
    kind: r.kind,
    teacher: r.teacher,
    base_url: stripUserinfo(r.base_url),
    prompt_version: r.prompt_version,
    source: r.source === null ? null : (scrubPaths(r.source) as string),
    source_hash: r.source_hash,
    config_hash: r.config_hash,
    params: scrubPaths(JSON.parse(r.params)) as Record<string, unknown>,
    status: r.status,
    items_total: r.items_total,
    labels,
  };
}

export const IMAGE_EXT: Record<string, string> = { 'image/png': 'png', 'image/jpeg': 'jpg' };
export const IMAGE_NAME = /^images\/([0-9a-f]{64})\.(png|jpg)$/;

export interface ExportResult {
  dir: string;
  rows: number;
  files: string[];
  manifest: Manifest;
}

/**
 * Write an export to `dir`: labels.jsonl and/or labels.parquet, images/ with
 * --with-images, and manifest.json last. Every file is written under a
 * temporary name and renamed when whole; a failure removes the temporary
 * files. Files of an earlier export in `dir` that this one does not list
 * (another format, images) are removed, so the folder is exactly the export.
 */
export async function writeExport(store: Store, task: TaskRow, dir: string, o: WriteOptions = {}): Promise<ExportResult> {
  const formats = o.formats ?? ['jsonl'];
  const c = collectAsOf(store, task, o.asOf, (source) => collectRows(source, task, o));
  if (o.withImages && task.input_kind !== 'image') throw new SettingError('withImages', true, `task "${task.name}" is a text task`);

  const version = toolVersion();
  const runsById = new Map(store.runs(task.id).map((r) => [r.id, r]));
  const perRun = new Map<number, number>();
  for (const ls of c.labels) for (const l of ls) perRun.set(l.run_id, (perRun.get(l.run_id) ?? 0) + 1);
  const runIds = [...new Set(c.sources.flatMap((s) => s.runs.map((r) => r.id)))].sort((a, b) => a - b);
  const runs = runIds.map((id) => manifestRun(runsById.get(id)!, perRun.get(id) ?? 0));
  const latestLlm = runs.filter((r) => r.kind === 'llm' && r.prompt_version !== null).at(-1);
  const cost = c.aggregation ? roundUsd(c.labels.flat().reduce((s, l) => s + l.cost, 0)) : rowsCost(c.rows);

  mkdirSync(dir, { recursive: true });
  // A killed export leaves its temporary files; the rerun clears them so that the folder verifies.
  for (const d of [dir, join(dir, 'images')]) removeStaleTemps(d);
  const pending: PendingFile[] = [];
  const files: ManifestFile[] = [];
  let manifest: Manifest;
  try {
    if (o.withImages) {
      mkdirSync(join(dir, 'images'), { recursive: true });
      const shas = [...new Set(c.rows.map((r) => r.image).filter((s): s is string => !!s))].sort(byCodeUnit);
      for (const sha of shas) {
        const blob = store.blob(sha);
        const ext = IMAGE_EXT[blob.mime];
        if (!ext) throw new DistilleryError(`${store.path}: image ${sha} has type ${blob.mime} (expected PNG or JPEG)`);
        const rel = `images/${sha}.${ext}`;
        const path = join(dir, rel);
        files.push({ path: rel, bytes: blob.bytes.length, sha256: sha });
        if (existsSync(path) && statSync(path).size === blob.bytes.length && fileSha256(path) === sha) continue;
        const f = new PendingFile(path);
        pending.push(f);
        f.write(blob.bytes);
        f.finish();
      }
    }
    for (const format of formats) {
      const f = new PendingFile(join(dir, DATA_FILES[format]));
      pending.push(f);
      if (format === 'jsonl') {
        let buf = '';
        for (const row of c.rows) {
          buf += `${JSON.stringify(row)}\n`;
          if (buf.length > 1 << 20) {
            f.write(buf);
            buf = '';
          }
        }
        f.write(buf);
      } else {
        f.write(
          parquetBytes(c.rows, {
            createdBy: `distillery ${version}`,
            metadata: { 'distillery.task': task.name, 'distillery.labels': JSON.stringify(task.labels) },
          }),
        );
      }
      f.finish();
      files.push({ path: DATA_FILES[format], bytes: f.bytes, sha256: f.sha256, rows: c.rows.length });
    }
    files.sort((a, b) => byCodeUnit(a.path, b.path));
    // Built (and checked) before anything is renamed into place.
    manifest = Manifest.parse({
      format: 'distillery-export',
      format_version: 1,
      tool: { name: 'distillery', version },
      task: { name: task.name, input: task.input_kind, labels: task.labels, prompt_version: latestLlm?.prompt_version ?? null },
      as_of: o.asOf ?? null,
      rows: c.aggregation ? 'aggregate' : 'per-teacher',
      options: { teachers: o.teachers ?? null, logits: o.logits === true, with_images: o.withImages === true, formats },
      aggregation: c.aggregation,
      teachers: c.sources.map((s, k) => ({ name: s.name, runs: s.runs.map((r) => r.id), labels: c.labels[k].length })),
      runs,
      counts: countRows(c.rows, task.labels),
      cost_usd: cost,
      files,
    });
    for (const f of pending) f.commit();
  } catch (e) {
    for (const f of pending) f.abort();
    throw e;
  }
  removeStale(dir, new Set(files.map((f) => f.path)));
  const m = new PendingFile(join(dir, MANIFEST));
  try {
    m.write(manifestText(manifest));
    m.commit();
  } catch (e) {
    m.abort();
    throw e;
  }
  return { dir, rows: c.rows.length, files: files.map((f) => f.path), manifest };
}

/** Data files and images of an earlier export that this one does not have. Nothing else is touched. */
function removeStale(dir: string, keep: Set<string>): void {
  for (const name of Object.values(DATA_FILES)) if (!keep.has(name)) rmSync(join(dir, name), { force: true });
  const images = join(dir, 'images');
  if (!existsSync(images)) return;
  for (const name of readdirSync(images)) {
    const rel = `images/${name}`;
    if (IMAGE_NAME.test(rel) && !keep.has(rel)) rmSync(join(images, name), { force: true });
  }
  if (readdirSync(images).length === 0) rmdirSync(images);
}
