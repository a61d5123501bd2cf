-- supabase: 20261130000008
-- Version 8: model migration (see migrations/0002's header for the rules, and model_migration.sql): a
-- table of migrations (the last cut-over says which model the vector column holds), the shadow queue's
-- functions, a search and a write that check the live model under the cut-over lock.

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

-- The queue's own table: row-level security on, nothing for the public API roles; service_role uses it.
ALTER TABLE {{model_migrations}} ENABLE ROW LEVEL SECURITY;

-- The model whose vectors the vector column holds, as the last cut-over recorded; NULL when no
-- migration ever cut over (then EMBEDDING_MODEL says which model it is).
CREATE OR REPLACE FUNCTION {{schema}}.embq_live_model()
RETURNS text
LANGUAGE sql STABLE
SET search_path = {{search_path}}
AS $$
    SELECT m.target_model FROM {{model_migrations}} m
    WHERE m.state = 'cut_over' ORDER BY m.cut_over_at DESC LIMIT 1;
$$;

-- Wait while a cut-over swaps the columns, then hold it off until this transaction ends; refuse to
-- run where a statement would not see a cut-over that committed while it waited.
CREATE OR REPLACE FUNCTION {{schema}}.embq_hold_cutover()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = {{search_path}}
AS $$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'the embedding queue''s searches and writes run at READ COMMITTED, not %',
            current_setting('transaction_isolation') USING ERRCODE = '25001';
    END IF;
    PERFORM pg_advisory_xact_lock_shared({{cutover_lock}});
END;
$$;

-- The migration that is filling, or the last one (for --status): its row.
CREATE OR REPLACE FUNCTION {{schema}}.embq_migration_current()
RETURNS TABLE (id text, source_model text, target_model text, state text, started_at timestamptz,
               seeded_at timestamptz, cut_over_at timestamptz, ended_at timestamptz,
               agreement double precision, agreement_sample integer, note text)
LANGUAGE sql STABLE
SET search_path = {{search_path}}
AS $$
    SELECT m.id, m.source_model, m.target_model, m.state, m.started_at, m.seeded_at, m.cut_over_at, m.ended_at,
           m.agreement, m.agreement_sample, m.note
    FROM {{model_migrations}} m
    ORDER BY (m.state = 'filling') DESC, m.started_at DESC
    LIMIT 1;
$$;

-- As embq_complete_v2, but only for the live model: after a cut-over, a run that began before it
-- writes nothing (SQLSTATE EQ001) rather than the retired model's vectors into the new column.
CREATE OR REPLACE FUNCTION {{schema}}.embq_complete_v3(
    p_worker text, p_model text, p_ids text[], p_vectors {{vector}}[], p_hashes text[],
    p_cache_keys text[] DEFAULT NULL)
RETURNS TABLE (written integer, changed integer)
LANGUAGE plpgsql VOLATILE
SET search_path = {{search_path}}
AS $$
DECLARE
    v_live text;
BEGIN
    PERFORM {{schema}}.embq_hold_cutover();
    v_live := {{schema}}.embq_live_model();
    IF v_live IS NOT NULL AND v_live IS DISTINCT FROM p_model THEN
        RAISE EXCEPTION 'the vector column holds % since a cut-over; % is retired', v_live, p_model
            USING ERRCODE = 'EQ001';
    END IF;
    RETURN QUERY SELECT * FROM {{schema}}.embq_complete_v2(p_worker, p_model, p_ids, p_vectors, p_hashes,
                                                          p_cache_keys);
END;
$$;

-- As embq_repair_apply_v2, but only for the live model: a repair that looked before a cut-over would
-- reset every vector of the new model as "another model's" (SQLSTATE EQ001 instead).
CREATE OR REPLACE FUNCTION {{schema}}.embq_repair_apply_v3(
    p_model text, p_dimensions integer, p_doc_id text DEFAULT NULL, p_limit integer DEFAULT NULL,
    p_dead_owners text[] DEFAULT '{}')
RETURNS TABLE (released_leases bigint, wrong_model bigint, wrong_dimension bigint, degenerate bigint,
               stale bigint, reset bigint)
LANGUAGE plpgsql VOLATILE
SET search_path = {{search_path}}
AS $$
DECLARE
    v_live text;
BEGIN
    PERFORM {{schema}}.embq_hold_cutover();
    v_live := {{schema}}.embq_live_model();
    IF v_live IS NOT NULL AND v_live IS DISTINCT FROM p_model THEN
        RAISE EXCEPTION 'the vector column holds % since a cut-over; % is retired', v_live, p_model
            USING ERRCODE = 'EQ001';
    END IF;
    RETURN QUERY SELECT * FROM {{schema}}.embq_repair_apply_v2(p_model, p_dimensions, p_doc_id, p_limit,
                                                              p_dead_owners);
END;
$$;

-- As embq_search_v2, for a query embedded by p_model, with each hit's model. When the column holds
-- another model's vectors (a cut-over happened), nothing is compared: SQLSTATE EQ002, and the caller
-- embeds the query again with embq_live_model(). With p_model NULL, no check (older callers).
CREATE OR REPLACE FUNCTION {{schema}}.embq_search_v3(
    p_query {{vector}}, p_limit integer DEFAULT 5, p_model text DEFAULT NULL)
RETURNS TABLE (chunk_id text, doc_id text, name text, chunk_index integer, content text,
               distance double precision, model text)
LANGUAGE plpgsql VOLATILE
SET search_path = {{search_path}}
AS $$
DECLARE
    v_live text;
BEGIN
    PERFORM {{schema}}.embq_hold_cutover();
    v_live := {{schema}}.embq_live_model();
    IF p_model IS NOT NULL AND v_live IS NOT NULL AND v_live <> p_model THEN
        RAISE EXCEPTION 'the vector column holds %; the query was embedded by %', v_live, p_model
            USING ERRCODE = 'EQ002';
    END IF;
    RETURN QUERY
    WITH nearest AS (
        SELECT c.id, c.doc_id, c.chunk_index, c.{{content}}::text AS body, c.embedding_model AS vector_model,
               (c.{{embedding}} OPERATOR({{vector_schema}}.<=>) p_query)::double precision AS dist
        FROM {{chunks}} c
        WHERE c.{{embedding}} IS NOT NULL
        ORDER BY c.{{embedding}} OPERATOR({{vector_schema}}.<=>) p_query
        LIMIT p_limit * 4 + 20),
    each_text AS (
        SELECT DISTINCT ON (n.body) n.*
        FROM nearest n
        WHERE n.dist <> 'NaN'::double precision
        ORDER BY n.body, n.dist, n.id)
    SELECT e.id::text, e.doc_id::text,
           (SELECT d.name::text FROM {{documents}} d WHERE d.id = e.doc_id LIMIT 1),
           e.chunk_index, e.body, e.dist, e.vector_model::text
    FROM each_text e
    ORDER BY e.dist, e.id
    LIMIT p_limit;
END;
$$;

-- The filling migration's target model; SQLSTATE EQ003 when no migration is filling (it was cut
-- over or aborted), EQ001 when p_model is given and is not its target (a run of another migration):
-- a shadow write or claim then stops.
CREATE OR REPLACE FUNCTION {{schema}}.embq_next_target(p_model text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = {{search_path}}
AS $$
DECLARE
    v_target text;
BEGIN
    SELECT m.target_model INTO v_target FROM {{model_migrations}} m WHERE m.state = 'filling';
    IF v_target IS NULL THEN
        RAISE EXCEPTION 'no model migration is filling (it was cut over or aborted)' USING ERRCODE = 'EQ003';
    END IF;
    IF p_model IS NOT NULL AND p_model <> v_target THEN
        RAISE EXCEPTION 'the migration fills % vectors, not %', v_target, p_model USING ERRCODE = 'EQ001';
    END IF;
    RETURN v_target;
END;
$$;

-- The shadow queue's claim, as embq_claim_v2 (same arguments and rows): chunks without the new
-- model's vector, leased in {{next_queue}} (one row per such chunk; the trigger adds new uploads).
CREATE OR REPLACE FUNCTION {{schema}}.embq_next_claim(
    p_worker text, p_limit integer, p_lease_seconds integer,
    p_mode text DEFAULT 'pending', p_doc_id text DEFAULT NULL, p_failed_before timestamptz DEFAULT NULL,
    p_dead_owners text[] DEFAULT '{}', p_model text DEFAULT NULL)
RETURNS TABLE (id text, doc_id text, chunk_index integer, content text, title text, attempts integer)
LANGUAGE plpgsql VOLATILE
SET search_path = {{search_path}}
AS $$
DECLARE
    picked text[];
    dead text[] := coalesce(p_dead_owners, '{}');
BEGIN
    IF p_mode NOT IN ('pending', 'failed') THEN
        RAISE EXCEPTION 'embq_next_claim: unknown mode %', p_mode USING ERRCODE = '22023';
    END IF;
    PERFORM {{schema}}.embq_hold_cutover();
    PERFORM {{schema}}.embq_next_target(p_model);
    SELECT array_agg(q.chunk_id) INTO picked FROM (
        SELECT n.chunk_id FROM {{next_queue}} n
        JOIN {{chunks}} c ON c.id = n.chunk_id::{{id_type}}  -- a deleted chunk's row is never taken
        WHERE (p_doc_id IS NULL OR n.doc_id = p_doc_id)
          AND CASE WHEN p_mode = 'failed'
                   THEN n.failed_at IS NOT NULL AND n.failed_at < coalesce(p_failed_before, 'infinity')
                   ELSE n.failed_at IS NULL END
          AND (n.lease_expires_at IS NULL OR n.lease_expires_at < now() OR n.lease_owner = ANY (dead))
        ORDER BY n.seq LIMIT p_limit FOR UPDATE OF n SKIP LOCKED) q;
    IF picked IS NULL THEN
        RETURN;
    END IF;
    UPDATE {{next_queue}} n
    SET lease_owner = p_worker, lease_expires_at = now() + make_interval(secs => p_lease_seconds)
    WHERE n.chunk_id = ANY (picked);
    RETURN QUERY
    SELECT c.id::text, c.doc_id::text, c.chunk_index, c.{{content}}::text, d.name::text, n.attempts
    FROM {{next_queue}} n
    JOIN {{chunks}} c ON c.id = n.chunk_id::{{id_type}}
    LEFT JOIN {{documents}} d ON d.id = c.doc_id
    WHERE n.chunk_id = ANY (picked)
    ORDER BY n.seq;
END;
$$;

-- The shadow queue's write, as embq_complete_v2: the new model's vectors into the shadow columns, for
-- chunks p_worker holds (or wrote itself: a retry after a lost answer) whose text is unchanged; their
-- queue rows go. Only while the migration to p_model fills (else SQLSTATE EQ001 or EQ003).
CREATE OR REPLACE FUNCTION {{schema}}.embq_next_complete(
    p_worker text, p_model text, p_ids text[], p_vectors {{vector}}[], p_hashes text[],
    p_cache_keys text[] DEFAULT NULL)
RETURNS TABLE (written integer, changed integer)
LANGUAGE plpgsql VOLATILE
SET search_path = {{search_path}}
AS $$
DECLARE
    v_target text;
    v_written integer;
    v_changed integer;
BEGIN
    PERFORM {{schema}}.embq_hold_cutover();
    v_target := {{schema}}.embq_next_target(p_model);
    WITH r AS (SELECT * FROM unnest(p_ids, p_vectors, p_hashes) WITH ORDINALITY AS r(id, vec, hash, n)),
    done AS (
        UPDATE {{chunks}} c
        SET {{embedding_next}} = r.vec, embedding_model_next = p_model, content_hash_next = r.hash,
            embedded_at_next = now(), embedded_by_next = p_worker
        FROM r
        WHERE c.id = r.id::{{id_type}}
          AND encode(sha256(convert_to(c.{{content}}, 'UTF8')), 'hex') = r.hash
          AND (EXISTS (SELECT 1 FROM {{next_queue}} n WHERE n.chunk_id = r.id AND n.lease_owner = p_worker)
               OR (NOT EXISTS (SELECT 1 FROM {{next_queue}} n WHERE n.chunk_id = r.id)
                   AND c.embedded_by_next = p_worker AND c.{{embedding_next}} IS NOT NULL))
        RETURNING r.id, r.n, r.vec),
    dequeued AS (
        DELETE FROM {{next_queue}} n USING done d WHERE n.chunk_id = d.id RETURNING 1),
    cached AS (
        INSERT INTO {{cache}} (cache_key, model, embedding)
        SELECT p_cache_keys[d.n], p_model, d.vec FROM done d
        WHERE p_cache_keys IS NOT NULL AND p_cache_keys[d.n] IS NOT NULL
        ON CONFLICT (cache_key) DO NOTHING)
    SELECT count(*)::integer INTO v_written FROM done;
    -- A text that changed since the claim: released, to be embedded again with its new text.
    UPDATE {{next_queue}} n SET lease_owner = NULL, lease_expires_at = NULL
    FROM unnest(p_ids, p_hashes) AS r(id, hash), {{chunks}} c
    WHERE n.chunk_id = r.id AND n.lease_owner = p_worker AND c.id = r.id::{{id_type}}
      AND encode(sha256(convert_to(c.{{content}}, 'UTF8')), 'hex') <> r.hash;
    GET DIAGNOSTICS v_changed = ROW_COUNT;
    RETURN QUERY SELECT v_written, v_changed;
END;
$$;

-- The shadow queue's failure record, as embq_fail_v2.
CREATE OR REPLACE FUNCTION {{schema}}.embq_next_fail(p_worker text, p_ids text[], p_errors text[])
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = {{search_path}}
AS $$
DECLARE
    v_recorded integer;
BEGIN
    IF to_regclass('{{next_queue_regclass}}') IS NULL THEN
        RETURN 0;  -- the migration ended (cut over or aborted): nothing to record
    END IF;
    UPDATE {{next_queue}} n
    SET attempts = n.attempts + 1, error = left(r.error, 2000), failed_at = now(),
        lease_owner = NULL, lease_expires_at = NULL
    FROM unnest(p_ids, p_errors) AS r(id, error)
    WHERE n.chunk_id = r.id AND n.lease_owner = p_worker;
    GET DIAGNOSTICS v_recorded = ROW_COUNT;
    RETURN v_recorded;
END;
$$;

-- Give shadow-queue chunks back untouched, as embq_release.
CREATE OR REPLACE FUNCTION {{schema}}.embq_next_release(p_worker text, p_ids text[])
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = {{search_path}}
AS $$
DECLARE
    v_released integer;
BEGIN
    IF to_regclass('{{next_queue_regclass}}') IS NULL THEN
        RETURN 0;
    END IF;
    UPDATE {{next_queue}} n SET lease_owner = NULL, lease_expires_at = NULL
    WHERE n.chunk_id = ANY (p_ids) AND n.lease_owner = p_worker;
    GET DIAGNOSTICS v_released = ROW_COUNT;
    RETURN v_released;
END;
$$;

-- The heartbeat of the shadow queue, as embq_renew_leases.
CREATE OR REPLACE FUNCTION {{schema}}.embq_next_renew_leases(p_worker text, p_ids text[], p_lease_seconds integer)
RETURNS SETOF text
LANGUAGE plpgsql VOLATILE
SET search_path = {{search_path}}
AS $$
BEGIN
    IF to_regclass('{{next_queue_regclass}}') IS NULL THEN
        RETURN;  -- the migration ended: every lease is gone
    END IF;
    RETURN QUERY
    UPDATE {{next_queue}} n SET lease_expires_at = now() + make_interval(secs => p_lease_seconds)
    WHERE n.chunk_id = ANY (p_ids) AND n.lease_owner = p_worker
    RETURNING n.chunk_id;
END;
$$;

-- Who holds shadow-queue leases, as embq_lease_owners.
CREATE OR REPLACE FUNCTION {{schema}}.embq_next_lease_owners()
RETURNS TABLE (owner text, chunks bigint, expires_at timestamptz)
LANGUAGE plpgsql STABLE
SET search_path = {{search_path}}
AS $$
BEGIN
    IF to_regclass('{{next_queue_regclass}}') IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT n.lease_owner, count(*), max(n.lease_expires_at)
    FROM {{next_queue}} n WHERE n.lease_owner IS NOT NULL
    GROUP BY n.lease_owner ORDER BY 1;
END;
$$;

-- The shadow queue's counts, as embq_status_v2 (same rows): embedded = chunks with the new model's
-- vector; pending, failed and in progress from the queue. other_model: shadow vectors of a model
-- other than p_model (none, unless a migration was aborted and restarted mid-write).
CREATE OR REPLACE FUNCTION {{schema}}.embq_next_status(
    p_doc_id text DEFAULT NULL, p_model text DEFAULT NULL, p_dead_owners text[] DEFAULT '{}')
RETURNS TABLE (total bigint, embedded bigint, pending bigint, failed bigint, in_progress bigint,
               stale_leases bigint, other_model bigint)
LANGUAGE plpgsql STABLE
SET search_path = {{search_path}}
AS $$
BEGIN
    IF to_regclass('{{next_queue_regclass}}') IS NULL THEN
        RETURN QUERY SELECT 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint;
        RETURN;
    END IF;
    RETURN QUERY
    WITH q AS (
        SELECT n.failed_at IS NOT NULL AS failed,
               n.lease_expires_at IS NOT NULL AND (n.lease_expires_at < now()
                   OR n.lease_owner = ANY (coalesce(p_dead_owners, '{}'))) AS stale,
               n.lease_expires_at >= now()
                   AND NOT n.lease_owner = ANY (coalesce(p_dead_owners, '{}')) AS live
        FROM {{next_queue}} n JOIN {{chunks}} c ON c.id = n.chunk_id::{{id_type}}
        WHERE p_doc_id IS NULL OR n.doc_id = p_doc_id),
    v AS (
        SELECT count(*) AS total,
               count(*) FILTER (WHERE c.{{embedding_next}} IS NOT NULL) AS embedded,
               count(*) FILTER (WHERE c.{{embedding_next}} IS NOT NULL AND p_model IS NOT NULL
                                AND c.embedding_model_next IS DISTINCT FROM p_model) AS other_model
        FROM {{chunks}} c
        WHERE p_doc_id IS NULL OR c.doc_id = p_doc_id::{{doc_id_type}})
    SELECT v.total, v.embedded,
           (SELECT count(*) FROM q WHERE NOT q.failed AND q.live IS NOT TRUE),
           (SELECT count(*) FROM q WHERE q.failed AND q.live IS NOT TRUE),
           (SELECT count(*) FROM q WHERE q.live IS TRUE),
           (SELECT count(*) FROM q WHERE q.stale),
           v.other_model
    FROM v;
END;
$$;

-- What is left to embed with the new model, in characters (the CLI turns them into tokens and a cost).
CREATE OR REPLACE FUNCTION {{schema}}.embq_next_remaining_chars()
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = {{search_path}}
AS $$
BEGIN
    IF to_regclass('{{next_queue_regclass}}') IS NULL THEN
        RETURN 0;
    END IF;
    RETURN (SELECT coalesce(sum(char_length(c.{{content}})), 0)::bigint
            FROM {{next_queue}} n JOIN {{chunks}} c ON c.id = n.chunk_id::{{id_type}});
END;
$$;

-- A Batch API job for the shadow queue, as embq_batch_claim: its row says target 'next', and its chunks
-- are leased in the shadow queue.
CREATE OR REPLACE FUNCTION {{schema}}.embq_next_batch_claim(
    p_job_id text, p_model text, p_worker text, p_limit integer,
    p_mode text DEFAULT 'pending', p_doc_id text DEFAULT NULL, p_failed_before timestamptz DEFAULT NULL,
    p_dead_owners text[] DEFAULT '{}')
RETURNS TABLE (id text, doc_id text, chunk_index integer, content text, title text, attempts integer)
LANGUAGE plpgsql VOLATILE
SET search_path = {{search_path}}
AS $$
BEGIN
    PERFORM {{schema}}.embq_hold_cutover();
    PERFORM {{schema}}.embq_next_target(p_model);
    INSERT INTO {{batch_jobs}} (id, model, target, state, worker, lease_expires_at)
    VALUES (p_job_id, p_model, 'next', 'claimed', p_worker, now() + interval '10 minutes');
    RETURN QUERY
    SELECT * FROM {{schema}}.embq_next_claim('batch:' || p_job_id, p_limit, 176400, p_mode, p_doc_id,
                                            p_failed_before, p_dead_owners, p_model);
    IF NOT FOUND THEN
        DELETE FROM {{batch_jobs}} j WHERE j.id = p_job_id;
    END IF;
END;
$$;

-- A model migration's agreement check: for p_sample chunks that have vectors of both models, the
-- nearest other chunk by the live model's vectors, and whether it is among the five nearest by the
-- new model's. Returns (queries, kept): the share kept says how much search results would move.
CREATE OR REPLACE FUNCTION {{schema}}.embq_migration_agreement(p_sample integer DEFAULT 200)
RETURNS TABLE (queries integer, kept integer)
LANGUAGE plpgsql VOLATILE
SET search_path = {{search_path}}
AS $$
BEGIN
    RETURN QUERY
    WITH sample AS (
        SELECT c.id, c.{{embedding}} AS old_q, c.{{embedding_next}} AS new_q
        FROM {{chunks}} c
        WHERE c.{{embedding}} IS NOT NULL AND c.{{embedding_next}} IS NOT NULL
        ORDER BY md5(c.id::text) LIMIT p_sample),
    judged AS (
        SELECT (SELECT o.id FROM {{chunks}} o
                WHERE o.id <> s.id AND o.{{embedding}} IS NOT NULL
                ORDER BY o.{{embedding}} OPERATOR({{vector_schema}}.<=>) s.old_q LIMIT 1) AS old_top,
               ARRAY(SELECT o.id FROM {{chunks}} o
                     WHERE o.id <> s.id AND o.{{embedding_next}} IS NOT NULL
                     ORDER BY o.{{embedding_next}} OPERATOR({{vector_schema}}.<=>) s.new_q LIMIT 5) AS new_top
        FROM sample s)
    SELECT count(*)::integer, count(*) FILTER (WHERE j.old_top = ANY (j.new_top))::integer
    FROM judged j WHERE j.old_top IS NOT NULL;
END;
$$;

-- Who may call the new functions: only the owner and service_role (as grants.sql does for all).
DO $grants$
DECLARE
    fn regprocedure;
    role_name text;
BEGIN
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = '{{schema}}'::regnamespace AND p.proname ~ '^(embq_complete_v3|embq_hold_cutover|embq_live_model|embq_migration_agreement|embq_migration_current|embq_next_batch_claim|embq_next_claim|embq_next_complete|embq_next_fail|embq_next_lease_owners|embq_next_release|embq_next_remaining_chars|embq_next_renew_leases|embq_next_status|embq_next_target|embq_repair_apply_v3|embq_search_v3)$'
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
        GRANT SELECT, INSERT, UPDATE, DELETE ON {{model_migrations}} TO service_role;
    END IF;
    FOREACH role_name IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
            EXECUTE format('REVOKE ALL ON TABLE %s FROM %I', '{{model_migrations}}', role_name);
        END IF;
    END LOOP;
END
$grants$;

INSERT INTO {{migrations_table}} (version, name) VALUES (8, 'model_migration') ON CONFLICT (version) DO NOTHING;
