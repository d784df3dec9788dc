/**
 * The report as one self-contained HTML page: inline CSS, inline SVG, no script,
 * no external reference, so it opens offline and can be mailed as one file.
 */
import type { RunStatus } from '../store/status.ts';
import type { CascadeView } from './cascade.ts';
import { REPORT_SPLIT, type Evaluation, type ReportData, type StudentReport, type TaskReport } from './data.ts';
import { headline, objectiveText, onGold, type Headline, type RecipeGroup } from './summary.ts';
import { barChart, esc, heatmap, lineChart, PALETTE, reliabilityDiagram, type Series } from './svg.ts';

const pct = (x: number | null | undefined) => (x === null || x === undefined || !Number.isFinite(x) ? '–' : `${(100 * x).toFixed(2)}%`);
const num = (x: number | null | undefined, d = 4) => (x === null || x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(d));
const money = (x: number) => `$${x.toFixed(4)}`;
/** Counts with thousands separators (235,146), whatever the viewer's locale. */
const count = (n: number) => n.toLocaleString('en-US');
const bytes = (n: number) => (n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`);

/** Columns listed in `words` (and any cell that starts with a letter) read left-aligned; numbers right-aligned. */
function table(head: string[], rows: (string | number)[][], cls = '', words: number[] = []): string {
  const th = head.map((h) => `<th>${esc(h)}</th>`).join('');
  // Words read left-aligned, numbers right-aligned.
  const td = (c: string | number, j: number) =>
    words.includes(j) || (typeof c === 'string' && /^[A-Za-z]/.test(c)) ? `<td class="t">${esc(c)}</td>` : `<td>${esc(c)}</td>`;
  const tr = rows.map((r) => `<tr>${r.map(td).join('')}</tr>`).join('\n');
  return `<table class="${cls}"><thead><tr>${th}</tr></thead><tbody>${tr}</tbody></table>`;
}

const CSS = `
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1100px; color: #222; padding: 0 16px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ddd; padding-bottom: 4px; } h3 { font-size: 15px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; } th { background: #f5f5f5; }
td:first-child, th:first-child, td.t { text-align: left; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
svg.chart { background: #fff; border: 1px solid #eee; }
svg .title { font-size: 13px; font-weight: 600; } svg .tick { font-size: 10px; fill: #444; } svg .axis-label { font-size: 11px; fill: #333; }
svg .cell-text { font-size: 10px; fill: #111; }
.note { color: #666; font-size: 12px; }
.headline { font-size: 16px; background: #f4f8fc; border-left: 4px solid #1f77b4; padding: 8px 12px; margin-bottom: 4px; }
.headline-detail { margin-top: 4px; }
code { background: #f5f5f5; padding: 1px 4px; }
`;

export function renderReport(d: ReportData): string {
  const parts = [
    `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>distillery report: ${esc(d.db)}</title><style>${CSS}</style></head><body>`,
    `<h1>distillery report: <code>${esc(d.db)}</code></h1>`,
    headlineSection(headline(d.students, d.tasks, REPORT_SPLIT)),
    `<p class="note">Every accuracy, NLL and ECE in this report is measured against the gold labels of the <b>${REPORT_SPLIT}</b> split, for teachers and students alike, unless a column says otherwise. Runs and spend come from the store; each student's figures are those train.ts wrote, and its reliability diagram comes from its own predictions.</p>`,
    runsSection(d),
    ...d.tasks.map(pilotSection),
    ...d.tasks.map(teacherSection),
    ...d.tasks.map(reviewerSection),
    studentsSection(d.students),
    evaluationSection(d),
    cascadeSection(d.students),
    ...d.students.map(studentDetail),
    '</body></html>',
  ];
  return `${parts.join('\n')}\n`;
}

/** "student-kd" or "student-kd, student-kd-s2 and student-kd-s3". */
function groupName(g: RecipeGroup): string {
  const m = g.members;
  return m.length === 1 ? m[0] : m.length <= 3 ? `${m.slice(0, -1).join(', ')} and ${m[m.length - 1]}` : `${m[0]} and ${m.length - 1} more`;
}

function groupAccuracy(g: RecipeGroup): string {
  if (g.members.length === 1) return pct(g.accuracy);
  return `${pct(g.accuracy)} (mean of ${g.members.length} runs, ${g.seeds} seed${g.seeds === 1 ? '' : 's'}; ${pct(g.min)}–${pct(g.max)})`;
}

const items = (ns: number[]) =>
  ns.length === 1 ? `${count(ns[0])} ${REPORT_SPLIT} items` : `${ns.map(count).join(' / ')} ${REPORT_SPLIT} items (different splits)`;

function headlineSection(h: Headline | null): string {
  if (!h)
    return `<p class="headline">No student with a ${REPORT_SPLIT} accuracy against gold (give trained model folders with <code>--student DIR</code>).</p>`;
  const b = h.best;
  const seeds = (g: RecipeGroup) => `${g.seeds} seed${g.seeds === 1 ? '' : 's'}`;
  let text = `<b>${esc(groupName(b))}</b> is the best ${b.onGold ? 'model' : 'student'} on the ${esc(h.split)} split: ${esc(groupAccuracy(b))} accuracy`;
  if (h.runnerUp && h.gainPoints !== null) {
    const r = h.runnerUp;
    text += `, <b>${h.gainPoints >= 0 ? '+' : '−'}${Math.abs(h.gainPoints).toFixed(2)} points</b> over <b>${esc(groupName(r))}</b> (${esc(groupAccuracy(r))})`;
    text += `, over ${b.seeds === r.seeds ? `${seeds(b)} each` : `${seeds(b)} (against ${seeds(r)})`} and ${esc(items(h.testItems))}.`;
  } else text += `, over ${seeds(b)} and ${esc(items(h.testItems))}; no other student to compare with.`;
  let html = `<p class="headline">${text}</p><ul class="headline-detail">`;
  for (const g of [b, h.runnerUp].filter((x): x is RecipeGroup => x !== null))
    html += `<li><b>${esc(groupName(g))}</b> (${esc(g.kind)}): ${esc(g.objective)}</li>`;
  const scale = [
    ...h.teachers.map((t) => `teacher ${t.name} ${pct(t.accuracy)} (${count(t.n)} items, its stored labels)`),
    ...h.references.map((g) => `${groupName(g)} (${g.kind} trained on gold) ${groupAccuracy(g)}`),
  ];
  if (scale.length) html += `<li>For scale, on the same split: ${esc(scale.join('; '))}.</li>`;
  if (h.runnerUp && Math.min(b.seeds, h.runnerUp.seeds) < 2)
    html += `<li class="note">With one seed a gap this size may be the seed's doing: train the same recipe again with other seeds (<code>--seed N</code>) and give every folder to the report; it averages runs that differ only in their seed.</li>`;
  return `${html}</ul>`;
}

function runsSection(d: ReportData): string {
  const s = d.status;
  const rows = s.runs.map((r: RunStatus) => [
    r.run,
    r.task,
    r.kind,
    r.teacher,
    r.soft ?? '',
    r.status,
    count(r.items),
    count(r.labeled),
    count(r.failed),
    count(r.requests),
    count(r.prompt_tokens + r.completion_tokens),
    money(r.cost),
  ]);
  rows.push([
    'total',
    '',
    '',
    '',
    '',
    '',
    count(s.total.items),
    count(s.total.labeled),
    count(s.total.failed),
    count(s.total.requests),
    count(s.total.prompt_tokens + s.total.completion_tokens),
    money(s.total.cost),
  ]);
  let html = `<h2>Runs and costs</h2>${table(['run', 'task', 'kind', 'teacher', 'soft', 'status', 'items', 'labeled', 'failed', 'requests', 'tokens', 'cost'], rows, 'runs')}`;
  const relabels = s.runs.filter((r) => r.relabel);
  if (relabels.length) {
    html += `<h3>Relabel passes and drift</h3>${table(
      ['run', 'relabel', 'policies', 'selected', 'status', 'compared', 'changed'],
      relabels.map((r) => [
        r.run,
        r.relabel!.id,
        r.relabel!.policies.join(', '),
        r.relabel!.selected,
        r.relabel!.status,
        r.relabel!.drift?.compared ?? '–',
        r.relabel!.drift?.changed ?? '–',
      ]),
    )}`;
  }
  if (s.batches.length) {
    html += `<h3>Batch API jobs</h3>${table(
      ['job', 'run', 'teacher', 'state', 'API status', 'requests', 'answered', 'invalid', 'failed', 'pending', 'cost'],
      s.batches.map((j) => [
        j.job,
        j.run,
        j.teacher,
        j.state,
        j.remote_status ?? '–',
        j.requests,
        j.answered,
        j.invalid,
        j.failed,
        j.pending,
        j.state === 'done' ? money(j.cost) : `${money(j.reserved)} reserved`,
      ]),
    )}`;
  }
  return html;
}

/** The runs pilot.ts began: each configuration on the pilot's sample, and whether label.ts went on with it. */
function pilotSection(t: TaskReport): string {
  if (t.pilots.length === 0) return '';
  const rows = t.pilots.map((r) => [
    r.run,
    r.teacher,
    r.promptVersion ? r.promptVersion.slice(0, 12) : '–',
    `${count(r.sample)}${r.stratified ? ', stratified by gold' : ''}${r.seed === null ? '' : `, seed ${r.seed}`}`,
    r.onSample ? `${pct(r.onSample.accuracy)} (${count(r.onSample.n)})` : '–',
    r.onSample ? r.onSample.macroF1.toFixed(3) : '–',
    r.labeled > r.sample ? `yes: ${count(r.labeled)} items labeled` : 'no (the sample only)',
  ]);
  return (
    `<h2>Pilot of task <code>${esc(t.task)}</code></h2><p class="note">pilot.ts labeled a sample of items with gold with each configuration before the full run; ` +
    `accuracy and macro-F1 are on that sample (a small sample: see pilot.ts's confidence intervals). A run that label.ts continued holds the sample's answers and the rest, paid once.</p>` +
    table(['run', 'teacher', 'prompt version', 'sample', 'accuracy on the sample (n)', 'macro-F1', 'continued by label.ts'], rows, 'pilots')
  );
}

function teacherSection(t: TaskReport): string {
  let html = `<h2>Teachers of task <code>${esc(t.task)}</code></h2>`;
  if (!t.teachers) return `${html}<p class="note">No teacher runs yet.</p>`;
  const r = t.teachers;
  html += `<p>${count(r.items)} items, ${count(r.gold)} with a gold label; the ${REPORT_SPLIT} split holds ${count(t.splitItems)} items, ${count(t.splitGold)} with gold.</p>`;
  const onSplit = new Map(t.teacherOnSplit.map((x) => [x.teacher, x]));
  const s = REPORT_SPLIT;
  html += table(
    ['teacher', 'runs', 'labeled', 'coverage', `accuracy (${s})`, `NLL (${s})`, `ECE (${s})`, 'accuracy, all splits'],
    r.teachers.map((x) => {
      const o = onSplit.get(x.teacher);
      return [
        x.teacher,
        x.runs.join(', '),
        count(x.labeled),
        pct(x.coverage),
        o && o.accuracy.n ? `${pct(o.accuracy.value)} (n=${count(o.accuracy.n)})` : '–',
        o && o.nll.n ? num(o.nll.value) : '–',
        num(o?.reliability.ece),
        `${pct(x.accuracy)} (n=${count(x.accuracy_n)})`,
      ];
    }),
    'teachers',
  );
  if (t.splitGold === 0) html += `<p class="note">No gold label on the ${s} split: the teachers cannot be measured on it.</p>`;
  html += `<p class="note">"accuracy, all splits" includes the items a teacher may have been trained on (a model trained by this project saw the train split); compare teachers and students on the ${s} columns.</p>`;
  if (r.agreement.length)
    html += table(
      ['teacher a', 'teacher b', 'items (all splits)', 'agreement', 'Cohen’s κ'],
      r.agreement.map((a) => [a.a, a.b, count(a.n), pct(a.rate), num(a.kappa, 3)]),
    );
  html += `<div class="charts">${t.teacherOnSplit.map((x) => reliabilityDiagram({ title: `Reliability: teacher ${x.teacher} (${x.split} split)`, bins: x.reliability.bins, ece: x.reliability.ece })).join('')}</div>`;
  return html;
}

/** The people who reviewed labels (review.ts, Label Studio): their items, agreement with the teachers' target and gold, κ per pair. */
function reviewerSection(t: TaskReport): string {
  const r = t.reviewers;
  if (!r) return '';
  let html = `<h2>Reviewers of task <code>${esc(t.task)}</code></h2>`;
  html += `<p>${count(r.reviewed)} items reviewed, ${count(r.humanGold)} with human gold (the reviewers' majority label)${r.ties ? `, ${count(r.ties)} tied` : ''}.</p>`;
  html += table(
    ['reviewer', 'run', 'items', "agreement with the teachers' target", 'agreement with gold'],
    r.reviewers.map((x) => [
      x.reviewer,
      x.run,
      count(x.items),
      x.target ? `${pct(x.target.rate)} (n=${count(x.target.n)})` : '–',
      `${pct(x.gold.rate)} (n=${count(x.gold.n)})`,
    ]),
    'reviewers',
    [0],
  );
  if (r.pairs.length)
    html += table(
      ['reviewer a', 'reviewer b', 'common items', 'agreement', 'Cohen’s κ'],
      r.pairs.map((p) => [p.a, p.b, count(p.n), pct(p.agreement), num(p.kappa, 3)]),
      'reviewer-pairs',
      [0, 1],
    );
  html += `<p class="note">Human gold is the training target of the items it covers (train.ts --no-human-labels: the teachers' target), and gold for --calibrate and --aggregate weighted where no gold was imported. The teachers' target here is the mean of every teacher but the reviewers.</p>`;
  return html;
}

function studentsSection(students: StudentReport[]): string {
  if (students.length === 0) return `<h2>Students</h2><p class="note">No model given (<code>--student DIR</code>).</p>`;
  let html = `<h2>Students side by side</h2>`;
  html += table(
    [
      'student',
      'kind',
      'trained on',
      'seed',
      `${REPORT_SPLIT} n`,
      'accuracy',
      'teacher agreement',
      'ECE',
      'parameters',
      'size',
      'samples/s',
    ],
    students.map((s) => {
      const m = s.metrics;
      return [
        s.name,
        s.kind,
        objectiveText(m),
        m.seed ?? m.config?.seed ?? '–',
        m.test ? count(m.test.n) : '–',
        pct(m.test?.accuracy),
        pct(m.test?.teacher_agreement),
        num(m.test?.ece),
        m.params === undefined ? '–' : count(m.params),
        bytes(s.weightsBytes),
        m.samples_per_second === undefined ? '–' : count(Math.round(m.samples_per_second)),
      ];
    }),
    'students',
    [2],
  );
  html += `<div class="charts">`;
  html += barChart({
    title: `Accuracy against gold (${REPORT_SPLIT} split)`,
    unit: '%',
    max: 100,
    bars: students.map((s) => ({ name: s.name, value: s.metrics.test?.accuracy == null ? null : 100 * s.metrics.test.accuracy })),
  });
  html += barChart({
    title: `Agreement with the teacher (${REPORT_SPLIT} split)`,
    unit: '%',
    max: 100,
    bars: students.map((s) => ({
      name: s.name,
      value: s.metrics.test?.teacher_agreement == null ? null : 100 * s.metrics.test.teacher_agreement,
    })),
  });
  html += lineChart({
    title: 'Validation accuracy per epoch, every student',
    xLabel: 'epoch',
    yLabel: '% (each against its own targets)',
    yClamp: [0, 100],
    empty: 'no validation slice (train.ts holds one out from 50 training items up)',
    series: students.map((s, i) => ({
      name: `${s.name} (vs ${onGold(s) ? 'gold' : 'its targets'})`,
      color: PALETTE[i % PALETTE.length],
      points: (s.metrics.history ?? []).map((e): [number, number] => [e.epoch + 1, e.val_accuracy == null ? NaN : 100 * e.val_accuracy]),
    })),
  });
  html += `</div><p class="note">Validation is the 10% of the train split held out by train.ts, scored against what each model trained on (the teachers' labels, or gold for a model trained on gold); the ${REPORT_SPLIT} columns are against gold.</p>`;
  return html;
}

/**
 * Teachers and students evaluated on the same split from their own probabilities: the table,
 * and the accuracy–coverage curves where the evaluation module supplied them.
 */
export function evaluationSection(d: Pick<ReportData, 'tasks' | 'students'>): string {
  // Students keep their colour from the other charts; teachers take the next ones.
  const colour = (k: number) => PALETTE[k % PALETTE.length];
  const rows: { name: string; role: string; e: Evaluation; color: string }[] = [
    ...d.tasks
      .flatMap((t) => t.teacherOnSplit)
      .flatMap((x, k) =>
        x.evaluation ? [{ name: x.teacher, role: 'teacher (stored labels)', e: x.evaluation, color: colour(d.students.length + k) }] : [],
      ),
    ...d.students.flatMap((s, i) =>
      s.evaluation
        ? [{ name: s.name, role: onGold(s) ? `${s.kind}, trained on gold` : `${s.kind} student`, e: s.evaluation, color: colour(i) }]
        : [],
    ),
  ];
  if (rows.length === 0) return '';
  const withF1 = rows.some((r) => r.e.macroF1 !== null);
  let html = `<h2>Evaluation on the ${REPORT_SPLIT} split</h2>`;
  html += table(
    ['model', 'role', 'split', 'n', 'accuracy', ...(withF1 ? ['macro-F1'] : []), 'ECE'],
    rows.map((r) => [r.name, r.role, r.e.split, count(r.e.n), pct(r.e.accuracy), ...(withF1 ? [num(r.e.macroF1)] : []), num(r.e.ece)]),
    'evaluation',
  );
  const curves = rows.filter((r) => r.e.coverage && r.e.coverage.length > 0);
  if (curves.length)
    html += `<div class="charts">${lineChart({
      title: 'Accuracy against coverage (most confident items first)',
      xLabel: 'coverage: share of items kept (%)',
      yLabel: 'accuracy (%)',
      yClamp: [0, 100],
      xScale: { lo: 0, hi: 100, ticks: [0, 20, 40, 60, 80, 100] },
      series: curves.map((r) => ({
        name: r.name,
        color: r.color,
        points: r.e.coverage!.map((p): [number, number] => [100 * p.coverage, 100 * p.accuracy]),
      })),
    })}</div>`;
  return html;
}

/** Students with a cascade: what the fit promised on its data, and what the rule does on the report's split. */
export function cascadeSection(students: StudentReport[]): string {
  const withCascade = students.filter((s): s is StudentReport & { cascade: CascadeView } => !!s.cascade);
  if (withCascade.length === 0) return '';
  const s = REPORT_SPLIT;
  let html = `<h2>Cascades: which items the student answers alone</h2>`;
  html += table(
    [
      'student',
      'target accuracy',
      'fitted on',
      'fit: student answers',
      'fit: its accuracy',
      `${s}: student answers`,
      `${s}: its accuracy (gold)`,
      `target met on ${s}`,
      'teacher calls avoided per 1,000 items',
    ],
    withCascade.map(({ name, cascade: c }) => {
      const o = c.onSplit;
      return [
        c.stale ? `${name} (retrained since the fit: refit)` : name,
        pct(c.target),
        `${c.fit.split}, ${count(c.fit.n)} items, ${c.fit.reference} labels`,
        pct(c.fit.coverage),
        pct(c.fit.accuracy),
        o ? `${pct(o.coverage)} (${count(o.student)} of ${count(o.n)})` : '–',
        o ? pct(o.accuracy) : '–',
        o && o.accuracy !== null ? (o.accuracy >= c.target ? 'yes' : 'no') : '–',
        o ? count(Math.round(1000 * o.coverage)) : '–',
      ];
    }),
    'cascades',
  );
  html += `<p class="note">A cascade (<code>cascade.ts fit</code>) lets the student answer an item when its confidence reaches its predicted class's threshold, and asks the teacher otherwise. It is fitted on held-out data, never the ${s} split, so the ${s} columns check its promise on items it has not seen.</p>`;
  // The thresholds per class: one column a class when the students share their labels.
  const threshold = (t: { threshold: number | null }) => (t.threshold === null ? 'never' : num(t.threshold, 3));
  const labels = withCascade[0].cascade.thresholds.map((t) => t.label);
  const shared = withCascade.every(({ cascade: c }) => c.thresholds.map((t) => t.label).join('\n') === labels.join('\n'));
  html += shared
    ? table(
        ['thresholds', ...labels],
        withCascade.map(({ name, cascade: c }) => [name, ...c.thresholds.map(threshold)]),
        'thresholds',
      )
    : table(
        ['student', 'thresholds'],
        withCascade.map(({ name, cascade: c }) => [name, c.thresholds.map((t) => `${t.label}: ${threshold(t)}`).join(', ')]),
        'thresholds',
      );
  return html;
}

function studentDetail(s: StudentReport): string {
  const h = s.metrics.history ?? [];
  let html = `<h3>${esc(s.name)} <span class="note">(${esc(s.kind)}: ${esc(objectiveText(s.metrics))}${s.metrics.command ? `; <code>${esc(s.metrics.command)}</code>` : ''})</span></h3><div class="charts">`;
  const termNames = [...new Set(h.flatMap((e) => Object.keys(e.terms ?? {})))];
  const lossSeries: Series[] = [
    { name: 'loss (weighted sum)', points: h.map((e) => [e.epoch + 1, e.loss]) },
    ...termNames.map((k) => ({ name: k, points: h.map((e): [number, number] => [e.epoch + 1, e.terms?.[k] ?? NaN]), dashed: true })),
  ];
  html += lineChart({ title: 'Loss terms per epoch', xLabel: 'epoch', yLabel: 'loss', series: lossSeries, yFromZero: true });
  const acc = (k: 'train_accuracy' | 'val_accuracy' | 'test_accuracy') =>
    h.map((e): [number, number] => [e.epoch + 1, e[k] === null || e[k] === undefined ? NaN : 100 * e[k]!]);
  const against = onGold(s) ? 'gold' : 'targets';
  html += lineChart({
    title: 'Accuracy per epoch',
    xLabel: 'epoch',
    yLabel: '%',
    yClamp: [0, 100],
    series: [
      { name: `train (vs ${against})`, points: acc('train_accuracy') },
      { name: `validation (vs ${against})`, points: acc('val_accuracy') },
      { name: `${REPORT_SPLIT} (vs gold)`, points: acc('test_accuracy') },
    ],
  });
  if (s.metrics.test?.confusion)
    html += heatmap({ title: `Confusion matrix (${REPORT_SPLIT} split)`, labels: s.labels, matrix: s.metrics.test.confusion });
  if (s.reliability)
    html += reliabilityDiagram({ title: `Reliability (${REPORT_SPLIT} split)`, bins: s.reliability.bins, ece: s.reliability.ece });
  return `${html}</div>`;
}
