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

/** A value in a tooltip or a bar's label: whole numbers as they are, others to 3–4 significant digits. */
const fmt = (x: number) =>
  Number.isInteger(x)
    ? String(x)
    : Math.abs(x) >= 100
      ? x.toFixed(0)
      : Math.abs(x) >= 10
        ? x.toFixed(1)
        : Math.abs(x) >= 1
          ? x.toFixed(2)
          : x.toFixed(3);
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

/** A "nice" step (1, 2, 2.5 or 5 times a power of ten) near (hi − lo) / count; at least 1 when `integer`. */
function niceStep(lo: number, hi: number, count: number, integer: boolean): number {
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  return integer ? Math.max(1, Math.round(step)) : step;
}

const onStep = (v: number, step: number) => Number((Math.round(v / step) * step).toPrecision(12));

/** "Nice" tick values inside [lo, hi]. */
export function ticks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const step = niceStep(lo, hi, count, false);
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(onStep(v, step));
  return out;
}

export interface Scale {
  lo: number;
  hi: number;
  ticks: number[];
}

/**
 * An axis that holds every value: [min, max] widened outwards to whole steps, so the first and
 * last ticks are the axis' ends and no point lies below the first or above the last. `clamp`
 * keeps the ends inside a range the values cannot leave (0–100 for a percentage).
 */
export function niceScale(values: number[], o: { count?: number; integer?: boolean; clamp?: [number, number] } = {}): Scale {
  const finite = values.filter(Number.isFinite);
  let min = finite.length ? Math.min(...finite) : 0;
  let max = finite.length ? Math.max(...finite) : 1;
  if (!(max > min)) {
    const pad = o.integer ? 1 : Math.abs(min) > 0 ? Math.abs(min) * 0.05 : 1;
    [min, max] = [min - pad, max + pad];
    if (o.integer && o.clamp && min < o.clamp[0]) [min, max] = [o.clamp[0], o.clamp[0] + 2 * pad];
  }
  const step = niceStep(min, max, o.count ?? 5, o.integer ?? false);
  let lo = onStep(Math.floor(min / step + 1e-9) * step, step);
  let hi = onStep(Math.ceil(max / step - 1e-9) * step, step);
  if (o.clamp) [lo, hi] = [Math.max(o.clamp[0], lo), Math.min(o.clamp[1], hi)];
  const out: number[] = [];
  for (let v = lo; v <= hi + step * 1e-9; v += step) out.push(onStep(v, step));
  if (out[out.length - 1] < hi - step * 1e-9) out.push(hi);
  return { lo, hi, ticks: out };
}

/**
 * An integer axis (epochs): every integer from the first value to the last when there are few,
 * else whole steps; half a unit of room at each end keeps the first and last points off the axes.
 */
export function integerScale(min: number, max: number): Scale {
  if (max - min <= 12) return { lo: min - 0.5, hi: max + 0.5, ticks: Array.from({ length: max - min + 1 }, (_, i) => min + i) };
  const step = niceStep(min, max, 8, true);
  const out: number[] = [];
  for (let v = Math.ceil(min / step) * step; v <= max; v += step) out.push(v);
  return { lo: min - 0.5, hi: max + 0.5, ticks: out };
}

/** Tick labels with as many decimals as the ticks need, and no more: epochs 1, 2, 3; 0.25, 0.5, 0.75. */
export function tickLabels(ts: number[]): string[] {
  let d = 0;
  while (d < 4 && !ts.every((t) => Math.abs(t * 10 ** d - Math.round(t * 10 ** d)) < 1e-6)) d++;
  return ts.map((t) => t.toFixed(d));
}

function open(f: Frame, title: string, role: string): string {
  return (
    `<svg class="chart ${role}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${f.width} ${f.height}" width="${f.width}" height="${f.height}" role="img" aria-label="${esc(title)}">` +
    `<text x="${f.width / 2}" y="16" text-anchor="middle" class="title">${esc(title)}</text>`
  );
}

/** The rectangle every data mark of a chart lies in (the browser test checks that they do). */
function plotArea(x: number, y: number, w: number, h: number): string {
  return `<rect class="plot-area" x="${r1(x)}" y="${r1(y)}" width="${r1(w)}" height="${r1(h)}" fill="none" stroke="none"/>`;
}

