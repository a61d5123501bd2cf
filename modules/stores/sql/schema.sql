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
