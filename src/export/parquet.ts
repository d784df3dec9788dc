/**
 * Parquet rows with hyparquet-writer (and read back with hyparquet). The
 * columns are derived from the zod ExportRow schema through its JSON Schema,
 * so the field list, the order, the types and which columns may be null are
 * written down once, in src/export/rows.ts.
 */
import { parquetReadObjects } from 'hyparquet';
import { parquetWriteBuffer, type ColumnSource, type SchemaElement } from 'hyparquet-writer';
import { z } from 'zod';
import { ExportRow } from './rows.ts';

type Leaf = 'STRING' | 'DOUBLE' | 'INT32' | 'INT64' | 'BOOLEAN';

export interface ColumnSpec {
  name: string;
  leaf: Leaf;
  /** A list of `leaf` values (a 3-level Parquet LIST, elements required). */
  list: boolean;
  /** Null or absent allowed: OPTIONAL, else REQUIRED. */
  nullable: boolean;
}

interface JsonType {
  type?: string | string[];
  anyOf?: JsonType[];
  items?: JsonType;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
}

const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;

function leafOf(t: JsonType, where: string): Leaf {
  switch (t.type) {
    case 'string':
      return 'STRING';
    case 'number':
      return 'DOUBLE';
    case 'boolean':
      return 'BOOLEAN';
    case 'integer': {
      const lo = t.minimum ?? t.exclusiveMinimum;
      const hi = t.maximum ?? t.exclusiveMaximum;
      return lo !== undefined && hi !== undefined && lo >= INT32_MIN && hi <= INT32_MAX ? 'INT32' : 'INT64';
    }
    default:
      throw new Error(`ExportRow.${where}: no Parquet type for JSON Schema ${JSON.stringify(t)}`);
  }
}

/** One field's column from its JSON Schema: `{type}`, `{type: [X, "null"]}` or `{anyOf: [X, {type: "null"}]}`. */
function columnOf(name: string, t: JsonType, required: boolean): ColumnSpec {
  let nullable = !required;
  let base: JsonType = t;
  if (Array.isArray(t.type)) {
    const types = t.type.filter((x) => x !== 'null');
    if (types.length !== 1) throw new Error(`ExportRow.${name}: no Parquet type for ${JSON.stringify(t)}`);
    nullable ||= types.length < t.type.length;
    base = { ...t, type: types[0] };
  } else if (t.anyOf) {
    const types = t.anyOf.filter((x) => x.type !== 'null');
    if (types.length !== 1) throw new Error(`ExportRow.${name}: no Parquet type for ${JSON.stringify(t)}`);
    nullable ||= types.length < t.anyOf.length;
    base = types[0];
  }
  if (base.type === 'array') return { name, leaf: leafOf(base.items ?? {}, `${name}[]`), list: true, nullable };
  return { name, leaf: leafOf(base, name), list: false, nullable };
}

const JSON_SCHEMA = z.toJSONSchema(ExportRow) as { properties: Record<string, JsonType>; required?: string[] };

/** Every ExportRow field as a column, in schema order. */
export const ROW_COLUMNS: ColumnSpec[] = Object.entries(JSON_SCHEMA.properties).map(([name, t]) =>
  columnOf(name, t, (JSON_SCHEMA.required ?? []).includes(name)),
);

/**
 * The columns of a set of rows: the required fields, and the optional ones
 * the rows have. Optional fields are all-or-nothing within one export (an
 * export is all per-teacher or all aggregated rows, of one task), so a
 * JSONL row and its Parquet row read back the same.
 */
export function columnsOf(rows: readonly ExportRow[]): ColumnSpec[] {
  const present = new Set<string>();
  for (const r of rows) for (const k of Object.keys(r)) present.add(k);
  const columns = ROW_COLUMNS.filter((c) => !c.nullable || present.has(c.name) || (JSON_SCHEMA.required ?? []).includes(c.name));
  for (const c of columns) {
    const missing = rows.findIndex((r) => !(c.name in r));
    if (missing >= 0) throw new Error(`export row ${missing} has no "${c.name}" while other rows have it`);
  }
  return columns;
}

const PHYSICAL: Record<Leaf, Pick<SchemaElement, 'type' | 'converted_type'>> = {
  STRING: { type: 'BYTE_ARRAY', converted_type: 'UTF8' },
  DOUBLE: { type: 'DOUBLE' },
  INT32: { type: 'INT32' },
  INT64: { type: 'INT64' },
  BOOLEAN: { type: 'BOOLEAN' },
};

function schemaOf(columns: ColumnSpec[]): SchemaElement[] {
  const schema: SchemaElement[] = [{ name: 'root', num_children: columns.length }];
  for (const c of columns) {
    const repetition_type = c.nullable ? 'OPTIONAL' : 'REQUIRED';
    if (c.list) {
      schema.push(
        { name: c.name, repetition_type, converted_type: 'LIST', num_children: 1 },
        { name: 'list', repetition_type: 'REPEATED', num_children: 1 },
        { name: 'element', repetition_type: 'REQUIRED', ...PHYSICAL[c.leaf] },
      );
    } else {
      schema.push({ name: c.name, repetition_type, ...PHYSICAL[c.leaf] });
    }
  }
  return schema;
}

/**
 * The rows as one Parquet file (snappy, default row groups). Nothing in it
 * depends on the time or the machine: the same rows give the same bytes.
 */
export function parquetBytes(rows: readonly ExportRow[], o: { createdBy: string; metadata: Record<string, string> }): Uint8Array {
  const columns = columnsOf(rows);
  const columnData: ColumnSource[] = columns.map((c) => ({
    name: c.name,
    data: rows.map((r) => {
      const v = (r as Record<string, unknown>)[c.name] ?? null;
      return c.leaf === 'INT64' && v !== null ? (c.list ? (v as number[]).map(BigInt) : BigInt(v as number)) : v;
    }),
  }));
  const buf = parquetWriteBuffer({
    columnData,
    schema: schemaOf(columns),
    createdBy: o.createdBy,
    kvMetadata: Object.entries(o.metadata).map(([key, value]) => ({ key, value })),
  });
  return new Uint8Array(buf);
}

/** Rows back from Parquet bytes, as plain objects (64-bit integers as numbers). */
export async function readParquetRows(bytes: Uint8Array): Promise<Record<string, unknown>[]> {
  const file = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  const rows = (await parquetReadObjects({ file })) as Record<string, unknown>[];
  const num = (v: unknown) => (typeof v === 'bigint' ? Number(v) : v);
  return rows.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, Array.isArray(v) ? v.map(num) : num(v)])));
}
