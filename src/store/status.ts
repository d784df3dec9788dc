import { batchJobSummaries, type BatchJobSummary } from './batch-ledger.ts';
import { Store } from './store.ts';

/** A relabel pass (scripts/relabel.ts): what it selected and how the new labels differ from the old ones. */
export interface RelabelStatus {
  id: number;
  policies: string[];
  status: string;
  selected: number;
  by_reason: Record<string, number>;
  /** compared (items with an old and a new label), changed, confusion {old: {new: n}}; null until the run stores labels. */
  drift: { compared: number; changed: number; confusion: Record<string, Record<string, number>> } | null;
}

export interface Counts {
  items: number;
  labeled: number;
  failed: number;
  pending: number;
  requests: number;
  errors: number;
  prompt_tokens: number;
  completion_tokens: number;
  cost: number;
}

export interface RunStatus extends Counts {
  run: number;
  task: string;
  kind: string;
  teacher: string;
  base_url: string | null;
  prompt_version: string | null;
  soft: string | null;
  status: string;
  started_at: string;
  ended_at: string | null;
  message: string | null;
  /** Set when the run is a relabel pass. */
  relabel: RelabelStatus | null;
}

export interface TaskStatus extends Counts {
  task: string;
  labels: string[];
}

export interface StoreStatus {
  runs: RunStatus[];
  /** Batch API jobs (label.ts --batch), newest first. */
  batches: BatchJobSummary[];
  tasks: TaskStatus[];
  total: Counts;
}

/**
 * Per run: the items it set out to label, those it labeled or gave up on,
 * and what it spent. Per task and in total: items with at least one valid
 * label, items whose every label failed, and the rest pending.
 */
export function storeStatus(store: Store): StoreStatus {
  const db = Store.sqlOf(store);
  const runs = db
    .prepare(
      `SELECT r.id AS run, t.name AS task, r.kind, r.teacher, r.base_url, r.prompt_version, CASE WHEN r.kind IN ('logits', 'human') THEN r.kind ELSE json_extract(r.params, '$.soft') END AS soft,
              r.status, r.started_at, r.ended_at, r.message, r.items_total AS items,
              coalesce(s.n, 0) + (SELECT count(*) FROM request_errors e WHERE e.run_id = r.id) AS requests,
              (SELECT count(*) FROM request_errors e WHERE e.run_id = r.id) AS errors,
              (SELECT count(DISTINCT item_id) FROM labels l WHERE l.run_id = r.id AND l.status = 'ok') AS labeled,
              (SELECT count(DISTINCT item_id) FROM labels l WHERE l.run_id = r.id AND l.status = 'failed'
                 AND NOT EXISTS (SELECT 1 FROM labels k WHERE k.run_id = r.id AND k.item_id = l.item_id AND k.status = 'ok')) AS failed,
              coalesce(s.prompt_tokens, 0) AS prompt_tokens, coalesce(s.completion_tokens, 0) AS completion_tokens, coalesce(s.cost, 0) AS cost
       FROM runs r JOIN tasks t ON t.id = r.task_id
       LEFT JOIN (SELECT run_id, count(*) AS n, sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens, sum(cost) AS cost
                  FROM responses GROUP BY run_id) s ON s.run_id = r.id
       ORDER BY r.id`,
    )
    .all() as Omit<RunStatus, 'pending'>[];
  const relabels = relabelsByRun(store);
  const runStatuses: RunStatus[] = runs.map((r) => ({
    ...r,
    pending: Math.max(0, r.items - r.labeled - r.failed),
    relabel: relabels.get(r.run) ?? null,
  }));

  const tasks = store.listTasks().map((t): TaskStatus => {
    const c = db
      .prepare(
        `SELECT count(*) AS items,
                sum(EXISTS (SELECT 1 FROM labels l WHERE l.item_id = i.id AND l.status = 'ok')) AS labeled,
                sum(NOT EXISTS (SELECT 1 FROM labels l WHERE l.item_id = i.id AND l.status = 'ok')
                    AND EXISTS (SELECT 1 FROM labels l WHERE l.item_id = i.id AND l.status = 'failed')) AS failed
         FROM items i WHERE i.task_id = ?`,
      )
      .get(t.id) as { items: number; labeled: number | null; failed: number | null };
    const taskRuns = runStatuses.filter((r) => r.task === t.name);
    const labeled = c.labeled ?? 0;
    const failed = c.failed ?? 0;
    return { task: t.name, labels: t.labels, items: c.items, labeled, failed, pending: c.items - labeled - failed, ...sumSpend(taskRuns) };
  });
  const total: Counts = {
    items: sum(tasks, 'items'),
    labeled: sum(tasks, 'labeled'),
    failed: sum(tasks, 'failed'),
    pending: sum(tasks, 'pending'),
    ...sumSpend(runStatuses),
  };
  return { runs: runStatuses, batches: batchJobSummaries(store), tasks, total };
}

function relabelsByRun(store: Store): Map<number, RelabelStatus> {
  const rows = Store.sqlOf(store)
    .prepare(
      `SELECT rl.id, rl.run_id, rl.policies, rl.status, rl.drift, ri.reason, count(ri.item_id) AS n
       FROM relabels rl LEFT JOIN relabel_items ri ON ri.relabel_id = rl.id
       WHERE rl.run_id IS NOT NULL GROUP BY rl.id, ri.reason ORDER BY rl.id`,
    )
    .all() as { id: number; run_id: number; policies: string; status: string; drift: string | null; reason: string | null; n: number }[];
  const out = new Map<number, RelabelStatus>();
  for (const r of rows) {
    let s = out.get(r.run_id);
    if (!s) {
      s = {
        id: r.id,
        policies: JSON.parse(r.policies) as string[],
        status: r.status,
        selected: 0,
        by_reason: {},
        drift: r.drift ? JSON.parse(r.drift) : null,
      };
      out.set(r.run_id, s);
    }
    if (r.reason) {
      s.by_reason[r.reason] = r.n;
      s.selected += r.n;
    }
  }
  return out;
}

function sumSpend(rs: Counts[]): Pick<Counts, 'requests' | 'errors' | 'prompt_tokens' | 'completion_tokens' | 'cost'> {
  return {
    requests: sum(rs, 'requests'),
    errors: sum(rs, 'errors'),
    prompt_tokens: sum(rs, 'prompt_tokens'),
    completion_tokens: sum(rs, 'completion_tokens'),
    cost: sum(rs, 'cost'),
  };
}

function sum<T>(xs: T[], k: keyof T): number {
  return xs.reduce((a, x) => a + (x[k] as number), 0);
}
