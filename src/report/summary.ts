/**
 * What the report says in words: what each model trained on (from its metrics.json), which
 * runs are the same recipe with another seed, and the headline (the best student on the test
 * split, by how much, over how many seeds and items).
 */
import { basename } from 'node:path';
import type { StudentMetrics, StudentReport, TaskReport } from './data.ts';

/** A setting's weight as the command line gave it, else unknown (the distiller's default). */
const weightOf = (settings: Record<string, unknown>, term: string): number | undefined => {
  const key = `${term.replace(/-(\w)/g, (_, c: string) => c.toUpperCase())}Weight`;
  return typeof settings[key] === 'number' ? (settings[key] as number) : undefined;
};

/** The teachers a student learnt from, as they were chosen: `cnn`, `mean(a, b)`, `all teachers`. */
function teacherSource(t: { teachers?: string; aggregate?: string; calibrate?: boolean }): string {
  const names = t.teachers && t.teachers !== 'all' ? t.teachers.split(',').map((s) => s.trim()) : null;
  const who =
    names === null
      ? `${t.aggregate ?? 'mean'} of all teachers`
      : names.length === 1
        ? names[0]
        : `${t.aggregate ?? 'mean'}(${names.join(', ')})`;
  return t.calibrate ? `${who}, calibrated` : who;
}

/**
 * What a model really trained on, from the terms its loss had (the history's terms: a distiller
 * at weight 0 is left out of the loss, so a "hard-label twin" shows CE alone) and its targets:
 * e.g. "0.9·KD (T=4) to cnn's soft labels + 0.1·CE to cnn's hard labels", "CE to gold labels".
 */
export function objectiveText(m: StudentMetrics): string {
  if (m.targets === undefined && !m.config) return '–';
  const gold = m.targets === 'gold';
  const targets = (typeof m.targets === 'object' && m.targets !== null ? m.targets : {}) as {
    teachers?: string;
    aggregate?: string;
    calibrate?: boolean;
  };
  const src = gold ? 'gold' : teacherSource(targets);
  const settings = m.config?.settings ?? {};
  const fromHistory = [...new Set((m.history ?? []).flatMap((e) => Object.keys(e.terms ?? {})))];
  const terms = fromHistory.length ? fromHistory : (m.config?.distill ?? []).filter((d) => weightOf(settings, d) !== 0);
  const feature = m.config?.featureTeacher ? basename(String(m.config.featureTeacher).replace(/\/+$/, '')) : 'the feature teacher';
  // Settings left at their defaults are not in metrics.json: then the text names the term alone.
  const T = typeof settings.kdTemperature === 'number' ? ` (T=${settings.kdTemperature})` : '';
  const phrase = (term: string): string => {
    switch (term) {
      case 'ce':
        return gold ? 'CE to gold labels' : `CE to hard labels of ${src}`;
      case 'kd':
        return `KD${T} to soft labels of ${src}`;
      case 'multi-kd':
        return `KD${T} to each teacher's soft labels (${src})`;
      case 'deit':
        return `DeiT distillation head on ${src}`;
      case 'civt':
        return `CivT heads on ${src}`;
      case 'hidden':
      case 'attn':
      case 'manifold':
      case 'dearkd':
      case 'online-kd':
        return `${term} from ${feature}`;
      default:
        return term;
    }
  };
  const parts = terms.map((t) => {
    const w = weightOf(settings, t);
    return terms.length > 1 && w !== undefined ? `${w}·${phrase(t)}` : phrase(t);
  });
  let text = parts.length ? parts.join(' + ') : gold ? 'gold labels' : `labels of ${src}`;
  if (m.config?.initFrom) text += ` (from ${basename(String(m.config.initFrom).replace(/\/+$/, ''))})`;
  return text;
}

/** Trained on gold (a teacher or a supervised baseline) rather than distilled from a teacher. */
export const onGold = (s: StudentReport) => s.metrics.targets === 'gold';

