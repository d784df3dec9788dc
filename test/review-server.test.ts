/**
 * The review server over real HTTP (port 0) on a real SQLite file: decisions
 * stored once and only once, conflicts, undo, a restart, two reviewers, and
 * the guards (token, CSRF, Origin, Host, methods, body size and schema). The
 * API key in the environment must appear in no response.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ErrorBody, ReviewState } from '../src/review/api.ts';
import { buildQueue, buildReviewContext } from '../src/review/queue.ts';
import { startReviewServer, type ReviewServer } from '../src/review/server.ts';
import { ReviewSession } from '../src/review/session.ts';
import { Store, type TaskRow } from '../src/store/store.ts';
import {
  animalRows,
  count,
  importFile,
  LABELS,
  loadTaskFile,
  pngFile,
  sqlOn,
  startNode,
  workDir,
  writeJsonl,
  writeTask,
} from './helpers.ts';

const API_KEY = 'sk-review-test-9f8e7d6c5b4a39281706';
const TOKEN = 'review-test-token-0123456789abcdef';

/** Every response of the file, headers and body, for the API-key check. */
const seen: string[] = [];

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  bytes: Buffer;
  json: unknown;
}

/** One request with full control of Host, Origin and the body. */
function call(
  port: number,
  method: string,
  urlPath: string,
  o: { headers?: Record<string, string>; body?: string | Buffer; chunked?: boolean } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...o.headers };
    if (o.body !== undefined && !o.chunked) headers['content-length'] = String(Buffer.byteLength(o.body));
    const req = http.request({ host: '127.0.0.1', port, method, path: urlPath, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const bytes = Buffer.concat(chunks);
        const text = bytes.toString('utf8');
        seen.push(JSON.stringify(res.headers) + text);
        let json: unknown = undefined;
        try {
          json = JSON.parse(text);
        } catch {
          // the page is HTML
        }
        resolve({ status: res.statusCode!, headers: res.headers, text, bytes, json });
      });
    });
    req.on('error', reject);
    if (o.body !== undefined) req.write(o.body);
    req.end();
  });
}

interface Running {
  store: Store;
  server: ReviewServer;
  session: ReviewSession;
  /** GET with the token. */
  get(p: string, headers?: Record<string, string>): Promise<Reply>;
  /** A POST as the page sends it: token, CSRF token, own Origin, JSON. */
  post(p: string, body: unknown, headers?: Record<string, string>): Promise<Reply>;
  csrf: string;
  stop(): Promise<void>;
}

let dir: string;
let dbPath: string;
let taskPath: string;
let taskRow: TaskRow;
let itemIds: number[];
const open: Running[] = [];

