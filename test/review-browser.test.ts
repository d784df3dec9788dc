/**
 * The review page in a real headless Chromium, served by the real review server over a real
 * SQLite file (skipped, saying why, when no Chromium is installed): a reviewer's keyboard session
 * with a reload and an undo, checked against the human labels in the store; item text that looks
 * like markup shown as text and never run; the access token; 20 label buttons in view at a wide
 * and a narrow window.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { buildQueue, buildReviewContext } from '../src/review/queue.ts';
import { startReviewServer, type ReviewServer } from '../src/review/server.ts';
import { ReviewSession } from '../src/review/session.ts';
import { humanLabels } from '../src/store/reviews.ts';
import { Store } from '../src/store/store.ts';
import { ingestLogits } from '../src/whitebox/ingest.ts';
import { importFile, loadTaskFile, pngFile, workDir, writeJsonl, writeTask } from './helpers.ts';

function chromiumPath(): string | undefined {
  const candidates = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'];
  return candidates.find((p): p is string => !!p && fs.existsSync(p));
}

const XSS = ['<img src=x onerror=alert(1)>', '</script><script>window.pwned=1</script>'];

/**
 * A database with one task, `items` as its items (a text each, or an image file in `dir`) and two teachers that
 * disagree on every item (teacher a leans to label i mod L, teacher b to label i+1 mod L), so every policy queues them all.
 */
async function reviewDb(dir: string, name: string, labels: string[], items: ({ text: string } | { image: string })[]): Promise<string> {
  const image = items.length > 0 && 'image' in items[0];
  const taskFile = writeTask(dir, {
    name,
    labels,
    input: image ? 'image' : 'text',
    body: image ? 'Which kind?' : 'Which kind is this?\n\nText: {{text}}',
  });
  const input = writeJsonl(
    dir,
    `${name}.jsonl`,
    items.map((it, i) => ({ id: `${name}-${i}`, ...it })),
  );
  const db = path.join(dir, `${name}.db`);
  const store = Store.open(db);
  try {
    const task = loadTaskFile(taskFile);
    await importFile(store, task, input);
    for (const [teacher, shift, peak] of [
      ['a', 0, 3],
      ['b', 1, 2],
    ] as const) {
      const rows = items.map((_, i) => ({
        id: `${name}-${i}`,
        logits: labels.map((_, k) => (k === (i + shift) % labels.length ? peak : (k * 7 + i) % 3 === 0 ? 0.5 : 0)),
      }));
      const file = writeJsonl(dir, `${name}-${teacher}.jsonl`, rows);
      await ingestLogits({ store, task, teacher, input: file, format: { kind: 'dense16' } });
    }
  } finally {
    store.close();
  }
  return db;
}

interface Review {
  store: Store;
  server: ReviewServer;
  taskId: number;
  close(): Promise<void>;
}

/** The review server of scripts/review.ts over `db`, on a free loopback port. */
async function serve(db: string, name: string, token: string | null, guidelines: string | null = null): Promise<Review> {
  const store = Store.open(db);
  const task = store.findTask(name)!;
  const ctx = await buildReviewContext(store, task, {});
  const queue = buildQueue(ctx, 'disagree');
  const session = new ReviewSession({ store, ctx, policy: 'disagree', queue, reviewer: 'alice', guidelines });
  const server = await startReviewServer({ session, port: 0, token });
  return {
    store,
    server,
    taskId: task.id,
    async close() {
      await server.close();
      store.close();
    },
  };
}

/** The id of the item the page shows ('' when the queue is done), once no request is under way. */
async function shownItem(page: Page): Promise<string> {
  await page.waitForFunction(
    () => !document.body.classList.contains('busy') && document.getElementById('item')!.dataset.itemId !== undefined,
  );
  return page.$eval('#item', (e) => (e as HTMLElement).dataset.itemId!);
}

/** Presses `keys` one after the other (or does `act`), then waits until the page shows another item than `from`. */
async function answer(page: Page, keys: string[], from: string, act?: () => Promise<void>): Promise<string> {
  for (const k of keys) await page.keyboard.press(k);
  await act?.();
  await page.waitForFunction(
    (prev) => !document.body.classList.contains('busy') && document.getElementById('item')!.dataset.itemId !== prev,
    from,
  );
  return shownItem(page);
}

