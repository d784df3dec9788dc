import { tf } from './backend.ts';

/**
 * AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization"):
 *   m ← β1·m + (1−β1)·g,  v ← β2·v + (1−β2)·g²
 *   w ← w − lr·( m̂ / (√v̂ + ε) + λ·w )      with m̂ = m/(1−β1ᵗ), v̂ = v/(1−β2ᵗ)
 * Decay applies to matrices only (rank ≥ 2): biases, norms' gains and
 * position embeddings... are rank 1 and undecayed, as is usual for ViTs.
 * Written here rather than taken from tf.train because tfjs has no AdamW and
 * its optimizers' state cannot be saved for --resume.
 *
 * Why flat: the update is a dozen elementwise kernels, and per variable that
 * was ~16 launches each (~900 for the reference ViT's 55 weights, about a
 * seventh of its native step). So the moments are kept as one flat vector over
 * every weight in a fixed order, the gradients and weights are concatenated
 * into the same layout, and the update runs once on the whole vector. The bias
 * corrections are folded into two scalars, the same quantity up to rounding:
 *   m̂ / (√v̂ + ε) = (√(1−β2ᵗ)/(1−β1ᵗ)) · m / (√v + ε·√(1−β2ᵗ)).
 */
export class AdamW {
  step = 0;
  private readonly names: string[];
  private readonly sizes: number[];
  /** Flat moments over every weight of `names`, in that order. */
  private readonly m: tf.Variable;
  private readonly v: tf.Variable;
  /** λ where a weight is decayed (rank ≥ 2), 0 elsewhere; undefined when nothing is. */
  private readonly decay?: tf.Tensor1D;
  /** The per-weight moments last handed out by state(), freed by the next call or dispose(). */
  private exported: tf.Tensor[] = [];

  constructor(
    private readonly params: Record<string, tf.Variable>,
    private readonly o: { beta1?: number; beta2?: number; eps?: number; weightDecay: number },
  ) {
    this.names = Object.keys(params);
    this.sizes = this.names.map((n) => params[n].size);
    const total = this.sizes.reduce((a, b) => a + b, 0);
    this.m = tf.variable(tf.zeros([total]), false);
    this.v = tf.variable(tf.zeros([total]), false);
    const decayed = this.names.map((n) => (params[n].rank >= 2 ? o.weightDecay : 0));
    if (decayed.some((d) => d > 0)) {
      const mask = new Float32Array(total);
      let at = 0;
      this.sizes.forEach((size, i) => (mask.fill(decayed[i], at, at + size), (at += size)));
      this.decay = tf.tensor1d(mask);
    }
  }

  apply(grads: Record<string, tf.Tensor>, lr: number): void {
    const b1 = this.o.beta1 ?? 0.9;
    const b2 = this.o.beta2 ?? 0.999;
    const eps = this.o.eps ?? 1e-8;
    this.step++;
    const c1 = 1 - b1 ** this.step;
    const c2 = 1 - b2 ** this.step;
    if (this.names.length === 0) return;
    tf.tidy(() => {
      const flat = (ts: tf.Tensor[]) => tf.concat(ts.map((t) => (t.rank === 1 ? t : tf.reshape(t, [-1])))); // a Reshape is a kernel on native
      const present = this.names.map((n) => grads[n] !== undefined);
      const g = flat(this.names.map((n, i) => (present[i] ? grads[n] : tf.zeros([this.sizes[i]]))));
      const p = flat(this.names.map((n) => this.params[n]));
      let m = tf.add(tf.mul(this.m, b1), tf.mul(g, 1 - b1));
      let v = tf.add(tf.mul(this.v, b2), tf.mul(tf.square(g), 1 - b2));
      let next = tf.sub(p, tf.mul(tf.div(m, tf.add(tf.sqrt(v), eps * Math.sqrt(c2))), (lr * Math.sqrt(c2)) / c1));
      if (this.decay) next = tf.sub(next, tf.mul(tf.mul(p, this.decay), lr));
      if (present.includes(false)) {
        // A weight without a gradient is left alone, moments included.
        const mask = new Uint8Array(this.m.size);
        let at = 0;
        this.sizes.forEach((size, i) => (mask.fill(present[i] ? 1 : 0, at, at + size), (at += size)));
        const keep = tf.tensor1d(mask, 'bool');
        [m, v, next] = [tf.where(keep, m, this.m), tf.where(keep, v, this.v), tf.where(keep, next, p)];
      }
      this.m.assign(m);
      this.v.assign(v);
      tf.split(next, this.sizes).forEach((t, i) => {
        const w = this.params[this.names[i]];
        w.assign(w.rank === 1 ? t : tf.reshape(t, w.shape));
      });
    });
  }

