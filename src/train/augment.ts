/**
 * Image augmentation for training batches (`--augment shift:2,flip`, `--augment crop:4,flip,erase:0.25`), seeded:
 *
 *   shift:N  translate each image by a random (dy, dx), each uniform in [−N, N] pixels;
 *            pixels shifted in from outside repeat the edge row/column (MNIST's edges are
 *            background, so this is the usual zero fill there, and it needs no background colour).
 *   flip     mirror each image left–right with probability 1/2 (not for digits or text).
 *   crop:P   torchvision's RandomCrop(size, padding=P): pad P pixels of black on every side
 *            (fill 0 before normalisation, as torchvision's default; the caller passes black's
 *            normalised value), then crop back to H×W at an offset uniform in [0, 2P] on each axis.
 *   erase:p  Random Erasing (Zhong et al. 2017; timm's RandomErasing as TinyViT uses it): with probability p,
 *            one rectangle of area uniform in [2%, 1/3] of the image and aspect ratio log-uniform in
 *            [0.3, 1/0.3], placed uniformly where it fits (10 attempts, then none), is filled with 0 (the
 *            dataset mean after normalisation: timm's 'const' mode). `erase:p:pixel` fills it with
 *            per-pixel standard normal noise drawn from the same seeded stream (timm's 'pixel' mode).
 *
 * Order: shift, crop and flip (one geometric mapping), then erasing (on normalised pixels, as timm).
 *
 * Two ways to draw. The ordinary trainer draws from one stream per epoch, mulberry32(seed, epoch), so a
 * run is reproducible from its seed and a resumed run augments its remaining epochs as an uninterrupted
 * one would. Augmentation replay (TinyViT, Wu et al. 2022) gives each item and epoch its own seed
 * (`augmentSeed`): the seed alone decides that view, whatever batch the item lands in, so a teacher's
 * logits stored with the seed are the logits of exactly the view the student is shown later.
 *
 * Only the training batches are augmented (never validation, test or evaluation). Without replay the
 * targets stay those of the original image: stored teacher outputs are for the unaugmented input, which
 * is why only light transforms are offered there; with replay they are the teacher's on the view itself.
 */
import { DistilleryError } from '../errors.ts';
import { gaussian, mulberry32 } from '../random.ts';

export interface AugmentConfig {
  /** Largest translation in pixels (0: none). */
  shift: number;
  /** Random left–right mirroring. */
  flip: boolean;
  /** RandomCrop's padding in pixels (absent: no crop). */
  crop?: number;
  /** Random erasing: its probability per image, and the fill (0: the mean; pixel: standard normal noise). */
  erase?: { p: number; fill: 'const' | 'pixel' };
}

/**
 * Where a batch's draws come from: one stream for the whole batch (the ordinary trainer), or each item's
 * own seed (replay; `seedOf` takes the dataset index of the item).
 */
export type AugmentDraw = { config: AugmentConfig; rand: () => number } | { config: AugmentConfig; seedOf: (item: number) => number };

/** Random Erasing's ranges (Zhong et al.; timm's defaults). */
const ERASE_AREA: [number, number] = [0.02, 1 / 3];
const ERASE_LOG_ASPECT: [number, number] = [Math.log(0.3), Math.log(1 / 0.3)];
const ERASE_ATTEMPTS = 10;
const MAX_SHIFT = 8;
const MAX_CROP = 16;

/**
 * Parse `shift:2`, `flip`, `crop:4`, `erase:0.25`, `erase:0.25:pixel`, comma-separated;
 * `none` or '' for no augmentation (returns undefined).
 */
