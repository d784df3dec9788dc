/**
 * A distiller: one distillation method as a small object, in the spirit of mdistiller's
 * `Distiller` (`forward_train` returns the logits and a dict of named losses). The trainer
 * builds the batch each distiller asks for, runs the student once, sums every distiller's
 * named, already-weighted terms and knows no method by name.
 *
 * One method is one file in this folder exporting a DistillerDef, plus one line in index.ts.
 */
import type { tf } from '../backend.ts';
import type { LossTerms } from '../losses.ts';
import type { ForwardOut, Student, StudentInput, StudentSpec } from '../models/index.ts';

export type { LossTerms };

/** What the student returned for a batch: logits, optional extra heads, named features. */
export type StudentOutput = ForwardOut;

/** What a distiller can ask of each batch (the trainer builds only what some distiller needs). */
export interface Needs {
  /** The training target's hard label: Batch.hard. */
  hard?: boolean;
  /** The aggregated teachers' distribution, as logits: Batch.teacherLogits. */
  teacherLogits?: boolean;
  /** Each teacher's own distribution: Batch.perTeacher. */
  perTeacher?: boolean;
  /** The frozen feature teacher's output (--feature-teacher), features included: Batch.featureTeacher. */
  featureTeacher?: boolean;
  /** The student's intermediate tensors (StudentOutput.features). */
  studentFeatures?: boolean;
}

/** One training batch, built outside the gradient tape. */
export interface Batch {
  /** Dataset item indices. */
  idx: number[];
  x: StudentInput;
  /** int32 [B]: the training target's hard label. */
  hard?: tf.Tensor1D;
  /** [B, C]: log of the aggregated target distribution (logits up to a constant; −∞ where the mass is 0). */
  teacherLogits?: tf.Tensor2D;
  /** Per teacher, in `names` order: log-probabilities [T, B, C] and whether the teacher labeled the item [T, B] (1/0). */
  perTeacher?: { names: string[]; logits: tf.Tensor3D; present: tf.Tensor2D };
  /** The frozen feature teacher's forward on x, with its features. */
  featureTeacher?: ForwardOut;
  /** Training progress (set by the trainer): this batch's epoch, 0-based, of `epochs` planned. For staged methods (DearKD). */
  epoch?: number;
  epochs?: number;
}

/** Where training is: epoch (0-based) of the planned epochs. */
export interface Progress {
  epoch: number;
  epochs: number;
}

export interface Distiller<P = unknown> {
  readonly name: string;
  readonly needs: Needs;
  /** What it needs in this epoch, when that changes during training (a staged method); default `needs`. Never more than `needs`. */
  needsAt?(progress: Progress): Needs;
  /** Learnable extras (projections, aligners): trained with the student, kept in checkpoints, not in the saved model. */
  readonly weights: Record<string, tf.Variable>;
  /** What binds a checkpoint to this objective (--resume refuses another). JSON-serialisable. */
  key(): unknown;
  /** Frozen work for this batch, outside the gradient tape (the trainer disposes what it returns). */
  prepare?(batch: Batch): P;
  /** Named, already-weighted loss terms (scalars). Runs inside the gradient tape. */
  terms(out: StudentOutput, batch: Batch, prepared: P): LossTerms;
  dispose(): void;
}

/** A command-line setting of a distiller: `--<kebab-case of its key>`. */
export interface Flag<T> {
  help: string;
  default: T;
  /** Parses the flag's text; throws (an Error with a message) on bad input. */
  parse(text: string): T;
  /** How the value reads in help and messages (default: String). */
  show?(value: T): string;
}

/** What every distiller may use when it is created. */
export interface DistillerContext {
  student: StudentSpec;
  seed: number;
  /** The teachers whose own distributions reach Batch.perTeacher, in that order (absent: the task has no teacher runs). */
  teachers?: string[];
  /** The frozen teacher model of --feature-teacher, when given. */
  featureTeacher?: { dir: string; model: Student };
  /** Every distiller chosen with this one (set by createDistillers), for methods that depend on another's term. */
  distill?: string[];
}

export interface DistillerDef<O extends object = object> {
  name: string;
  /** One line: what it adds to the loss, as a formula. */
  summary: string;
  flags: { [K in keyof O]: Flag<O[K]> };
  /**
   * Class probabilities [B, C] when a student trained with this method does not predict from its
   * class head alone (DeiT: the mean of both heads). The saved model names the method, so eval and
   * predict use the same rule.
   */
  predict?(out: StudentOutput): tf.Tensor2D;
  /** null: the method is off with these settings (e.g. weight 0), so it adds nothing. */
  create(options: O, ctx: DistillerContext): Distiller | null;
}

/** Type helper: a DistillerDef whose option types follow from its flags. */
export function defineDistiller<O extends object>(def: DistillerDef<O>): DistillerDef<O> {
  return def;
}

// ---------------------------------------------------------------------------------------
// Flag parsers shared by the distillers

export function numberFlag(help: string, def: number, min = 0): Flag<number> {
  return {
    help,
    default: def,
    parse(text) {
      const x = Number(text);
      if (text.trim() === '' || !Number.isFinite(x) || x < min) throw new Error(`expected a number ≥ ${min}, got ${JSON.stringify(text)}`);
      return x;
    },
  };
}

export function choiceFlag<T extends string>(help: string, def: T, choices: readonly T[]): Flag<T> {
  return {
    help: `${help} (${choices.join(' | ')})`,
    default: def,
    parse(text) {
      if (!(choices as readonly string[]).includes(text))
        throw new Error(`expected one of ${choices.join(', ')}, got ${JSON.stringify(text)}`);
      return text as T;
    },
  };
}
