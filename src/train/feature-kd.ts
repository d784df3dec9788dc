/**
 * Feature-level distillation from a local teacher model (a ViT trained by this project):
 * the teacher runs frozen on the same batch as the student, and named terms are added to
 * the trainer's loss dict, each with its own weight (0: off):
 *
 *   hidden    MSE(H_s W_h, H_t) at the mapped blocks (MiniViT / TinyBERT). W_h (student width →
 *             teacher width) is learned, one per student block, named `proj.hidden.<s>.w`; it is
 *             only there when the widths differ. It is trained with the student but is NOT part of
 *             the saved student model (model.json / weights.bin hold the student only); the
 *             checkpoint keeps it (names starting `proj.`) so that --resume continues it.
 *   attn      MiniViT's attention-relation loss (softmax(M Mᵀ/√d) for M ∈ {Q, K, V}, KL to the
 *             teacher's) at the same mapped blocks. Different head counts are regrouped into
 *             gcd(h_s, h_t) relation heads (MiniLMv2).
 *   manifold  Hao et al.'s manifold loss (intra- + inter-image patch relations) on the last block's
 *             L2-normalised patch features.
 *
 * The layer mapping `s:t` pairs student block s with teacher block t (0-based); default: last
 * to last. hidden and attn compare whole token sequences, so the student's and teacher's token
 * counts (image size, patch size, class/distillation tokens) must match; manifold compares
 * patches only, so only the patch counts must match.
 */
import { DistilleryError } from '../errors.ts';
import { tf } from './backend.ts';
import { loadWeights } from './io.ts';
import { attentionRelationLoss, hiddenMse, manifoldLoss, type LossTerms } from './losses.ts';
import { dense } from './ops.ts';
import { studentFromWeights, vitTokenCounts, type ForwardOut, type Student, type StudentInput, type StudentSpec, type VitSpec } from './models/index.ts';
import { lecun, seededParams } from './models/params.ts';

export interface FeatureKdConfig {
  /** Folder of the teacher model (model.json + weights.bin, as saved by the trainer). */
  teacherModel: string;
  hiddenWeight: number;
  attnWeight: number;
  manifoldWeight: number;
  /** [student block, teacher block] pairs for hidden and attn; default: last to last. */
  layers?: Array<[number, number]>;
}

/** Prefix of the projection weights: kept in checkpoints, never in the saved student. */
export const PROJ_PREFIX = 'proj.';

/** The teacher's features for one batch (the caller disposes them with disposeTeacherFeatures). */
export interface TeacherFeatures {
  hidden: tf.Tensor[];
  qkv: { q: tf.Tensor4D; k: tf.Tensor4D; v: tf.Tensor4D }[];
  patches?: tf.Tensor3D;
}

/** Parse `--hidden-layers 3:11,1:5`. */
export function parseLayerMap(text: string): Array<[number, number]> {
  const pairs = text.split(',').filter(Boolean).map((p) => p.trim().split(':'));
  if (pairs.length === 0 || pairs.some((p) => p.length !== 2 || p.some((n) => !/^\d+$/.test(n)))) {
    throw new DistilleryError(`--hidden-layers: expected student:teacher block pairs such as 3:11,1:5, got ${JSON.stringify(text)}`);
  }
  return pairs.map(([s, t]) => [Number(s), Number(t)]);
}

export class FeatureKd {
  /** Trainable projections (train them with the student; do not save them with it). */
  readonly weights: Record<string, tf.Variable> = {};
  readonly layers: Array<[number, number]>;
  private readonly proj = new Map<number, tf.Variable>();

  constructor(
    readonly teacher: Student,
    studentSpec: StudentSpec,
    readonly config: FeatureKdConfig,
    seed: number,
  ) {
    const c = config;
    const what = (['hidden', 'attn', 'manifold'] as const).filter((k) => c[`${k}Weight`] > 0);
    if (what.length === 0) throw new DistilleryError('--teacher-model: set --hidden-weight, --attn-weight or --manifold-weight above 0 (all are 0, the teacher would not be used)');
    const flags = what.map((k) => `--${k}-weight`).join(', ');
    if (studentSpec.kind !== 'vit' || teacher.spec.kind !== 'vit') {
      throw new DistilleryError(`${flags} need a ViT student and a ViT teacher (student: ${studentSpec.kind}, teacher in ${c.teacherModel}: ${teacher.spec.kind})`);
    }
    const s: VitSpec = studentSpec;
    const t: VitSpec = teacher.spec;
    if (s.inputShape.join('x') !== t.inputShape.join('x')) {
      throw new DistilleryError(`--teacher-model ${c.teacherModel}: the teacher takes ${t.inputShape.join('×')} inputs, the student ${s.inputShape.join('×')}`);
    }
    const ns = vitTokenCounts(s);
    const nt = vitTokenCounts(t);
    if (c.hiddenWeight > 0 || c.attnWeight > 0) {
      if (ns.total !== nt.total) {
        throw new DistilleryError(
          `--hidden-weight / --attn-weight: token counts differ, student ${ns.total} (patch ${s.patchSize}, ${ns.prefix} prefix) vs teacher ${nt.total} (patch ${t.patchSize}, ${nt.prefix} prefix); use the teacher's patch size and tokens`,
        );
      }
    }
    if (c.manifoldWeight > 0 && ns.patches !== nt.patches) {
      throw new DistilleryError(`--manifold-weight: patch counts differ, student ${ns.patches} (patch ${s.patchSize}) vs teacher ${nt.patches} (patch ${t.patchSize}); use the teacher's patch size`);
    }
    this.layers = c.layers ?? [[s.depth - 1, t.depth - 1]];
    for (const [ls, lt] of this.layers) {
      if (ls >= s.depth || lt >= t.depth) {
        throw new DistilleryError(`--hidden-layers ${ls}:${lt}: the student has blocks 0..${s.depth - 1}, the teacher 0..${t.depth - 1}`);
      }
    }
    if (c.hiddenWeight > 0 && s.width !== t.width) {
      const param = seededParams(seed, this.weights);
      for (const [ls] of this.layers) {
        if (!this.proj.has(ls)) this.proj.set(ls, param(`${PROJ_PREFIX}hidden.${ls}.w`, [s.width, t.width], lecun(s.width)));
      }
    }
    this.relationHeads = s.heads === t.heads ? undefined : gcd(s.heads, t.heads);
  }

