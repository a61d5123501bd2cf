-- supabase: 20261130000007
-- Version 7: the Batch API route (see migrations/0002's header for the rules). A job's row says which
-- chunks it carries (leased to 'batch:<job id>' for 49 hours), where it stands and how it ended, so that
-- a crash, a kill or a restart never submits the same chunks twice and never loses a finished job: the
-- next run picks the job up by its name and ingests its results.

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

-- The queue's own table: row-level security on, nothing for the public API roles; service_role uses it.
ALTER TABLE {{batch_jobs}} ENABLE ROW LEVEL SECURITY;

-- Lease up to p_limit chunks to a new Batch API job, in one transaction with the job's row: the chunks
-- are leased to 'batch:<job id>' for 49 hours (a job runs at most 48), so online runs leave them be, and
-- a crash at any later point leaves a row that says which chunks the job holds. The job row itself is
-- leased to p_worker for ten minutes (the time to build and submit it). With nothing to claim, no job.
CREATE OR REPLACE FUNCTION {{schema}}.embq_batch_claim(
    p_job_id text, p_model text, p_worker text, p_limit integer,
    p_mode text DEFAULT 'pending', p_doc_id text DEFAULT NULL, p_failed_before timestamptz DEFAULT NULL,
    p_dead_owners text[] DEFAULT '{}')
RETURNS TABLE (id text, doc_id text, chunk_index integer, content text, title text, attempts integer)
LANGUAGE plpgsql VOLATILE
SET search_path = {{search_path}}
AS $$
DECLARE
    v_live text;
BEGIN
    -- Never a job of a model a cut-over retired (model_migration.sql): it could not be written.
    PERFORM {{schema}}.embq_hold_cutover();
    v_live := {{schema}}.embq_live_model();
    IF v_live IS NOT NULL AND v_live <> p_model THEN
        RAISE EXCEPTION 'the vector column holds % since a cut-over; % is retired', v_live, p_model
            USING ERRCODE = 'EQ001';
    END IF;
    INSERT INTO {{batch_jobs}} (id, model, state, worker, lease_expires_at)
    VALUES (p_job_id, p_model, 'claimed', p_worker, now() + interval '10 minutes');
    RETURN QUERY
    SELECT * FROM {{schema}}.embq_claim_v2('batch:' || p_job_id, p_limit, 176400, p_mode, p_doc_id,
                                          p_failed_before, p_dead_owners);
    IF NOT FOUND THEN  -- nothing to carry: no job
        DELETE FROM {{batch_jobs}} j WHERE j.id = p_job_id;
    END IF;
END;
$$;

-- The job is built: which chunks it carries, in the order sent (each request's key is its index), the
-- hashes of their texts, their cache keys, and its estimated tokens. From here a crash is recovered by finding the job
-- by its display name (its id) among the API's jobs.
CREATE OR REPLACE FUNCTION {{schema}}.embq_batch_prepared(
    p_job_id text, p_chunk_ids text[], p_hashes text[], p_cache_keys text[], p_tokens bigint)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = {{search_path}}
AS $$
    UPDATE {{batch_jobs}} j
    SET state = 'submitting', chunk_ids = p_chunk_ids, content_hashes = p_hashes, cache_keys = p_cache_keys,
        tokens = p_tokens
    WHERE j.id = p_job_id AND j.state <> 'done';
$$;

-- The API accepted the job under p_name. Its lease is given back: any run may now track it. False when
-- the job was closed meanwhile (a model migration aborted under it): the caller cancels it at the API.
CREATE OR REPLACE FUNCTION {{schema}}.embq_batch_submitted(p_job_id text, p_name text, p_remote_state text)
RETURNS boolean
LANGUAGE sql VOLATILE
SET search_path = {{search_path}}
AS $$
    WITH submitted AS (
        UPDATE {{batch_jobs}} j
        SET state = 'submitted', name = p_name, remote_state = p_remote_state, submitted_at = now(),
            worker = NULL, lease_expires_at = NULL
        WHERE j.id = p_job_id AND j.state <> 'done'
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM submitted);
$$;

-- Jobs not finished whose lease is free (or expired, or held by one of p_dead_owners: the run tracking
-- them died), leased to p_worker for p_lease_seconds, oldest first. SKIP LOCKED: two runs never track
-- the same job at once.
CREATE OR REPLACE FUNCTION {{schema}}.embq_batch_take(
    p_worker text, p_lease_seconds integer, p_limit integer, p_dead_owners text[] DEFAULT '{}')
RETURNS TABLE (id text, name text, model text, target text, state text, remote_state text, chunk_ids text[],
               content_hashes text[], cache_keys text[], tokens bigint, created_at timestamptz,
               submitted_at timestamptz)
LANGUAGE sql VOLATILE
SET search_path = {{search_path}}
AS $$
    WITH free AS (
        SELECT j.id FROM {{batch_jobs}} j
        WHERE j.state <> 'done'
          AND (j.lease_expires_at IS NULL OR j.lease_expires_at < now() OR j.worker = ANY (coalesce(p_dead_owners, '{}')))
        ORDER BY j.created_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED),
    taken AS (
        UPDATE {{batch_jobs}} j
        SET worker = p_worker, lease_expires_at = now() + make_interval(secs => p_lease_seconds)
        FROM free WHERE j.id = free.id
        RETURNING j.*)
    SELECT t.id, t.name, t.model, t.target, t.state, t.remote_state, t.chunk_ids, t.content_hashes, t.cache_keys, t.tokens,
           t.created_at, t.submitted_at
    FROM taken t ORDER BY t.created_at;
$$;

-- What the API last said of a job; the tracker gives its lease back.
CREATE OR REPLACE FUNCTION {{schema}}.embq_batch_seen(p_job_id text, p_worker text, p_remote_state text)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = {{search_path}}
AS $$
    UPDATE {{batch_jobs}} j
    SET remote_state = p_remote_state, worker = NULL, lease_expires_at = NULL
    WHERE j.id = p_job_id AND j.worker = p_worker;
$$;

-- The job is over (its results ingested, or it failed, expired, was cancelled, or never got submitted):
-- every chunk still leased to it goes back to pending untouched, and the row keeps the outcome.
CREATE OR REPLACE FUNCTION {{schema}}.embq_batch_finish(
    p_job_id text, p_outcome text, p_embedded integer, p_failed integer, p_error text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = {{search_path}}
AS $$
DECLARE
    v_released integer := 0;
BEGIN
    IF (SELECT j.target FROM {{batch_jobs}} j WHERE j.id = p_job_id) = 'next' THEN
        -- A model migration's job: its chunks are leased in the shadow queue (gone once the migration
        -- was cut over or aborted).
        IF to_regclass('{{next_queue_regclass}}') IS NOT NULL THEN
            UPDATE {{next_queue}} n SET lease_owner = NULL, lease_expires_at = NULL
            WHERE n.lease_owner = 'batch:' || p_job_id;
            GET DIAGNOSTICS v_released = ROW_COUNT;
        END IF;
    ELSE
        UPDATE {{chunks}} c
        SET embedding_lease_owner = NULL, embedding_lease_expires_at = NULL
        WHERE c.embedding_lease_owner = 'batch:' || p_job_id AND c.{{embedding}} IS NULL;
        GET DIAGNOSTICS v_released = ROW_COUNT;
    END IF;
    UPDATE {{batch_jobs}} j
    SET state = 'done', outcome = p_outcome, finished_at = now(), embedded = p_embedded, failed = p_failed,
        released = v_released, error = left(p_error, 2000), worker = NULL, lease_expires_at = NULL
    WHERE j.id = p_job_id;
    RETURN v_released;
END;
$$;

-- Who is tracking a job right now (a live lease), so a client can tell which of them are dead.
CREATE OR REPLACE FUNCTION {{schema}}.embq_batch_workers()
RETURNS SETOF text
LANGUAGE sql STABLE
SET search_path = {{search_path}}
AS $$
    SELECT DISTINCT j.worker FROM {{batch_jobs}} j
    WHERE j.worker IS NOT NULL AND j.lease_expires_at >= now() AND j.state <> 'done';
$$;

-- Jobs for --status and the dashboard: those not done, then the last p_recent done ones.
CREATE OR REPLACE FUNCTION {{schema}}.embq_batch_jobs(p_recent integer DEFAULT 10)
RETURNS TABLE (id text, name text, model text, target text, state text, remote_state text, outcome text, chunks integer,
               tokens bigint, embedded integer, failed integer, released integer, created_at timestamptz,
               submitted_at timestamptz, finished_at timestamptz, error text)
LANGUAGE sql STABLE
SET search_path = {{search_path}}
AS $$
    (SELECT j.id, j.name, j.model, j.target, j.state, j.remote_state, j.outcome, coalesce(cardinality(j.chunk_ids), 0),
            j.tokens, j.embedded, j.failed, j.released, j.created_at, j.submitted_at, j.finished_at, j.error
     FROM {{batch_jobs}} j WHERE j.state <> 'done' ORDER BY j.created_at)
    UNION ALL
    (SELECT j.id, j.name, j.model, j.target, j.state, j.remote_state, j.outcome, coalesce(cardinality(j.chunk_ids), 0),
            j.tokens, j.embedded, j.failed, j.released, j.created_at, j.submitted_at, j.finished_at, j.error
     FROM {{batch_jobs}} j WHERE j.state = 'done' ORDER BY j.finished_at DESC LIMIT p_recent);
$$;

-- Who may call the new functions: only the owner and service_role (as grants.sql does for all).
DO $grants$
DECLARE
    fn regprocedure;
    role_name text;
BEGIN
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = '{{schema}}'::regnamespace AND p.proname ~ '^embq_batch_'
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', fn);
        FOREACH role_name IN ARRAY ARRAY['anon', 'authenticated'] LOOP
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
                EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM %I', fn, role_name);
            END IF;
        END LOOP;
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO service_role', fn);
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON {{batch_jobs}} TO service_role;
    END IF;
    FOREACH role_name IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
            EXECUTE format('REVOKE ALL ON TABLE %s FROM %I', '{{batch_jobs}}', role_name);
        END IF;
    END LOOP;
END
$grants$;

INSERT INTO {{migrations_table}} (version, name) VALUES (7, 'batch_jobs') ON CONFLICT (version) DO NOTHING;
