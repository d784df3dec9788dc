/**
 * Hand-made inline SVG charts for the report: line charts, a confusion-matrix
 * heat map, a reliability diagram and a bar chart. No library and no script: the
 * report is one file that renders offline in any browser, and every chart is a
 * few dozen elements that a test can count.
 */

export const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];

/** Text into XML/HTML: the only escaping function of the report. */
export function esc(s: unknown): string {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

const fmt = (x: number) =>
  Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : Math.abs(x) >= 1 ? x.toFixed(2) : x.toFixed(3);
const r1 = (x: number) => Math.round(x * 10) / 10;

interface Frame {
  width: number;
  height: number;
  left: number;
  right: number;
  top: number;
  bottom: number;
}

const FRAME: Frame = { width: 460, height: 280, left: 52, right: 16, top: 28, bottom: 40 };

/** "Nice" tick values covering [lo, hi]. */
export function ticks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step)
    out.push(Number((Math.round(v / step) * step).toPrecision(12)));
  return out;
}

function open(f: Frame, title: string, role: string): string {
  return (
    `<svg class="chart ${role}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${f.width} ${f.height}" width="${f.width}" height="${f.height}" role="img" aria-label="${esc(title)}">` +
    `<text x="${f.width / 2}" y="16" text-anchor="middle" class="title">${esc(title)}</text>`
  );
}

function axes(
  f: Frame,
  xs: { lo: number; hi: number; label: string; ticks?: number[] },
  ys: { lo: number; hi: number; label: string },
): { sx: (x: number) => number; sy: (y: number) => number; svg: string } {
  const w = f.width - f.left - f.right;
  const h = f.height - f.top - f.bottom;
  const sx = (x: number) => r1(f.left + (xs.hi > xs.lo ? ((x - xs.lo) / (xs.hi - xs.lo)) * w : w / 2));
  const sy = (y: number) => r1(f.top + h - (ys.hi > ys.lo ? ((y - ys.lo) / (ys.hi - ys.lo)) * h : h / 2));
  let svg = `<g class="axes" stroke="#999" stroke-width="1">`;
  svg += `<line x1="${f.left}" y1="${f.top + h}" x2="${f.left + w}" y2="${f.top + h}"/><line x1="${f.left}" y1="${f.top}" x2="${f.left}" y2="${f.top + h}"/></g>`;
  for (const t of xs.ticks ?? ticks(xs.lo, xs.hi)) {
    svg += `<text x="${sx(t)}" y="${f.top + h + 14}" text-anchor="middle" class="tick">${esc(fmt(t))}</text>`;
  }
  for (const t of ticks(ys.lo, ys.hi)) {
    svg += `<line x1="${f.left}" x2="${f.left + w}" y1="${sy(t)}" y2="${sy(t)}" stroke="#eee"/>`;
    svg += `<text x="${f.left - 4}" y="${sy(t) + 3}" text-anchor="end" class="tick">${esc(fmt(t))}</text>`;
  }
  svg += `<text x="${f.left + w / 2}" y="${f.top + h + 30}" text-anchor="middle" class="axis-label">${esc(xs.label)}</text>`;
  svg += `<text transform="translate(12 ${f.top + h / 2}) rotate(-90)" text-anchor="middle" class="axis-label">${esc(ys.label)}</text>`;
  return { sx, sy, svg };
}

export interface Series {
  name: string;
  points: [number, number][];
  dashed?: boolean;
}

