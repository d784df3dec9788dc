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
import type { ReportData } from '../src/report/data.ts';
import { renderReport } from '../src/report/html.ts';
import { esc, heatmap, lineChart, reliabilityDiagram, ticks } from '../src/report/svg.ts';
import { runScript, workDir } from './helpers.ts';

const EVIL = '<script>alert("x")</script>';

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
            train_accuracy: 0.5 + e / 10,
            val_accuracy: 0.5,
            test_accuracy: 0.45 + e / 10,
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
          params: 1000,
        },
        reliability: { n: 50, ece: 0.1, bins },
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

  test('the page is self-contained and escapes everything it did not write itself', () => {
    const html = renderReport(handMadeData());
    assert.doesNotMatch(html, /<script/i);
    assert.match(html, /&lt;script&gt;alert\(&quot;x&quot;\)&lt;\/script&gt;/);
    assert.doesNotMatch(html, /\b(src|href)=/i, 'no external or embedded references');
    assert.doesNotMatch(html, /https?:\/\/(?!www\.w3\.org\/2000\/svg)/, 'no URL but the SVG namespace');
    assert.equal(esc(`a&b<"'>`), 'a&amp;b&lt;&quot;&#39;&gt;');
    // Loss, accuracy, confusion, reliability for the student; two bar charts.
    assert.equal(html.match(/<svg /g)?.length, 6);
  });
});

// ---------------------------------------------------------------------------------------

function chromiumPath(): string | undefined {
  const candidates = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'];
  return candidates.find((p): p is string => !!p && fs.existsSync(p));
}

describe('report: CLI and browser', () => {
  let reportFile: string | undefined;

  test('report.ts over a store with a teacher and two students', async () => {
    const dir = workDir();
    writeShapes(dir, 20, 12);
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
    reportFile = path.join(dir, 'out', 'report.html');
    const r = ok(
      await runScript('report', [
        '--db',
        db,
        '--student',
        path.join(dir, 'student'),
        path.join(dir, 'teacher'),
        '--out',
        path.join(dir, 'out'),
        '--backend',
        'wasm',
      ]),
    );
    assert.match(r.stdout, /wrote .*report\.html \(\d+ bytes, 11 charts\)/);
    const html = fs.readFileSync(reportFile, 'utf8');
    // Runs, the teacher's table and reliability, both students side by side with their curves.
    assert.match(html, /<table class="runs">[\s\S]*<td>logits<\/td>[\s\S]*<td>mlp<\/td>/);
    assert.match(html, /Reliability: teacher mlp/);
    assert.match(html, /<h3>student <span/);
    assert.match(html, /<h3>teacher <span/);

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
          // Data marks actually laid out: bars, cells, lines with a size on screen.
          const marks = [...s.querySelectorAll('polyline.series, rect.bar, rect.cell')].filter((m) => {
            const b = m.getBoundingClientRect();
            return b.width > 0 && b.height > 0;
          });
          return { title: s.getAttribute('aria-label'), w: box.width, h: box.height, marks: marks.length };
        }),
      );
      assert.equal(charts.length, 11); // 4 per student, 2 bar charts, the teacher's reliability
      for (const c of charts) {
        assert.ok(c.w > 100 && c.h > 50, `chart drawn at ${c.w}×${c.h}`);
        assert.ok(c.marks >= 1, `chart "${c.title}" has ${c.marks} visible data marks`);
      }
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
