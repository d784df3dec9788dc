import { readdir, stat } from 'node:fs/promises';
import type { Dirent } from 'node:fs';
import { join } from 'node:path';
import { InputError } from '../errors.ts';
import { templateFields, type Task } from '../task/task.ts';
import { loadImage } from './image.ts';
import { checkTemplateFields, contentHash, type Fail } from './item.ts';
import { assignSplit } from './split.ts';
import type { ItemInput } from './types.ts';

/**
 * The image-classification layout `dir/<label>/<image>`: the folder names the gold label.
 * Folders and files are visited in name order so repeated imports see the same sequence.
 */
export async function* readClassFolders(dir: string, task: Task): AsyncGenerator<ItemInput> {
  if (task.input !== 'image') {
    throw new InputError(dir, undefined, 'a folder of class folders is only for image tasks; give a .jsonl, .csv or .tsv file');
  }
  // All folder names are checked before any image is read, so a typo fails at once.
  const labels = await classFolders(dir, task);
  const fieldsUsed = templateFields(task.template);
  for (const label of labels) {
    for (const name of await imageFiles(join(dir, label))) yield await folderItem(dir, label, name, fieldsUsed);
  }
}

/** Names an image file has: one of these beside the class folders would be an image without a label. */
const IMAGE_NAME = /\.(png|jpe?g|gif|webp|bmp|tiff?)$/i;

/**
 * The class folders. Other files beside them are not data and are skipped: an
 * index of the same images (datasets/shapes/shapes.jsonl), a README, a
 * licence. An image there is an error: it has no class folder, so no label.
 */
async function classFolders(dir: string, task: Task): Promise<string[]> {
  const folders: string[] = [];
  for (const entry of await listVisible(dir)) {
    const path = join(dir, entry.name);
    if (!(await isFolder(entry, path))) {
      if (IMAGE_NAME.test(entry.name))
        throw new InputError(path, undefined, 'an image outside a class folder has no label (<folder>/<label>/<image>)');
      continue;
    }
    if (!task.labels.includes(entry.name)) {
      throw new InputError(path, undefined, `folder "${entry.name}" is not one of the task's labels (${task.labels.join(', ')})`);
    }
    folders.push(entry.name);
  }
  return folders;
}

async function imageFiles(classDir: string): Promise<string[]> {
  const entries = await listVisible(classDir);
  for (const entry of entries) {
    const path = join(classDir, entry.name);
    if (await isFolder(entry, path)) throw new InputError(path, undefined, 'unexpected folder inside a class folder');
  }
  return entries.map((e) => e.name);
}

/** Datasets are often assembled from symlinks, so follow them. */
async function isFolder(entry: Dirent, path: string): Promise<boolean> {
  if (entry.isDirectory()) return true;
  if (!entry.isSymbolicLink()) return false;
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false; // a dangling link is reported when it is read as an image
  }
}

/** Hidden entries (.DS_Store and the like) are never data. */
async function listVisible(dir: string): Promise<Dirent[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  return entries.filter((e) => !e.name.startsWith('.')).sort((a, b) => byCodeUnit(a.name, b.name));
}

/** Not localeCompare: the order must not depend on the machine's locale. */
function byCodeUnit(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

async function folderItem(dir: string, label: string, name: string, fieldsUsed: string[]): Promise<ItemInput> {
  const path = join(dir, label, name);
  const fail: Fail = (reason) => new InputError(path, undefined, reason);
  const image = await loadImage(path, path, fail);
  const fields: Record<string, unknown> = { image: path };
  checkTemplateFields(fields, fieldsUsed, fail);
  const hash = contentHash(fields, image);
  return {
    id: `${label}/${name}`,
    hash,
    fields,
    image,
    gold: label,
    split: assignSplit(undefined, hash),
    // An image file has no lines: errors about it name the file alone.
    source: { file: path },
  };
}
