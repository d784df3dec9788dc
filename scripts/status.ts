import { Command } from 'commander';
import { addDbOption, addJsonOption, openExistingStore } from '../src/cli/options.ts';
import { runCli, say } from '../src/cli/run.ts';
import { formatTable } from '../src/cli/table.ts';
import { agreementLines, reviewerAgreement } from '../src/review/agreement.ts';
import { storeStatus, type Counts, type RelabelStatus } from '../src/store/status.ts';

const COUNT_COLUMNS = ['items', 'labeled', 'failed', 'pending', 'requests', 'errors', 'tokens', 'cost'];

interface StatusFlags {
  db: string;
  json: boolean;
}

const program = addJsonOption(addDbOption(new Command('status'))).description(
  "Per run and in total: items, labeled, failed, pending, requests, tokens, cost; the reviewers' runs (human:NAME) and their agreement.",
);

runCli(async () => {
  const opts = program.parse().opts<StatusFlags>();
  const store = openExistingStore(opts.db);
  try {
    const status = storeStatus(store);
    // Reviewers per task (tasks nobody reviewed are left out): κ per pair, agreement with the target and gold.
    const reviewers = store
      .listTasks()
      .map((t) => reviewerAgreement(store, t))
      .filter((a) => a.reviewers.length > 0);
    if (opts.json) {
      say(JSON.stringify({ ...status, reviewers }));
      return;
    }
    const head = ['run', 'task', 'teacher', 'soft', 'status', ...COUNT_COLUMNS];
    const rows = status.runs.map((r) => [`${r.run}`, r.task, r.teacher, r.soft ?? '', r.status, ...counts(r)]);
    for (const t of status.tasks) rows.push(['task', t.task, '', '', '', ...counts(t)]);
    rows.push(['total', '', '', '', '', ...counts(status.total)]);
    for (const line of formatTable([head, ...rows], 5)) say(line);
    for (const r of status.runs) if (r.message) say(`run ${r.run}: ${r.message}`);
    for (const r of status.runs) if (r.relabel) say(`run ${r.run}: ${relabelLine(r.relabel)}`);
    for (const a of reviewers) for (const line of agreementLines(a)) say(line);
    for (const j of status.batches) {
      say(
        `run ${j.run}: batch job ${j.job} ${j.state}${j.remote_status ? ` (${j.remote_status}${j.batch_id ? `, ${j.batch_id}` : ''})` : ''}: ` +
          `${j.requests} request(s), ${j.answered} answered, ${j.invalid} invalid, ${j.failed} failed, ${j.pending} pending; ` +
          (j.state === 'done' ? `$${j.cost.toFixed(4)}` : `$${j.reserved.toFixed(4)} reserved`),
      );
    }
  } finally {
    store.close();
  }
});

function relabelLine(r: RelabelStatus): string {
  const reasons = Object.entries(r.by_reason)
    .map(([k, n]) => `${k} ${n}`)
    .join(', ');
  const head = `relabel ${r.id} (${r.policies.join(', ')}) of ${r.selected} item(s) [${reasons}], ${r.status}`;
  if (!r.drift) return `${head}; no new labels yet`;
  const moves = Object.entries(r.drift.confusion)
    .flatMap(([old, row]) =>
      Object.entries(row)
        .filter(([neu]) => neu !== old)
        .map(([neu, n]) => `${old}→${neu} ${n}`),
    )
    .join(', ');
  return `${head}; drift: ${r.drift.changed} of ${r.drift.compared} label(s) changed${moves ? ` (${moves})` : ''}`;
}

function counts(c: Counts): string[] {
  return [c.items, c.labeled, c.failed, c.pending, c.requests, c.errors, c.prompt_tokens + c.completion_tokens]
    .map(String)
    .concat(`$${c.cost.toFixed(4)}`);
}
