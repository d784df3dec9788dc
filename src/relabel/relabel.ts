/**
 * One relabel pass: choose the items (policy.ts), ask the teacher again under a
 * fresh key salt, and record what changed. The selection is stored before the
 * first request, so a pass that crashes or hits its cost cap is resumed — same
 * items, same salt, nothing paid twice — by the next invocation with the same
 * teacher settings, before anything new is selected.
 */
import { configHash } from '../label/plan.ts';
import type { LabelOptions, LabelResult } from '../label/types.ts';
import {
  finishRelabel,
  measureDrift,
  recordSelection,
  relabelItems,
  relabelRow,
  setRelabelRun,
  unfinishedRelabel,
  type Drift,
  type RelabelRow,
} from '../store/relabels.ts';
import { policyName, selectItems, type Policy, type Reason, type SelectContext } from './policy.ts';

export interface RelabelOptions {
  /** The labeling pass over the selected items, without itemIds, salt or hooks (set here). */
  label: LabelOptions;
  policies: Policy[];
  /** Live (runLabeling) or the Batch API: same contract. */
  run: (o: LabelOptions) => Promise<LabelResult>;
  student?: SelectContext['student'];
  limit?: number;
  now?: Date;
  /** Select and report, send nothing, write nothing. */
  dryRun?: boolean;
}

export interface RelabelOutcome {
  relabel?: RelabelRow;
  resumed: boolean;
  selected: Record<Reason, number>;
  /** The selected items, most useful first. */
  itemIds: number[];
  result?: LabelResult;
  drift?: Drift;
}

const countReasons = (reasons: Reason[]): Record<Reason, number> => {
  const c: Record<Reason, number> = { disagree: 0, 'low-confidence': 0, changed: 0, stale: 0 };
  for (const r of reasons) c[r]++;
  return c;
};

export async function relabelOnce(o: RelabelOptions): Promise<RelabelOutcome> {
  const { store, taskRow, task, settings } = o.label;
  const baseConfig = configHash(task, { ...settings, keySalt: undefined });

  const unfinished = unfinishedRelabel(store, taskRow.id, baseConfig);
  let relabel: RelabelRow;
  let itemIds: number[];
  let reasons: Reason[];
  if (unfinished) {
    const rows = relabelItems<Reason>(store, unfinished.id);
    relabel = unfinished;
    itemIds = rows.map((r) => r.itemId);
    reasons = rows.map((r) => r.reason);
    if (o.dryRun) return { relabel, resumed: true, selected: countReasons(reasons), itemIds };
  } else {
    const picked = selectItems(store, taskRow, o.policies, {
      model: settings.model,
      promptVersion: task.version,
      baseConfig,
      now: o.now ?? new Date(),
      student: o.student,
      limit: o.limit,
    });
    reasons = picked.map((p) => p.reason);
    itemIds = picked.map((p) => p.itemId);
    if (picked.length === 0 || o.dryRun) return { resumed: false, selected: countReasons(reasons), itemIds };
    relabel = recordSelection(store, taskRow.id, baseConfig, o.policies.map(policyName), picked);
  }

  const result = await o.run({
    ...o.label,
    settings: { ...settings, keySalt: relabel.salt },
    itemIds,
    limit: undefined, // the selection is the limit
    runParams: { ...o.label.runParams, relabel: { id: relabel.id, policies: JSON.parse(relabel.policies) } },
    onRunOpened: (run) => {
      setRelabelRun(store, relabel.id, run.id);
      o.label.onRunOpened?.(run);
    },
  });
  // 'nothing-to-do': every selected item was already answered under this salt, so the pass is complete.
  const status = result.status === 'nothing-to-do' ? 'completed' : result.status;
  const drift = result.run ? measureDrift(store, relabel.id, result.run.id) : undefined;
  finishRelabel(store, relabel.id, status, drift);
  return {
    relabel: relabelRow(store, relabel.id),
    resumed: unfinished !== undefined,
    selected: countReasons(reasons),
    itemIds,
    result,
    drift,
  };
}