/** A review server on its own store (as a separate process would have), policy low-confidence: every item is in the queue. */
async function serve(reviewer: string, o: { token?: string | null; task?: string } = {}): Promise<Running> {
  const store = Store.open(dbPath);
  const task = store.findTask(o.task ?? 'animals')!;
  const ctx = await buildReviewContext(store, task, {});
  const queue = buildQueue(ctx, 'low-confidence');
  const session = new ReviewSession({ store, ctx, policy: 'low-confidence', queue, reviewer });
  const token = o.token === undefined ? null : o.token;
  const server = await startReviewServer({ session, port: 0, token });
  const auth: Record<string, string> = token ? { 'x-review-token': token } : {};
  const page = await call(server.port, 'GET', '/', { headers: auth });
  const csrf = /<meta name="csrf-token" content="([^"]+)">/.exec(page.text)?.[1];
  assert.ok(csrf, 'the page carries its CSRF token');
  const origin = `http://127.0.0.1:${server.port}`;
  const r: Running = {
    store,
    server,
    session,
    csrf,
    get: (p, headers = {}) => call(server.port, 'GET', p, { headers: { ...auth, ...headers } }),
    post: (p, body, headers = {}) =>
      call(server.port, 'POST', p, {
        headers: { ...auth, 'content-type': 'application/json', 'x-csrf-token': csrf, origin, ...headers },
        body: JSON.stringify(body),
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

/** A 200 ReviewState, checked against the contract's schema. */
function state(r: Reply): ReviewState {
  assert.equal(r.status, 200, r.text);
  return ReviewState.parse(r.json);
}

function humanLabels(store: Store, reviewer?: string): Array<{ item_id: number; label: string; teacher: string }> {
  return sqlOn(store, (db) =>
    db
      .prepare(
        `SELECT l.item_id, l.label, r.teacher FROM labels l JOIN runs r ON r.id = l.run_id
       WHERE r.kind = 'human' ${reviewer ? 'AND r.teacher = ?' : ''} ORDER BY l.id`,
      )
      .all(...(reviewer ? [`human:${reviewer}`] : [])),
  ) as Array<{ item_id: number; label: string; teacher: string }>;
}

/** Two teachers with hard labels: they agree on items 1, 2, 3, 5, 6, 7, … and disagree on every fourth. */
function addTeachers(store: Store, task: TaskRow, ids: number[]): void {
  for (const [name, wrong] of [
    ['teacher-a', () => false],
    ['teacher-b', (i: number) => i % 4 === 0],
  ] as const) {
    const run = store.createRun({
      task_id: task.id,
      kind: 'llm',
      teacher: name,
      base_url: null,
      prompt_version: 'p',
      config_hash: `cfg-${task.name}-${name}`,
      params: '{}',
      labels: JSON.stringify(LABELS),
      items_total: ids.length,
    });
    ids.forEach((itemId, i) => {
      const k = (i + (wrong(i) ? 1 : 0)) % LABELS.length;
      store.insertLabel({
        ...{
          itemId,
          runId: run.id,
          requestKey: `${task.name}-${name}-${i}`,
          status: 'ok',
          label: LABELS[k],
          soft: null,
          softMethod: 'none',
        },
        ...{ sparse: false, raw: null, promptTokens: 1, completionTokens: 1, cost: 0, latencyMs: 1, attempts: 1, error: null },
      });
    });
    store.finishRun(run.id, 'completed', null);
  }
}

before(async () => {
  process.env.OPENAI_API_KEY = API_KEY;
  dir = workDir();
  dbPath = path.join(dir, 'review.db');
  const task = loadTaskFile((taskPath = writeTask(dir)));
  const store = Store.open(dbPath);
  const imported = await importFile(store, task, writeJsonl(dir, 'items.jsonl', animalRows(12)));
  taskRow = imported.taskRow;
  itemIds = imported.itemIds;
  addTeachers(store, taskRow, itemIds);
  // An image task in the same database, for /api/image.
  const pics = loadTaskFile(writeTask(dir, { name: 'pics', input: 'image' }));
  const rows = [0, 1, 2].map((i) => ({ id: `p${i}`, image: path.basename(pngFile(dir, `p${i}.png`, i)) }));
  const picsImported = await importFile(store, pics, writeJsonl(dir, 'pics.jsonl', rows));
  addTeachers(store, picsImported.taskRow, picsImported.itemIds);
  store.close();
});

after(async () => {
  for (const r of [...open]) await r.stop();
});

describe('review server: decisions', () => {
  test('decide → state: exactly one human label; the same decide again (a second tab) stores nothing more', async () => {
    const a = await serve('alice');
    const first = state(await a.get('/api/state'));
    assert.equal(first.reviewer, 'alice');
    assert.equal(first.progress.queue, 12);
    assert.deepEqual([first.progress.done, first.progress.skipped, first.progress.agreement], [0, 0, null]);
    const item = first.item!;
    // low-confidence: the items the teachers disagree on (target 50%) come first
    assert.equal(itemIds.indexOf(item.id) % 4, 0);
    const after1 = state(await a.post('/api/decide', { itemId: item.id, label: 'bird' }));
    assert.notEqual(after1.item!.id, item.id, 'the next item is shown');
    assert.equal(after1.progress.done, 1);
    assert.deepEqual(after1.undo && [after1.undo.itemId, after1.undo.label], [item.id, 'bird']);
    assert.deepEqual(
      humanLabels(a.store).map((l) => [l.item_id, l.label, l.teacher]),
      [[item.id, 'bird', 'human:alice']],
    );
    const shown = sqlOn(a.store, (db) => db.prepare(`SELECT shown, source FROM reviews WHERE item_id = ?`).get(item.id)) as {
      shown: string;
      source: string;
    };
    assert.equal(shown.source, 'page');
    assert.deepEqual(
      (({ policy, reason, target, suggestion }) => ({ policy, reason, target, suggestion }))(JSON.parse(shown.shown)),
      { policy: 'low-confidence', reason: item.reason.text, target: item.target!.label, suggestion: item.suggestion },
      'what the page showed is stored with the decision',
    );
    const again = state(await a.post('/api/decide', { itemId: item.id, label: 'bird' }));
    assert.equal(again.item!.id, after1.item!.id);
    assert.equal(humanLabels(a.store).length, 1);
    assert.equal(count(a.store, `SELECT count(*) AS n FROM reviews WHERE item_id = ? AND action = 'label'`, item.id), 1);
    // agreement: bird is the target of neither this item's teachers' 50/50 (cat/dog) nor anything else
    assert.equal(again.progress.agreement, 0);
    await a.stop();
  });

  test('a conflicting decide is 409 with the fresh state, and stores nothing', async () => {
    const a = await serve('alice');
    const decided = humanLabels(a.store, 'alice')[0];
    const r = await a.post('/api/decide', { itemId: decided.item_id, label: 'cat' });
    assert.equal(r.status, 409, r.text);
    const body = ErrorBody.parse(r.json);
    assert.match(body.error, /already labeled bird/);
    assert.equal(body.state!.progress.done, 1);
    assert.notEqual(body.state!.item!.id, decided.item_id);
    assert.deepEqual(
      humanLabels(a.store).map((l) => l.label),
      ['bird'],
    );
    await a.stop();
  });

  test('undo: the label row goes, the log keeps it, and the item is shown again first', async () => {
    const a = await serve('alice');
    const s0 = state(await a.get('/api/state'));
    const item = s0.item!.id;
    const s1 = state(await a.post('/api/decide', { itemId: item, label: 'dog' }));
    assert.equal(s1.undo!.itemId, item);
    const s2 = state(await a.post('/api/undo', {}));
    assert.equal(s2.item!.id, item, 'the undone item comes back first');
    assert.match(s2.message!, /undone/);
    assert.equal(s2.progress.done, 1);
    assert.ok(!humanLabels(a.store).some((l) => l.item_id === item));
    assert.equal(count(a.store, `SELECT count(*) AS n FROM reviews WHERE item_id = ? AND action = 'undo'`, item), 1);
    // the same undo again (another tab): the decision is already undone, nothing is written
    const s3 = state(await a.post('/api/undo', { decisionId: s1.undo!.decisionId }));
    assert.match(s3.message!, /already undone/);
    assert.equal(count(a.store, `SELECT count(*) AS n FROM reviews WHERE action = 'undo'`), 1);
    // now a different answer for it is no conflict
    const s4 = state(await a.post('/api/decide', { itemId: item, label: 'cat' }));
    assert.equal(s4.progress.done, 2);
    // an item decided out of order (the last of the queue), then undone, is shown before the current one
    const last = a.session.queue.at(-1)!.itemId;
    const s5 = state(await a.post('/api/decide', { itemId: last, label: 'dog' }));
    assert.equal(s5.item!.id, s4.item!.id);
    const s6 = state(await a.post('/api/undo', {}));
    assert.equal(s6.item!.id, last);
    assert.equal(s6.progress.done, 2);
    await a.stop();
  });

  test('a restart continues where the reviewer stopped; skipped items come again at the end, once', async () => {
    const a = await serve('alice');
    const s0 = state(await a.get('/api/state'));
    const skipped = s0.item!.id;
    let s = state(await a.post('/api/decide', { itemId: skipped, label: null }));
    assert.equal(s.progress.skipped, 1);
    const next = s.item!.id;
    await a.stop();

    const b = await serve('alice');
    s = state(await b.get('/api/state'));
    assert.equal(s.item!.id, next, 'the restarted server shows the next undecided item');
    assert.deepEqual([s.progress.done, s.progress.skipped], [2, 1]);
    const labeled = new Set(humanLabels(b.store, 'alice').map((l) => l.item_id));
    while (s.item && s.item.id !== skipped) {
      assert.ok(!labeled.has(s.item.id), `item ${s.item.id} shown twice`);
      labeled.add(s.item.id);
      s = state(await b.post('/api/decide', { itemId: s.item.id, label: s.item.suggestion }));
    }
    assert.equal(s.item?.id, skipped, 'the skipped item comes back after the rest');
    assert.deepEqual([s.progress.done, s.progress.skipped], [11, 1]);
    s = state(await b.post('/api/decide', { itemId: skipped, label: 'cat' }));
    assert.equal(s.item, null, 'all labeled: the queue is done');
    assert.deepEqual([s.progress.done, s.progress.skipped], [12, 0]);
    // undoing that label leaves the earlier skip live: the item is still shown again first
    s = state(await b.post('/api/undo', {}));
    assert.equal(s.item?.id, skipped);
    assert.deepEqual([s.progress.done, s.progress.skipped], [11, 1]);
    s = state(await b.post('/api/decide', { itemId: skipped, label: null }));
    assert.equal(s.item, null, 'skipped twice: the queue is done for this session');
    assert.equal(count(b.store, `SELECT count(*) AS n FROM reviews WHERE action = 'skip'`), 1);
    assert.equal(humanLabels(b.store, 'alice').length, 11);
    // suggestions accepted: alice agrees with the target on every label she took from it
    assert.ok(s.progress.agreement! > 0.7, String(s.progress.agreement));
    await b.stop();
  });

  test('two reviewers on one database: each their own human run, both answers stored', async () => {
    const a = await serve('alice');
    const bob = await serve('bob');
    const sb = state(await bob.get('/api/state'));
    assert.equal(sb.progress.done, 0, "alice's answers are not bob's");
    const item = sb.item!.id;
    state(await bob.post('/api/decide', { itemId: item, label: 'cat' }));
    const alice = humanLabels(a.store, 'alice').find((l) => l.item_id === item);
    assert.ok(alice, 'alice labeled this item before');
    assert.deepEqual(
      humanLabels(a.store, 'bob').map((l) => [l.item_id, l.label]),
      [[item, 'cat']],
    );
    assert.equal(count(a.store, `SELECT count(*) AS n FROM runs WHERE kind = 'human'`), 2);
    await bob.stop();
    await a.stop();
  });
});

describe('review server: guards', () => {
  let g: Running;
  let port: number;
  before(async () => {
    g = await serve('carol', { token: TOKEN });
    port = g.server.port;
  });
  after(async () => {
    await g.stop();
  });

  test('every response carries the security headers', async () => {
    for (const r of [await g.get('/'), await g.get('/api/state'), await call(port, 'GET', '/api/state'), await g.get('/nowhere')]) {
      const csp = String(r.headers['content-security-policy']);
      assert.match(csp, /default-src 'none'/);
      assert.match(csp, /script-src 'nonce-[0-9a-f]+'/);
      assert.match(csp, /img-src 'self' data:/);
      assert.doesNotMatch(csp, /unsafe-inline|\*|https?:/);
      assert.equal(r.headers['x-content-type-options'], 'nosniff');
      assert.equal(r.headers['referrer-policy'], 'no-referrer');
      assert.equal(r.headers['cache-control'], 'no-store');
    }
    const page = await g.get('/');
    const nonce = /'nonce-([0-9a-f]+)'/.exec(String(page.headers['content-security-policy']))![1];
    assert.ok(page.text.includes(`nonce="${nonce}"`), "the page's script carries the response's nonce");
  });

  test('no token or a wrong token: 401; the token by header or ?token= is accepted', async () => {
    assert.equal((await call(port, 'GET', '/api/state')).status, 401);
    assert.equal((await call(port, 'GET', '/')).status, 401);
    assert.equal((await call(port, 'GET', '/api/state', { headers: { 'x-review-token': `${TOKEN}x` } })).status, 401);
    assert.equal((await call(port, 'GET', `/api/state?token=${TOKEN.slice(0, -1)}`)).status, 401);
    const post = await call(port, 'POST', '/api/decide', {
      headers: { 'content-type': 'application/json', 'x-csrf-token': g.csrf, origin: `http://127.0.0.1:${port}` },
      body: JSON.stringify({ itemId: itemIds[0], label: 'cat' }),
    });
    assert.equal(post.status, 401);
    assert.equal(ErrorBody.parse(post.json).error, 'this server needs its access token');
    state(await call(port, 'GET', `/api/state?token=${TOKEN}`));
    state(await g.get('/api/state'));
    assert.equal(humanLabels(g.store, 'carol').length, 0);
  });

  test('a missing CSRF token, a foreign or missing Origin, a foreign Host: 403', async () => {
    const item = state(await g.get('/api/state')).item!.id;
    const body = { itemId: item, label: 'cat' };
    const refused = [
      await g.post('/api/decide', body, { 'x-csrf-token': '' }),
      await g.post('/api/decide', body, { 'x-csrf-token': 'a'.repeat(32) }),
      await g.post('/api/decide', body, { origin: 'http://evil.example' }),
      await g.post('/api/decide', body, { origin: `http://localhost:${port + 1}` }),
      await g.post('/api/decide', body, { origin: 'null' }),
      await g.post('/api/undo', {}, { origin: 'http://evil.example' }),
      // DNS rebinding: a name of the attacker's resolving to 127.0.0.1
      await g.get('/api/state', { host: `evil.example:${port}` }),
      await g.post('/api/decide', body, { host: `evil.example:${port}`, origin: `http://evil.example:${port}` }),
    ];
    assert.deepEqual(
      refused.map((r) => r.status),
      refused.map(() => 403),
    );
    const noOrigin = await call(port, 'POST', '/api/decide', {
      headers: { 'x-review-token': TOKEN, 'content-type': 'application/json', 'x-csrf-token': g.csrf },
      body: JSON.stringify(body),
    });
    assert.equal(noOrigin.status, 403);
    assert.equal(humanLabels(g.store, 'carol').length, 0, 'nothing refused was stored');
    // localhost is this server too, and so is a tunnel's other port (ssh -L 9000:127.0.0.1:PORT): same Host, same Origin
    state(await g.post('/api/decide', { itemId: item, label: null }, { host: `localhost:${port}`, origin: `http://localhost:${port}` }));
    state(await g.post('/api/undo', {}, { host: `[::1]:9000`, origin: `http://[::1]:9000` }));
    assert.equal((await g.get('/api/state', { host: `127.0.0.2:9000` })).status, 200);
    assert.equal((await g.get('/api/state', { host: `localhost.evil.example:${port}` })).status, 403);
  });

  test('a GET to a POST route and a POST to a GET route: 405; an unknown path: 404', async () => {
    const r = await g.get('/api/decide');
    assert.equal(r.status, 405);
    assert.equal(r.headers.allow, 'POST');
    assert.equal((await g.get('/api/undo')).status, 405);
    assert.equal((await g.post('/api/state', {})).status, 405);
    assert.equal((await g.get('/api/nothing')).status, 404);
    assert.equal((await g.get('/api/image/abc')).status, 404);
    assert.equal((await g.get(`/api/image/${itemIds[0]}`)).status, 404, 'a text item has no image');
  });

  test('a server on a non-loopback address without a token does not start', async () => {
    await assert.rejects(startReviewServer({ session: g.session, host: '0.0.0.0', port: 0, token: null }), /needs an access token/);
  });

  test('a 1 MB body: 413, declared or streamed', async () => {
    const big = JSON.stringify({ itemId: itemIds[0], label: 'x'.repeat(1 << 20) });
    const headers = {
      'x-review-token': TOKEN,
      'content-type': 'application/json',
      'x-csrf-token': g.csrf,
      origin: `http://127.0.0.1:${port}`,
    };
    const declared = await call(port, 'POST', '/api/decide', { headers, body: big });
    assert.equal(declared.status, 413, declared.text);
    const streamed = await call(port, 'POST', '/api/decide', { headers, body: big, chunked: true });
    assert.equal(streamed.status, 413, streamed.text);
    assert.equal(humanLabels(g.store, 'carol').length, 0);
  });

  test('a body failing the schema, not JSON, or naming a label or item the review does not have: 400/404', async () => {
    const bad = [
      await g.post('/api/decide', { itemId: 'one', label: 'cat' }),
      await g.post('/api/decide', { itemId: itemIds[0] }),
      await g.post('/api/decide', { itemId: itemIds[0], label: 'cat', extra: 1 }),
      await g.post('/api/decide', { itemId: itemIds[0], label: 'zebra' }),
      await g.post('/api/undo', { decisionId: -1 }),
      await g.post('/api/undo', { decisionId: 999999 }),
      await call(port, 'POST', '/api/decide', {
        headers: {
          'x-review-token': TOKEN,
          'content-type': 'application/json',
          'x-csrf-token': g.csrf,
          origin: `http://127.0.0.1:${port}`,
        },
        body: '{"itemId": 1,',
      }),
      await g.post('/api/decide', { itemId: itemIds[0], label: 'cat' }, { 'content-type': 'text/plain' }),
    ];
    assert.deepEqual(
      bad.map((r) => r.status),
      bad.map(() => 400),
    );
    for (const r of bad) assert.equal(typeof ErrorBody.parse(r.json).error, 'string');
    assert.equal((await g.post('/api/decide', { itemId: 999999, label: 'cat' })).status, 404);
    assert.equal(humanLabels(g.store, 'carol').length, 0);
  });
});

describe('review server: images', () => {
  test("GET /api/image/:id: the item's bytes as image/png, with the token by ?token=; other tasks' items are not served", async () => {
    const r = await serve('erin', { task: 'pics', token: TOKEN });
    const item = state(await r.get('/api/state')).item!;
    assert.equal(item.image, `/api/image/${item.id}`);
    const img = await call(r.server.port, 'GET', `${item.image}?token=${TOKEN}`);
    assert.equal(img.status, 200);
    assert.equal(img.headers['content-type'], 'image/png');
    const file = fs.readFileSync(path.join(dir, `${item.extId}.png`));
    assert.ok(img.bytes.equals(file), 'the stored bytes');
    assert.equal((await call(r.server.port, 'GET', item.image!)).status, 401);
    assert.equal((await r.get(`/api/image/${itemIds[0]}`)).status, 404, 'an item of another task');
    await r.stop();
  });
});

describe('scripts/review.ts', () => {
  test('a non-loopback --host gets a token and prints it; Ctrl-C stops it with every answer kept', async () => {
    const { child, done } = startNode(
      [
        'scripts/review.ts',
        '--db',
        dbPath,
        '--policy',
        'low-confidence',
        '--port',
        '0',
        '--host',
        '0.0.0.0',
        '--reviewer',
        'dave',
        '--task',
        'animals',
      ],
      { OPENAI_API_KEY: API_KEY },
    );
    let out = '';
    const url = await new Promise<URL>((resolve, reject) => {
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /review at (http:\S+)/.exec(out);
        if (m) resolve(new URL(m[1]));
      });
      child.on('exit', () => reject(new Error(`exited before serving: ${out}`)));
    });
    assert.match(out, /queue of 12 item\(s\) \(policy low-confidence; teacher\(s\) teacher-a, teacher-b, mean\)/);
    assert.match(out, /guidelines: none \(no task file for "animals" in prompts\/\)/);
    const token = /access token \(every request needs it\): ([0-9a-f]{32})/.exec(out)?.[1];
    assert.ok(token, out);
    assert.equal(url.searchParams.get('token'), token);
    const port = Number(url.port);
    assert.equal((await call(port, 'GET', '/api/state')).status, 401);
    const s = state(await call(port, 'GET', '/api/state', { headers: { 'x-review-token': token } }));
    const page = await call(port, 'GET', `/?token=${token}`);
    const csrf = /<meta name="csrf-token" content="([^"]+)">/.exec(page.text)![1];
    state(
      await call(port, 'POST', '/api/decide', {
        headers: { 'x-review-token': token, 'content-type': 'application/json', 'x-csrf-token': csrf, origin: `http://127.0.0.1:${port}` },
        body: JSON.stringify({ itemId: s.item!.id, label: 'dog' }),
      }),
    );
    child.kill('SIGINT');
    const r = await done;
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /stopped: 1 labeled/);
    assert.ok(!r.stdout.includes(API_KEY) && !r.stderr.includes(API_KEY));
    const store = Store.open(dbPath);
    try {
      assert.deepEqual(
        humanLabels(store, 'dave').map((l) => [l.item_id, l.label]),
        [[s.item!.id, 'dog']],
      );
    } finally {
      store.close();
    }
  });
});