export function parseAugment(text: string): AugmentConfig | undefined {
  const parts = text
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean);
  if (parts.length === 0 || (parts.length === 1 && parts[0] === 'none')) return undefined;
  const cfg: AugmentConfig = { shift: 0, flip: false };
  for (const p of parts) {
    const shift = /^shift:(\d+)$/.exec(p);
    const crop = /^crop:(\d+)$/.exec(p);
    const erase = /^erase:(\d*\.?\d+)(?::(const|pixel))?$/.exec(p);
    if (shift) cfg.shift = Number(shift[1]);
    else if (p === 'flip') cfg.flip = true;
    else if (crop) {
      if (Number(crop[1]) > 0) cfg.crop = Number(crop[1]);
    } else if (erase) {
      const prob = Number(erase[1]);
      if (!(prob <= 1)) throw new DistilleryError(`--augment ${p}: the erasing probability must be in [0, 1]`);
      if (prob > 0) cfg.erase = { p: prob, fill: (erase[2] as 'const' | 'pixel' | undefined) ?? 'const' };
    } else
      throw new DistilleryError(
        `--augment: unknown part ${JSON.stringify(p)} (expected shift:N, flip, crop:P, erase:p or erase:p:pixel, e.g. shift:2,flip or crop:4,flip,erase:0.25)`,
      );
  }
  if (cfg.shift > MAX_SHIFT)
    throw new DistilleryError(
      `--augment shift:${cfg.shift}: at most ${MAX_SHIFT} pixels (a light augmentation; larger shifts can change the label)`,
    );
  if ((cfg.crop ?? 0) > MAX_CROP) throw new DistilleryError(`--augment crop:${cfg.crop}: at most ${MAX_CROP} pixels of padding`);
  return cfg.shift === 0 && !cfg.flip && cfg.crop === undefined && cfg.erase === undefined ? undefined : cfg;
}

/** The spec text of a config, canonical (same config, same text): what a replay run records. */
export function formatAugment(cfg: AugmentConfig | undefined): string {
  if (!cfg) return 'none';
  const parts: string[] = [];
  if (cfg.shift) parts.push(`shift:${cfg.shift}`);
  if (cfg.crop) parts.push(`crop:${cfg.crop}`);
  if (cfg.flip) parts.push('flip');
  if (cfg.erase) parts.push(`erase:${cfg.erase.p}${cfg.erase.fill === 'pixel' ? ':pixel' : ''}`);
  return parts.join(',');
}

/**
 * The augmentation seed of an item in an epoch, from a base seed: a 32-bit mix (murmur3's finaliser over
 * the three inputs), kept in [0, 2^31) so that it is a non-negative int32 like TinyViT's stored seeds.
 */
export function augmentSeed(base: number, item: number, epoch: number): number {
  let h = Math.imul(base ^ 0x9e3779b9, 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (item >>> 0) ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  h = Math.imul(h ^ Math.imul(epoch + 1, 0x27d4eb2f) ^ (h >>> 16), 0x85ebca6b) >>> 0;
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35) >>> 0;
  h ^= h >>> 16;
  return h & 0x7fffffff;
}

/**
 * Augment one h×w×c image in place, drawing from `rand`. The first three draws are always (dy, dx, flip),
 * whether or not each transform is on, so that turning one on does not change the other's draws (and
 * shift/flip configs draw exactly as before crop and erase existed); crop and erase draw after them.
 * `black`: the normalised value of a black pixel (crop's padding).
 */
