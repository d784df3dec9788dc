/**
 * The review server and the Label Studio import under attack: cross-site
 * posts (text/plain and form bodies, `Origin: null`), DNS rebinding (Host),
 * token leaks, hostile paths and bodies (deep JSON, `__proto__`, huge ids,
 * over-limit chunked bodies, a stalled body), an SVG in the blob store, another
 * reviewer's decision, a Label Studio import while the page is open, and
 * hostile Label Studio files (prototype-pollution keys, non-string choices,
 * duplicate annotation keys).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { importLabelStudio, readLabelStudioExport } from '../src/review/import-labelstudio.ts';
import { buildQueue, buildReviewContext } from '../src/review/queue.ts';
import { startReviewServer, type ReviewServer } from '../src/review/server.ts';
import { ReviewSession } from '../src/review/session.ts';
import { decide, humanLabels } from '../src/store/reviews.ts';
import { Store, type TaskRow } from '../src/store/store.ts';
import { importFile, LABELS, loadTaskFile, pngFile, sqlOn, workDir, writeJsonl, writeTask } from './helpers.ts';

const TOKEN = 'security-test-token-0123456789abcdef';

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

function call(
  port: number,
  method: string,
  urlPath: string,
  o: { headers?: Record<string, string>; body?: string; chunks?: string[] } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...o.headers };
    if (o.body !== undefined) headers['content-length'] = String(Buffer.byteLength(o.body));
    const req = http.request({ host: '127.0.0.1', port, method, path: urlPath, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    if (o.body !== undefined) req.write(o.body);
    for (const c of o.chunks ?? []) req.write(c);
    req.end();
  });
}

let dir: string;
let dbPath: string;
let task: TaskRow;
let itemIds: number[];
const logged: string[] = [];

interface Running {
  store: Store;
  server: ReviewServer;
  session: ReviewSession;
  csrf: string;
  origin: string;
  auth: Record<string, string>;
  get(p: string, headers?: Record<string, string>): Promise<Reply>;
  post(p: string, body: string, headers?: Record<string, string>): Promise<Reply>;
  stop(): Promise<void>;
}
const open: Running[] = [];

async function serve(reviewer: string, o: { token?: string | null; task?: string } = {}): Promise<Running> {
  const store = Store.open(dbPath);
  const row = store.findTask(o.task ?? 'hostile')!;
  const ctx = await buildReviewContext(store, row, {});
  const session = new ReviewSession({ store, ctx, policy: 'low-confidence', queue: buildQueue(ctx, 'low-confidence'), reviewer });
  const token = o.token ?? null;
  const server = await startReviewServer({ session, port: 0, token, log: (l) => logged.push(l) });
  const auth: Record<string, string> = token ? { 'x-review-token': token } : {};
  const page = await call(server.port, 'GET', '/', { headers: auth });
  const csrf = /<meta name="csrf-token" content="([^"]+)">/.exec(page.text)![1];
  const origin = `http://127.0.0.1:${server.port}`;
  const r: Running = {
    store,
    server,
    session,
    csrf,
    origin,
    auth,
    get: (p, headers = {}) => call(server.port, 'GET', p, { headers: { ...auth, ...headers } }),
    post: (p, body, headers = {}) =>
      call(server.port, 'POST', p, {
        headers: { ...auth, 'content-type': 'application/json', 'x-csrf-token': csrf, origin, ...headers },
        body,
      }),
    stop: async () => {
      await server.close();
      store.close();
      open.splice(open.indexOf(r), 1);
    },
  };
  open.push(r);
  return r;
}

const countHuman = (store: Store) => humanLabels(store, task.id).length;

/** One teacher with hard labels on every item, so the task has something to review. */
function addTeacher(store: Store, row: TaskRow, ids: number[], labels = LABELS): void {
  const run = store.createRun({
    task_id: row.id,
    kind: 'llm',
    teacher: 'teacher-a',
    base_url: null,
    prompt_version: 'p',
    config_hash: `cfg-${row.name}`,
    params: '{}',
    labels: JSON.stringify(labels),
    items_total: ids.length,
  });
  ids.forEach((itemId, i) =>
    store.insertLabel({
      ...{ itemId, runId: run.id, requestKey: `${row.name}-${i}`, status: 'ok', label: labels[i % labels.length], soft: null },
      ...{
        softMethod: 'none',
        sparse: false,
        raw: null,
        promptTokens: 1,
        completionTokens: 1,
        cost: 0,
        latencyMs: 1,
        attempts: 1,
        error: null,
      },
    }),
  );
  store.finishRun(run.id, 'completed', null);
}

