/**
 * Light image augmentation for training batches (`--augment shift:2,flip`), seeded:
 *
 *   shift:N  translate each image by a random (dy, dx), each uniform in [−N, N] pixels;
 *            pixels shifted in from outside repeat the edge row/column (MNIST's edges are
 *            background, so this is the usual zero fill there, and it needs no background colour).
 *   flip     mirror each image left–right with probability 1/2 (not for digits or text).
 *
 * The trainer draws from mulberry32(seed, epoch), so a run is reproducible from its seed
 * and a resumed run augments its remaining epochs as an uninterrupted one would. Only the
 * training batches are augmented (never validation, test or evaluation). The targets stay
 * those of the original image: stored teacher outputs are for the unshifted input, which
 * is why only shifts small enough to keep the label are offered.
 */
import { DistilleryError } from '../errors.ts';

export interface AugmentConfig {
  /** Largest translation in pixels (0: none). */
  shift: number;
  /** Random left–right mirroring. */
  flip: boolean;
}

/** Parse `shift:2`, `flip`, `shift:2,flip`; `none` or '' for no augmentation (returns undefined). */
export function parseAugment(text: string): AugmentConfig | undefined {
  const parts = text
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean);
  if (parts.length === 0 || (parts.length === 1 && parts[0] === 'none')) return undefined;
  const cfg: AugmentConfig = { shift: 0, flip: false };
  for (const p of parts) {
    const m = /^shift:(\d+)$/.exec(p);
    if (m) cfg.shift = Number(m[1]);
    else if (p === 'flip') cfg.flip = true;
    else
      throw new DistilleryError(
        `--augment: unknown part ${JSON.stringify(p)} (expected shift:N and/or flip, e.g. shift:2 or shift:2,flip)`,
      );
  }
  if (cfg.shift > 8)
    throw new DistilleryError(`--augment shift:${cfg.shift}: at most 8 pixels (a light augmentation; larger shifts can change the label)`);
  return cfg.shift === 0 && !cfg.flip ? undefined : cfg;
}

/**
 * Augment `n` images of h×w×c (NHWC, float) in `buf`, in place, drawing from `rand`
 * (3 draws per image, whether or not each transform is on, so that turning one on
 * does not change the other's draws).
 */
export function augmentImages(buf: Float32Array, n: number, h: number, w: number, c: number, cfg: AugmentConfig, rand: () => number): void {
  if (buf.length !== n * h * w * c) throw new Error(`augmentImages: buffer holds ${buf.length} values, expected ${n}×${h}×${w}×${c}`);
  const per = h * w * c;
  const src = new Float32Array(per);
  const s = cfg.shift;
  for (let k = 0; k < n; k++) {
    const dy = Math.floor(rand() * (2 * s + 1)) - s;
    const dx = Math.floor(rand() * (2 * s + 1)) - s;
    const flip = rand() < 0.5 && cfg.flip;
    if (dy === 0 && dx === 0 && !flip) continue;
    const img = buf.subarray(k * per, (k + 1) * per);
    src.set(img);
    for (let i = 0; i < h; i++) {
      const si = Math.min(h - 1, Math.max(0, i - dy));
      for (let j = 0; j < w; j++) {
        const jj = flip ? w - 1 - j : j;
        const sj = Math.min(w - 1, Math.max(0, jj - dx));
        const o = (i * w + j) * c;
        const q = (si * w + sj) * c;
        for (let ch = 0; ch < c; ch++) img[o + ch] = src[q + ch];
      }
    }
  }
}
