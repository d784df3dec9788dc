/**
 * The store's schema, as an ordered list of migrations. `PRAGMA user_version`
 * holds how many have been applied; a database from an older version is
 * brought up to date on open, inside one transaction per step.
 * Never edit a released step: add a new one.
 */
export const MIGRATIONS: string[] = [
  // v1: tasks, items, image blobs, runs, paid responses, labels.
  `
  CREATE TABLE tasks (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    labels      TEXT NOT NULL,             -- JSON array; the order of every stored distribution
    input_kind  TEXT NOT NULL,             -- text | image
    created_at  TEXT NOT NULL
  );

  CREATE TABLE blobs (
    sha256      TEXT PRIMARY KEY,
    mime        TEXT NOT NULL,
    bytes       BLOB NOT NULL
  );

  CREATE TABLE items (
    id          INTEGER PRIMARY KEY,
    task_id     INTEGER NOT NULL REFERENCES tasks(id),
    ext_id      TEXT NOT NULL,             -- the user's id (or row number)
    hash        TEXT NOT NULL,             -- sha256 of the content
    input       TEXT NOT NULL,             -- JSON of the fields the template may use
    image       TEXT REFERENCES blobs(sha256),
    gold        TEXT,
    split       TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    UNIQUE (task_id, hash),
    UNIQUE (task_id, ext_id)
  );

  CREATE TABLE runs (
    id              INTEGER PRIMARY KEY,
    task_id         INTEGER NOT NULL REFERENCES tasks(id),
    kind            TEXT NOT NULL,         -- llm (black-box teacher) | logits (white-box ingest)
    teacher         TEXT NOT NULL,         -- model name (llm) or the teacher's given name (logits)
    base_url        TEXT,
    prompt_version  TEXT,                  -- sha256 of the task file (llm runs)
    source          TEXT,                  -- logits runs: the ingested file's name (no directory)
    source_hash     TEXT,                  -- logits runs: sha256 of the ingested file (and ids file)
    config_hash     TEXT NOT NULL,         -- what makes two invocations the same run
    params          TEXT NOT NULL,         -- JSON: decoding parameters, soft mode, limits
    labels          TEXT NOT NULL,         -- JSON array of the task's labels at the time
    status          TEXT NOT NULL,         -- running | completed | stopped | interrupted | failed
    items_total     INTEGER NOT NULL DEFAULT 0,
    started_at      TEXT NOT NULL,
    ended_at        TEXT,
    message         TEXT
  );
  CREATE INDEX runs_config ON runs (config_hash, id);

  -- Every answer the teacher was paid for, valid or not: the idempotency ledger.
  CREATE TABLE responses (
    id                 INTEGER PRIMARY KEY,
    request_key        TEXT NOT NULL,
    run_id             INTEGER NOT NULL REFERENCES runs(id),
    item_id            INTEGER NOT NULL REFERENCES items(id),
    status             TEXT NOT NULL,      -- ok | invalid
    body               BLOB NOT NULL,      -- deflated JSON: choices (content, logprobs), usage, model
    prompt_tokens      INTEGER NOT NULL,
    completion_tokens  INTEGER NOT NULL,
    cost               REAL NOT NULL,
    latency_ms         INTEGER NOT NULL,
    created_at         TEXT NOT NULL
  );
  CREATE INDEX responses_run ON responses (run_id);

  -- Requests that got no answer (429, 5xx, timeouts, dropped connections): nothing paid.
  -- A run's requests = its responses + its request errors.
  CREATE TABLE request_errors (
    id           INTEGER PRIMARY KEY,
    run_id       INTEGER NOT NULL REFERENCES runs(id),
    item_id      INTEGER NOT NULL REFERENCES items(id),
    request_key  TEXT NOT NULL,
    reason       TEXT NOT NULL,
    created_at   TEXT NOT NULL
  );
  CREATE INDEX request_errors_run ON request_errors (run_id);

  CREATE TABLE labels (
    id                 INTEGER PRIMARY KEY,
    item_id            INTEGER NOT NULL REFERENCES items(id),
    run_id             INTEGER NOT NULL REFERENCES runs(id),
    request_key        TEXT NOT NULL,
    status             TEXT NOT NULL,      -- ok | failed
    label              TEXT,               -- hard label
    soft               BLOB,               -- soft-label codec (src/soft/codec.ts)
    soft_method        TEXT NOT NULL,      -- logprobs | samples:N | none
    sparse             INTEGER NOT NULL DEFAULT 0,
    raw                TEXT,               -- the teacher's answer as text
    prompt_tokens      INTEGER NOT NULL DEFAULT 0,
    completion_tokens  INTEGER NOT NULL DEFAULT 0,
    cost               REAL NOT NULL DEFAULT 0,
    latency_ms         INTEGER NOT NULL DEFAULT 0,
    attempts           INTEGER NOT NULL DEFAULT 0,
    error              TEXT,
    created_at         TEXT NOT NULL
  );
  CREATE INDEX labels_item ON labels (item_id, run_id);
  CREATE INDEX labels_run ON labels (run_id, status);
  CREATE INDEX labels_key ON labels (request_key, status);
  `,

  // v2: relabeling (what each relabel run selected and why, its drift) and the lease that keeps relabels one at a time.
  `
  CREATE TABLE relabels (
    id            INTEGER PRIMARY KEY,
    task_id       INTEGER NOT NULL REFERENCES tasks(id),
    salt          TEXT NOT NULL UNIQUE,   -- part of every request key of this relabel (see TeacherSettings.keySalt)
    base_config   TEXT NOT NULL,          -- config hash of the teacher settings without the salt: what a resume must match
    run_id        INTEGER REFERENCES runs(id),
    policies      TEXT NOT NULL,          -- JSON: the --policy list as given
    status        TEXT NOT NULL,          -- selected | running | completed | stopped | interrupted | failed
    drift         TEXT,                   -- JSON: compared, changed, confusion {old: {new: n}}
    created_at    TEXT NOT NULL,
    ended_at      TEXT
  );
  CREATE INDEX relabels_task ON relabels (task_id, id);

  CREATE TABLE relabel_items (
    relabel_id     INTEGER NOT NULL REFERENCES relabels(id),
    item_id        INTEGER NOT NULL REFERENCES items(id),
    reason         TEXT NOT NULL,         -- disagree | low-confidence | changed | stale
    rank           INTEGER NOT NULL,      -- order of selection (most useful first)
    prev_label_id  INTEGER REFERENCES labels(id),
    PRIMARY KEY (relabel_id, item_id)
  );

  -- One row per named lease; a holder renews expires_at while it works, so a crashed holder frees it after the TTL.
  CREATE TABLE leases (
    name         TEXT PRIMARY KEY,
    holder       TEXT NOT NULL,           -- host:pid:random
    pid          INTEGER NOT NULL,
    host         TEXT NOT NULL,
    command      TEXT NOT NULL,
    acquired_at  TEXT NOT NULL,
    expires_at   TEXT NOT NULL
  );
  `,

  // v3: the Batch API job ledger (src/store/batch-ledger.ts): what was uploaded and submitted, so a rerun resumes polling
  // and never resubmits a request that is in a live job.
  `
  CREATE TABLE batch_jobs (
    id              INTEGER PRIMARY KEY,
    run_id          INTEGER NOT NULL REFERENCES runs(id),
    token           TEXT NOT NULL UNIQUE,  -- random; in the batch's metadata, to find a batch created just before a crash
    state           TEXT NOT NULL,         -- preparing | uploaded | submitted | done
    remote_status   TEXT,                  -- the API's status: validating | in_progress | finalizing | cancelling | completed | failed | expired | cancelled
    input_file_id   TEXT,
    batch_id        TEXT,
    output_file_id  TEXT,
    error_file_id   TEXT,
    requests        INTEGER NOT NULL,
    bytes           INTEGER NOT NULL,
    reserved        REAL NOT NULL DEFAULT 0, -- worst-case cost held against --max-cost until the job is ingested
    cost            REAL NOT NULL DEFAULT 0, -- what its answers cost (batch price), once ingested
    message         TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    ended_at        TEXT
  );
  CREATE INDEX batch_jobs_run ON batch_jobs (run_id, state);
  CREATE INDEX batch_jobs_state ON batch_jobs (state);

  CREATE TABLE batch_requests (
    job_id         INTEGER NOT NULL REFERENCES batch_jobs(id),
    request_key    TEXT NOT NULL,          -- also the line's custom_id
    item_id        INTEGER NOT NULL REFERENCES items(id),
    state          TEXT NOT NULL,          -- pending | answered | invalid | failed | error
    est_prompt     INTEGER NOT NULL DEFAULT 0,
    prompt_tokens  INTEGER,
    error          TEXT,
    PRIMARY KEY (job_id, request_key)
  );
  CREATE INDEX batch_requests_key ON batch_requests (request_key, state);
  `,

  // v4: augmentation replay (TinyViT): a logits run ingested with --augment and --epochs holds, per epoch and item, the
  // seed of the augmented view the teacher saw and its output on that view (src/store/replay.ts). The run's ordinary
  // labels stay the teacher's on the unaugmented image (what export, eval and the teachers report read).
  `
  CREATE TABLE replay_labels (
    run_id    INTEGER NOT NULL REFERENCES runs(id),
    epoch     INTEGER NOT NULL,           -- 0 .. E-1
    item_id   INTEGER NOT NULL REFERENCES items(id),
    aug_seed  INTEGER NOT NULL,           -- int32: the view's augmentation seed (src/train/augment.ts)
    label     TEXT NOT NULL,              -- the teacher's argmax on the view
    soft      BLOB NOT NULL,              -- its output on the view, soft-label codec (src/soft/codec.ts)
    PRIMARY KEY (run_id, epoch, item_id)
  ) WITHOUT ROWID;
  `,

  // v5: per label set, the default max_tokens (a token count) as first computed in this database: later runs read it
  // rather than load the tokenizer (most of a second), and keep the same value, so their request keys stay the same.
  `
  CREATE TABLE default_max_tokens (
    labels      TEXT PRIMARY KEY,         -- JSON array of the labels
    max_tokens  INTEGER NOT NULL,
    created_at  TEXT NOT NULL
  );
  `,

  // v6: people in the loop (src/store/reviews.ts). A reviewer's live decisions are the labels of their human run
  // (runs.kind = 'human', soft_method 'human', request_key 'review:<reviews.id>'); this table is the append-only log of
  // every decision, skip and undo, so that an undo can delete the label row and still nothing is lost.
  `
  CREATE TABLE reviews (
    id          INTEGER PRIMARY KEY,
    task_id     INTEGER NOT NULL REFERENCES tasks(id),
    run_id      INTEGER NOT NULL REFERENCES runs(id),   -- the reviewer's human run
    item_id     INTEGER NOT NULL REFERENCES items(id),
    reviewer    TEXT NOT NULL,
    action      TEXT NOT NULL,            -- label | skip | undo
    label       TEXT,                     -- label: the class chosen
    undoes      INTEGER REFERENCES reviews(id), -- undo: the decision it takes back
    source      TEXT NOT NULL,            -- page | labelstudio
    source_key  TEXT,                     -- labelstudio: '<task id>:<annotation id>', so a second import adds nothing
    shown       TEXT,                     -- JSON: what the reviewer was shown (policy, reason, target…)
    created_at  TEXT NOT NULL
  );
  CREATE INDEX reviews_run_item ON reviews (run_id, item_id, id);
  CREATE INDEX reviews_task ON reviews (task_id, id);
  CREATE UNIQUE INDEX reviews_source_key ON reviews (run_id, source, source_key) WHERE source_key IS NOT NULL;
  CREATE UNIQUE INDEX reviews_undoes ON reviews (undoes) WHERE undoes IS NOT NULL;
  `,
];

export const SCHEMA_VERSION = MIGRATIONS.length;
