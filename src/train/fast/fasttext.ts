/**
 * The linear-head fasttext student (models/fasttext.ts) trained in plain TypeScript on
 * Float32Arrays, the way fastText itself trains (Joulin et al. 2017): one example at a
 * time, SGD with a learning rate decaying linearly to 0, and each step writing only the
 * embedding rows of that example's bag. The tfjs path instead updates all buckets × dim
 * rows with AdamW on every batch, which is what made it ~100× slower than fastText.
 *
 *   h = (1/|bag|) Σ_{i ∈ bag} E[i]          E: [buckets, dim]   (embed.w)
 *   z = h·W + b                             W: [dim, C], b: [C] (head.w, head.b)
 *   L = ce·CE(z, y) + kd·T²·KL(softmax(t/T) ‖ softmax(z/T))
 *   ∂L/∂z = ce·(softmax(z) − onehot(y)) + kd·T·(softmax(z/T) − softmax(t/T))
 *
 * with t the teacher's logits: the log of the stored probabilities, as the tfjs trainer
 * feeds kdLoss (losses.ts), including its clamp of log 0 at 1e4 below the row maximum.
 * The same seed gives the same weights, byte for byte (one thread, a fixed order).
 */
import { DistilleryError } from '../../errors.ts';
import { mulberry32, shuffle } from '../../random.ts';
import type { FasttextSpec } from '../models/index.ts';

/** Hashed bags in one flat array (hashed once per dataset): item i's ids are ids[offsets[i] .. offsets[i+1]). */
export interface PackedBags {
  n: number;
  offsets: Int32Array;
  ids: Int32Array;
}

export function packBags(bags: readonly ArrayLike<number>[], buckets: number): PackedBags {
  const offsets = new Int32Array(bags.length + 1);
  bags.forEach((bag, i) => (offsets[i + 1] = offsets[i] + bag.length));
  const ids = new Int32Array(offsets[bags.length]);
  bags.forEach((bag, i) => {
    for (let k = 0; k < bag.length; k++) {
      const id = bag[k];
      if (!Number.isInteger(id) || id < 0 || id >= buckets)
        throw new DistilleryError(`packBags: bag ${i} holds id ${id}, outside [0, ${buckets})`);
      ids[offsets[i] + k] = id;
    }
  });
  return { n: bags.length, offsets, ids };
}

/** What the KD term needs per item, computed once: softmax(t/T) and Σ p log p of it (KL's constant part). */
export interface TemperedTeacher {
  T: number;
  probs: Float32Array;
  plogp: Float64Array;
}

/** LOG_FLOOR of losses.ts: log-probabilities this far below the row maximum count as probability 0. */
const LOG_FLOOR = -1e4;

/** softmax(max(log p / T − max, LOG_FLOOR)) per row of N·C probabilities, as kdLoss computes its teacher side. */
export function temperTeacher(probs: Float32Array, c: number, T: number): TemperedTeacher {
  if (!(T > 0) || !Number.isFinite(T)) throw new DistilleryError(`temperature must be a positive number, got ${T}`);
  const n = probs.length / c;
  const out = new Float32Array(n * c);
  const plogp = new Float64Array(n);
  const l = new Float64Array(c);
  for (let i = 0; i < n; i++) {
    let m = -Infinity;
    for (let k = 0; k < c; k++) {
      l[k] = Math.log(probs[i * c + k]) / T;
      if (l[k] > m) m = l[k];
    }
    if (m === -Infinity) continue; // no target (all zeros): never trained on
    let s = 0;
    for (let k = 0; k < c; k++) {
      l[k] = Math.max(l[k] - m, LOG_FLOOR);
      s += Math.exp(l[k]);
    }
    const logZ = Math.log(s);
    let acc = 0;
    for (let k = 0; k < c; k++) {
      const lp = l[k] - logZ;
      const p = Math.exp(lp);
      out[i * c + k] = p;
      acc += p * lp;
    }
    plogp[i] = acc;
  }
  return { T, probs: out, plogp };
}