describe('review page in Chromium', () => {
  const exe = chromiumPath();
  let browser: Browser | undefined;
  before(async () => {
    if (!exe) return;
    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({ executablePath: exe, args: ['--no-sandbox', '--disable-gpu'] });
  });
  after(async () => {
    await browser?.close();
  });

  test('ten answers by keyboard with a reload and an undo: the store holds exactly those labels', async (t) => {
    if (!browser) return t.skip('no Chromium found (apt-get install chromium, or set CHROMIUM_PATH); .ci/run installs it');
    const labels = ['cat', 'cow', 'dog', 'sheep'];
    const texts = Array.from({ length: 14 }, (_, i) => `animal number ${i}: it says ${['meow', 'moo', 'woof', 'baa'][i % 4]}`);
    const dir = workDir();
    const db = await reviewDb(
      dir,
      'animals',
      labels,
      texts.map((text) => ({ text })),
    );
    const review = await serve(db, 'animals', null);
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      page.on('console', (m) => {
        if (m.type() === 'error') errors.push(m.text());
      });
      await page.goto(review.server.url);
      let item = await shownItem(page);
      assert.notEqual(item, '', 'the queue has items');

      // What the reviewer decided, in order (label null: a skip), and what the page suggested for each item.
      const decisions: { item: string; label: string | null; suggested: string }[] = [];
      const suggestion = () => page.$eval('button.label.suggested', (b) => (b as HTMLElement).dataset.label!);
      /** Answers the item shown with `keys`, which mean `label` ('suggested': what Enter accepts). */
      const step = async (keys: string[], label: string | null | 'suggested') => {
        const suggested = await suggestion();
        decisions.push({ item, label: label === 'suggested' ? suggested : label, suggested });
        item = await answer(page, keys, item);
      };
      await step(['1'], 'cat');
      await step(['c', 'o'], 'cow'); // "c" is cat and cow: the second letter decides
      await step(['Enter'], 'suggested');
      await step(['s'], null);
      await step(['d'], 'dog');

      // A reload continues where the reviewer stopped.
      await page.reload();
      assert.equal(await shownItem(page), item, 'after a reload the same item is shown');
      assert.match((await page.textContent('#progress'))!, /^4 done \/ 14\b.*1 skipped/);

      await step(['/', 's'], 'sheep'); // "s" alone is skip: "/" first types a label that starts with s
      await step(['2'], 'cow');
      // u takes back the last answer and shows its item again.
      const undone = decisions.pop()!;
      item = await answer(page, ['u'], item);
      assert.equal(item, undone.item, 'the undone item is shown again');
      await step(['4'], 'sheep');
      await step(['c', 'a'], 'cat');
      await step(['Enter'], 'suggested');
      await step(['3'], 'dog');
      assert.equal(decisions.length, 10);
      assert.equal(new Set(decisions.map((d) => d.item)).size, 10, 'ten different items');

      const expected = decisions
        .filter((d) => d.label !== null)
        .map((d) => ({ itemId: Number(d.item), label: d.label }))
        .sort((a, b) => a.itemId - b.itemId);
      const stored = humanLabels(review.store, review.taskId)
        .map((h) => ({ itemId: h.itemId, label: h.label, reviewer: h.reviewer }))
        .sort((a, b) => a.itemId - b.itemId);
      assert.deepEqual(
        stored,
        expected.map((e) => ({ ...e, reviewer: 'alice' })),
      );
      const labeled = decisions.filter((d) => d.label !== null);
      const agreement = Math.round((100 * labeled.filter((d) => d.label === d.suggested).length) / labeled.length);
      assert.match(
        (await page.textContent('#progress'))!,
        new RegExp(`^9 done / 14\\b.*1 skipped.*agreement with the teachers ${agreement}%`),
      );

      assert.deepEqual(errors, []);

      // A second tab answers the item this one shows: this tab's answer to it is a conflict, said in the message line,
      // and the tab moves on to the state the server sent with it.
      const other = await browser.newPage({ viewport: { width: 400, height: 800 } });
      await other.goto(review.server.url);
      assert.equal(await shownItem(other), item, 'a second tab shows the same item');
      await answer(other, ['1'], item);
      const next = await answer(page, ['2'], item);
      assert.match((await page.textContent('#message.error'))!, /^Conflict: .*already labeled cat/);
      assert.notEqual(next, item);
      assert.deepEqual(
        humanLabels(review.store, review.taskId).find((h) => h.itemId === Number(item))?.label,
        'cat',
        'the first answer stands',
      );
      assert.equal(humanLabels(review.store, review.taskId).length, expected.length + 1);
      await other.close();

      // The mouse: a label button, then the undo button, which shows the item again and leaves the labels as they were.
      const clicked = await answer(page, [], next, () => page.click('button.label[data-label="dog"]'));
      assert.equal(humanLabels(review.store, review.taskId).find((h) => h.itemId === Number(next))?.label, 'dog');
      assert.equal(await answer(page, [], clicked, () => page.click('#undo')), next);
      assert.equal(humanLabels(review.store, review.taskId).length, expected.length + 1);

      // Keys faster than the server (three in one burst, before any answer is back): the first answers the item on
      // screen; the others are not sent (the message line says so), so no answer falls on an item nobody has seen.
      const had = humanLabels(review.store, review.taskId).length;
      const onScreen = await shownItem(page);
      const said = await page.evaluate(() =>
        ['1', 'Enter', '3'].map((key) => {
          document.dispatchEvent(new KeyboardEvent('keydown', { key, bubbles: true }));
          return document.getElementById('message')!.textContent;
        }),
      );
      assert.doesNotMatch(said[0]!, /Still saving/, 'the first key is sent');
      assert.match(said[1]!, /^Still saving the last answer: “\w+” was not sent/);
      assert.match(said[2]!, /^Still saving the last answer: “dog” was not sent/);
      await page.waitForFunction(() => !document.body.classList.contains('busy'));
      const burst = humanLabels(review.store, review.taskId)
        .sort((a, b) => a.decisionId - b.decisionId)
        .slice(had);
      assert.deepEqual(
        burst.map((h) => [String(h.itemId), h.label]),
        [[onScreen, 'cat']],
      );
      // Chromium logs every 4xx answer itself; the page logged nothing.
      assert.deepEqual(errors, ['Failed to load resource: the server responded with a status of 409 (Conflict)']);
    } finally {
      await review.close();
    }
  });

  test('markup in an item is shown as text and runs nothing; no token, no answer; 20 labels in view wide and narrow', async (t) => {
    if (!browser) return t.skip('no Chromium found (apt-get install chromium, or set CHROMIUM_PATH); .ci/run installs it');
    const labels = [
      'account',
      'billing',
      'bug',
      'cancel',
      'complaint',
      'delivery',
      'discount',
      'feature',
      'feedback',
      'invoice',
      'login',
      'outage',
      'password',
      'praise',
      'refund',
      'return',
      'security',
      'shipping',
      'upgrade',
      'warranty',
    ];
    const dir = workDir();
    const long = `A long ticket. ${'The parcel never came and nobody answers the phone. '.repeat(60)}`;
    const db = await reviewDb(
      dir,
      'tickets',
      labels,
      [...XSS, long].map((text) => ({ text })),
    );
    const token = 'test-token-0123456789abcdef';
    const guidelines = `Pick the ticket's topic.\n${XSS.join('\n')}\n<b>bold?</b>`;
    const review = await serve(db, 'tickets', token, guidelines);
    try {
      const origin = new URL(review.server.url).origin;
      assert.equal((await fetch(`${origin}/api/state`)).status, 401, 'the API without the token');
      assert.equal((await fetch(`${origin}/`)).status, 401, 'the page without the token');
      assert.equal((await fetch(`${origin}/api/state`, { headers: { 'X-Review-Token': 'wrong-token-0123456789' } })).status, 401);
      assert.equal((await fetch(`${origin}/api/state`, { headers: { 'X-Review-Token': token } })).status, 200);

      const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
      const dialogs: string[] = [];
      page.on('dialog', (d) => {
        dialogs.push(d.message());
        void d.dismiss();
      });
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      page.on('console', (m) => {
        if (m.type() === 'error') errors.push(m.text());
      });
      const requests: string[] = [];
      page.on('request', (r) => requests.push(r.url()));
      await page.goto(review.server.url);
      let item = await shownItem(page);
      // Tab reaches the buttons (after any scrolling box, which Chromium makes focusable), and what it focuses is outlined.
      const focused: { tag: string; id: string; outline: string; width: number }[] = [];
      while (focused.length < 6 && focused.at(-1)?.tag !== 'BUTTON') {
        await page.keyboard.press('Tab');
        focused.push(
          await page.evaluate(() => {
            const e = document.activeElement!;
            const css = getComputedStyle(e);
            return { tag: e.tagName, id: e.id, outline: css.outlineStyle, width: parseFloat(css.outlineWidth) };
          }),
        );
      }
      assert.equal(focused.at(-1)!.tag, 'BUTTON', JSON.stringify(focused));
      for (const f of focused) assert.ok(f.outline !== 'none' && f.width >= 1, `focus visible: ${JSON.stringify(f)}`);
      const shown: string[] = [];
      for (let i = 0; i < 3 && item !== ''; i++) {
        shown.push((await page.textContent('#content .text'))!);
        assert.equal(await page.$$eval('#content img, #content script', (es) => es.length), 0, 'no element made from the text');
        await checkLayout(page, labels);
        item = await answer(page, ['s'], item);
      }
      for (const x of [...XSS, long]) assert.ok(shown.includes(x), `"${x.slice(0, 60)}" shown as text (shown: ${JSON.stringify(shown)})`);
      // The task's guidelines: folded, and once opened, exactly their characters, no element made from them.
      assert.equal(await page.$eval('#guide', (e) => (e as HTMLDetailsElement).open), false);
      await page.click('#guide summary');
      assert.equal(await page.textContent('#guide-text'), guidelines);
      assert.equal(await page.$$eval('#guide-text *', (es) => es.length), 0, 'no element made from the guidelines');
      assert.equal(await page.evaluate(() => (window as unknown as { pwned?: number }).pwned), undefined);
      assert.deepEqual(dialogs, []);
      assert.deepEqual(errors, []);
      for (const r of requests) assert.ok(r.startsWith(`${origin}/`), `only the review server is asked (${r})`);
    } finally {
      await review.close();
    }
  });

  test('an image item is shown from the review server, with the token', async (t) => {
    if (!browser) return t.skip('no Chromium found (apt-get install chromium, or set CHROMIUM_PATH); .ci/run installs it');
    const dir = workDir();
    const images = [0, 1].map((i) => ({ image: path.basename(pngFile(dir, `p${i}.png`, i)) }));
    const db = await reviewDb(dir, 'pics', ['cat', 'dog', 'bird'], images);
    const review = await serve(db, 'pics', 'image-token-0123456789abcdef');
    try {
      const page = await browser.newPage({ viewport: { width: 400, height: 800 } });
      await page.goto(review.server.url);
      await shownItem(page);
      await page.waitForFunction(() => (document.querySelector('#content img') as HTMLImageElement | null)?.complete === true);
      const img = await page.$eval('#content img', (e) => ({
        w: (e as HTMLImageElement).naturalWidth,
        h: (e as HTMLImageElement).naturalHeight,
      }));
      assert.deepEqual(img, { w: 8, h: 8 }, 'the 8×8 PNG arrived');
      assert.equal(await page.$$eval('#content .text', (es) => es.length), 0, "an image item's path is not shown as text");
    } finally {
      await review.close();
    }
  });
});

