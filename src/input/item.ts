import type { InputError } from '../errors.ts';
import { sha256Hex } from '../task/task.ts';
import { canonicalJson } from './canonical.ts';
import type { ImageInput } from './types.ts';

/** Builds the InputError for the row or file being read, so messages name the right place. */
/** An InputError at the current row; `setting` names the setting that would fix it. */
export type Fail = (reason: string, setting?: string) => InputError;

/** Caught here, per row, rather than as a failed request once money is being spent. */
export function checkTemplateFields(fields: Record<string, unknown>, templateFields: readonly string[], fail: Fail): void {
  for (const name of templateFields) {
    if (fields[name] === undefined || fields[name] === null) throw fail(`missing column "${name}" used by the task template`);
  }
}

/**
 * The item's identity: what the teacher sees. An image counts by its bytes, not its path,
 * so moving or renaming files keeps the same key; id, gold and split are not content.
 */
export function contentHash(fields: Record<string, unknown>, image?: ImageInput): string {
  const content = image ? { ...fields, image: `sha256:${image.sha256}` } : fields;
  return sha256Hex(canonicalJson(content));
}