export function augmentImage(
  img: Float32Array,
  h: number,
  w: number,
  c: number,
  cfg: AugmentConfig,
  rand: () => number,
  black = 0,
  scratch = new Float32Array(h * w * c),
): void {
  const s = cfg.shift;
  const dy = Math.floor(rand() * (2 * s + 1)) - s;
  const dx = Math.floor(rand() * (2 * s + 1)) - s;
  const flip = rand() < 0.5 && cfg.flip;
  // RandomCrop at offset (oy, ox) of the padded image is a shift by (P − oy, P − ox) with a constant fill.
  const p = cfg.crop ?? 0;
  const cy = p ? p - Math.floor(rand() * (2 * p + 1)) : 0;
  const cx = p ? p - Math.floor(rand() * (2 * p + 1)) : 0;
  if (dy !== 0 || dx !== 0 || flip || cy !== 0 || cx !== 0) {
    scratch.set(img);
    for (let i = 0; i < h; i++) {
      // Output row i shows padded row i − cy of the shifted image, which is its row clamp(i − cy − dy).
      const pi = i - cy;
      const inside = pi >= 0 && pi < h;
      const si = Math.min(h - 1, Math.max(0, pi - dy));
      for (let j = 0; j < w; j++) {
        const o = (i * w + j) * c;
        const jj = flip ? w - 1 - j : j;
        const pj = jj - cx;
        if (!inside || pj < 0 || pj >= w) {
          for (let ch = 0; ch < c; ch++) img[o + ch] = black;
          continue;
        }
        const q = (si * w + Math.min(w - 1, Math.max(0, pj - dx))) * c;
        for (let ch = 0; ch < c; ch++) img[o + ch] = scratch[q + ch];
      }
    }
  }
  if (cfg.erase) erase(img, h, w, c, cfg.erase, rand);
}

/** timm's RandomErasing._erase with count 1, at the image's own size. */
function erase(img: Float32Array, h: number, w: number, c: number, e: NonNullable<AugmentConfig['erase']>, rand: () => number): void {
  if (rand() >= e.p) return;
  const area = h * w;
  for (let attempt = 0; attempt < ERASE_ATTEMPTS; attempt++) {
    const target = area * (ERASE_AREA[0] + rand() * (ERASE_AREA[1] - ERASE_AREA[0]));
    const aspect = Math.exp(ERASE_LOG_ASPECT[0] + rand() * (ERASE_LOG_ASPECT[1] - ERASE_LOG_ASPECT[0]));
    const eh = Math.round(Math.sqrt(target * aspect));
    const ew = Math.round(Math.sqrt(target / aspect));
    if (eh < 1 || ew < 1 || eh >= h || ew >= w) continue;
    const top = Math.floor(rand() * (h - eh + 1));
    const left = Math.floor(rand() * (w - ew + 1));
    for (let i = top; i < top + eh; i++)
      for (let j = left; j < left + ew; j++)
        for (let ch = 0; ch < c; ch++) img[(i * w + j) * c + ch] = e.fill === 'pixel' ? gaussian(rand) : 0;
    return;
  }
}

/**
 * Augment `n` images of h×w×c (NHWC, float) in `buf`, in place, drawing from one stream `rand`
 * (the ordinary trainer's: an image's view depends on its place in the batch order).
 */
export function augmentImages(
  buf: Float32Array,
  n: number,
  h: number,
  w: number,
  c: number,
  cfg: AugmentConfig,
  rand: () => number,
  black = 0,
): void {
  const per = checkBuffer(buf, n, h, w, c);
  const scratch = new Float32Array(per);
  for (let k = 0; k < n; k++) augmentImage(buf.subarray(k * per, (k + 1) * per), h, w, c, cfg, rand, black, scratch);
}

/** Augment image k of `buf` from its own seed `seeds[k]` alone (augmentation replay): bit-exact for a seed. */
export function augmentImagesSeeded(
  buf: Float32Array,
  n: number,
  h: number,
  w: number,
  c: number,
  cfg: AugmentConfig,
  seeds: ArrayLike<number>,
  black = 0,
): void {
  const per = checkBuffer(buf, n, h, w, c);
  if (seeds.length !== n) throw new Error(`augmentImagesSeeded: ${seeds.length} seeds for ${n} images`);
  const scratch = new Float32Array(per);
  for (let k = 0; k < n; k++) augmentImage(buf.subarray(k * per, (k + 1) * per), h, w, c, cfg, mulberry32(seeds[k]), black, scratch);
}

function checkBuffer(buf: Float32Array, n: number, h: number, w: number, c: number): number {
  if (buf.length !== n * h * w * c) throw new Error(`augmentImages: buffer holds ${buf.length} values, expected ${n}×${h}×${w}×${c}`);
  return h * w * c;
}