before(async () => {
  dir = workDir();
  dbPath = path.join(dir, 'security.db');
  const t = loadTaskFile(writeTask(dir, { name: 'hostile' }));
  const store = Store.open(dbPath);
  const rows = Array.from({ length: 6 }, (_, i) => ({
    id: i === 0 ? '<img src=x onerror=alert(1)>' : `h${i}`,
    text: i === 1 ? '</script><script>alert(1)</script>' : `item ${i}`,
    label: LABELS[i % LABELS.length],
  }));
  const imported = await importFile(store, t, writeJsonl(dir, 'hostile.jsonl', rows));
  task = imported.taskRow;
  itemIds = imported.itemIds;
  addTeacher(store, task, itemIds);
  const p = loadTaskFile(writeTask(dir, { name: 'pics', input: 'image' }));
  const picRows = [0, 1].map((i) => ({ id: `p${i}`, image: path.basename(pngFile(dir, `p${i}.png`, i)) }));
  const picsImported = await importFile(store, p, writeJsonl(dir, 'pics.jsonl', picRows));
  addTeacher(store, picsImported.taskRow, picsImported.itemIds);
  store.close();
});

after(async () => {
  for (const r of [...open]) await r.stop();
});

describe('cross-site requests and DNS rebinding', () => {
  test('text/plain and form posts (no CSRF header), Origin null, a foreign Origin: 403, nothing stored', async () => {
    const r = await serve('csrf');
    const body = JSON.stringify({ itemId: itemIds[0], label: LABELS[0] });
    const attempts: Array<[string, Record<string, string>, number]> = [
      ['text/plain, no CSRF', { 'content-type': 'text/plain', 'x-csrf-token': '', origin: 'https://evil.example' }, 403],
      ['form, own Origin, no CSRF', { 'content-type': 'application/x-www-form-urlencoded', 'x-csrf-token': '' }, 403],
      ['Origin null', { origin: 'null' }, 403],
      ['Origin of another port', { origin: `http://127.0.0.1:${r.server.port + 1}` }, 403],
      ['Origin with a path-like suffix', { origin: `${r.origin}.evil.example` }, 403],
      ['right CSRF and Origin but text/plain', { 'content-type': 'text/plain' }, 400],
    ];
    for (const [what, headers, status] of attempts) {
      const res = await r.post('/api/decide', body, headers);
      assert.equal(res.status, status, `${what}: ${res.text}`);
    }
    assert.equal(countHuman(r.store), 0);
    await r.stop();
  });

  test('a Host another site could rebind to 127.0.0.1 is refused for reads too', async () => {
    const r = await serve('rebind');
    for (const host of ['evil.example', '127.0.0.1.nip.io', 'localhost.evil.example', `evil.example:${r.server.port}`, '127.1']) {
      for (const p of ['/', '/api/state']) {
        const res = await r.get(p, { host });
        assert.equal(res.status, 403, `${host} ${p}: ${res.status}`);
        assert.doesNotMatch(res.text, /csrf-token|"item"/);
      }
    }
    await r.stop();
  });
});

describe('the token never leaks', () => {
  test('errors do not echo the token; the page asks for no referrer; a server error logs no query string', async () => {
    const r = await serve('tok', { token: TOKEN });
    const wrong = await call(r.server.port, 'GET', `/api/state?token=${TOKEN}x`);
    assert.equal(wrong.status, 401);
    assert.ok(!wrong.text.includes(TOKEN));
    const missing = await call(r.server.port, 'GET', `/nope?token=${TOKEN}`);
    assert.equal(missing.status, 404);
    assert.ok(!missing.text.includes(TOKEN), missing.text);
    const page = await r.get('/');
    assert.equal(page.headers['referrer-policy'], 'no-referrer');
    assert.match(page.text, /<meta name="referrer" content="no-referrer">/);
    await r.stop();
    // A 500: the image's blob is gone from the database.
    const p = await serve('tok', { token: TOKEN, task: 'pics' });
    const pic = p.session.ctx.targets.items.items[0];
    sqlOn(p.store, (db) => {
      db.pragma('foreign_keys = OFF');
      db.prepare('DELETE FROM blobs WHERE sha256 = ?').run(pic.image);
      db.pragma('foreign_keys = ON');
    });
    logged.length = 0;
    const broken = await call(p.server.port, 'GET', `/api/image/${pic.id}?token=${TOKEN}`);
    assert.equal(broken.status, 500);
    assert.doesNotMatch(broken.text, /at .*\.ts|\/work\/|sqlite/i, 'no stack or path in the response');
    assert.equal(logged.length, 1);
    assert.ok(!logged[0].includes(TOKEN), logged[0]);
    await p.stop();
  });
});