export interface Objective {
  ceWeight: number;
  kdWeight: number;
  /** Per item: the hard target (−1: none). */
  hard: Int32Array;
  /** Required when kdWeight > 0. */
  teacher?: TemperedTeacher;
}

/** The loss of one step, with its terms unweighted (as the tfjs trainer logs them). */
export interface StepLoss {
  loss: number;
  ce: number;
  kd: number;
}

/** Below this |∂L/∂z_k| a class's head row is not updated (see sgdStep). */
export const SKIP_GRADIENT = 1e-7;

export class LinearFasttext {
  readonly buckets: number;
  readonly dim: number;
  readonly classes: number;
  // scratch, reused by every step
  private readonly h: Float64Array;
  private readonly z: Float64Array;
  private readonly gz: Float64Array;
  private readonly gh: Float64Array;
  private readonly active: Int32Array;

  constructor(
    spec: Pick<FasttextSpec, 'buckets' | 'dim' | 'numClasses'>,
    /** embed.w [buckets, dim], row-major. */
    readonly embed: Float32Array,
    /** head.w [dim, C], row-major. */
    readonly headW: Float32Array,
    /** head.b [C]. */
    readonly headB: Float32Array,
  ) {
    this.buckets = spec.buckets;
    this.dim = spec.dim;
    this.classes = spec.numClasses;
    if (embed.length !== this.buckets * this.dim || headW.length !== this.dim * this.classes || headB.length !== this.classes) {
      throw new DistilleryError(
        `LinearFasttext: weights do not match the spec (buckets ${this.buckets}, dim ${this.dim}, classes ${this.classes})`,
      );
    }
    this.h = new Float64Array(this.dim);
    this.z = new Float64Array(this.classes);
    this.gz = new Float64Array(this.classes);
    this.gh = new Float64Array(this.dim);
    this.active = new Int32Array(this.classes);
  }

  /**
   * fastText's initialisation: the input matrix uniform in ±1/dim (as buildFasttext's
   * 'embed.w'), the output matrix zero (fastText's, so that the first steps move the head only).
   * `shared`: the weights live in SharedArrayBuffers, for the Hogwild threads (hogwild.ts).
   */
  static init(spec: FasttextSpec, seed: number, o: { shared?: boolean } = {}): LinearFasttext {
    if ((spec.hidden ?? []).length > 0)
      throw new DistilleryError('the fast fasttext trainer takes a linear head only (no --hidden); the tfjs trainer takes an MLP head');
    const alloc = (n: number) => (o.shared ? new Float32Array(new SharedArrayBuffer(4 * n)) : new Float32Array(n));
    const embed = alloc(spec.buckets * spec.dim);
    uniformInit(embed, 1 / spec.dim, seed);
    return new LinearFasttext(spec, embed, alloc(spec.dim * spec.numClasses), alloc(spec.numClasses));
  }

  /** A deep copy (the best epoch's weights). */
  clone(): LinearFasttext {
    return new LinearFasttext(
      { buckets: this.buckets, dim: this.dim, numClasses: this.classes },
      this.embed.slice(),
      this.headW.slice(),
      this.headB.slice(),
    );
  }

  /** The weights under the tfjs student's names and shapes, in its order (embed.w, head.w, head.b). */
  named(): Record<string, { values: Float32Array; shape: number[] }> {
    return {
      'embed.w': { values: this.embed, shape: [this.buckets, this.dim] },
      'head.w': { values: this.headW, shape: [this.dim, this.classes] },
      'head.b': { values: this.headB, shape: [this.classes] },
    };
  }