test('DISTILLERY_REVIEW_TOKEN: a token from the environment (not on the command line, where ps shows it) guards a loopback server', async () => {
  const token = 'env-token-0123456789abcdef';
  const { child, done } = startNode(
    ['scripts/review.ts', '--db', dbPath, '--policy', 'low-confidence', '--port', '0', '--reviewer', 'erin', '--task', taskPath],
    { DISTILLERY_REVIEW_TOKEN: token },
  );
  try {
    let out = '';
    const url = await new Promise<URL>((resolve, reject) => {
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /review at (http:\S+)/.exec(out);
        if (m) resolve(new URL(m[1]));
      });
      child.on('exit', () => reject(new Error(`exited before serving: ${out}`)));
    });
    // Any *_TOKEN value from the environment is masked in what the CLI prints: the user has it already.
    assert.equal(url.searchParams.get('token'), '[redacted]');
    assert.ok(!out.includes(token) && !out.includes('access token (every request needs it)'), out);
    const port = Number(url.port);
    assert.equal((await call(port, 'GET', '/api/state')).status, 401);
    const s = state(await call(port, 'GET', '/api/state', { headers: { 'x-review-token': token } }));
    // --task names the file: its body is the reviewer's guidelines (the dave test's --task animals has no file in prompts/).
    assert.equal(s.guidelines, 'Which animal is this about?\n\nText: {{text}}');
    assert.match(out, /guidelines: the instructions of .*animals\.md/);
  } finally {
    child.kill('SIGINT');
  }
  const r = await done;
  assert.equal(r.code, 0, r.stderr);
});

test('the API key set in the environment appears in no response', () => {
  assert.ok(seen.length > 40, `only ${seen.length} responses checked`);
  for (const [i, s] of seen.entries()) assert.ok(!s.includes(API_KEY), `response ${i} carries the API key`);
});
