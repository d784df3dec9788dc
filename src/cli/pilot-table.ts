/** The pilot's report for people (a table and a few lines) and for machines (one JSON object). */
import { basename } from 'node:path';
import type { ConfigResult, PilotReport } from '../pilot/pilot.ts';
import { formatTable } from './table.ts';

const int = (x: number) => x.toLocaleString('en-US');
const pct = (x: number | null | undefined) => (x === null || x === undefined || Number.isNaN(x) ? '—' : `${(100 * x).toFixed(1)}%`);
const num = (x: number | null | undefined, d = 3) => (x === null || x === undefined || Number.isNaN(x) ? '—' : x.toFixed(d));
const ms = (x: number | undefined) => (x === undefined ? '—' : Math.round(x).toLocaleString('en-US'));
/** Dollars with enough digits to tell small amounts apart. */
export function usd(x: number | null | undefined): string {
  if (x === null || x === undefined || Number.isNaN(x)) return '—';
  if (x === 0) return '$0';
  const digits = x >= 100 ? 0 : x >= 1 ? 2 : Math.min(6, Math.max(2, 1 - Math.floor(Math.log10(x)) + 1));
  return `$${x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })}`;
}

/** "model · prompt.md", with the prompt's folder only where two prompts share a file name. */
export function configNames(r: PilotReport): string[] {
  const prompts = [...new Set(r.configs.map((c) => c.prompt))];
  const short = new Map(prompts.map((p) => [p, basename(p)]));
  const clash = new Set([...short.values()].filter((b, i, all) => all.indexOf(b) !== i));
  return r.configs.map((c) => `${c.model} · ${clash.has(basename(c.prompt)) ? c.prompt : basename(c.prompt)}`);
}

export function pilotLines(r: PilotReport, o: { input?: string } = {}): string[] {
  const names = configNames(r);
  const s = r.sample;
  const lines: string[] = [];
  if (s.gold) {
    const drawn = s.perClass.map((c) => `${c.sampled} ${c.label}`).join(', ');
    lines.push(
      `pilot of task "${r.task}": ${int(s.ids.length)} of the ${int(s.population)} input item(s) with a gold label` +
        `${s.population < r.items ? ` (of ${int(r.items)})` : ''}, stratified by gold label, seed ${s.seed}: ${drawn}`,
    );
  } else {
    lines.push(
      `pilot of task "${r.task}": no gold labels in the input, so no accuracy: ${int(s.ids.length)} of ${int(r.items)} item(s) ` +
        `sampled at random (seed ${s.seed}); the configurations are compared by how often they agree (below)`,
    );
  }
  const head = [
    'configuration',
    'answered',
    ...(s.gold ? ['accuracy', 'macro-F1', 'ECE'] : []),
    'invalid',
    'p50 ms',
    'p95 ms',
    '$/1k items',
  ];
  head.push(`all ${int(r.items)}: expected`, 'worst case', 'batch expected', 'batch worst');
  const rows = r.configs.map((c, i) => [
    names[i],
    `${c.answered}/${s.ids.length}`,
    ...(s.gold ? [withInterval(c), num(c.metrics?.macroF1), num(c.metrics?.ece)] : []),
    pct(c.invalidRate),
    ms(c.latency?.p50),
    ms(c.latency?.p95),
    usd(c.costPer1000),
    usd(c.projection.expected),
    usd(c.projection.worst),
    usd(c.projection.batchExpected),
    usd(c.projection.batchWorst),
  ]);
  lines.push('', ...formatTable([head, ...rows]));
  lines.push(
    '',
    `answered: sampled items with a valid label${s.gold ? ' (the metrics use these)' : ''}; invalid: share of paid answers that were not a valid label`,
    ...(s.gold
      ? ["95% CI: Wilson's interval of the accuracy on this many items (overlapping intervals: sample more to tell them apart)"]
      : []),
    'p50/p95: latency per answered request; $/1k items and expected: the measured mean cost per item, invalid answers included',
    'worst case: every item at --max-tokens, as --max-cost reserves it; batch: at the Batch API price (label.ts --batch)',
  );
  if (!s.gold) {
    lines.push('', 'agreement between configurations (share of the sampled items both answered that get the same label):');
    if (r.agreement.length === 0) lines.push('  (one configuration: nothing to compare; give several --models or --prompts)');
    else {
      const agree = r.agreement.map((p) => [names[p.a], names[p.b], `${p.n}`, pct(p.rate)]);
      lines.push(...formatTable([['configuration', 'and', 'items', 'agree'], ...agree], 2));
    }
  }
  for (const [i, c] of r.configs.entries()) {
    if (c.status === 'completed' || c.status === 'nothing-to-do') continue;
    lines.push(`${names[i]}: ${c.status}${c.message ? ` — ${c.message}` : ''}`);
  }
  const best = bestConfig(r);
  if (best !== undefined) {
    const c = r.configs[best];
    lines.push(
      '',
      `${r.configs.length > 1 ? 'most accurate' : 'the one configuration'}: ${names[best]}. To label everything with it: label.ts --task ${c.prompt} --model ${c.model} ` +
        `--input ${o.input ?? 'FILE'} with the same teacher flags (--soft, --temperature, --max-tokens, --base-url); ` +
        `the ${c.answered + c.failed} sampled answer(s) are reused, not paid again (expected ${usd(c.projection.remainingExpected)} for the rest)`,
    );
    if (c.runId !== undefined) {
      lines.push(
        `its run ${c.runId} holds the sample and label.ts continues it: train/export --teachers ${c.runId} use exactly this configuration ` +
          `(the other configurations' runs stay in the database as teachers of their model)`,
      );
    }
    const close = notTellable(r, best);
    if (close.length > 0) {
      lines.push(
        `not told apart by this sample (overlapping 95% intervals): ${close.map((i) => names[i]).join(', ')}; ` +
          `a larger --sample (same --seed) reuses these answers and asks only for the new items`,
      );
    }
  }
  return lines;
}