  /** h and z of item i into the scratch buffers; returns the bag's length. */
  private forward(bags: PackedBags, i: number): number {
    const { dim, classes: c, embed, headW, headB, h, z } = this;
    const start = bags.offsets[i];
    const len = bags.offsets[i + 1] - start;
    h.fill(0);
    for (let j = start; j < start + len; j++) {
      const row = bags.ids[j] * dim;
      for (let k = 0; k < dim; k++) h[k] += embed[row + k];
    }
    // An empty text is a zero row, as embeddingBag gives it.
    if (len > 0) for (let k = 0; k < dim; k++) h[k] /= len;
    // Per class, a dot product kept in registers (4 partial sums): ~1.5× faster in V8 than
    // accumulating the rows of W into z. The head is small enough to stay in L1 when strided.
    const d4 = dim & ~3;
    for (let k = 0; k < c; k++) {
      let a0 = 0;
      let a1 = 0;
      let a2 = 0;
      let a3 = 0;
      let d = 0;
      for (; d < d4; d += 4) {
        a0 += h[d] * headW[d * c + k];
        a1 += h[d + 1] * headW[(d + 1) * c + k];
        a2 += h[d + 2] * headW[(d + 2) * c + k];
        a3 += h[d + 3] * headW[(d + 3) * c + k];
      }
      for (; d < dim; d++) a0 += h[d] * headW[d * c + k];
      z[k] = headB[k] + (a0 + a1 + a2 + a3);
    }
    return len;
  }

  /** Class probabilities (softmax of the logits) for items `idx`, N·C. */
  predict(bags: PackedBags, idx: ArrayLike<number>): Float32Array {
    const c = this.classes;
    const out = new Float32Array(idx.length * c);
    for (let n = 0; n < idx.length; n++) {
      this.forward(bags, idx[n]);
      softmaxInto(this.z, 1, this.gz);
      for (let k = 0; k < c; k++) out[n * c + k] = this.gz[k];
    }
    return out;
  }

  /** ∂L/∂z of item i into gz, after forward; returns the loss. */
  private logitGradient(i: number, o: Objective): StepLoss {
    const { classes: c, z, gz } = this;
    gz.fill(0);
    let ce = 0;
    let kd = 0;
    if (o.ceWeight > 0) {
      const y = o.hard[i];
      const logZ = logSumExp(z, 1);
      ce = logZ - z[y];
      for (let k = 0; k < c; k++) gz[k] += o.ceWeight * (Math.exp(z[k] - logZ) - (k === y ? 1 : 0));
    }
    if (o.kdWeight > 0) {
      const t = o.teacher!;
      const T = t.T;
      const logZ = logSumExp(z, T);
      // KL(p ‖ q) = Σ p log p − Σ p log q, log q_k = z_k/T − log Z
      let cross = 0;
      for (let k = 0; k < c; k++) {
        const p = t.probs[i * c + k];
        const logQ = z[k] / T - logZ;
        cross += p * logQ;
        gz[k] += o.kdWeight * T * (Math.exp(logQ) - p);
      }
      kd = T * T * (t.plogp[i] - cross);
    }
    return { loss: o.ceWeight * ce + o.kdWeight * kd, ce, kd };
  }

  /**
   * One SGD step on item i: the head with the gradient taken before its update (as
   * fastText), then the rows of the bag, each occurrence getting ∂L/∂h / |bag|.
   *
   * Classes with |∂L/∂z_k| < SKIP_GRADIENT are left out of the head's update: their row of
   * W would move by lr·h·∂L/∂z_k, mostly below what float32 resolves, and their share of
   * ∂L/∂h is as small. Once the softmax is confident that is most classes (Banking77, 77
   * classes: about half from the third epoch on), and the head is most of the work.
   */
  sgdStep(bags: PackedBags, i: number, o: Objective, lr: number): StepLoss {
    const len = this.forward(bags, i);
    const loss = this.logitGradient(i, o);
    const { dim, classes: c, embed, headW, headB, h, gz, gh, active } = this;
    let na = 0;
    for (let k = 0; k < c; k++) if (Math.abs(gz[k]) >= SKIP_GRADIENT) active[na++] = k;
    if (na === c) {
      for (let d = 0; d < dim; d++) {
        const row = d * c;
        let acc = 0;
        const step = lr * h[d];
        for (let k = 0; k < c; k++) {
          acc += headW[row + k] * gz[k];
          headW[row + k] -= step * gz[k];
        }
        gh[d] = acc;
      }
    } else {
      for (let d = 0; d < dim; d++) {
        const row = d * c;
        let acc = 0;
        const step = lr * h[d];
        for (let a = 0; a < na; a++) {
          const k = active[a];
          acc += headW[row + k] * gz[k];
          headW[row + k] -= step * gz[k];
        }
        gh[d] = acc;
      }
    }
    for (let a = 0; a < na; a++) headB[active[a]] -= lr * gz[active[a]];
    if (len > 0) {
      const scale = lr / len;
      const start = bags.offsets[i];
      for (let j = start; j < start + len; j++) {
        const row = bags.ids[j] * dim;
        for (let d = 0; d < dim; d++) embed[row + d] -= scale * gh[d];
      }
    }
    return loss;
  }

