/**
 * The report: its charts and escaping as functions, then the CLI end to end
 * (a teacher, a student, the HTML), then the page in a real headless Chromium
 * (skipped, saying why, when no Chromium is installed).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { writeShapes } from '../src/datasets/shapes.ts';
import type { ReportData, StudentMetrics, StudentReport } from '../src/report/data.ts';
import { CASCADE_FILE, recordedDir, weightsHash, writeCascade, type CascadeFile } from '../src/cascade/schema.ts';
import { cascadeView } from '../src/report/cascade.ts';
import { cascadeSection, renderReport } from '../src/report/html.ts';
import { headline, objectiveText, recipeGroups } from '../src/report/summary.ts';
import { esc, heatmap, lineChart, niceScale, reliabilityDiagram, tickLabels, ticks } from '../src/report/svg.ts';
import { runScript, workDir } from './helpers.ts';

const EVIL = '<script>alert("x")</script>';

/** The attributes of every `<tag …>` in an SVG string, as numbers where they are numbers. */
function elements(svg: string, tag: string): Record<string, string>[] {
  return [...svg.matchAll(new RegExp(`<${tag}\\b([^>]*)>`, 'g'))].map((m) =>
    Object.fromEntries([...m[1].matchAll(/([\w-]+)="([^"]*)"/g)].map((a) => [a[1], a[2]])),
  );
}

/**
 * Every data mark (circle, polyline point, bar, gap, cell) of each chart that lies outside the
 * chart's plot area, as text; what the browser test checks on the laid-out page, here on the markup.
 */
function marksOutside(html: string): string[] {
  const out: string[] = [];
  for (const svg of html.match(/<svg [\s\S]*?<\/svg>/g) ?? []) {
    const title = /aria-label="([^"]*)"/.exec(svg)?.[1];
    const [area] = elements(svg, 'rect').filter((r) => r.class === 'plot-area');
    if (!area) continue;
    const [x0, y0] = [Number(area.x), Number(area.y)];
    const [x1, y1] = [x0 + Number(area.width), y0 + Number(area.height)];
    const inside = (x: number, y: number) => x >= x0 - 0.5 && x <= x1 + 0.5 && y >= y0 - 0.5 && y <= y1 + 0.5;
    for (const c of elements(svg, 'circle')) if (!inside(Number(c.cx), Number(c.cy))) out.push(`${title}: circle at ${c.cx},${c.cy}`);
    for (const p of elements(svg, 'polyline'))
      for (const pt of p.points.split(' ')) {
        const [x, y] = pt.split(',').map(Number);
        if (!inside(x, y)) out.push(`${title}: polyline point ${pt}`);
      }
    for (const r of elements(svg, 'rect').filter((e) => ['bar', 'gap', 'cell'].includes(e.class))) {
      const [x, y, w, h] = [r.x, r.y, r.width, r.height].map(Number);
      if (!inside(x, y) || !inside(x + w, y + h)) out.push(`${title}: ${r.class} ${x},${y} ${w}×${h}`);
    }
  }
  return out;
}

/** A cascade file for a student folder, every class at one threshold (null: the student never answers alone). */
function cascadeFor(dir: string, labels: string[], thresholds: (number | null)[]): CascadeFile {
  const file = path.join(dir, CASCADE_FILE);
  return {
    format: 'distillery-cascade',
    version: 1,
    student: {
      dir: recordedDir(file, dir),
      weights_sha256: fs.existsSync(path.join(dir, 'weights.bin')) ? weightsHash(dir) : '0'.repeat(64),
    },
    task: 't',
    labels,
    target: 0.9,
    bootstrap: { confidence: 0.95, resamples: 100, seed: 1, min_items: 30 },
    data: { split: 'val', n: 40, reference: 'gold', of: 40 },
    thresholds: labels.map((label, k) => ({
      label,
      threshold: thresholds[k],
      predicted: 10,
      accepted: 5,
      accuracy: 0.95,
      lower_bound: 0.9,
      candidates: 3,
    })),
    expected: { coverage: 0.5, accuracy: 0.95 },
  };
}