function axes(
  f: Frame,
  xs: Scale & { label: string },
  ys: Scale & { label: string },
): { sx: (x: number) => number; sy: (y: number) => number; svg: string } {
  const w = f.width - f.left - f.right;
  const h = f.height - f.top - f.bottom;
  const sx = (x: number) => r1(f.left + (xs.hi > xs.lo ? ((x - xs.lo) / (xs.hi - xs.lo)) * w : w / 2));
  const sy = (y: number) => r1(f.top + h - (ys.hi > ys.lo ? ((y - ys.lo) / (ys.hi - ys.lo)) * h : h / 2));
  let svg = plotArea(f.left, f.top, w, h);
  svg += `<g class="axes" stroke="#999" stroke-width="1">`;
  svg += `<line x1="${f.left}" y1="${f.top + h}" x2="${f.left + w}" y2="${f.top + h}"/><line x1="${f.left}" y1="${f.top}" x2="${f.left}" y2="${f.top + h}"/></g>`;
  const xl = tickLabels(xs.ticks);
  xs.ticks.forEach((t, i) => {
    svg += `<text x="${sx(t)}" y="${f.top + h + 14}" text-anchor="middle" class="tick x-tick">${esc(xl[i])}</text>`;
  });
  const yl = tickLabels(ys.ticks);
  ys.ticks.forEach((t, i) => {
    svg += `<line x1="${f.left}" x2="${f.left + w}" y1="${sy(t)}" y2="${sy(t)}" stroke="#eee"/>`;
    svg += `<text x="${f.left - 4}" y="${sy(t) + 3}" text-anchor="end" class="tick y-tick">${esc(yl[i])}</text>`;
  });
  svg += `<text x="${f.left + w / 2}" y="${f.top + h + 30}" text-anchor="middle" class="axis-label">${esc(xs.label)}</text>`;
  svg += `<text transform="translate(12 ${f.top + h / 2}) rotate(-90)" text-anchor="middle" class="axis-label">${esc(ys.label)}</text>`;
  return { sx, sy, svg };
}

export interface Series {
  name: string;
  points: [number, number][];
  dashed?: boolean;
  /** A colour of its own (else the palette's, by position). */
  color?: string;
}

export interface LegendEntry {
  name: string;
  color: string;
  /** How the entry is drawn: a filled square (bars, cells), a line (series), a dashed line. */
  mark?: 'box' | 'line' | 'dashed';
}

const LEGEND_ROW = 16;

/** Lines over an integer x axis (epochs), with a legend. Non-finite points are dropped; both axes hold every point. */
export function lineChart(o: {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  /** Bounds the values cannot leave (e.g. [0, 100] for a percentage): the axis never extends past them. */
  yClamp?: [number, number];
  /** Start the y axis at 0 (losses), else at the lowest point. */
  yFromZero?: boolean;
  /** What the chart says when no series has a point. */
  empty?: string;
  /** A fixed x axis (e.g. 0–100% coverage) instead of one fitted to the points; it must hold them. */
  xScale?: Scale;
}): string {
  const series = o.series
    .map((s, i) => ({
      ...s,
      color: s.color ?? PALETTE[i % PALETTE.length],
      points: s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y)),
    }))
    .filter((s) => s.points.length > 0);
  const all = series.flatMap((s) => s.points);
  if (all.length === 0) return emptyChart(o.title, o.empty ?? 'no data');
  const xv = all.map((p) => p[0]);
  const xs = o.xScale ?? (xv.every(Number.isInteger) ? integerScale(Math.min(...xv), Math.max(...xv)) : niceScale(xv, { count: 8 }));
  const ys = niceScale([...all.map((p) => p[1]), ...(o.yFromZero ? [0] : [])], o.yClamp ? { clamp: o.yClamp } : {});
  const entries = series.map((s): LegendEntry => ({ name: s.name, color: s.color, mark: s.dashed ? 'dashed' : 'line' }));
  const extra = LEGEND_ROW * legendLayout(entries, FRAME.width).rows;
  const f = { ...FRAME, height: FRAME.height + extra };
  const a = axes({ ...f, bottom: FRAME.bottom + extra }, { ...xs, label: o.xLabel }, { ...ys, label: o.yLabel });
  let svg = open(f, o.title, 'line-chart') + a.svg;
  for (const s of series) {
    const pts = s.points.map(([x, y]) => `${a.sx(x)},${a.sy(y)}`).join(' ');
    svg += `<polyline class="series" fill="none" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5 3"' : ''} points="${pts}"><title>${esc(s.name)}</title></polyline>`;
    for (const [x, y] of s.points)
      svg += `<circle cx="${a.sx(x)}" cy="${a.sy(y)}" r="2.5" fill="${s.color}"><title>${esc(`${s.name}: ${fmt(y)} at ${o.xLabel} ${fmt(x)}`)}</title></circle>`;
  }
  svg += legend(entries, f.width, FRAME.height + 4);
  return `${svg}</svg>`;
}

