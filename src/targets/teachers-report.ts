import type { Store, TaskRow } from '../store/store.ts';
import { calibrationReport, fitTemperature } from './calibrate.ts';
import { loadView, resolveTeachers, taskItems } from './from-store.ts';
import { accuracy, agreement, ece, nll } from '../eval/metrics.ts';
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
  /** agreement[a][b]: the share of items labeled by both on which a and b give the same hard label. */
  agreement: { a: string; b: string; n: number; rate: number }[];
}

export function teachersReport(store: Store, task: TaskRow, opts: { teachers?: string; calibrate?: boolean } = {}): TeachersReport {
  const items = taskItems(store, task);
  const sources = resolveTeachers(store, task, opts.teachers);
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
      const train = items.gold.map((g, i) => (items.items[i].split === 'train' ? g : null));
      const test = items.gold.map((g, i) => (items.items[i].split === 'train' ? null : g));
      const T = fitTemperature(v.logprobs, train);
      const after = calibrationReport(v, test.some((g) => g !== null) ? test : train, T).after;
      Object.assign(row, { temperature: T, nll_calibrated: after.nll, ece_calibrated: after.ece });
    }
    return row;
  });
  const pairs: TeachersReport['agreement'] = [];
  for (let a = 0; a < views.length; a++) {
    for (let b = a + 1; b < views.length; b++)
      pairs.push({ a: views[a].name, b: views[b].name, ...agreement(views[a].hard, views[b].hard) });
  }
  return {
    task: task.name,
    items: items.items.length,
    gold: items.gold.filter((g) => g !== null).length,
    teachers: rows,
    agreement: pairs,
  };
}