/** metrics.json as train.ts writes it, for a recipe: distilled (KD + CE), its hard-label twin, or on gold. */
function trainedMetrics(recipe: 'kd' | 'hard' | 'gold', seed: number, accuracy: number): StudentMetrics {
  const settings =
    recipe === 'kd'
      ? { ceWeight: 0.1, kdWeight: 0.9, kdTemperature: 4 }
      : recipe === 'hard'
        ? { kdWeight: 0, ceWeight: 1 }
        : { ceWeight: 1 };
  const terms: Record<string, number> = recipe === 'kd' ? { ce: 0.05, kd: 0.4 } : { ce: 0.3 };
  return {
    seed,
    student: { kind: recipe === 'gold' ? 'cnn' : 'vit', numClasses: 3 },
    params: recipe === 'gold' ? 430890 : 1234567,
    config: { epochs: 2, seed, distill: recipe === 'gold' ? ['ce'] : ['ce', 'kd'], settings },
    targets: recipe === 'gold' ? 'gold' : { teachers: 'cnn', aggregate: 'mean', calibrate: false },
    history: [0, 1].map((epoch) => ({ epoch, loss: 1, terms, train_accuracy: 0.9, val_accuracy: 0.9, test_accuracy: accuracy })),
    test: { n: 400, accuracy, teacher_agreement: 0.9, ece: 0.05, confusion: [] },
  };
}

const model = (name: string, metrics: StudentMetrics): StudentReport => ({
  name,
  task: 't',
  labels: ['a', 'b', 'c'],
  kind: metrics.student!.kind!,
  weightsBytes: 1,
  metrics,
  reliability: null,
});

function handMadeData(): ReportData {
  const bins = Array.from({ length: 15 }, (_, b) => ({
    lo: b / 15,
    hi: (b + 1) / 15,
    count: b > 9 ? 10 : 0,
    accuracy: 0.9,
    confidence: (b + 0.5) / 15,
  }));
  return {
    db: 'x.db',
    status: {
      runs: [
        {
          run: 1,
          task: 't',
          kind: 'llm',
          teacher: EVIL,
          base_url: null,
          prompt_version: null,
          soft: 'logprobs',
          status: 'completed',
          started_at: '',
          ended_at: null,
          message: null,
          relabel: null,
          items: 3,
          labeled: 3,
          failed: 0,
          pending: 0,
          requests: 3,
          errors: 0,
          prompt_tokens: 30,
          completion_tokens: 9,
          cost: 0.0012,
        },
      ],
      batches: [],
      tasks: [],
      total: { items: 3, labeled: 3, failed: 0, pending: 0, requests: 3, errors: 0, prompt_tokens: 30, completion_tokens: 9, cost: 0.0012 },
    },
    tasks: [],
    students: [
      {
        name: 'vit-kd',
        task: 't',
        labels: ['a', EVIL, 'c'],
        kind: 'vit',
        weightsBytes: 4096,
        metrics: {
          history: [0, 1, 2].map((e) => ({
            epoch: e,
            loss: 1 / (e + 1),
            terms: { ce: 0.5 / (e + 1), kd: 0.4 / (e + 1) },
            train_accuracy: 0.75 + e / 10,
            // Below every train and test point: the axis must still hold it (it used to start at 70).
            val_accuracy: e === 0 ? 0.68 : 0.8,
            test_accuracy: 0.72 + e / 10,
          })),
          test: {
            n: 30,
            accuracy: 0.7,
            teacher_agreement: 0.8,
            ece: 0.05,
            confusion: [
              [8, 1, 1],
              [1, 7, 2],
              [0, 2, 8],
            ],
          },
          samples_per_second: 120,
          params: 1234567,
          seed: 1,
          config: { seed: 1, distill: ['ce', 'kd'], settings: { ceWeight: 0.1, kdWeight: 0.9, kdTemperature: 4 } },
          targets: { teachers: 'cnn', aggregate: 'mean', calibrate: false },
        },
        reliability: { n: 50, ece: 0.1, bins },
        evaluation: {
          split: 'test',
          n: 30,
          accuracy: 0.7,
          macroF1: 0.69,
          ece: 0.05,
          coverage: [0.1, 0.5, 1].map((c) => ({ coverage: c, accuracy: 1 - 0.3 * c })),
        },
      },
    ],
  };
}