/** A legend's entries flowed left to right under the chart, wrapping to new rows; its height in rows. */
function legendLayout(entries: LegendEntry[], width: number): { rows: number; at: { x: number; row: number; name: string }[] } {
  const at: { x: number; row: number; name: string }[] = [];
  let x = 10;
  let row = 0;
  for (const e of entries) {
    const name = e.name.length > 60 ? `${e.name.slice(0, 59)}…` : e.name;
    // 10px text: about 5.8px a character; 16px for the swatch, 14px between entries.
    const w = 16 + Math.ceil(name.length * 5.8) + 14;
    if (x > 10 && x + w > width - 10) [x, row] = [10, row + 1];
    at.push({ x, row, name });
    x += w;
  }
  return { rows: entries.length ? row + 1 : 0, at };
}

function legend(entries: LegendEntry[], width: number, y0: number): string {
  let svg = '<g class="legend">';
  legendLayout(entries, width).at.forEach(({ x, row, name }, i) => {
    const e = entries[i];
    const y = y0 + row * LEGEND_ROW;
    if ((e.mark ?? 'box') === 'box') svg += `<rect class="swatch" x="${r1(x)}" y="${y - 9}" width="10" height="10" fill="${e.color}"/>`;
    else
      svg += `<line class="swatch" x1="${r1(x)}" x2="${r1(x + 12)}" y1="${y - 4}" y2="${y - 4}" stroke="${e.color}" stroke-width="2"${e.mark === 'dashed' ? ' stroke-dasharray="4 2"' : ''}/>`;
    svg += `<text x="${r1(x + 16)}" y="${y}" class="tick">${esc(name)}</text>`;
  });
  return `${svg}</g>`;
}

const CORRECT = [31, 119, 180];
const WRONG = [214, 39, 40];
/** A cell's colour: its share of the row, blue on the diagonal, red off it. */
const cellFill = (rgb: number[], share: number) => `rgba(${rgb.join(',')},${(share > 0 ? 0.08 + 0.92 * share : 0).toFixed(3)})`;