  private readonly relationHeads: number | undefined;

  /** Load the teacher from its folder and check it against the student. */
  static async load(config: FeatureKdConfig, studentSpec: StudentSpec, seed: number): Promise<FeatureKd> {
    let loaded: { spec: { student?: StudentSpec }; tensors: Record<string, tf.Tensor> };
    try {
      loaded = await loadWeights<{ student?: StudentSpec }>(config.teacherModel);
    } catch (e) {
      throw new DistilleryError(`--teacher-model ${config.teacherModel}: ${(e as Error).message}`);
    }
    if (!loaded.spec?.student) {
      tf.dispose(Object.values(loaded.tensors));
      throw new DistilleryError(`--teacher-model ${config.teacherModel}: not a distillery model (no student spec)`);
    }
    const teacher = studentFromWeights(loaded.spec.student, loaded.tensors);
    tf.dispose(Object.values(loaded.tensors));
    try {
      return new FeatureKd(teacher, studentSpec, config, seed);
    } catch (e) {
      teacher.dispose();
      throw e;
    }
  }

  /** The term weights, for weightedSum: only the terms that are on. */
  termWeights(): Record<string, number> {
    const c = this.config;
    return { ...(c.hiddenWeight > 0 ? { hidden: c.hiddenWeight } : {}), ...(c.attnWeight > 0 ? { attn: c.attnWeight } : {}), ...(c.manifoldWeight > 0 ? { manifold: c.manifoldWeight } : {}) };
  }

  /** Run the frozen teacher on a batch; keep only the features the terms need. Call outside the gradient closure. */
  teacherFeatures(x: StudentInput): TeacherFeatures {
    return tf.tidy(() => {
      const out = this.teacher.forward(x, { training: false, collect: true });
      const lt = this.layers.map(([, t]) => t);
      return {
        hidden: this.config.hiddenWeight > 0 ? lt.map((t) => out.hidden![t]) : [],
        qkv: this.config.attnWeight > 0 ? lt.map((t) => out.qkv![t]) : [],
        patches: this.config.manifoldWeight > 0 ? out.patches : undefined,
      };
    });
  }

  /** Add the feature terms to `terms` (the student's forward must have run with collect: true). */
  addTerms(terms: LossTerms, out: ForwardOut, teacher: TeacherFeatures): LossTerms {
    const c = this.config;
    if (!out.hidden || !out.qkv || !out.patches) throw new DistilleryError('feature KD: the student forward must run with { collect: true }');
    if (c.hiddenWeight > 0) {
      terms.hidden = tf.tidy(() => {
        const parts = this.layers.map(([ls], i) => {
          const w = this.proj.get(ls);
          return hiddenMse(w ? dense(out.hidden![ls], w as tf.Variable as unknown as tf.Tensor2D) : out.hidden![ls], teacher.hidden[i]);
        });
        return tf.div(tf.addN(parts), parts.length) as tf.Scalar;
      });
    }
    if (c.attnWeight > 0) {
      terms.attn = tf.tidy(() => {
        const parts = this.layers.map(([ls], i) => attentionRelationLoss(out.qkv![ls], teacher.qkv[i], { relationHeads: this.relationHeads }));
        return tf.div(tf.addN(parts), parts.length) as tf.Scalar;
      });
    }
    if (c.manifoldWeight > 0) terms.manifold = manifoldLoss(out.patches, teacher.patches!);
    return terms;
  }

  dispose(): void {
    this.teacher.dispose();
    tf.dispose(Object.values(this.weights));
  }
}

export function disposeTeacherFeatures(f: TeacherFeatures): void {
  tf.dispose([...f.hidden, ...f.qkv.flatMap((r) => [r.q, r.k, r.v]), ...(f.patches ? [f.patches] : [])]);
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}