/** Every label button wholly inside the viewport and on top (nothing covers it), at 1280×800 and at 400×800, without scrolling. */
async function checkLayout(page: Page, labels: string[]): Promise<void> {
  for (const [width, height] of [
    [1280, 800],
    [400, 800],
  ]) {
    await page.setViewportSize({ width, height });
    const boxes = await page.$$eval('button.label', (bs) =>
      bs.map((b) => {
        const r = b.getBoundingClientRect();
        const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
        return {
          label: (b as HTMLElement).dataset.label!,
          x0: r.left,
          y0: r.top,
          x1: r.right,
          y1: r.bottom,
          onTop: !!hit && b.contains(hit),
        };
      }),
    );
    assert.deepEqual(
      boxes.map((b) => b.label),
      labels,
    );
    for (const b of boxes) {
      const where = `${b.label} at ${width}×${height}: ${b.x0},${b.y0}–${b.x1},${b.y1}`;
      assert.ok(b.x0 >= 0 && b.y0 >= 0 && b.x1 <= width && b.y1 <= height, `${where} lies in the viewport`);
      assert.ok(b.y1 - b.y0 >= 24, `${where} is tall enough to hit`);
      assert.ok(b.onTop, `${where} is not covered`);
    }
    const scroll = await page.evaluate(() => ({ x: window.scrollX, y: window.scrollY, h: document.documentElement.scrollHeight }));
    assert.deepEqual({ x: scroll.x, y: scroll.y }, { x: 0, y: 0 });
    assert.ok(scroll.h <= height, `the page itself does not scroll at ${width}×${height} (${scroll.h}px)`);
    const text = await page.$eval('#content .text', (e) => {
      const r = e.getBoundingClientRect();
      return { top: r.top, width: r.width, font: parseFloat(getComputedStyle(e).fontSize) };
    });
    assert.ok(text.top >= 0 && text.top < height / 2 && text.width > 200, `the item's text is in view at ${width}×${height}`);
    assert.ok(text.font >= 15, `the item's text is ${text.font}px at ${width}×${height}`);
  }
  await page.setViewportSize({ width: 1280, height: 800 });
}