/** Confusion matrix: rows gold, columns predicted, cells shaded by their share of the row; a colour key beside it. */
export function heatmap(o: { title: string; labels: string[]; matrix: number[][] }): string {
  const c = o.labels.length;
  if (c === 0 || o.matrix.length !== c) return emptyChart(o.title, 'no data');
  const cell = Math.max(14, Math.min(40, Math.floor(320 / c)));
  const left = 90;
  const top = 40;
  const keyW = 110;
  const width = left + cell * c + 20 + keyW;
  const height = Math.max(top + cell * c + 44, top + 150);
  let svg = open({ ...FRAME, width, height }, o.title, 'heatmap') + plotArea(left, top, cell * c, cell * c);
  o.matrix.forEach((row, i) => {
    const total = row.reduce((a, b) => a + b, 0) || 1;
    row.forEach((v, j) => {
      const fill = cellFill(i === j ? CORRECT : WRONG, v / total);
      svg += `<rect class="cell" x="${left + j * cell}" y="${top + i * cell}" width="${cell}" height="${cell}" fill="${fill}" stroke="#fff"><title>${esc(`gold ${o.labels[i]}, predicted ${o.labels[j]}: ${v} (${((100 * v) / total).toFixed(1)}% of the row)`)}</title></rect>`;
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
  return `${svg}${colorKey(left + cell * c + 24, top)}</svg>`;
}

/** The heat map's key: what blue and red mean, and the share of the row each shade stands for. */
function colorKey(x: number, y: number): string {
  let svg = `<g class="color-key"><text x="${x}" y="${y + 4}" class="tick">share of the gold row</text>`;
  const shares = [0.1, 0.25, 0.5, 0.75, 1];
  shares.forEach((s, k) => {
    const yy = y + 14 + k * 16;
    svg += `<rect class="key" x="${x}" y="${yy}" width="14" height="14" fill="${cellFill(CORRECT, s)}"/>`;
    svg += `<rect class="key" x="${x + 16}" y="${yy}" width="14" height="14" fill="${cellFill(WRONG, s)}"/>`;
    svg += `<text x="${x + 36}" y="${yy + 11}" class="tick">${Math.round(100 * s)}%</text>`;
  });
  const yy = y + 14 + shares.length * 16 + 12;
  svg += `<text x="${x}" y="${yy}" class="tick">blue: correct</text><text x="${x}" y="${yy + 13}" class="tick">red: mistaken</text>`;
  return `${svg}</g>`;
}

const short = (l: string) => (l.length > 12 ? `${l.slice(0, 11)}…` : l);

export interface BinView {
  lo: number;
  hi: number;
  count: number;
  accuracy: number;
  confidence: number;
}

const GAP = 'rgba(214,39,40,0.35)';

/** Guo et al.'s reliability diagram: accuracy per confidence bin against the diagonal; the gap shaded; a legend. */
export function reliabilityDiagram(o: { title: string; bins: BinView[]; ece: number | null }): string {
  if (!o.bins.some((b) => b.count > 0)) return emptyChart(o.title, 'no items with gold and probabilities');
  const unit = niceScale([0, 1]);
  const entries: LegendEntry[] = [
    { name: 'accuracy in the bin', color: '#1f77b4' },
    { name: 'gap to mean confidence', color: GAP },
    { name: 'perfect calibration', color: '#888', mark: 'dashed' },
  ];
  const extra = LEGEND_ROW * legendLayout(entries, FRAME.width).rows;
  const f = { ...FRAME, height: FRAME.height + extra };
  const a = axes(
    { ...f, bottom: FRAME.bottom + extra },
    { ...unit, label: 'confidence (top probability)' },
    { ...unit, label: 'accuracy' },
  );
  let svg = open(f, o.title, 'reliability') + a.svg;
  svg += `<line class="diagonal" x1="${a.sx(0)}" y1="${a.sy(0)}" x2="${a.sx(1)}" y2="${a.sy(1)}" stroke="#888" stroke-dasharray="4 3"/>`;
  for (const b of o.bins) {
    if (b.count === 0) continue;
    const x = a.sx(b.lo) + 1;
    const w = Math.max(1, a.sx(b.hi) - a.sx(b.lo) - 2);
    svg += `<rect class="bar" x="${r1(x)}" y="${a.sy(b.accuracy)}" width="${r1(w)}" height="${r1(a.sy(0) - a.sy(b.accuracy))}" fill="#1f77b4"><title>${esc(`(${fmt(b.lo)}, ${fmt(b.hi)}]: ${b.count} items, accuracy ${fmt(b.accuracy)}, confidence ${fmt(b.confidence)}`)}</title></rect>`;
    const [y1, y2] = [a.sy(b.accuracy), a.sy(b.confidence)].sort((p, q) => p - q);
    if (y2 - y1 > 0.5) svg += `<rect class="gap" x="${r1(x)}" y="${y1}" width="${r1(w)}" height="${r1(y2 - y1)}" fill="${GAP}"/>`;
  }
  if (o.ece !== null) svg += `<text x="${FRAME.left + 8}" y="${FRAME.top + 14}" class="tick">ECE ${esc(o.ece.toFixed(4))}</text>`;
  svg += legend(entries, f.width, FRAME.height + 4);
  return `${svg}</svg>`;
}

/** Horizontal bars, one per name, on a 0–max scale. */
export function barChart(o: { title: string; unit: string; bars: { name: string; value: number | null }[]; max?: number }): string {
  const bars = o.bars.filter((b): b is { name: string; value: number } => b.value !== null && Number.isFinite(b.value));
  if (bars.length === 0) return emptyChart(o.title, 'no data');
  const max = Math.max(o.max ?? 0, ...bars.map((b) => b.value * (o.max === undefined ? 1.05 : 1)));
  const left = 150;
  const width = FRAME.width;
  const barH = 20;
  const plotW = width - left - 60;
  const height = 36 + bars.length * (barH + 6) + 10;
  let svg = open({ ...FRAME, height }, o.title, 'bar-chart') + plotArea(left, 30, plotW, bars.length * (barH + 6));
  bars.forEach((b, i) => {
    const y = 30 + i * (barH + 6);
    const w = max > 0 ? (plotW * Math.max(0, b.value)) / max : 0;
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
