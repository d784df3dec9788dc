// The store's writer thread (see writer.ts): plain JavaScript, run by plain node (no tsx hooks, which would cost
// most of a second to load in a new thread). It owns a second connection to the database file and commits each
// batch of rows it is sent in one transaction, deflating response bodies here rather than on the labeling thread.
import { Buffer } from 'node:buffer';
import { createRequire } from 'node:module';
import { deflateRawSync } from 'node:zlib';
import { parentPort, workerData } from 'node:worker_threads';

const Database = createRequire(import.meta.url)('better-sqlite3');
const { path, shared, replies } = workerData;
/** [0]: the last batch committed (its sequence number); [1]: 1 once a commit failed. The main thread waits on [0]. */
const state = new Int32Array(shared);

let db;
let failed = false;
let insert;
try {
  db = new Database(path);
  // Per connection, as Store.open sets them on its own (synchronous = NORMAL: a commit survives a process kill).
  db.pragma('busy_timeout = 10000');
  db.pragma('synchronous = NORMAL');
  db.pragma('foreign_keys = ON');
  const response = db.prepare(
    `INSERT INTO responses (request_key, run_id, item_id, status, body, prompt_tokens, completion_tokens, cost, latency_ms, created_at)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  const label = db.prepare(
    `INSERT INTO labels (item_id, run_id, request_key, status, label, soft, soft_method, sparse, raw, prompt_tokens, completion_tokens, cost, latency_ms, attempts, error, created_at)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  const requestError = db.prepare('INSERT INTO request_errors (run_id, item_id, request_key, reason, created_at) VALUES (?, ?, ?, ?, ?)');
  insert = db.transaction((rows) => {
    for (const row of rows) {
      if (row[0] === 'response') {
        const v = row.slice(1);
        v[4] = deflateRawSync(v[4], { level: 1 }); // the body's JSON text
        response.run(v);
      } else if (row[0] === 'label') {
        const v = row.slice(1);
        if (v[5]) v[5] = Buffer.from(v[5].buffer, v[5].byteOffset, v[5].byteLength); // soft: cloned as a Uint8Array
        label.run(v);
      } else requestError.run(row.slice(1));
    }
  });
} catch (e) {
  fail(e);
}

function fail(e) {
  failed = true;
  // The reason first: the main thread, woken, reads it synchronously.
  replies.postMessage({ error: e instanceof Error ? e.message : String(e) });
  Atomics.store(state, 1, 1);
  Atomics.notify(state, 0);
}

parentPort.on('message', (m) => {
  if (m.close) {
    db?.close();
    replies.close();
    parentPort.close();
    return;
  }
  // After a failed commit nothing more is written: the main thread reports the first error and every later write.
  if (failed) return;
  try {
    insert.immediate(m.rows);
  } catch (e) {
    fail(e);
    return;
  }
  Atomics.store(state, 0, m.seq);
  Atomics.notify(state, 0);
  replies.postMessage({ seq: m.seq });
});
