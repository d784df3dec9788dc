import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import { mulberry32 } from '../random.ts';

/**
 * A tiny image sample the project draws itself: white circles, squares and
 * triangles on black, at seeded random positions and sizes. Enough to try an
 * image task against a vision teacher without any download.
 */
export const SHAPES = ['circle', 'square', 'triangle'] as const;
export type Shape = (typeof SHAPES)[number];

export function drawShape(shape: Shape, size: number, rand: () => number): Buffer {
  const png = new PNG({ width: size, height: size });
  const r = size * (0.22 + 0.12 * rand());
  const cx = size / 2 + (rand() - 0.5) * (size - 2 * r) * 0.8;
  const cy = size / 2 + (rand() - 0.5) * (size - 2 * r) * 0.8;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const inside = contains(shape, x + 0.5 - cx, y + 0.5 - cy, r);
      const i = (y * size + x) * 4;
      png.data[i] = png.data[i + 1] = png.data[i + 2] = inside ? 255 : 0;
      png.data[i + 3] = 255;
    }
  }
  return PNG.sync.write(png);
}

function contains(shape: Shape, dx: number, dy: number, r: number): boolean {
  if (shape === 'circle') return dx * dx + dy * dy <= r * r;
  if (shape === 'square') return Math.abs(dx) <= r * 0.85 && Math.abs(dy) <= r * 0.85;
  // Upward triangle with its base at dy = r/2 and apex at dy = -r.
  if (dy < -r || dy > r / 2) return false;
  const halfWidth = ((dy + r) / (1.5 * r)) * r * 0.95;
  return Math.abs(dx) <= halfWidth;
}


/** Write DIR/<shape>/<shape>-NN.png and DIR/shapes.jsonl (image path relative to DIR, gold label). */
export function writeShapes(dir: string, perClass: number, size = 32, seed = 7): number {
  const rand = mulberry32(seed);
  const rows: string[] = [];
  for (const shape of SHAPES) {
    mkdirSync(join(dir, shape), { recursive: true });
    for (let i = 0; i < perClass; i++) {
      const name = `${shape}-${String(i).padStart(2, '0')}.png`;
      writeFileSync(join(dir, shape, name), drawShape(shape, size, rand));
      rows.push(JSON.stringify({ id: `${shape}-${i}`, image: `${shape}/${name}`, label: shape }));
    }
  }
  writeFileSync(join(dir, 'shapes.jsonl'), `${rows.join('\n')}\n`);
  return rows.length;
}
