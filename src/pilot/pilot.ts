/**
 * A pilot before the full run: a sample of the input labeled with every teacher configuration (model × prompt),
 * measured against gold, with what labeling the whole input would cost.
 *
 * Each configuration is labeled by the labeler itself (runLabeling: its run, lease, client, retries, cost cap and
 * writer thread) with `itemIds` set to the sample, so the answers are stored under the request keys a full
 * label.ts run of that configuration uses: labeling everything afterwards asks only for the items outside the
 * sample. The measurements are read back by request key (Store.answersByKeys), so answers paid for earlier — by a
 * previous pilot or label.ts — are measured without being asked again.
 *
 * A prompt variant is a task file of the same task (same name, labels and input kind) with another text: its
 * prompt version (the file's sha256) makes it another configuration hash, so another teacher run of that task.
 * A pilot's run is left `stopped` with a message, so that label.ts with the same configuration continues that
 * run (one run holds the sample and the rest) instead of starting a new one.
 */
import { agreement, classificationMetrics, type ClassificationMetrics } from '../eval/metrics.ts';
import { batchPrice, costOf, type Price } from '../label/cost.ts';
import { runLabeling } from '../label/live.ts';
import { configHash, requestFor } from '../label/plan.ts';
import type { LabelOptions, LabelResult } from '../label/types.ts';
import { decodeSoft, softToProbs } from '../soft/codec.ts';
import type { ItemRow, KeyLabelRow, Store } from '../store/store.ts';
import { RequestBuilder } from '../teacher/request.ts';
import { pilotSample, type PilotSample } from './sample.ts';

/** One configuration to try: the labeler's options (model, prompt as the task, decoding, budgets). */
export interface PilotConfig {
  /** The prompt file, as given (for the report and the label.ts command). */
  prompt: string;
  options: LabelOptions;
}

export interface PilotOptions {
  store: Store;
  /** The input's items (internal ids, as imported): the population and what "the whole input" means. */
  itemIds: number[];
  configs: PilotConfig[];
  sample: number;
  seed: number;
  /** A cap on what this pilot spends over all configurations, US$ (each configuration gets what is left). */
  maxCost?: number;
  /** Called when a configuration starts (progress for people). */
  onConfig?: (c: PilotConfig, index: number) => void;
}

export interface Projection {
  /** Items of the whole input. */
  items: number;
  /** Measured mean cost per sampled item × items, at the live price and at the Batch API price. */
  expected: number;
  batchExpected: number;
  /** Every item at its max_tokens bound (estimated prompt + max_tokens × choices), as the cost cap reserves it. */
  worst: number;
  batchWorst: number;
  /** What labeling the rest would cost (expected), the sample being paid already. */
  remainingExpected: number;
}

export interface ConfigResult {
  model: string;
  prompt: string;
  promptVersion: string;
  configHash: string;
  /** The run this pilot labeled into; when every sampled answer was already stored, the run most of them are in. */
  runId?: number;
  status: LabelResult['status'] | 'not run';
  message?: string;
  /** Sampled items with a valid answer, with only invalid answers, with none. */
  answered: number;
  failed: number;
  missing: number;
  /** Requests this invocation sent, and what it paid (US$). */
  requests: number;
  spent: number;
  /** Against gold over the answered sampled items (null without gold). */
  metrics: ClassificationMetrics | null;
  /** Wilson's 95% interval of the accuracy: what the sample size allows one to tell apart (null without gold). */
  accuracyInterval: { low: number; high: number } | null;
  /** Invalid answers / every paid answer to the sample's keys. */
  invalidRate: number | null;
  answers: number;
  /** Per answered request, ms. */
  latency: { p50: number; p95: number; n: number } | null;
  /** Mean cost per sampled item × 1,000 at the live price (answers since superseded and invalid ones included). */
  costPer1000: number | null;
  projection: Projection;
  /** Per sampled item (in sample order): the label index, or null. */
  predictions: Array<number | null>;
}

export interface PilotReport {
  task: string;
  labels: string[];
  items: number;
  /** The sample, with its items' external ids (in the same order as `ids`). */
  sample: PilotSample & { seed: number; extIds: string[] };
  configs: ConfigResult[];
  /** Every pair of configurations: how often they give the same label on the sampled items both answered. */
  agreement: Array<{ a: number; b: number; n: number; rate: number }>;
  status: 'completed' | 'stopped' | 'interrupted' | 'failed';
}

/** The message a pilot's run is left with; label.ts with the same configuration reopens the run (and clears it). */
export const PILOT_RUN_MESSAGE = 'pilot sample; label.ts with this configuration continues this run';

