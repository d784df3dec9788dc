import type { Store } from './store.ts';

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
}

export interface TaskStatus extends Counts {
  task: string;
  labels: string[];
}

export interface StoreStatus {
  runs: RunStatus[];
  tasks: TaskStatus[];
  total: Counts;
}

/**
 * Per run: the items it set out to label, those it labeled or gave up on,
 * and what it spent. Per task and in total: items with at least one valid
 * label, items whose every label failed, and the rest pending.
 */
export function storeStatus(store: Store): StoreStatus {
  const db = store.db;
  const runs = db
    .prepare(
      `SELECT r.id AS run, t.name AS task, r.kind, r.teacher, r.base_url, r.prompt_version, CASE WHEN r.kind = 'logits' THEN 'logits' ELSE json_extract(r.params, '$.soft') END AS soft,
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
  const runStatuses: RunStatus[] = runs.map((r) => ({ ...r, pending: Math.max(0, r.items - r.labeled - r.failed) }));

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
  return { runs: runStatuses, tasks, total };
}

function sumSpend(rs: Counts[]): Pick<Counts, 'requests' | 'errors' | 'prompt_tokens' | 'completion_tokens' | 'cost'> {
  return { requests: sum(rs, 'requests'), errors: sum(rs, 'errors'), prompt_tokens: sum(rs, 'prompt_tokens'), completion_tokens: sum(rs, 'completion_tokens'), cost: sum(rs, 'cost') };
}

function sum<T>(xs: T[], k: keyof T): number {
  return xs.reduce((a, x) => a + (x[k] as number), 0);
}