/** The same recipe (architecture, objective, data, schedule) up to the seed. */
function recipeKey(s: StudentReport): string {
  const { seed: _seed, ...config } = s.metrics.config ?? {};
  return JSON.stringify([s.task, s.metrics.student ?? s.kind, config, s.metrics.targets ?? null]);
}

/** Runs of one recipe, over one or more seeds. */
export interface RecipeGroup {
  /** The folders, in the order given. */
  members: string[];
  kind: string;
  objective: string;
  seeds: number;
  /** Mean test accuracy over the members, and its range. */
  accuracy: number;
  min: number;
  max: number;
  /** Test items of each member (the same split, so normally one number). */
  testItems: number[];
  onGold: boolean;
}

/**
 * A student's accuracy on the report's split: from its own predictions there when the report made
 * them (the split the teachers are measured on), else what train.ts wrote (its test report).
 */
function onSplit(s: StudentReport): { accuracy: number; n: number } | null {
  if (s.evaluation?.accuracy != null) return { accuracy: s.evaluation.accuracy, n: s.evaluation.n };
  return s.metrics.test?.accuracy == null ? null : { accuracy: s.metrics.test.accuracy, n: s.metrics.test.n };
}

/** Students with a test accuracy, grouped by recipe (several seeds of one recipe are one group). */
export function recipeGroups(students: StudentReport[]): RecipeGroup[] {
  const groups = new Map<string, StudentReport[]>();
  for (const s of students) {
    if (onSplit(s) === null) continue;
    const k = recipeKey(s);
    groups.set(k, [...(groups.get(k) ?? []), s]);
  }
  return [...groups.values()].map((g) => {
    const accs = g.map((s) => onSplit(s)!.accuracy);
    return {
      members: g.map((s) => s.name),
      kind: g[0].kind,
      objective: objectiveText(g[0].metrics),
      seeds: new Set(g.map((s) => s.metrics.seed ?? s.metrics.config?.seed ?? s.name)).size,
      accuracy: accs.reduce((a, b) => a + b, 0) / accs.length,
      min: Math.min(...accs),
      max: Math.max(...accs),
      testItems: [...new Set(g.map((s) => onSplit(s)!.n))],
      onGold: onGold(g[0]),
    };
  });
}

export interface Headline {
  split: string;
  best: RecipeGroup;
  /** The next best student recipe, and the best one's lead over it in accuracy points. */
  runnerUp: RecipeGroup | null;
  gainPoints: number | null;
  /** Test items behind the comparison (several numbers when the students saw different splits). */
  testItems: number[];
  /** The store's teachers on the same split, for scale. */
  teachers: { name: string; accuracy: number; n: number }[];
  /** Models trained on gold, on the same split, for scale. */
  references: RecipeGroup[];
}

/**
 * The best student on the test split. Distilled students are the contenders; models trained on
 * gold (the teacher, a supervised baseline) are shown for scale, and are the contenders only when
 * nothing was distilled.
 */
export function headline(students: StudentReport[], tasks: TaskReport[], split: string): Headline | null {
  const groups = recipeGroups(students).sort((a, b) => b.accuracy - a.accuracy);
  const distilled = groups.filter((g) => !g.onGold);
  const contenders = distilled.length ? distilled : groups;
  if (contenders.length === 0) return null;
  const [best, runnerUp = null] = contenders;
  const taskNames = new Set(students.map((s) => s.task));
  return {
    split,
    best,
    runnerUp,
    gainPoints: runnerUp ? 100 * (best.accuracy - runnerUp.accuracy) : null,
    testItems: [...new Set(contenders.slice(0, 2).flatMap((g) => g.testItems))],
    teachers: tasks
      .filter((t) => taskNames.has(t.task))
      .flatMap((t) => t.teacherOnSplit)
      .filter((t) => t.accuracy.n > 0)
      .map((t) => ({ name: t.teacher, accuracy: t.accuracy.value, n: t.accuracy.n })),
    references: distilled.length ? groups.filter((g) => g.onGold) : [],
  };
}