export async function runPilot(o: PilotOptions): Promise<PilotReport> {
  const { store } = o;
  const first = o.configs[0].options;
  const labels = first.task.labels;
  const itemIds = [...new Set(o.itemIds)];
  const rows = store.itemsByIds(itemIds);
  const sample = pilotSample(rows, labels, o.sample, o.seed);
  const sampleRows = store.itemsByIds(sample.ids);
  const gold = sampleRows.map((r) => (sample.gold && r.gold !== null ? labels.indexOf(r.gold) : -1));

  const results: ConfigResult[] = [];
  let spent = 0;
  let status: PilotReport['status'] = 'completed';
  let failed = false;
  const worstByPrompt = new Map<string, { prompt: number; completion: number }>();
  for (const [index, c] of o.configs.entries()) {
    const lo = c.options;
    const hash = configHash(lo.task, lo.settings);
    const builder = new RequestBuilder(lo.task, lo.settings);
    const worstTokens = worstByPrompt.get(lo.task.version) ?? worstCaseTokens(lo, builder, rows);
    worstByPrompt.set(lo.task.version, worstTokens);
    if (status !== 'completed') {
      results.push(measure(c, hash, builder, sampleRows, gold, rows.length, worstTokens, { status: 'not run', requests: 0, spent: 0 }));
      continue;
    }
    o.onConfig?.(c, index);
    const result = await runLabeling({
      ...lo,
      itemIds: sample.ids,
      maxCost: capFor(o.maxCost, spent, store, hash),
      // A run created by a pilot says so (it keeps this when label.ts continues it: it began as a pilot).
      runParams: { ...lo.runParams, pilot: { sample: sample.ids.length, seed: o.seed, stratified: sample.gold, items: sample.ids } },
    });
    spent += result.stats.cost;
    if (result.run && result.status === 'completed') store.finishRun(result.run.id, 'stopped', PILOT_RUN_MESSAGE);
    // A configuration that failed (a model without logprobs, say) does not keep the others from being measured;
    // a cost cap reached or an interrupt stops the pilot.
    if (result.status === 'failed') failed = true;
    else if (result.status === 'stopped' || result.status === 'interrupted') status = result.status;
    results.push(
      measure(c, hash, builder, sampleRows, gold, rows.length, worstTokens, {
        status: result.status,
        message: result.message,
        runId: result.run?.id,
        requests: result.stats.requests,
        spent: result.stats.cost,
      }),
    );
  }
  const pairs: PilotReport['agreement'] = [];
  for (let a = 0; a < results.length; a++) {
    for (let b = a + 1; b < results.length; b++) pairs.push({ a, b, ...agreement(results[a].predictions, results[b].predictions) });
  }
  if (failed && status === 'completed') status = 'failed';
  return {
    task: first.task.name,
    labels: [...labels],
    items: rows.length,
    sample: { ...sample, seed: o.seed, extIds: sampleRows.map((r) => r.ext_id) },
    configs: results,
    agreement: pairs,
    status,
  };
}

/**
 * --max-cost is over the whole pilot; the labeler's cap is per run and counts what the run spent before (a rerun
 * resumes it), so each configuration's cap is what is left plus what its run already holds.
 */
function capFor(maxCost: number | undefined, spent: number, store: Store, hash: string): number | undefined {
  if (maxCost === undefined) return undefined;
  const resumed = store.resumableRun(hash);
  return Math.max(0, maxCost - spent) + (resumed ? store.runCost(resumed.id) : 0);
}

/** Σ over every input item of its estimated prompt tokens and its max completion tokens (what the cost cap reserves). */
function worstCaseTokens(o: LabelOptions, builder: RequestBuilder, rows: readonly ItemRow[]): { prompt: number; completion: number } {
  let prompt = 0;
  let completion = 0;
  for (const item of rows) {
    const req = requestFor(o, builder, item);
    prompt += req.promptTokens;
    completion += req.maxCompletionTokens;
  }
  return { prompt, completion };
}

interface Outcome {
  status: ConfigResult['status'];
  message?: string;
  runId?: number;
  requests: number;
  spent: number;
}