/** "95.0% (76–99)": the accuracy and its 95% interval in whole percents. */
function withInterval(c: ConfigResult): string {
  if (!c.metrics || !c.accuracyInterval) return '—';
  const { low, high } = c.accuracyInterval;
  return `${pct(c.metrics.accuracy)} (${Math.floor(100 * low)}–${Math.ceil(100 * high)})`;
}

/** The configurations whose accuracy interval overlaps the best one's: the sample cannot tell them apart. */
export function notTellable(r: PilotReport, best: number): number[] {
  const b = r.configs[best].accuracyInterval;
  if (!b) return [];
  return r.configs.flatMap((c, i) => (i !== best && c.accuracyInterval && c.accuracyInterval.high >= b.low ? [i] : []));
}

/** The most accurate configuration (ties: the cheaper); without gold, none is chosen for the user. */
export function bestConfig(r: PilotReport): number | undefined {
  if (!r.sample.gold) return undefined;
  let best: number | undefined;
  const acc = (c: ConfigResult) => c.metrics?.accuracy ?? -1;
  r.configs.forEach((c, i) => {
    if (!c.metrics) return;
    const b = best === undefined ? undefined : r.configs[best];
    if (!b || acc(c) > acc(b) || (acc(c) === acc(b) && (c.costPer1000 ?? Infinity) < (b.costPer1000 ?? Infinity))) best = i;
  });
  return best;
}

/** The report as one JSON object (NaN as null; per-item predictions left out). */
export function pilotJson(r: PilotReport): string {
  const names = configNames(r);
  return JSON.stringify(
    {
      task: r.task,
      labels: r.labels,
      items: r.items,
      gold: r.sample.gold,
      sample: {
        n: r.sample.ids.length,
        seed: r.sample.seed,
        population: r.sample.population,
        perClass: r.sample.perClass,
        items: r.sample.extIds,
      },
      status: r.status,
      best: bestConfig(r) ?? null,
      notToldApart: (() => {
        const b = bestConfig(r);
        return b === undefined ? [] : notTellable(r, b);
      })(),
      configurations: r.configs.map(({ predictions: _p, ...c }, i) => ({ name: names[i], ...c })),
      agreement: r.agreement.map((p) => ({ ...p, aName: names[p.a], bName: names[p.b] })),
    },
    (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v),
  );
}
