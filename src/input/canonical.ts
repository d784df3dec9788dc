/**
 * JSON with object keys sorted (by UTF-16 code unit, recursively) and no whitespace,
 * so that equal content always serialises — and hashes — the same way regardless of
 * key order in the source. Follows JSON.stringify for everything else: `toJSON` is
 * honoured, undefined/functions/symbols are dropped from objects and become null in
 * arrays, non-finite numbers become null.
 */
export function canonicalJson(value: unknown): string {
  const out = write(value, new Set());
  if (out === undefined) throw new TypeError(`cannot serialise ${typeof value} as JSON`);
  return out;
}

function write(value: unknown, ancestors: Set<object>): string | undefined {
  if (isObject(value) && typeof (value as { toJSON?: unknown }).toJSON === 'function') {
    value = (value as { toJSON(): unknown }).toJSON();
  }
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value);
    case 'number':
      return Number.isFinite(value) ? JSON.stringify(value) : 'null';
    case 'boolean':
      return value ? 'true' : 'false';
    case 'bigint':
      throw new TypeError('cannot serialise a bigint as JSON');
    case 'undefined':
    case 'function':
    case 'symbol':
      return undefined;
  }
  if (value === null) return 'null';
  const obj = value as object;
  // A cycle would otherwise recurse until the stack overflows.
  if (ancestors.has(obj)) throw new TypeError('cannot serialise a circular structure as JSON');
  ancestors.add(obj);
  try {
    return Array.isArray(obj) ? writeArray(obj, ancestors) : writeObject(obj as Record<string, unknown>, ancestors);
  } finally {
    ancestors.delete(obj);
  }
}

function writeArray(items: unknown[], ancestors: Set<object>): string {
  return `[${items.map((item) => write(item, ancestors) ?? 'null').join(',')}]`;
}

function writeObject(obj: Record<string, unknown>, ancestors: Set<object>): string {
  const parts: string[] = [];
  for (const key of Object.keys(obj).sort()) {
    const v = write(obj[key], ancestors);
    if (v !== undefined) parts.push(`${JSON.stringify(key)}:${v}`);
  }
  return `{${parts.join(',')}}`;
}

function isObject(value: unknown): value is object {
  return typeof value === 'object' && value !== null;
}