/** Lines over a shared x axis (epochs), with a legend. Non-finite points are dropped. */
export function lineChart(o: { title: string; xLabel: string; yLabel: string; series: Series[]; yRange?: [number, number] }): string {
  const series = o.series
    .map((s) => ({ ...s, points: s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y)) }))
    .filter((s) => s.points.length > 0);
  const all = series.flatMap((s) => s.points);
  if (all.length === 0) return emptyChart(o.title, 'no data');
  const xlo = Math.min(...all.map((p) => p[0]));
  const xhi = Math.max(...all.map((p) => p[0]));
  const [ylo, yMax] = o.yRange ?? [Math.min(0, ...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
  let yhi = yMax;
  if (yhi <= ylo) yhi = ylo + 1;
  const xt = xhi - xlo <= 12 ? Array.from({ length: xhi - xlo + 1 }, (_, i) => xlo + i) : undefined;
  const f = { ...FRAME, height: FRAME.height + 16 * Math.ceil(series.length / 3) };
  const a = axes(
    { ...f, bottom: FRAME.bottom + 16 * Math.ceil(series.length / 3) },
    { lo: xlo, hi: xhi, label: o.xLabel, ticks: xt },
    { lo: ylo, hi: yhi, label: o.yLabel },
  );
  let svg = open(f, o.title, 'line-chart') + a.svg;
  series.forEach((s, i) => {
    const color = PALETTE[i % PALETTE.length];
    const pts = s.points.map(([x, y]) => `${a.sx(x)},${a.sy(y)}`).join(' ');
    svg += `<polyline class="series" fill="none" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5 3"' : ''} points="${pts}"><title>${esc(s.name)}</title></polyline>`;
    for (const [x, y] of s.points)
      svg += `<circle cx="${a.sx(x)}" cy="${a.sy(y)}" r="2.5" fill="${color}"><title>${esc(`${s.name}: ${fmt(y)} at ${x}`)}</title></circle>`;
  });
  svg += legend(
    series.map((s) => s.name),
    f.width,
    FRAME.height + 4,
  );
  return `${svg}</svg>`;
}

function legend(names: string[], width: number, y0: number): string {
  let svg = '<g class="legend">';
  const colW = (width - 20) / 3;
  names.forEach((name, i) => {
    const x = 10 + (i % 3) * colW;
    const y = y0 + Math.floor(i / 3) * 16;
    svg += `<rect x="${r1(x)}" y="${y - 9}" width="10" height="10" fill="${PALETTE[i % PALETTE.length]}"/>`;
    svg += `<text x="${r1(x + 14)}" y="${y}" class="tick">${esc(name.length > 34 ? `${name.slice(0, 33)}…` : name)}</text>`;
  });
  return `${svg}</g>`;
}

/** Confusion matrix: rows gold, columns predicted, cells shaded by their share of the row. */
export function heatmap(o: { title: string; labels: string[]; matrix: number[][] }): string {
  const c = o.labels.length;
  if (c === 0 || o.matrix.length !== c) return emptyChart(o.title, 'no data');
  const cell = Math.max(14, Math.min(40, Math.floor(320 / c)));
  const left = 90;
  const top = 40;
  const width = left + cell * c + 20;
  const height = top + cell * c + 44;
  let svg = open({ ...FRAME, width, height }, o.title, 'heatmap');
  o.matrix.forEach((row, i) => {
    const total = row.reduce((a, b) => a + b, 0) || 1;
    row.forEach((v, j) => {
      const share = v / total;
      const fill =
        i === j
          ? `rgba(31,119,180,${(0.08 + 0.92 * share).toFixed(3)})`
          : `rgba(214,39,40,${(share > 0 ? 0.08 + 0.92 * share : 0).toFixed(3)})`;
      svg += `<rect class="cell" x="${left + j * cell}" y="${top + i * cell}" width="${cell}" height="${cell}" fill="${fill}" stroke="#fff"><title>${esc(`gold ${o.labels[i]}, predicted ${o.labels[j]}: ${v}`)}</title></rect>`;
      if (cell >= 22 && v > 0)
        svg += `<text x="${left + j * cell + cell / 2}" y="${top + i * cell + cell / 2 + 4}" text-anchor="middle" class="cell-text">${v}</text>`;
    });
    svg += `<text x="${left - 4}" y="${top + i * cell + cell / 2 + 4}" text-anchor="end" class="tick">${esc(short(o.labels[i]))}</text>`;
  });
  o.labels.forEach((l, j) => {
    svg += `<text transform="translate(${left + j * cell + cell / 2 + 4} ${top + c * cell + 6}) rotate(45)" class="tick">${esc(short(l))}</text>`;
  });
  svg += `<text x="${left + (c * cell) / 2}" y="${top - 8}" text-anchor="middle" class="axis-label">predicted →</text>`;
  svg += `<text transform="translate(12 ${top + (c * cell) / 2}) rotate(-90)" text-anchor="middle" class="axis-label">gold →</text>`;
  return `${svg}</svg>`;
}

const short = (l: string) => (l.length > 12 ? `${l.slice(0, 11)}…` : l);

export interface BinView {
  lo: number;
  hi: number;
  count: number;
  accuracy: number;
  confidence: number;
}

/** Guo et al.'s reliability diagram: accuracy per confidence bin against the diagonal; the gap shaded. */
export function reliabilityDiagram(o: { title: string; bins: BinView[]; ece: number | null }): string {
  if (!o.bins.some((b) => b.count > 0)) return emptyChart(o.title, 'no items with gold and probabilities');
  const a = axes(FRAME, { lo: 0, hi: 1, label: 'confidence (top probability)' }, { lo: 0, hi: 1, label: 'accuracy' });
  let svg = open(FRAME, o.title, 'reliability') + a.svg;
  svg += `<line class="diagonal" x1="${a.sx(0)}" y1="${a.sy(0)}" x2="${a.sx(1)}" y2="${a.sy(1)}" stroke="#888" stroke-dasharray="4 3"/>`;
  for (const b of o.bins) {
    if (b.count === 0) continue;
    const x = a.sx(b.lo) + 1;
    const w = Math.max(1, a.sx(b.hi) - a.sx(b.lo) - 2);
    svg += `<rect class="bar" x="${r1(x)}" y="${a.sy(b.accuracy)}" width="${r1(w)}" height="${r1(a.sy(0) - a.sy(b.accuracy))}" fill="#1f77b4"><title>${esc(`(${fmt(b.lo)}, ${fmt(b.hi)}]: ${b.count} items, accuracy ${fmt(b.accuracy)}, confidence ${fmt(b.confidence)}`)}</title></rect>`;
    const [y1, y2] = [a.sy(b.accuracy), a.sy(b.confidence)].sort((p, q) => p - q);
    if (y2 - y1 > 0.5)
      svg += `<rect class="gap" x="${r1(x)}" y="${y1}" width="${r1(w)}" height="${r1(y2 - y1)}" fill="rgba(214,39,40,0.35)"/>`;
  }
  if (o.ece !== null) svg += `<text x="${FRAME.left + 8}" y="${FRAME.top + 14}" class="tick">ECE ${esc(o.ece.toFixed(4))}</text>`;
  return `${svg}</svg>`;
}

/** Horizontal bars, one per name, on a 0–max scale. */
export function barChart(o: { title: string; unit: string; bars: { name: string; value: number | null }[]; max?: number }): string {
  const bars = o.bars.filter((b): b is { name: string; value: number } => b.value !== null && Number.isFinite(b.value));
  if (bars.length === 0) return emptyChart(o.title, 'no data');
  const max = o.max ?? Math.max(...bars.map((b) => b.value)) * 1.05;
  const left = 150;
  const width = FRAME.width;
  const barH = 20;
  const height = 36 + bars.length * (barH + 6) + 10;
  let svg = open({ ...FRAME, height }, o.title, 'bar-chart');
  bars.forEach((b, i) => {
    const y = 30 + i * (barH + 6);
    const w = max > 0 ? ((width - left - 60) * b.value) / max : 0;
    svg += `<text x="${left - 6}" y="${y + 14}" text-anchor="end" class="tick">${esc(b.name.length > 22 ? `${b.name.slice(0, 21)}…` : b.name)}</text>`;
    svg += `<rect class="bar" x="${left}" y="${y}" width="${r1(Math.max(1, w))}" height="${barH}" fill="${PALETTE[i % PALETTE.length]}"><title>${esc(`${b.name}: ${fmt(b.value)} ${o.unit}`)}</title></rect>`;
    svg += `<text x="${r1(left + Math.max(1, w) + 4)}" y="${y + 14}" class="tick">${esc(`${fmt(b.value)} ${o.unit}`)}</text>`;
  });
  return `${svg}</svg>`;
}

function emptyChart(title: string, why: string): string {
  const f = { ...FRAME, height: 60 };
  return `${open(f, title, 'empty')}<text x="${f.width / 2}" y="40" text-anchor="middle" class="tick">${esc(why)}</text></svg>`;
}