describe('hostile paths and bodies', () => {
  test('deep JSON, __proto__, huge or odd ids, encoded paths: 4xx, never 500, nothing stored', async () => {
    const r = await serve('bodies');
    const deep = '['.repeat(7000) + ']'.repeat(7000);
    const bodies: Array<[string, number[]]> = [
      [deep, [400]],
      [`{"itemId":${deep}}`, [400]],
      [`{"itemId":${itemIds[0]},"label":"${LABELS[0]}","__proto__":{"polluted":1}}`, [400]],
      [`{"__proto__":{"itemId":${itemIds[0]},"label":"${LABELS[0]}"}}`, [400]],
      ['{"itemId":1e300,"label":null}', [400, 404]],
      [`{"itemId":${2 ** 53 + 2},"label":null}`, [400, 404]],
      ['{"itemId":-1,"label":null}', [400]],
      ['{"itemId":"1","label":null}', [400]],
      [`{"itemId":${itemIds[0]},"label":"${'x'.repeat(300)}"}`, [400]],
      [`{"itemId":${itemIds[0]},"label":"constructor"}`, [400]],
      [`{"itemId":${itemIds[0]},"label":"__proto__"}`, [400]],
    ];
    for (const [body, statuses] of bodies) {
      const res = await r.post('/api/decide', body);
      assert.ok(statuses.includes(res.status), `${body.slice(0, 60)}: ${res.status} ${res.text.slice(0, 200)}`);
    }
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
    for (const body of ['{"decisionId":1e300}', '{"decisionId":"1"}', '{"decisionId":0}', `{"decisionId":${deep}}`]) {
      const res = await r.post('/api/undo', body);
      assert.equal(res.status, 400, `${body.slice(0, 40)}: ${res.text.slice(0, 200)}`);
    }
    for (const p of [
      '/api/image/../state',
      '/api/image/%2e%2e/state',
      '/api/image/..%2F..%2Fetc%2Fpasswd',
      '/api/image/99999999999999999999999999',
      '/api/image/1e3',
      `/api/image/${itemIds[0]}`,
      '/api/state/../../../etc/passwd',
    ]) {
      const res = await r.get(p);
      assert.ok([400, 404].includes(res.status) || (res.status === 200 && p.endsWith('/state')), `${p}: ${res.status} ${res.text}`);
      assert.ok(res.status !== 200 || res.headers['content-type']!.startsWith('application/json'), p);
    }
    assert.equal(countHuman(r.store), 0);
    await r.stop();
  });

  test('a chunked body over the limit is refused; a stalled body holds up no other request; an aborted one leaves the server up', async () => {
    const r = await serve('slow');
    const big = await call(r.server.port, 'POST', '/api/decide', {
      headers: { 'content-type': 'application/json', 'x-csrf-token': r.csrf, origin: r.origin, 'transfer-encoding': 'chunked' },
      chunks: Array.from({ length: 40 }, () => ' '.repeat(1024)),
    });
    assert.equal(big.status, 413);
    // A body that says 100 bytes and sends 10, then nothing.
    const stalled = net.connect(r.server.port, '127.0.0.1');
    await new Promise<void>((resolve) => stalled.once('connect', () => resolve()));
    stalled.write(
      `POST /api/decide HTTP/1.1\r\nHost: 127.0.0.1:${r.server.port}\r\nOrigin: ${r.origin}\r\nX-CSRF-Token: ${r.csrf}\r\n` +
        'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"itemId":',
    );
    const meanwhile = await r.get('/api/state');
    assert.equal(meanwhile.status, 200);
    logged.length = 0;
    stalled.destroy();
    const after = await r.get('/api/state');
    assert.equal(after.status, 200);
    assert.deepEqual(logged, [], 'a client gone mid-body is no server error');
    assert.equal(countHuman(r.store), 0);
    await r.stop();
  });

  test('a request target that is no URL (absolute-form with a bad host): 400, nothing logged, no token asked', async () => {
    const r = await serve('target', { token: TOKEN });
    logged.length = 0;
    for (const target of ['http://[/api/state', 'http://%zz/', 'http://x:99999/api/state']) {
      const reply = await new Promise<string>((resolve, reject) => {
        const s = net.connect(r.server.port, '127.0.0.1', () =>
          s.write(`GET ${target} HTTP/1.1\r\nHost: 127.0.0.1:${r.server.port}\r\nConnection: close\r\n\r\n`),
        );
        let out = '';
        s.on('data', (d: Buffer) => (out += d.toString('utf8')));
        s.on('close', () => resolve(out));
        s.on('error', reject);
      });
      assert.match(reply.split('\r\n')[0], /^HTTP\/1\.1 400 /, `${target}: ${reply.split('\r\n')[0]}`);
    }
    assert.deepEqual(logged, []);
    await r.stop();
  });

  test('an SVG in the blob store is never served as SVG (nor as anything a browser runs)', async () => {
    const r = await serve('svg', { task: 'pics' });
    const pic = r.session.ctx.targets.items.items[1];
    const svg = '<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><script>alert(2)</script></svg>';
    sqlOn(r.store, (db) =>
      db.prepare('UPDATE blobs SET mime = ?, bytes = ? WHERE sha256 = ?').run('image/svg+xml', Buffer.from(svg), pic.image),
    );
    const res = await r.get(`/api/image/${pic.id}`);
    assert.equal(res.status, 200);
    assert.doesNotMatch(String(res.headers['content-type']), /svg|html|xml|javascript/);
    assert.equal(res.headers['x-content-type-options'], 'nosniff');
    assert.match(String(res.headers['content-security-policy']), /default-src 'none'/);
    assert.doesNotMatch(String(res.headers['content-security-policy']), /unsafe-inline/);
    await r.stop();
  });
});