describe('report: charts and page', () => {
  test('ticks are round numbers covering the range', () => {
    assert.deepEqual(ticks(0, 1), [0, 0.2, 0.4, 0.6, 0.8, 1]);
    assert.deepEqual(ticks(0, 100), [0, 20, 40, 60, 80, 100]);
    assert.deepEqual(ticks(3, 3), [3]);
  });

  test('an axis holds every value: its ends are ticks at or beyond the lowest and highest value', () => {
    // The defect: a validation point at 68% under an axis starting at 70; a loss above the top tick.
    const acc = niceScale([68.2, 71, 93.5], { clamp: [0, 100] });
    assert.ok(acc.lo <= 68.2 && acc.hi >= 93.5, `${acc.lo}–${acc.hi}`);
    assert.equal(acc.ticks[0], acc.lo);
    assert.equal(acc.ticks[acc.ticks.length - 1], acc.hi);
    const loss = niceScale([0, 3.3049], {});
    assert.deepEqual([loss.lo, loss.hi], [0, 4]);
    assert.equal(loss.ticks[loss.ticks.length - 1], 4);
    assert.equal(niceScale([97, 99.9], { clamp: [0, 100] }).hi, 100, 'a percentage axis stops at 100');
    assert.deepEqual(tickLabels([1, 2, 3]), ['1', '2', '3'], 'epochs are whole numbers');
    assert.deepEqual(tickLabels([0, 0.25, 0.5]), ['0.00', '0.25', '0.50']);
    assert.deepEqual(tickLabels([87.5, 90, 92.5]), ['87.5', '90.0', '92.5']);
  });

  test('what each student trained on: the distilled one, its hard-label twin, a model on gold', () => {
    assert.equal(objectiveText(trainedMetrics('kd', 1, 0.9)), '0.1·CE to hard labels of cnn + 0.9·KD (T=4) to soft labels of cnn');
    // The twin's --distill still lists kd, at weight 0: the loss had CE alone (its history's terms).
    assert.equal(objectiveText(trainedMetrics('hard', 1, 0.9)), 'CE to hard labels of cnn');
    assert.equal(objectiveText(trainedMetrics('gold', 1, 0.9)), 'CE to gold labels');
    const several = { ...trainedMetrics('kd', 1, 0.9), targets: { teachers: 'a,b', aggregate: 'vote' } };
    assert.match(objectiveText(several), /KD \(T=4\) to soft labels of vote\(a, b\)/);
    assert.match(
      objectiveText({ ...trainedMetrics('hard', 1, 0.9), targets: { teachers: 'all', aggregate: 'mean' } }),
      /of mean of all teachers$/,
    );
  });

  test('the headline: runs that differ only in their seed are one recipe; the best distilled recipe against the next', () => {
    const students = [
      model('kd-s1', trainedMetrics('kd', 1, 0.9)),
      model('kd-s2', trainedMetrics('kd', 2, 0.92)),
      model('hard-s1', trainedMetrics('hard', 1, 0.85)),
      model('teacher', trainedMetrics('gold', 1, 0.95)),
    ];
    const groups = recipeGroups(students);
    assert.deepEqual(
      groups.map((g) => [g.members, g.seeds]),
      [
        [['kd-s1', 'kd-s2'], 2],
        [['hard-s1'], 1],
        [['teacher'], 1],
      ],
    );
    const h = headline(students, [], 'test')!;
    // The teacher (trained on gold) is better still, but it is shown for scale, not as a student.
    assert.deepEqual(h.best.members, ['kd-s1', 'kd-s2']);
    assert.deepEqual(h.runnerUp?.members, ['hard-s1']);
    assert.ok(Math.abs(h.gainPoints! - 6) < 1e-9, String(h.gainPoints));
    assert.deepEqual(h.testItems, [400]);
    assert.deepEqual(
      h.references.map((g) => g.members),
      [['teacher']],
    );
    const html = renderReport({ ...handMadeData(), students });
    assert.match(
      html,
      /<p class="headline"><b>kd-s1 and kd-s2<\/b> is the best student on the test split: 91\.00% \(mean of 2 runs, 2 seeds; 90\.00%–92\.00%\) accuracy, <b>\+6\.00 points<\/b> over <b>hard-s1<\/b> \(85\.00%\), over 2 seeds \(against 1 seed\) and 400 test items\.<\/p>/,
    );
    assert.match(html, /<td class="t">CE to hard labels of cnn<\/td>/);
    assert.match(html, /<td>1,234,567<\/td>/, 'parameter counts with thousands separators');
  });

  test('charts: one cell per confusion entry, one bar per non-empty bin, a polyline per series', () => {
    const hm = heatmap({
      title: 'c',
      labels: ['a', 'b', 'c'],
      matrix: [
        [1, 0, 0],
        [0, 1, 0],
        [0, 0, 1],
      ],
    });
    assert.equal(hm.match(/class="cell"/g)?.length, 9);
    const bins = Array.from({ length: 15 }, (_, b) => ({ lo: b / 15, hi: (b + 1) / 15, count: b % 2, accuracy: 0.5, confidence: 0.6 }));
    assert.equal(reliabilityDiagram({ title: 'r', bins, ece: 0.1 }).match(/class="bar"/g)?.length, 7);
    const lc = lineChart({
      title: 'l',
      xLabel: 'epoch',
      yLabel: 'loss',
      series: [
        {
          name: 'a',
          points: [
            [1, 1],
            [2, 0.5],
          ],
        },
        {
          name: 'b',
          points: [
            [1, NaN],
            [2, 0.2],
          ],
        },
      ],
    });
    assert.equal(lc.match(/<polyline/g)?.length, 2);
    assert.doesNotMatch(lc, /NaN/);
    assert.match(lineChart({ title: 'e', xLabel: 'x', yLabel: 'y', series: [] }), /no data/);
  });

  test("a cascade on the report's split: the student answers where its confidence reaches its class's threshold", () => {
    const labels = ['a', 'b', 'c'];
    const c = cascadeFor('/nowhere', labels, [0.8, null, 0.6]);
    // Items: a at 0.9 (answers, right), a at 0.7 (below 0.8: teacher), b at 0.95 (b never), c at 0.6 (answers, wrong: gold a).
    const probs = Float32Array.from([0.9, 0.05, 0.05, 0.7, 0.2, 0.1, 0.025, 0.95, 0.025, 0.3, 0.1, 0.6]);
    const v = cascadeView('/nowhere', { file: 'x/cascade.json', cascade: c }, { name: 'test', probs, gold: [0, 0, 1, 0] });
    assert.deepEqual(v.onSplit, { split: 'test', n: 4, student: 2, coverage: 0.5, accuracy: 0.5 });
    assert.equal(v.stale, false);
    const html = cascadeSection([{ ...model('s', trainedMetrics('kd', 1, 0.9)), cascade: v }]);
    assert.match(html, /<td>50\.00% \(2 of 4\)<\/td><td>50\.00%<\/td><td class="t">no<\/td><td>500<\/td>/);
    assert.match(html, /<tr><td class="t">s<\/td><td>0\.800<\/td><td class="t">never<\/td><td>0\.600<\/td><\/tr>/);
    assert.equal(cascadeSection([model('s', trainedMetrics('kd', 1, 0.9))]), '', 'no cascade, no section');
  });

  test('the page: every mark inside its plot area, legends, a colour key, whole-number epochs', () => {
    const html = renderReport(handMadeData());
    assert.deepEqual(marksOutside(html), []);
    for (const svg of html.match(/<svg class="chart (line-chart|reliability)[\s\S]*?<\/svg>/g) ?? [])
      assert.match(svg, /<g class="legend"><(rect|line) class="swatch"/, `a legend in ${/aria-label="([^"]*)"/.exec(svg)?.[1]}`);
    assert.match(html, /<svg class="chart heatmap[\s\S]*<g class="color-key">[\s\S]*blue: correct[\s\S]*red: mistaken/);
    const epochTicks = [...html.matchAll(/<svg class="chart line-chart[\s\S]*?<\/svg>/g)]
      .filter((m) => m[0].includes('>epoch</text>'))
      .flatMap((m) => [...m[0].matchAll(/class="tick x-tick">([^<]*)</g)].map((t) => t[1]));
    assert.deepEqual([...new Set(epochTicks)], ['1', '2', '3']);
    // One chart of every student's validation curve, and the accuracy–coverage curves of the evaluation.
    assert.match(html, /aria-label="Validation accuracy per epoch, every student"/);
    assert.match(html, /aria-label="Accuracy against coverage \(most confident items first\)"/);
    assert.match(html, /<th>macro-F1<\/th>/);
    // The hand-made chart that used to draw its 68% point under an axis starting at 70.
    assert.ok(
      marksOutside(html.replace(/class="plot-area" x="[\d.]+" y="[\d.]+"/g, 'class="plot-area" x="52" y="200"')).length > 0,
      'the check finds a mark outside',
    );
  });

  test('the page is self-contained and escapes everything it did not write itself', () => {
    const html = renderReport(handMadeData());
    assert.doesNotMatch(html, /<script/i);
    assert.match(html, /&lt;script&gt;alert\(&quot;x&quot;\)&lt;\/script&gt;/);
    assert.doesNotMatch(html, /\b(src|href)=/i, 'no external or embedded references');
    assert.doesNotMatch(html, /https?:\/\/(?!www\.w3\.org\/2000\/svg)/, 'no URL but the SVG namespace');
    assert.equal(esc(`a&b<"'>`), 'a&amp;b&lt;&quot;&#39;&gt;');
    // Loss, accuracy, confusion, reliability for the student; two bar charts; the validation curves; accuracy–coverage.
    assert.equal(html.match(/<svg /g)?.length, 8);
  });
});

// ---------------------------------------------------------------------------------------

function chromiumPath(): string | undefined {
  const candidates = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'];
  return candidates.find((p): p is string => !!p && fs.existsSync(p));
}

describe('report: CLI and browser', () => {
  let reportFile: string | undefined;

  test('report.ts over a store with a teacher, two seeds of a distilled student, its hard-label twin and a model on gold', async () => {
    const dir = workDir();
    // 30 a class: 60 training items, enough for train.ts to hold out a validation slice (from 50).
    writeShapes(dir, 30, 12);
    const input = path.join(dir, 'shapes.jsonl');
    const rows = fs
      .readFileSync(input, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    fs.writeFileSync(input, rows.map((r, i) => JSON.stringify({ ...r, split: i % 3 === 0 ? 'test' : 'train' })).join('\n') + '\n');
    const db = path.join(dir, 'r.db');
    const ok = (r: Awaited<ReturnType<typeof runScript>>) => {
      assert.equal(r.code, 0, `exit ${r.code}: ${r.stderr}`);
      return r;
    };
    ok(await runScript('import', ['--task', 'prompts/shapes.md', '--input', input, '--db', db]));
    const common = ['--db', db, '--task', 'shapes', '--batch-size', '16', '--backend', 'wasm', '--warmup', '0', '--lr', '0.01'];
    ok(
      await runScript('train', [
        ...common,
        '--arch',
        'mlp',
        '--hidden',
        '16',
        '--supervised',
        '--epochs',
        '3',
        '--out',
        path.join(dir, 'teacher'),
      ]),
    );
    ok(
      await runScript('ingest-logits', [
        '--db',
        db,
        '--task',
        'prompts/shapes.md',
        '--teacher',
        'mlp',
        '--from-model',
        path.join(dir, 'teacher'),
        '--backend',
        'wasm',
      ]),
    );
    ok(await runScript('train', [...common, '--arch', 'logreg', '--epochs', '2', '--out', path.join(dir, 'student')]));
    // The same recipe with another seed, and the hard-label twin (KD off): the headline groups and compares them.
    ok(await runScript('train', [...common, '--arch', 'logreg', '--epochs', '2', '--seed', '2', '--out', path.join(dir, 'student-s2')]));
    const twin = ['--arch', 'logreg', '--epochs', '2', '--kd-weight', '0', '--ce-weight', '1', '--out', path.join(dir, 'twin')];
    ok(await runScript('train', [...common, ...twin]));
    // A cascade in the distilled student's folder that lets it answer everything: on the test split it must
    // answer every item, at the accuracy train.ts measured there.
    const labels = (JSON.parse(fs.readFileSync(path.join(dir, 'student', 'model.json'), 'utf8')) as { spec: { labels: string[] } }).spec
      .labels;
    writeCascade(
      path.join(dir, 'student', CASCADE_FILE),
      cascadeFor(
        path.join(dir, 'student'),
        labels,
        labels.map(() => 0),
      ),
    );
    reportFile = path.join(dir, 'out', 'report.html');
    const r = ok(
      await runScript('report', [
        '--db',
        db,
        '--student',
        path.join(dir, 'student'),
        path.join(dir, 'student-s2'),
        path.join(dir, 'twin'),
        path.join(dir, 'teacher'),
        '--out',
        path.join(dir, 'out'),
        '--backend',
        'wasm',
      ]),
    );
    // 4 per model (loss, accuracy, confusion, reliability), 2 bar charts, the validation curves, the teacher's
    // reliability, the accuracy–coverage curves.
    assert.match(r.stdout, /wrote .*report\.html \(\d+ bytes, 21 charts\)/);
    const html = fs.readFileSync(reportFile, 'utf8');
    // Runs, the teacher's table and reliability, the students side by side with their curves.
    assert.match(html, /<table class="runs">[\s\S]*<td class="t">logits<\/td>[\s\S]*<td class="t">mlp<\/td>/);
    assert.match(html, /Reliability: teacher mlp \(test split\)/);
    assert.match(html, /<h3>student <span/);
    assert.match(html, /<h3>teacher <span/);
    // What each trained on, from its metrics.json: the distilled pair, the twin, the model on gold.
    // Weights and temperature left at their defaults are not in metrics.json: the text names the terms only.
    assert.match(
      html,
      /<td class="t">student<\/td><td class="t">logreg<\/td><td class="t">CE to hard labels of mean of all teachers \+ KD to soft labels of mean of all teachers<\/td>/,
    );
    assert.match(html, /<td class="t">twin<\/td><td class="t">logreg<\/td><td class="t">CE to hard labels of mean of all teachers<\/td>/);
    assert.match(html, /<td class="t">teacher<\/td><td class="t">mlp<\/td><td class="t">CE to gold labels<\/td>/);
    const studentTest = (JSON.parse(fs.readFileSync(path.join(dir, 'student', 'metrics.json'), 'utf8')) as StudentMetrics).test!;
    const n = studentTest.n;
    assert.match(
      html,
      new RegExp(
        `<table class="cascades">.*<td class="t">student</td><td>90\\.00%</td>.*<td>100\\.00% \\(${n} of ${n}\\)</td><td>${(100 * studentTest.accuracy!).toFixed(2)}%</td>`,
      ),
    );
    // Teachers and students evaluated on the same split, from their own answers and probabilities.
    const evaluation = /<table class="evaluation">([\s\S]*?)<\/table>/.exec(html)?.[1] ?? '';
    assert.match(evaluation, /<th>macro-F1<\/th>/);
    for (const name of ['mlp', 'student', 'student-s2', 'twin', 'teacher'])
      assert.match(evaluation, new RegExp(`<tr><td class="t">${name}</td>.*<td class="t">test</td><td>\\d+</td><td>[\\d.]+%</td>`));
    // The teacher measured on the test split, like the students.
    const testN = JSON.parse(fs.readFileSync(path.join(dir, 'student', 'metrics.json'), 'utf8')).test.n as number;
    assert.match(html, new RegExp(`<td class="t">mlp</td><td>\\d+</td><td>\\d+</td><td>100\\.00%</td><td>[\\d.]+% \\(n=${testN}\\)</td>`));

    const bad = await runScript('report', ['--db', db, '--student', path.join(dir, 'nothing'), '--out', path.join(dir, 'x')]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^error: .*nothing\/model\.json: no such file/);
    assert.ok(!fs.existsSync(path.join(dir, 'x', 'report.html')));
  });

  test('the report renders in headless Chromium: charts drawn, no console errors', async (t) => {
    const exe = chromiumPath();
    if (!exe) {
      t.skip('no Chromium found (apt-get install chromium, or set CHROMIUM_PATH); .ci/run installs it');
      return;
    }
    assert.ok(reportFile, 'the CLI test wrote the report');
    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({ executablePath: exe, args: ['--no-sandbox', '--disable-gpu'] });
    try {
      const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
      const errors: string[] = [];
      page.on('console', (m) => {
        if (m.type() === 'error') errors.push(m.text());
      });
      page.on('pageerror', (e) => errors.push(e.message));
      const requests: string[] = [];
      page.on('request', (r) => requests.push(r.url()));
      await page.goto(`file://${reportFile}`);
      const charts = await page.$$eval('svg.chart', (svgs) =>
        svgs.map((s) => {
          const box = s.getBoundingClientRect();
          // Data marks actually laid out: bars, cells, lines and points with a size on screen (a flat line has no height).
          const marks = [...s.querySelectorAll('polyline.series, circle, rect.bar, rect.cell')].filter((m) => {
            const b = m.getBoundingClientRect();
            return b.width > 0 && b.height > 0;
          });
          return { title: s.getAttribute('aria-label'), w: box.width, h: box.height, marks: marks.length };
        }),
      );
      assert.equal(charts.length, 21); // 4 per model, 2 bar charts, the validation curves, the teacher's reliability, coverage
      for (const c of charts) {
        assert.ok(c.w > 100 && c.h > 50, `chart drawn at ${c.w}×${c.h}`);
        assert.ok(c.marks >= 1, `chart "${c.title}" has ${c.marks} visible data marks`);
      }
      // Every mark as laid out (circles, each polyline point, bars, gaps, cells) inside its chart's plot area.
      // (No named function inside the page callback: tsx would wrap it in a helper the page does not have.)
      const outside = await page.$$eval('svg.chart', (svgs) =>
        svgs.flatMap((s) => {
          const area = s.querySelector('rect.plot-area') as SVGRectElement | null;
          const title = s.getAttribute('aria-label');
          if (!area) return s.querySelector('circle, polyline, rect.bar, rect.cell') ? [`${title}: marks but no plot area`] : [];
          const a = area.getBBox();
          const pts: [number, number, string][] = [];
          s.querySelectorAll('circle').forEach((c) => pts.push([c.cx.baseVal.value, c.cy.baseVal.value, 'circle']));
          s.querySelectorAll('polyline').forEach((p) => {
            for (const pt of Array.from(p.points)) pts.push([pt.x, pt.y, 'polyline point']);
          });
          s.querySelectorAll('rect.bar, rect.gap, rect.cell').forEach((r) => {
            const b = (r as SVGRectElement).getBBox();
            pts.push([b.x, b.y, `${r.getAttribute('class')} corner`], [b.x + b.width, b.y + b.height, `${r.getAttribute('class')} corner`]);
          });
          return pts
            .filter((p) => !(p[0] >= a.x - 0.5 && p[0] <= a.x + a.width + 0.5 && p[1] >= a.y - 0.5 && p[1] <= a.y + a.height + 0.5))
            .map((p) => `${title}: ${p[2]} at ${p[0]},${p[1]}`);
        }),
      );
      assert.deepEqual(outside, []);
      const shown = await page.$$eval('svg.chart', (svgs) =>
        svgs.map((s) => ({
          role: s.getAttribute('class')!.replace('chart ', ''),
          title: s.getAttribute('aria-label'),
          legend: s.querySelectorAll('g.legend text').length,
          key: s.querySelectorAll('g.color-key rect').length,
          xTicks: [...s.querySelectorAll('text.x-tick')].map((t) => t.textContent),
          xLabel: s.querySelector('text.axis-label')?.textContent,
        })),
      );
      for (const c of shown) {
        if (c.role === 'line-chart' || c.role === 'reliability') assert.ok(c.legend >= 1, `a legend in "${c.title}"`);
        if (c.role === 'heatmap') assert.ok(c.key >= 2, `a colour key in "${c.title}"`);
        if (c.xLabel === 'epoch') for (const t of c.xTicks) assert.match(t!, /^\d+$/, `epoch label "${t}" in "${c.title}"`);
      }
      assert.ok(shown.some((c) => c.title === 'Validation accuracy per epoch, every student' && c.legend === 4));
      // The evaluation's accuracy–coverage curves: the teacher and the four models.
      assert.ok(shown.some((c) => c.title === 'Accuracy against coverage (most confident items first)' && c.legend === 5));
      const head = await page.textContent('p.headline');
      assert.match(
        head!,
        /^(student and student-s2|twin) is the best student on the test split: [\d.]+%.* accuracy, [+−][\d.]+ points over (student and student-s2|twin) \(.*\), over (2 seeds \(against 1 seed\)|1 seed \(against 2 seeds\)) and \d+ test items\.$/,
      );
      const shot = await page.screenshot({ fullPage: true });
      assert.ok(shot.length > 20_000, `screenshot of ${shot.length} bytes`);
      fs.writeFileSync(path.join(path.dirname(reportFile!), 'report.png'), shot);
      assert.deepEqual(errors, []);
      assert.deepEqual(
        requests.filter((u) => !u.startsWith('file://')),
        [],
        'no network at view time',
      );
    } finally {
      await browser.close();
    }
  });
});
