/** One input row, normalised: what the store keeps as an item. */
export interface ItemInput {
  /** External id: the id column, else the 1-based row number, as a string. */
  id: string;
  /** sha256 (hex) of the item's content: the fields sent to the teacher, with an image replaced by the sha256 of its bytes. */
  hash: string;
  /** The fields the prompt template may use (every column but id, gold and split). For images, `image` holds the path as given. */
  fields: Record<string, unknown>;
  /** Present for image items. */
  image?: ImageInput;
  /** Gold label (for evaluation only; never sent to the teacher). */
  gold?: string;
  /** 'train' | 'test' from the split column, else 90/10 by content hash. Other split names from the column are kept as given. */
  split: string;
  /** Where the row came from, for error messages. */
  source: { file: string; line?: number };
}

export interface ImageInput {
  bytes: Buffer;
  mime: 'image/png' | 'image/jpeg';
  sha256: string;
  width: number;
  height: number;
}

export interface FieldOptions {
  textField: string;
  idField: string;
  goldField: string;
  splitField: string;
}

export const DEFAULT_FIELDS: FieldOptions = { textField: 'text', idField: 'id', goldField: 'label', splitField: 'split' };