describe('labels', () => {
  test('a label of 300 characters (a task may have one) can be chosen on the page', async () => {
    const long = ['x'.repeat(300), 'y'.repeat(250)];
    const store = Store.open(dbPath);
    const t = loadTaskFile(writeTask(dir, { name: 'long', labels: long, file: 'long.md' }));
    const imported = await importFile(
      store,
      t,
      writeJsonl(dir, 'long.jsonl', [
        { id: 'l0', text: 'a' },
        { id: 'l1', text: 'b' },
      ]),
    );
    addTeacher(store, imported.taskRow, imported.itemIds, long);
    store.close();
    const r = await serve('long', { task: 'long' });
    const res = await r.post('/api/decide', JSON.stringify({ itemId: imported.itemIds[0], label: long[1] }));
    assert.equal(res.status, 200, res.text.slice(0, 300));
    assert.deepEqual(
      humanLabels(r.store, imported.taskRow.id).map((h) => h.label),
      [long[1]],
    );
    await r.stop();
  });
});

describe('reviewers and tabs', () => {
  test("another reviewer's decision cannot be undone by id", async () => {
    const store = Store.open(dbPath);
    const theirs = decide(store, { task, reviewer: 'victim', itemId: itemIds[2], label: LABELS[1] });
    store.close();
    const r = await serve('attacker');
    // Without a decision of their own the attacker has nothing to undo; with one, the victim's id is refused.
    const first = await r.post('/api/undo', JSON.stringify({ decisionId: theirs.decision.id }));
    assert.equal(first.status, 200, first.text);
    assert.match(first.text, /nothing to undo/);
    assert.equal((await r.post('/api/decide', JSON.stringify({ itemId: itemIds[3], label: null }))).status, 200);
    const res = await r.post('/api/undo', JSON.stringify({ decisionId: theirs.decision.id }));
    assert.equal(res.status, 400, res.text);
    assert.deepEqual(
      humanLabels(r.store, task.id).map((h) => `${h.reviewer} ${h.itemId} ${h.label}`),
      [`victim ${itemIds[2]} ${LABELS[1]}`],
    );
    sqlOn(r.store, (db) => {
      db.prepare('DELETE FROM labels WHERE run_id IN (SELECT id FROM runs WHERE kind = ?)').run('human');
      db.prepare('DELETE FROM reviews').run();
    });
    await r.stop();
  });

  test('a Label Studio import while the page is open: the page moves past the imported item, and a stale tab gets 409', async () => {
    const r = await serve('ann@example.com');
    const before = JSON.parse((await r.get('/api/state')).text) as { item: { id: number; extId: string } };
    const current = before.item;
    const file = path.join(dir, 'live-import.json');
    const other = LABELS[1];
    fs.writeFileSync(
      file,
      JSON.stringify([
        {
          id: 1,
          data: { text: 'x', distillery_id: current.extId },
          annotations: [
            {
              id: 1,
              completed_by: 'ann@example.com',
              result: [{ from_name: 'label', to_name: 'text', type: 'choices', value: { choices: [other] } }],
            },
          ],
        },
      ]),
    );
    const importer = Store.open(dbPath);
    importLabelStudio(importer, task, file, readLabelStudioExport(file));
    importer.close();
    const now = JSON.parse((await r.get('/api/state')).text) as { item: { id: number } | null; progress: { done: number } };
    assert.notEqual(now.item?.id, current.id);
    assert.equal(now.progress.done, 1);
    // The tab still showing the item answers it otherwise: a conflict, nothing stored twice.
    const stale = await r.post('/api/decide', JSON.stringify({ itemId: current.id, label: LABELS[0] }));
    assert.equal(stale.status, 409);
    assert.equal(humanLabels(r.store, task.id).filter((h) => h.reviewer === 'ann@example.com').length, 1);
    await r.stop();
  });
});