  /** The loss of item i with the current weights (no update): for checks. */
  loss(bags: PackedBags, i: number, o: Objective): StepLoss {
    this.forward(bags, i);
    return this.logitGradient(i, o);
  }
}

/**
 * x[j] uniform in ±limit, a hash of (seed, j) (murmur3's finaliser): the same values for a seed,
 * ~10× faster than drawing 2^24 numbers from a closure (it was a tenth of an SST-2 run).
 */
function uniformInit(x: Float32Array, limit: number, seed: number): void {
  const key = Math.imul(seed >>> 0, 0x9e3779b1) ^ 0xe3bed;
  for (let j = 0; j < x.length; j++) {
    let h = (key + Math.imul(j, 0x9e3779b9)) | 0;
    h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
    h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
    h ^= h >>> 16;
    x[j] = ((h >>> 0) / 2147483648 - 1) * limit;
  }
}

/** log Σ exp(z/T), stably. */
function logSumExp(z: Float64Array, T: number): number {
  let m = -Infinity;
  for (let k = 0; k < z.length; k++) if (z[k] / T > m) m = z[k] / T;
  let s = 0;
  for (let k = 0; k < z.length; k++) s += Math.exp(z[k] / T - m);
  return m + Math.log(s);
}

function softmaxInto(z: Float64Array, T: number, out: Float64Array): void {
  const logZ = logSumExp(z, T);
  for (let k = 0; k < z.length; k++) out[k] = Math.exp(z[k] / T - logZ);
}

/** Options of the training loop itself (the schedule and what to train on). */
export interface FitOptions {
  epochs: number;
  /** Initial rate, decayed linearly to 0 over all epochs' steps (fastText's schedule). */
  lr: number;
  seed: number;
  /** Called after each epoch with its mean loss terms; return true to stop (early stopping). */
  onEpoch?: (epoch: number, mean: StepLoss, lr: number) => boolean | void;
  /** Progress: after an epoch's first example (train.ts starts its bar there), then every 256. */
  onStep?: (done: number, total: number) => void;
}

/** fastText's order of work: `epochs` passes over `train` (reshuffled per epoch), one example per step. */
export function fit(model: LinearFasttext, bags: PackedBags, train: ArrayLike<number>, o: Objective, f: FitOptions): void {
  if (o.kdWeight > 0 && !o.teacher) throw new DistilleryError('fit: kdWeight > 0 needs the tempered teacher');
  const total = f.epochs * train.length;
  let step = 0;
  for (let epoch = 0; epoch < f.epochs; epoch++) {
    // The tfjs trainer's shuffle, so the same seed and epoch give the same order.
    const order = Int32Array.from(shuffle(train, mulberry32(f.seed * 1000 + epoch)));
    const sum = { loss: 0, ce: 0, kd: 0 };
    let lr = f.lr;
    for (let s = 0; s < order.length; s++) {
      lr = f.lr * (1 - step / total);
      const l = model.sgdStep(bags, order[s], o, lr);
      sum.loss += l.loss;
      sum.ce += l.ce;
      sum.kd += l.kd;
      step++;
      if (f.onStep && (s === 0 || (s + 1) % 256 === 0 || s + 1 === order.length)) f.onStep(s + 1, order.length);
    }
    const n = Math.max(1, order.length);
    if (f.onEpoch?.(epoch, { loss: sum.loss / n, ce: sum.ce / n, kd: sum.kd / n }, lr)) break;
  }
}
