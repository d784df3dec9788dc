import { tf } from './backend.ts';

/**
 * AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization"):
 *   m ← β1·m + (1−β1)·g,  v ← β2·v + (1−β2)·g²
 *   w ← w − lr·( m̂ / (√v̂ + ε) + λ·w )      with m̂ = m/(1−β1ᵗ), v̂ = v/(1−β2ᵗ)
 * Decay applies to matrices only (rank ≥ 2): biases, norms' gains and
 * position embeddings... are rank 1 and undecayed, as is usual for ViTs.
 * Written here rather than taken from tf.train because tfjs has no AdamW and
 * its optimizers' state cannot be saved for --resume.
 */
export class AdamW {
  step = 0;
  readonly m: Record<string, tf.Variable> = {};
  readonly v: Record<string, tf.Variable> = {};

  constructor(
    private readonly params: Record<string, tf.Variable>,
    private readonly o: { beta1?: number; beta2?: number; eps?: number; weightDecay: number },
  ) {
    for (const [name, p] of Object.entries(params)) {
      this.m[name] = tf.variable(tf.zerosLike(p), false);
      this.v[name] = tf.variable(tf.zerosLike(p), false);
    }
  }

  apply(grads: Record<string, tf.Tensor>, lr: number): void {
    const b1 = this.o.beta1 ?? 0.9;
    const b2 = this.o.beta2 ?? 0.999;
    const eps = this.o.eps ?? 1e-8;
    this.step++;
    const c1 = 1 - b1 ** this.step;
    const c2 = 1 - b2 ** this.step;
    tf.tidy(() => {
      for (const [name, p] of Object.entries(this.params)) {
        const g = grads[name];
        if (!g) continue;
        const m = this.m[name];
        const v = this.v[name];
        m.assign(m.mul(b1).add(g.mul(1 - b1)));
        v.assign(v.mul(b2).add(g.square().mul(1 - b2)));
        let update = m.div(c1).div(v.div(c2).sqrt().add(eps));
        if (p.rank >= 2 && this.o.weightDecay > 0) update = update.add(p.mul(this.o.weightDecay));
        p.assign(p.sub(update.mul(lr)));
      }
    });
  }

  dispose(): void {
    tf.dispose([...Object.values(this.m), ...Object.values(this.v)]);
  }

  /** Moments and step, for checkpoints. */
  state(): Record<string, tf.Tensor> {
    const out: Record<string, tf.Tensor> = { 'adam.step': tf.scalar(this.step, 'int32') };
    for (const name of Object.keys(this.params)) {
      out[`adam.m.${name}`] = this.m[name];
      out[`adam.v.${name}`] = this.v[name];
    }
    return out;
  }

  load(state: Record<string, tf.Tensor>): void {
    this.step = (state['adam.step']?.dataSync()[0] as number | undefined) ?? 0;
    for (const name of Object.keys(this.params)) {
      if (state[`adam.m.${name}`]) this.m[name].assign(state[`adam.m.${name}`]);
      if (state[`adam.v.${name}`]) this.v[name].assign(state[`adam.v.${name}`]);
    }
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