describe('hostile Label Studio files', () => {
  const annotation = (id: number | string, choices: unknown, by: unknown = 'ls@example.com') => ({
    id,
    completed_by: by,
    result: [{ from_name: 'label', to_name: 'text', type: 'choices', value: { choices } }],
  });
  const write = (name: string, tasks: unknown): string => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, typeof tasks === 'string' ? tasks : JSON.stringify(tasks));
    return file;
  };
  const run = (file: string) => {
    const store = Store.open(dbPath);
    try {
      return importLabelStudio(store, task, file, readLabelStudioExport(file));
    } finally {
      store.close();
    }
  };
  const lsLabels = () => {
    const store = Store.open(dbPath);
    try {
      return humanLabels(store, task.id).filter((h) => h.reviewer.startsWith('ls'));
    } finally {
      store.close();
    }
  };

  test('__proto__ keys pollute nothing: the task is found by its own text and stored with its own choice', () => {
    const text =
      '[{"id":900,"data":{"__proto__":{"distillery_id":"h3"},"text":"item 3"},"annotations":[' +
      `{"id":1,"completed_by":"ls@example.com","__proto__":{"was_cancelled":true},"result":[{"from_name":"label","to_name":"text",` +
      `"type":"choices","value":{"__proto__":{"choices":["${LABELS[0]}"]},"choices":["${LABELS[2]}"]}}]}]}]`;
    const r = run(write('proto.json', text));
    assert.equal(({} as Record<string, unknown>).distillery_id, undefined);
    assert.equal(({} as Record<string, unknown>).was_cancelled, undefined);
    assert.equal(({} as Record<string, unknown>).choices, undefined);
    // Found by its own text (item 3), labeled with its own choice.
    assert.equal(r.stored, 1);
    assert.deepEqual(
      lsLabels().map((h) => `${h.itemId} ${h.label}`),
      [`${itemIds[3]} ${LABELS[2]}`],
    );
  });

  test('non-string choices, several choices, a choice that is no label: one line naming the task, nothing stored', () => {
    const n = lsLabels().length;
    for (const [name, choices] of [
      ['number', [1]],
      ['object', [{ toString: 'cat' }]],
      ['string', LABELS[0]],
      ['two', [LABELS[0], LABELS[1]]],
      ['nolabel', ['__proto__']],
    ] as const) {
      const file = write(`choices-${name}.json`, [{ id: 901, data: { distillery_id: 'h4' }, annotations: [annotation(1, choices)] }]);
      assert.throws(() => run(file), /task \[0\]/, name);
    }
    assert.equal(lsLabels().length, n);
  });

  test('the same task and annotation id twice in a file, for two items: refused, nothing stored', () => {
    const n = lsLabels().length;
    const file = write('dup.json', [
      { id: 902, data: { distillery_id: 'h4' }, annotations: [annotation(7, [LABELS[0]])] },
      { id: 902, data: { distillery_id: 'h5' }, annotations: [annotation(7, [LABELS[0]])] },
    ]);
    assert.throws(() => run(file), /task \[1\].*annotation 7/);
    assert.equal(lsLabels().length, n);
  });

  test("an annotation key imported before for another item (another project's export): refused, not dropped as 'already there'", () => {
    run(write('first.json', [{ id: 903, data: { distillery_id: 'h4' }, annotations: [annotation(8, [LABELS[0]])] }]));
    const n = lsLabels().length;
    const file = write('second.json', [{ id: 903, data: { distillery_id: 'h5' }, annotations: [annotation(8, [LABELS[0]])] }]);
    assert.throws(() => run(file), /task \[0\].*annotation 8/);
    assert.equal(lsLabels().length, n);
    assert.ok(!lsLabels().some((h) => h.itemId === itemIds[5]));
  });
});