/** Read the sample's answers back by request key and measure them. */
function measure(
  c: PilotConfig,
  hash: string,
  builder: RequestBuilder,
  sampleRows: readonly ItemRow[],
  gold: readonly number[],
  items: number,
  worstTokens: { prompt: number; completion: number },
  outcome: Outcome,
): ConfigResult {
  const lo = c.options;
  const labels = lo.task.labels;
  const keys = sampleRows.map((r) => builder.key(r));
  const { labels: labelRows, responses } = lo.store.answersByKeys(keys);
  const final = finalLabels(labelRows);
  const byKey = groupBy(responses, (r) => r.request_key);

  const predictions: Array<number | null> = [];
  const probs: Array<Float64Array | null> = [];
  const g: number[] = [];
  const p: number[] = [];
  let failed = 0;
  let missing = 0;
  keys.forEach((key, i) => {
    const row = final.get(key);
    if (!row || row.status !== 'ok' || row.label === null) {
      predictions.push(null);
      if (row) failed++;
      else missing++;
      return;
    }
    const k = labels.indexOf(row.label);
    predictions.push(k);
    if (gold[i] < 0) return;
    g.push(gold[i]);
    p.push(k);
    probs.push(row.soft ? Float64Array.from(softToProbs(decodeSoft(row.soft))) : null);
  });
  const answered = predictions.filter((x) => x !== null).length;
  const metrics = g.length > 0 ? classificationMetrics(labels, g, p, probs.some((x) => x !== null) ? probs : undefined) : null;

  // Costs from tokens at the configured price (the table may have changed since an answer was paid).
  const price = lo.price;
  const batch = batchPrice(price);
  let live = 0;
  let atBatch = 0;
  let paidItems = 0;
  for (const key of keys) {
    const rs = byKey.get(key);
    if (!rs) continue;
    paidItems++;
    for (const r of rs) {
      live += costOf(price, r.prompt_tokens, r.completion_tokens);
      atBatch += costOf(batch, r.prompt_tokens, r.completion_tokens);
    }
  }
  const perItem = paidItems > 0 ? live / paidItems : null;
  const perItemBatch = paidItems > 0 ? atBatch / paidItems : null;
  const all = keys.flatMap((k) => byKey.get(k) ?? []);
  const invalid = all.filter((r) => r.status === 'invalid').length;
  const latencies = all.map((r) => r.latency_ms);
  return {
    model: lo.settings.model,
    prompt: c.prompt,
    promptVersion: lo.task.version,
    configHash: hash,
    runId: outcome.runId ?? commonestRun(final),
    status: outcome.status,
    message: outcome.message,
    answered,
    failed,
    missing,
    requests: outcome.requests,
    spent: outcome.spent,
    metrics,
    accuracyInterval: metrics && metrics.n > 0 ? wilson(metrics.accuracy, metrics.n) : null,
    invalidRate: all.length > 0 ? invalid / all.length : null,
    answers: all.length,
    latency: latencies.length > 0 ? { p50: quantile(latencies, 0.5), p95: quantile(latencies, 0.95), n: latencies.length } : null,
    costPer1000: perItem === null ? null : perItem * 1000,
    projection: project(price, batch, items, perItem, perItemBatch, paidItems, worstTokens),
    predictions,
  };
}

function project(
  price: Price,
  batch: Price,
  items: number,
  perItem: number | null,
  perItemBatch: number | null,
  paidItems: number,
  worst: { prompt: number; completion: number },
): Projection {
  const expected = perItem === null ? NaN : perItem * items;
  return {
    items,
    expected,
    batchExpected: perItemBatch === null ? NaN : perItemBatch * items,
    worst: costOf(price, worst.prompt, worst.completion),
    batchWorst: costOf(batch, worst.prompt, worst.completion),
    remainingExpected: perItem === null ? NaN : perItem * Math.max(0, items - paidItems),
  };
}

/** Per key, the label that counts: the latest valid one, else the latest failed one. */
function finalLabels(rows: readonly KeyLabelRow[]): Map<string, KeyLabelRow> {
  const out = new Map<string, KeyLabelRow>();
  for (const r of rows) {
    const seen = out.get(r.request_key);
    if (!seen || r.status === 'ok' || seen.status !== 'ok') out.set(r.request_key, r);
  }
  return out;
}

/** The run most of the sample's labels are in (a rerun of a pilot opens no run: the answers are all stored). */
function commonestRun(final: Map<string, KeyLabelRow>): number | undefined {
  const counts = new Map<number, number>();
  for (const r of final.values()) counts.set(r.run_id, (counts.get(r.run_id) ?? 0) + 1);
  let best: number | undefined;
  for (const [run, n] of counts) if (best === undefined || n > counts.get(best)!) best = run;
  return best;
}

function groupBy<T>(xs: readonly T[], key: (x: T) => string): Map<string, T[]> {
  const m = new Map<string, T[]>();
  for (const x of xs) {
    const k = key(x);
    const list = m.get(k);
    if (list) list.push(x);
    else m.set(k, [x]);
  }
  return m;
}

/**
 * Wilson's score interval for a proportion p measured on n items, at 95% (z = 1.96): unlike p ± z·SE it stays inside
 * [0, 1] and does not collapse to a point at p = 1 on a small sample.
 */
export function wilson(p: number, n: number, z = 1.959964): { low: number; high: number } {
  const z2 = z * z;
  const centre = (p + z2 / (2 * n)) / (1 + z2 / n);
  const half = (z * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n))) / (1 + z2 / n);
  return { low: Math.max(0, centre - half), high: Math.min(1, centre + half) };
}

/** The q-quantile with linear interpolation between order statistics (numpy's default). */
export function quantile(xs: readonly number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  const h = (s.length - 1) * q;
  const lo = Math.floor(h);
  return s[lo] + (h - lo) * ((s[Math.min(lo + 1, s.length - 1)] ?? s[lo]) - s[lo]);
}
