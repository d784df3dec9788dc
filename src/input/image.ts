import { readFile } from 'node:fs/promises';
import jpeg from 'jpeg-js';
import { PNG } from 'pngjs';
import { sha256Hex } from '../task/task.ts';
import type { Fail } from './item.ts';
import type { ImageInput } from './types.ts';

type ImageMime = ImageInput['mime'];

const PNG_MAGIC = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const JPEG_MAGIC = Buffer.from([0xff, 0xd8, 0xff]);

/** Decoding is only a readability check, but a hostile or huge file must not exhaust memory doing it. */
const MAX_PIXELS = 50_000_000;
const JPEG_MAX_MEMORY_MB = 512;

/** Read an image file and check it decodes. `shown` is the path as the user wrote it, for messages. */
export async function loadImage(file: string, shown: string, fail: Fail): Promise<ImageInput> {
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw fail(code === 'ENOENT' ? `cannot read image "${shown}"` : `cannot read image "${shown}" (${code ?? e})`);
  }
  return decodeImage(bytes, shown, fail);
}

export function decodeImage(bytes: Buffer, shown: string, fail: Fail): ImageInput {
  const mime = sniffImageType(bytes);
  if (!mime) throw fail('unsupported image format (only PNG and JPEG)');
  let size: { width: number; height: number };
  try {
    size = mime === 'image/png' ? decodePng(bytes) : decodeJpeg(bytes);
  } catch (e) {
    throw fail(`unreadable image "${shown}": ${decodeErrorMessage(e)}`);
  }
  return { bytes, mime, sha256: sha256Hex(bytes), width: size.width, height: size.height };
}

/** By magic bytes, not extension: file names lie more often than headers do. */
export function sniffImageType(bytes: Buffer): ImageMime | undefined {
  if (startsWith(bytes, PNG_MAGIC)) return 'image/png';
  if (startsWith(bytes, JPEG_MAGIC)) return 'image/jpeg';
  return undefined;
}

function startsWith(bytes: Buffer, magic: Buffer): boolean {
  return bytes.length >= magic.length && bytes.subarray(0, magic.length).equals(magic);
}

function decodePng(bytes: Buffer): { width: number; height: number } {
  checkPngHeaderSize(bytes);
  const png = PNG.sync.read(bytes);
  return { width: png.width, height: png.height };
}

/** pngjs has no size limit, so look at IHDR before letting it allocate the pixels. */
function checkPngHeaderSize(bytes: Buffer): void {
  if (bytes.length < 24 || bytes.toString('latin1', 12, 16) !== 'IHDR') return; // pngjs will report it
  const width = bytes.readUInt32BE(16);
  const height = bytes.readUInt32BE(20);
  if (width * height > MAX_PIXELS) throw new Error(`${width}x${height} is larger than ${MAX_PIXELS / 1e6} megapixels`);
}

function decodeJpeg(bytes: Buffer): { width: number; height: number } {
  const img = jpeg.decode(bytes, {
    formatAsRGBA: false,
    maxResolutionInMP: MAX_PIXELS / 1e6,
    maxMemoryUsageInMB: JPEG_MAX_MEMORY_MB,
  });
  return { width: img.width, height: img.height };
}

function decodeErrorMessage(e: unknown): string {
  const message = e instanceof Error ? e.message : String(e);
  // pngjs reports a file cut short with this (misspelt) internal stream message.
  if (/read requests wait/i.test(message)) return 'truncated PNG data';
  return message;
}

/** RGBA pixels of a PNG or JPEG (the trainer's input pipeline). */
export function decodePixels(bytes: Buffer): { width: number; height: number; rgba: Uint8Array } {
  const mime = sniffImageType(bytes);
  if (mime === 'image/png') {
    const png = PNG.sync.read(bytes);
    return { width: png.width, height: png.height, rgba: png.data };
  }
  if (mime === 'image/jpeg') {
    const img = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: true, maxMemoryUsageInMB: JPEG_MAX_MEMORY_MB });
    return { width: img.width, height: img.height, rgba: img.data };
  }
  throw new Error('unsupported image format (only PNG and JPEG)');
}
