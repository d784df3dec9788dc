/**
 * The report as one self-contained HTML page: inline CSS, inline SVG, no script,
 * no external reference, so it opens offline and can be mailed as one file.
 */
import type { RunStatus } from '../store/status.ts';
import type { ReportData, StudentReport, TaskReport } from './data.ts';
import { barChart, esc, heatmap, lineChart, reliabilityDiagram, type Series } from './svg.ts';

const pct = (x: number | null | undefined) => (x === null || x === undefined || !Number.isFinite(x) ? '–' : `${(100 * x).toFixed(2)}%`);
const num = (x: number | null | undefined, d = 4) => (x === null || x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(d));
const money = (x: number) => `$${x.toFixed(4)}`;
const bytes = (n: number) => (n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`);

function table(head: string[], rows: (string | number)[][], cls = ''): string {
  const th = head.map((h) => `<th>${esc(h)}</th>`).join('');
  const tr = rows.map((r) => `<tr>${r.map((c) => `<td>${esc(c)}</td>`).join('')}</tr>`).join('\n');
  return `<table class="${cls}"><thead><tr>${th}</tr></thead><tbody>${tr}</tbody></table>`;
}

const CSS = `
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1100px; color: #222; padding: 0 16px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ddd; padding-bottom: 4px; } h3 { font-size: 15px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; } th { background: #f5f5f5; }
td:first-child, th:first-child { text-align: left; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
svg.chart { background: #fff; border: 1px solid #eee; }
svg .title { font-size: 13px; font-weight: 600; } svg .tick { font-size: 10px; fill: #444; } svg .axis-label { font-size: 11px; fill: #333; }
svg .cell-text { font-size: 10px; fill: #111; }
.note { color: #666; font-size: 12px; }
code { background: #f5f5f5; padding: 1px 4px; }
`;

export function renderReport(d: ReportData): string {
  const parts = [
    `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>distillery report: ${esc(d.db)}</title><style>${CSS}</style></head><body>`,
    `<h1>distillery report: <code>${esc(d.db)}</code></h1>`,
    `<p class="note">Runs and spend come from the store; teacher quality is measured against the gold labels of every split; each student's figures are those train.ts wrote (test split), and its reliability diagram comes from its own predictions on the test split.</p>`,
    runsSection(d),
    ...d.tasks.map(teacherSection),
    studentsSection(d.students),
    '</body></html>',
  ];
  return `${parts.join('\n')}\n`;
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
    r.items,
    r.labeled,
    r.failed,
    r.requests,
    r.prompt_tokens + r.completion_tokens,
    money(r.cost),
  ]);
  rows.push([
    'total',
    '',
    '',
    '',
    '',
    '',
    s.total.items,
    s.total.labeled,
    s.total.failed,
    s.total.requests,
    s.total.prompt_tokens + s.total.completion_tokens,
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

function teacherSection(t: TaskReport): string {
  let html = `<h2>Teachers of task <code>${esc(t.task)}</code></h2>`;
  if (!t.teachers) return `${html}<p class="note">No teacher runs yet.</p>`;
  const r = t.teachers;
  html += `<p>${r.items} items, ${r.gold} with a gold label.</p>`;
  html += table(
    ['teacher', 'runs', 'labeled', 'coverage', 'accuracy', 'NLL', 'ECE'],
    r.teachers.map((x) => [
      x.teacher,
      x.runs.join(', '),
      x.labeled,
      pct(x.coverage),
      `${pct(x.accuracy)} (n=${x.accuracy_n})`,
      num(x.nll),
      num(x.ece),
    ]),
    'teachers',
  );
  if (r.agreement.length)
    html += table(
      ['teacher a', 'teacher b', 'items', 'agreement'],
      r.agreement.map((a) => [a.a, a.b, a.n, pct(a.rate)]),
    );
  html += `<div class="charts">${t.teacherReliability.map((x) => reliabilityDiagram({ title: `Reliability: teacher ${x.teacher}`, bins: x.reliability.bins, ece: x.reliability.ece })).join('')}</div>`;
  return html;
}

function studentsSection(students: StudentReport[]): string {
  if (students.length === 0) return `<h2>Students</h2><p class="note">No model given (<code>--model DIR</code>).</p>`;
  let html = `<h2>Students side by side</h2>`;
  html += table(
    ['student', 'kind', 'task', 'test n', 'accuracy', 'teacher agreement', 'ECE', 'parameters', 'size', 'samples/s', 'targets'],
    students.map((s) => {
      const m = s.metrics;
      return [
        s.name,
        s.kind,
        s.task,
        m.test?.n ?? '–',
        pct(m.test?.accuracy),
        pct(m.test?.teacher_agreement),
        num(m.test?.ece),
        m.params ?? '–',
        bytes(s.weightsBytes),
        m.samples_per_second?.toFixed(0) ?? '–',
        targetsText(m.targets),
      ];
    }),
    'students',
  );
  html += `<div class="charts">`;
  html += barChart({
    title: 'Test accuracy against gold',
    unit: '%',
    max: 100,
    bars: students.map((s) => ({ name: s.name, value: s.metrics.test?.accuracy == null ? null : 100 * s.metrics.test.accuracy })),
  });
  html += barChart({
    title: 'Agreement with the teacher',
    unit: '%',
    max: 100,
    bars: students.map((s) => ({
      name: s.name,
      value: s.metrics.test?.teacher_agreement == null ? null : 100 * s.metrics.test.teacher_agreement,
    })),
  });
  html += `</div>`;
  for (const s of students) html += studentDetail(s);
  return html;
}

function targetsText(t: unknown): string {
  if (t === undefined) return '–';
  if (typeof t === 'string') return t;
  const o = t as { teachers?: string; aggregate?: string; calibrate?: boolean };
  return `${o.aggregate ?? 'mean'}(${o.teachers ?? 'all'})${o.calibrate ? ' calibrated' : ''}`;
}

function studentDetail(s: StudentReport): string {
  const h = s.metrics.history ?? [];
  let html = `<h3>${esc(s.name)} <span class="note">(${esc(s.kind)}${s.metrics.command ? `: <code>${esc(s.metrics.command)}</code>` : ''})</span></h3><div class="charts">`;
  const termNames = [...new Set(h.flatMap((e) => Object.keys(e.terms ?? {})))];
  const lossSeries: Series[] = [
    { name: 'loss (weighted sum)', points: h.map((e) => [e.epoch + 1, e.loss]) },
    ...termNames.map((k) => ({ name: k, points: h.map((e): [number, number] => [e.epoch + 1, e.terms?.[k] ?? NaN]), dashed: true })),
  ];
  html += lineChart({ title: 'Loss terms per epoch', xLabel: 'epoch', yLabel: 'loss', series: lossSeries });
  const acc = (k: 'train_accuracy' | 'val_accuracy' | 'test_accuracy') =>
    h.map((e): [number, number] => [e.epoch + 1, e[k] === null || e[k] === undefined ? NaN : 100 * e[k]!]);
  html += lineChart({
    title: 'Accuracy per epoch',
    xLabel: 'epoch',
    yLabel: '%',
    series: [
      { name: 'train (vs target)', points: acc('train_accuracy') },
      { name: 'validation (vs target)', points: acc('val_accuracy') },
      { name: 'test (vs gold)', points: acc('test_accuracy') },
    ],
    yRange: [
      Math.max(
        0,
        Math.floor(Math.min(...[...acc('train_accuracy'), ...acc('test_accuracy')].map((p) => p[1]).filter(Number.isFinite), 100) / 10) *
          10,
      ),
      100,
    ],
  });
  if (s.metrics.test?.confusion)
    html += heatmap({ title: 'Confusion matrix (test split)', labels: s.labels, matrix: s.metrics.test.confusion });
  if (s.reliability) html += reliabilityDiagram({ title: 'Reliability (test split)', bins: s.reliability.bins, ece: s.reliability.ece });
  return `${html}</div>`;
}
