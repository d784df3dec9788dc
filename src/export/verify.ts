/**
 * `export.ts --verify DIR`: recompute what the manifest claims. Every listed
 * file must exist with its size and sha256, no other file may be there, images
 * must be named by their own hash, and every data file's rows must parse and
 * add up to the manifest's counts (and, for per-teacher rows, its cost).
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { z } from 'zod';
import { IMAGE_NAME } from './export.ts';
import { listFiles, sha256Hex } from './files.ts';
import { countRows, DATA_FILES, Manifest, MANIFEST, rowsCost, type Counts } from './manifest.ts';
import { readParquetRows } from './parquet.ts';
import { ExportRow } from './rows.ts';

export interface VerifyResult {
  /** One line each, naming the file; empty when the export is intact. */
  problems: string[];
  manifest?: Manifest;
  /** The rows of the first data file that read back, when there are no problems. */
  rows?: ExportRow[];
  /** The data file those rows came from. */
  rowsFile?: string;
}

/** Read and check an export's manifest; a problem is a one-line message naming the file. */
export function readManifest(dir: string): { manifest?: Manifest; problem?: string } {
  const path = join(dir, MANIFEST);
  if (!existsSync(path)) return { problem: `${path}: missing (not an export folder?)` };
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    return { problem: `${path}: not JSON (${(e as Error).message})` };
  }
  const parsed = Manifest.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return { problem: `${path}: ${issue.path.join('.') || 'manifest'}: ${issue.message}` };
  }
  return { manifest: parsed.data };
}

const SAFE_PATH = /^(?!\/)(?!.*(^|\/)\.\.?(\/|$))[^\\\0]+$/;

export async function verifyExport(dir: string): Promise<VerifyResult> {
  const problems: string[] = [];
  const { manifest, problem } = readManifest(dir);
  if (!manifest) return { problems: [problem!] };
  const mpath = join(dir, MANIFEST);

  const listed = new Map(manifest.files.map((f) => [f.path, f]));
  const intact = new Set<string>();
  for (const f of manifest.files) {
    const path = join(dir, f.path);
    if (!SAFE_PATH.test(f.path) || f.path === MANIFEST) {
      problems.push(`${mpath}: lists "${f.path}", which is not a file name inside the export`);
      continue;
    }
    if (!existsSync(path) || !statSync(path).isFile()) {
      problems.push(`${path}: missing (listed in ${MANIFEST})`);
      continue;
    }
    const bytes = readFileSync(path);
    if (bytes.length !== f.bytes) {
      problems.push(`${path}: ${bytes.length} bytes, ${MANIFEST} says ${f.bytes}`);
      continue;
    }
    if (sha256Hex(bytes) !== f.sha256) {
      problems.push(`${path}: sha256 differs from ${MANIFEST} (the file changed)`);
      continue;
    }
    const image = IMAGE_NAME.exec(f.path);
    if (f.path.startsWith('images/') && (!image || image[1] !== f.sha256)) {
      problems.push(`${path}: an image is named by its sha256 (images/<sha256>.png|jpg)`);
      continue;
    }
    intact.add(f.path);
  }
  for (const rel of listFiles(dir)) {
    if (rel !== MANIFEST && !listed.has(rel)) problems.push(`${join(dir, rel)}: not listed in ${MANIFEST}`);
  }

  const dataFiles = manifest.options.formats.map((f) => DATA_FILES[f]);
  for (const name of dataFiles) if (!listed.has(name)) problems.push(`${mpath}: format ${name} is not among its files`);
  for (const f of manifest.files) {
    const isData = (Object.values(DATA_FILES) as string[]).includes(f.path);
    if (isData && !dataFiles.includes(f.path)) problems.push(`${mpath}: lists ${f.path}, which is not one of its formats`);
  }

  let first: { name: string; rows: ExportRow[] } | undefined;
  for (const name of dataFiles) {
    if (!intact.has(name)) continue;
    const path = join(dir, name);
    const read = await readRows(path, name);
    if (typeof read === 'string') {
      problems.push(read);
      continue;
    }
    problems.push(...checkRows(path, read, manifest));
    const rowsListed = listed.get(name)!.rows;
    if (rowsListed !== read.length) problems.push(`${path}: ${read.length} rows, ${MANIFEST} lists ${rowsListed ?? 'no count'}`);
    if (!first) first = { name, rows: read };
    else {
      const at = firstDifference(first.rows, read);
      if (at !== null) problems.push(`${path}: row ${at + 1} differs from ${first.name}`);
    }
  }
  return problems.length
    ? { problems, manifest }
    : { problems, manifest, rows: first?.rows, rowsFile: first ? join(dir, first.name) : undefined };
}