describe('markup in every field that reaches the page, in Chromium', () => {
  const exe = ['/usr/bin/chromium', '/usr/bin/chromium-browser', process.env.CHROMIUM_PATH].find((p) => !!p && fs.existsSync(p));
  const mark = (n: number) => `<img src=x onerror="window.pwned=${n}">`;

  test('labels, task name, teacher names, field names, ids, reasons and messages show as text and run nothing', async (t) => {
    if (!exe) return t.skip('no Chromium found (apt-get install chromium, or set CHROMIUM_PATH)');
    const labels = [`${mark(1)}`, `"><script>window.pwned=2</script>`, 'plain'];
    const file = path.join(dir, 'markup.md');
    fs.writeFileSync(
      file,
      `---\nname: ${JSON.stringify(`</title><script>window.pwned=3</script>`)}\nlabels: ${JSON.stringify(labels)}\ninput: text\n---\n` +
        'Which?\n\nText: {{text}}\n',
    );
    const store = Store.open(dbPath);
    const tf = loadTaskFile(file);
    const rows = [0, 1].map((i) => ({ id: `${mark(4)}-${i}`, text: `${mark(5)} ${i}`, [mark(6)]: `${mark(7)}` }));
    const imported = await importFile(store, tf, writeJsonl(dir, 'markup.jsonl', rows));
    addTeacher(store, imported.taskRow, imported.itemIds, labels);
    sqlOn(store, (db) => db.prepare('UPDATE runs SET teacher = ? WHERE task_id = ?').run(mark(8), imported.taskRow.id));
    const taskName = imported.taskRow.name;
    store.close();
    const r = await serve('markup', { task: taskName });
    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({ executablePath: exe, args: ['--no-sandbox', '--disable-gpu'] });
    try {
      const page = await browser.newPage();
      const dialogs: string[] = [];
      page.on('dialog', (d) => {
        dialogs.push(d.message());
        void d.dismiss();
      });
      await page.goto(r.server.url);
      await page.waitForFunction(() => document.getElementById('item')!.dataset.itemId);
      const body = await page.textContent('body');
      for (const s of [...labels, mark(4), mark(5), mark(6), mark(7), mark(8), taskName]) {
        assert.ok(body!.includes(s), `"${s}" shown as text`);
      }
      assert.equal(await page.title(), `review: ${taskName}`);
      // One answer by its button, so the message line (it echoes the label) shows markup too.
      await page.click('button.label >> nth=0');
      await page.waitForFunction(() => !document.body.classList.contains('busy'));
      assert.equal(await page.evaluate(() => (window as unknown as { pwned?: number }).pwned), undefined);
      assert.equal(await page.$$eval('img', (imgs) => imgs.length), 0, 'no <img> element was made from the markup');
      assert.equal(await page.$$eval('script', (s) => s.length), 1, 'only the page script');
      assert.deepEqual(dialogs, []);
    } finally {
      await browser.close();
      await r.stop();
    }
  });
});