  dispose(): void {
    tf.dispose([this.m, this.v, ...this.exported, ...(this.decay ? [this.decay] : [])]);
    this.exported = [];
  }

  /**
   * Moments and step, for checkpoints: 'adam.m.NAME' and 'adam.v.NAME' of each
   * weight's shape. The moments stay the optimizer's (valid until the next
   * state() or dispose()); the caller disposes 'adam.step'.
   */
  state(): Record<string, tf.Tensor> {
    tf.dispose(this.exported);
    const out: Record<string, tf.Tensor> = {};
    for (const [key, flat] of [
      ['adam.m', this.m],
      ['adam.v', this.v],
    ] as const) {
      if (this.names.length === 0) continue;
      tf.split(flat, this.sizes).forEach((t, i) => {
        const name = this.names[i];
        out[`${key}.${name}`] = tf.reshape(t, this.params[name].shape);
        if (out[`${key}.${name}`] !== t) t.dispose();
      });
    }
    this.exported = Object.values(out);
    out['adam.step'] = tf.scalar(this.step, 'int32');
    return out;
  }

  load(state: Record<string, tf.Tensor>): void {
    this.step = (state['adam.step']?.dataSync()[0] as number | undefined) ?? 0;
    if (this.names.length === 0) return;
    tf.tidy(() => {
      for (const [key, flat] of [
        ['adam.m', this.m],
        ['adam.v', this.v],
      ] as const) {
        const parts = tf.split(flat, this.sizes).map((t, i) => {
          const saved = state[`${key}.${this.names[i]}`];
          if (saved && saved.size !== t.size) {
            const shape = this.params[this.names[i]].shape;
            throw new Error(`AdamW.load: ${key}.${this.names[i]} is [${saved.shape}], the weight is [${shape}]`);
          }
          return saved ?? t;
        });
        flat.assign(tf.concat(parts.map((t) => tf.reshape(t, [-1]))));
      }
    });
  }
}

/** Linear warm-up over `warmup` steps, then cosine decay to `minRatio`·lr at `total` steps. */
export function cosineLr(step: number, o: { lr: number; warmup: number; total: number; minRatio?: number }): number {
  if (step < o.warmup) return (o.lr * (step + 1)) / o.warmup;
  const progress = Math.min(1, (step - o.warmup) / Math.max(1, o.total - o.warmup));
  const min = o.lr * (o.minRatio ?? 0);
  return min + 0.5 * (o.lr - min) * (1 + Math.cos(Math.PI * progress));
}

/** Scale gradients so that their global L2 norm is at most `maxNorm`; returns the norm before clipping. */
export function clipByGlobalNorm(grads: Record<string, tf.Tensor>, maxNorm: number): { grads: Record<string, tf.Tensor>; norm: number } {
  const norm = tf.tidy(() => tf.sqrt(tf.addN(Object.values(grads).map((g) => g.square().sum()))).dataSync()[0]);
  if (!(maxNorm > 0) || norm <= maxNorm) return { grads, norm };
  const scale = maxNorm / (norm + 1e-6);
  const clipped: Record<string, tf.Tensor> = {};
  for (const [k, g] of Object.entries(grads)) {
    clipped[k] = g.mul(scale);
    g.dispose();
  }
  return { grads: clipped, norm };
}