async function readRows(path: string, name: string): Promise<ExportRow[] | string> {
  const rows: ExportRow[] = [];
  if (name.endsWith('.jsonl')) {
    const lines = readFileSync(path, 'utf8').split('\n');
    if (lines.at(-1) !== '') return `${path}: does not end with a newline`;
    for (let i = 0; i < lines.length - 1; i++) {
      let row: ExportRow;
      try {
        row = ExportRow.parse(JSON.parse(lines[i]));
      } catch (e) {
        return `${path}:${i + 1}: ${e instanceof z.ZodError ? `${e.issues[0].path.join('.')}: ${e.issues[0].message}` : (e as Error).message}`;
      }
      rows.push(row);
    }
    return rows;
  }
  let objects: Record<string, unknown>[];
  try {
    objects = await readParquetRows(readFileSync(path));
  } catch (e) {
    return `${path}: not readable as Parquet (${(e as Error).message})`;
  }
  for (let i = 0; i < objects.length; i++) {
    const parsed = ExportRow.safeParse(objects[i]);
    if (!parsed.success) return `${path}: row ${i + 1}: ${parsed.error.issues[0].path.join('.')}: ${parsed.error.issues[0].message}`;
    rows.push(parsed.data);
  }
  return rows;
}

/** The counts (and the cost of per-teacher rows) the rows add up to, against the manifest's. */
function checkRows(path: string, rows: ExportRow[], m: Manifest): string[] {
  const problems: string[] = [];
  const counts = countRows(rows, m.task.labels);
  for (const key of Object.keys(counts) as (keyof Counts)[]) {
    if (!isDeepStrictEqual(counts[key], m.counts[key])) {
      problems.push(
        `${path}: counts.${key} is ${JSON.stringify(counts[key])} in the rows, ${JSON.stringify(m.counts[key])} in ${MANIFEST}`,
      );
    }
  }
  if (m.rows === 'per-teacher' && rowsCost(rows) !== m.cost_usd)
    problems.push(`${path}: the rows cost ${rowsCost(rows)} US$, ${MANIFEST} says ${m.cost_usd}`);
  const bad = rows.findIndex(
    (r) =>
      (m.task.input === 'image' ? r.image === undefined : r.text === undefined) ||
      (r.probs !== null && r.probs.length !== m.task.labels.length) ||
      !m.task.labels.includes(r.label),
  );
  if (bad >= 0)
    problems.push(`${path}: row ${bad + 1} does not fit task "${m.task.name}" (${m.task.input}, labels ${m.task.labels.join(', ')})`);
  if (m.options.with_images) {
    const have = new Set(m.files.map((f) => IMAGE_NAME.exec(f.path)?.[1]).filter(Boolean));
    const missing = rows.find((r) => r.image !== undefined && !have.has(r.image));
    if (missing) problems.push(`${path}: image ${missing.image} of item "${missing.id}" is not among the export's images`);
  }
  return problems;
}

function firstDifference(a: ExportRow[], b: ExportRow[]): number | null {
  for (let i = 0; i < Math.max(a.length, b.length); i++) if (!isDeepStrictEqual(a[i], b[i])) return i;
  return null;
}
