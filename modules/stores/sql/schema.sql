-- The queue's objects on a database that has the host tables: a fresh install of the CURRENT version.
-- pgvector is installed first (extension.sql). A database that already has an older version is
-- upgraded by migrations/NNNN_*.sql instead (each applied
-- once, in order, under an advisory lock; see modules/stores/migrations.py), and a test checks that both
-- roads end in the same schema. After this file come the function files (queue.sql, repair.sql,
-- knowledge.sql, grants.sql). Placeholders in double braces are validated, quoted identifiers or type
-- names (modules/stores/sql_templates.py); values are never templated.


-- The queue's own state, one row per chunk, kept beside the host's columns.
ALTER TABLE {{chunks}}
    ADD COLUMN IF NOT EXISTS embedding_attempts         integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS embedding_error            text,
    ADD COLUMN IF NOT EXISTS embedding_failed_at        timestamptz,
    ADD COLUMN IF NOT EXISTS embedding_model            text,
    ADD COLUMN IF NOT EXISTS content_hash               text,
    ADD COLUMN IF NOT EXISTS embedded_at                timestamptz,
    ADD COLUMN IF NOT EXISTS embedding_lease_owner      text,
    ADD COLUMN IF NOT EXISTS embedding_lease_expires_at timestamptz,
    ADD COLUMN IF NOT EXISTS embedded_by                text;

-- Claiming walks these partial indexes in (doc_id, chunk_index) order, so a claim costs the same
-- whether 10 or 10 million chunks are waiting, and counting pending or failed rows stays cheap.
CREATE INDEX IF NOT EXISTS {{index_pending}} ON {{chunks}} (doc_id, chunk_index)
    WHERE {{embedding}} IS NULL AND embedding_failed_at IS NULL;
CREATE INDEX IF NOT EXISTS {{index_failed}} ON {{chunks}} (doc_id, chunk_index)
    WHERE {{embedding}} IS NULL AND embedding_failed_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS {{index_doc}} ON {{chunks}} (doc_id);

-- The embedding cache: identical text (normalized), under the same model, dimension, task type and
-- title, is embedded once, ever. Keyed by a sha256 computed by the client (see batch_embedding.py).
CREATE TABLE IF NOT EXISTS {{cache}} (
    cache_key   text PRIMARY KEY,
    model       text NOT NULL,
    embedding   {{vector}} NOT NULL,
    hits        bigint NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Which versions of this schema the database has (see migrations/). Read by the migrator; the queue
-- functions never touch it.
CREATE TABLE IF NOT EXISTS {{migrations_table}} (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- ==== version 6: operations (see migrations/0006_operations.sql) ====

-- When a chunk became pending (inserted, or its text or vector changed to need an embedding): set by the
-- trigger of operations.sql; the age of the oldest pending chunk is measured from it.
ALTER TABLE {{chunks}} ADD COLUMN IF NOT EXISTS embedding_queued_at timestamptz DEFAULT now();
CREATE INDEX IF NOT EXISTS {{index_queued}} ON {{chunks}} (embedding_queued_at)
    WHERE {{embedding}} IS NULL AND embedding_failed_at IS NULL;

-- Run history: one row per run, and one per period of a watcher in which it did something.
CREATE TABLE IF NOT EXISTS {{runs_table}} (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind          text NOT NULL,               -- run (a CLI or library run) or watch (a watcher's period)
    worker        text NOT NULL,               -- host:pid:random
    scope         text NOT NULL,               -- pending, failed (--retry-only), or watch
    doc_id        text,
    run_limit     integer,
    started_at    timestamptz NOT NULL,
    ended_at      timestamptz NOT NULL DEFAULT now(),
    runs          integer NOT NULL DEFAULT 1,  -- runs of the orchestrator this row adds up
    embedded      integer NOT NULL DEFAULT 0,
    failed        integer NOT NULL DEFAULT 0,
    cache_hits    integer NOT NULL DEFAULT 0,
    api_calls     integer NOT NULL DEFAULT 0,
    rate_limited  integer NOT NULL DEFAULT 0,  -- 429s
    tokens        bigint NOT NULL DEFAULT 0,
    cost_usd      double precision,            -- NULL: not known
    outcome       text NOT NULL,               -- ok, failed, api_unavailable, stopped, error
    exit_code     integer,                     -- the CLI's exit code; NULL for a watcher's period that is not its last
    model         text
);
CREATE INDEX IF NOT EXISTS embq_runs_ended_idx ON {{runs_table}} (ended_at);

-- Watchers: who is running, since when, and when each last reported (its heartbeat).
CREATE TABLE IF NOT EXISTS {{workers_table}} (
    worker        text PRIMARY KEY,
    kind          text NOT NULL,
    host          text,
    wake          text,                        -- listen (LISTEN/NOTIFY) or poll
    metrics       text,                        -- host:port of its /metrics, if it serves one
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    stopped_at    timestamptz,
    exit_code     integer,
    last_run_at   timestamptz,
    last_outcome  text
);

-- Alerts: one row per incident, so that several processes send each alert once.
CREATE TABLE IF NOT EXISTS {{alerts_table}} (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_key         text NOT NULL,           -- success_rate, backlog_age, api_unavailable, watcher_silent:<worker>
    kind              text NOT NULL,
    summary           text NOT NULL,
    details           jsonb NOT NULL DEFAULT '{}',
    opened_at         timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    clear_since       timestamptz,             -- the condition has been clear since then
    resolved_at       timestamptz,
    fired_sent_at     timestamptz,
    resolved_sent_at  timestamptz,
    send_claimed_at   timestamptz              -- a process is sending it now (or tried then)
);
CREATE UNIQUE INDEX IF NOT EXISTS embq_alerts_open_idx ON {{alerts_table}} (alert_key) WHERE resolved_at IS NULL;

-- ==== version 7: the Batch API route (see migrations/0007_batch_jobs.sql) ====

-- Batch API jobs (see batch.sql): which chunks each carries, where it stands, and how it ended. A job's
-- chunks are leased to 'batch:<id>' while it runs; the row is what lets any later run pick it up by name.
CREATE TABLE IF NOT EXISTS {{batch_jobs}} (
    id                text PRIMARY KEY,
    name              text UNIQUE,
    model             text NOT NULL,
    target            text NOT NULL DEFAULT 'live',  -- 'live': the vector column; 'next': a model migration's
    state             text NOT NULL,
    remote_state      text,
    chunk_ids         text[],
    content_hashes    text[],
    cache_keys        text[],
    tokens            bigint,
    worker            text,
    lease_expires_at  timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    submitted_at      timestamptz,
    finished_at       timestamptz,
    outcome           text,
    embedded          integer,
    failed            integer,
    released          integer,
    error             text
);

-- ==== version 8: model migration (see migrations/0008_model_migration.sql) ====

-- Model migrations (see model_migration.sql): one row per migration from the model the vector column
-- holds to another; the last one cut over says which model that is. At most one fills at a time.
CREATE TABLE IF NOT EXISTS {{model_migrations}} (
    id                text PRIMARY KEY,
    source_model      text,
    target_model      text NOT NULL,
    state             text NOT NULL CHECK (state IN ('filling', 'cut_over', 'aborted')),
    started_at        timestamptz NOT NULL DEFAULT now(),
    seeded_at         timestamptz,  -- every chunk there was at the start is in the shadow queue
    cut_over_at       timestamptz,
    ended_at          timestamptz,
    agreement         double precision,
    agreement_sample  integer,
    note              text
);
CREATE UNIQUE INDEX IF NOT EXISTS embq_model_migrations_one_filling ON {{model_migrations}} ((true))
    WHERE state = 'filling';
