import type { Store, TaskRow } from '../store/store.ts';
import { calibrationReport, fitTemperature } from './calibrate.ts';
import { loadView, resolveTeachers, taskItems } from './from-store.ts';
import { accuracy, agreement, cohenKappa, ece, nll } from '../eval/metrics.ts';
import { fittingGold, humanGold } from './human.ts';
import { softmaxT } from './softmax.ts';

export interface TeacherRow {
  teacher: string;
  runs: number[];
  kinds: string[];
  /** Items with a valid label from this teacher, and the share of the task's items. */
  labeled: number;
  coverage: number;
  /** The teacher's hard label against gold (all splits), over `accuracy_n` items. */
  accuracy: number;
  accuracy_n: number;
  /** Of its probabilities at temperature 1, over the items with a soft label and gold. */
  nll: number;
  ece: number;
  soft_n: number;
  /** With --calibrate: the temperature fitted on the train split, and NLL/ECE on the test split after it. */
  temperature?: number;
  nll_calibrated?: number;
  ece_calibrated?: number;
}

export interface TeachersReport {
  task: string;
  items: number;
  gold: number;
  teachers: TeacherRow[];
  /** Reviewers' decisions (src/targets/human.ts): items with a human label, with human gold, and with --calibrate the train-split items it was the gold of. */
  human_gold: { reviewed: number; items: number; calibration: number };
  /** Per pair, over the items labeled by both: the share with the same hard label, and Cohen's κ (null when undefined). */
  agreement: { a: string; b: string; n: number; rate: number; kappa: number | null }[];
}

export function teachersReport(store: Store, task: TaskRow, opts: { teachers?: string; calibrate?: boolean } = {}): TeachersReport {
  const items = taskItems(store, task);
  // Reviewers' runs are shown like any teacher, scored against imported gold only.
  const sources = resolveTeachers(store, task, opts.teachers, { humans: true });
  const human = humanGold(store, task, items);
  const fit = fittingGold(items, human);
  const views = sources.map((s) => loadView(store, task, items, s));
  const rows = views.map((v, k): TeacherRow => {
    const labeled = v.hard.filter((h) => h !== null).length;
    const acc = accuracy(v.hard, items.gold);
    const probs = v.logprobs.map((z) => (z ? softmaxT(z, 1) : null));
    const n = nll(probs, items.gold);
    const row: TeacherRow = {
      teacher: v.name,
      runs: sources[k].runs.map((r) => r.id),
      kinds: [...new Set(sources[k].runs.map((r) => r.kind))],
      labeled,
      coverage: items.items.length ? labeled / items.items.length : 0,
      accuracy: acc.value,
      accuracy_n: acc.n,
      nll: n.value,
      ece: ece(probs, items.gold).value,
      soft_n: n.n,
    };
    if (opts.calibrate) {
      const test = items.gold.map((g, i) => (items.items[i].split === 'train' ? null : g));
      const T = fitTemperature(v.logprobs, fit.gold);
      const after = calibrationReport(v, test.some((g) => g !== null) ? test : fit.gold, T).after;
      Object.assign(row, { temperature: T, nll_calibrated: after.nll, ece_calibrated: after.ece });
    }
    return row;
  });
  const pairs: TeachersReport['agreement'] = [];
  for (let a = 0; a < views.length; a++) {
    for (let b = a + 1; b < views.length; b++) {
      const kappa = cohenKappa(views[a].hard, views[b].hard).value;
      pairs.push({
        a: views[a].name,
        b: views[b].name,
        ...agreement(views[a].hard, views[b].hard),
        kappa: Number.isNaN(kappa) ? null : kappa,
      });
    }
  }
  return {
    task: task.name,
    items: items.items.length,
    gold: items.gold.filter((g) => g !== null).length,
    teachers: rows,
    human_gold: {
      reviewed: human.reviewed,
      items: human.labels.filter((h) => h !== null).length,
      calibration: opts.calibrate ? fit.human : 0,
    },
    agreement: pairs,
  };
}
