-- supabase: 20261130000003
-- Version 3: leases that are owned and renewed, and counts that tell the truth.
--
-- - A result is written only by the worker that holds the chunk's lease (a slow run and the run that took
--   its expired lease never both write); a chunk edited while in flight is released at once, pending with
--   its new text.
-- - Leases are renewed while a batch is in flight (a heartbeat), so they can be short (about a minute).
-- - Leases of workers the caller knows to be dead (same host, process gone) count as expired at once.
-- - Status counts vectors of another model than the configured one; repair finds degenerate vectors
--   (zero, overflowing or underflowing norm); the cache never hands one out.
-- - The queue's column types can be checked from the REST path too.
-- The version 1 functions stay, unchanged, for workers of the previous release (see 0002's header).

-- Which worker wrote a vector: a write retried after its answer was lost is recognised as done, not as a
-- lease lost to another worker.
ALTER TABLE {{chunks}} ADD COLUMN IF NOT EXISTS embedded_by text;

-- Store vectors and mark the chunks done, only for chunks p_worker still holds (or wrote itself: a retry
-- after a lost answer). A chunk whose text changed since it was claimed is released instead (pending again
-- with its new text). Returns how many were written and how many were released for a changed text.
CREATE OR REPLACE FUNCTION {{schema}}.embq_complete_v2(
    p_worker text, p_model text, p_ids text[], p_vectors vector[], p_hashes text[],
    p_cache_keys text[] DEFAULT NULL)
RETURNS TABLE (written integer, changed integer)
LANGUAGE sql VOLATILE
SET search_path = {{search_path_v1}}
AS $$
    WITH r AS (SELECT * FROM unnest(p_ids, p_vectors, p_hashes) WITH ORDINALITY AS r(id, vec, hash, n)),
    done AS (
        UPDATE {{chunks}} c
        SET {{embedding}} = r.vec,
            embedding_model = p_model,
            content_hash = r.hash,
            embedded_at = now(),
            embedded_by = p_worker,
            embedding_error = NULL,
            embedding_failed_at = NULL,
            embedding_lease_owner = NULL,
            embedding_lease_expires_at = NULL
        FROM r
        WHERE c.id = r.id::{{id_type}}
          AND (c.embedding_lease_owner = p_worker
               OR (c.embedding_lease_owner IS NULL AND c.embedded_by = p_worker AND c.{{embedding}} IS NOT NULL))
          AND encode(sha256(convert_to(c.{{content}}, 'UTF8')), 'hex') = r.hash
        RETURNING r.n, r.vec),
    edited AS (
        UPDATE {{chunks}} c
        SET embedding_lease_owner = NULL, embedding_lease_expires_at = NULL
        FROM r
        WHERE c.id = r.id::{{id_type}} AND c.embedding_lease_owner = p_worker
          AND encode(sha256(convert_to(c.{{content}}, 'UTF8')), 'hex') <> r.hash
        RETURNING 1),
    cached AS (
        INSERT INTO {{cache}} (cache_key, model, embedding)
        SELECT p_cache_keys[d.n], p_model, d.vec FROM done d
        WHERE p_cache_keys IS NOT NULL AND p_cache_keys[d.n] IS NOT NULL
        ON CONFLICT (cache_key) DO NOTHING)
    SELECT (SELECT count(*) FROM done)::integer, (SELECT count(*) FROM edited)::integer;
$$;

-- Record each chunk's own failure (attempts + 1, reason, time) and release it, only for chunks p_worker
-- still holds. Returns how many were recorded.
CREATE OR REPLACE FUNCTION {{schema}}.embq_fail_v2(p_worker text, p_ids text[], p_errors text[])
RETURNS integer
LANGUAGE sql VOLATILE
SET search_path = {{search_path_v1}}
AS $$
    WITH r AS (SELECT * FROM unnest(p_ids, p_errors) AS r(id, error)),
    failed AS (
        UPDATE {{chunks}} c
        SET embedding_attempts = c.embedding_attempts + 1,
            embedding_error = left(r.error, 2000),
            embedding_failed_at = now(),
            embedding_lease_owner = NULL,
            embedding_lease_expires_at = NULL
        FROM r
        WHERE c.id = r.id::{{id_type}} AND c.{{embedding}} IS NULL AND c.embedding_lease_owner = p_worker
        RETURNING 1)
    SELECT count(*)::integer FROM failed;
$$;

-- The heartbeat: extend the leases p_worker still holds; returns their ids (the others were lost).
CREATE OR REPLACE FUNCTION {{schema}}.embq_renew_leases(p_worker text, p_ids text[], p_lease_seconds integer)
RETURNS SETOF text
LANGUAGE sql VOLATILE
SET search_path = {{search_path_v1}}
AS $$
    UPDATE {{chunks}} c
    SET embedding_lease_expires_at = now() + make_interval(secs => p_lease_seconds)
    WHERE c.id = ANY (p_ids::{{id_type}}[]) AND c.embedding_lease_owner = p_worker AND c.{{embedding}} IS NULL
    RETURNING c.id::text;
$$;

-- Who holds leases now, so a client can tell which owners are dead (same host, process gone).
CREATE OR REPLACE FUNCTION {{schema}}.embq_lease_owners()
RETURNS TABLE (owner text, chunks bigint, expires_at timestamptz)
LANGUAGE sql STABLE
SET search_path = {{search_path_v1}}
AS $$
    SELECT c.embedding_lease_owner, count(*), max(c.embedding_lease_expires_at)
    FROM {{chunks}} c
    WHERE c.embedding_lease_owner IS NOT NULL AND c.{{embedding}} IS NULL
    GROUP BY c.embedding_lease_owner
    ORDER BY 1;
$$;

-- Lease up to p_limit chunks to p_worker, as embq_claim, but a lease held by one of p_dead_owners counts
-- as expired: a dead worker's chunks are taken at once.
CREATE OR REPLACE FUNCTION {{schema}}.embq_claim_v2(
    p_worker text, p_limit integer, p_lease_seconds integer,
    p_mode text DEFAULT 'pending', p_doc_id text DEFAULT NULL, p_failed_before timestamptz DEFAULT NULL,
    p_dead_owners text[] DEFAULT '{}')
RETURNS TABLE (id text, doc_id text, chunk_index integer, content text, title text, attempts integer)
LANGUAGE plpgsql VOLATILE
SET search_path = {{search_path_v1}}
AS $$
DECLARE
    picked {{id_type}}[];
    dead text[] := coalesce(p_dead_owners, '{}');
BEGIN
    -- Four static queries rather than one with OR-ed parameters, so each can use its partial index.
    IF p_mode = 'failed' THEN
        IF p_doc_id IS NULL THEN
            SELECT array_agg(q.id) INTO picked FROM (
                SELECT c.id FROM {{chunks}} c
                WHERE c.{{embedding}} IS NULL AND c.embedding_failed_at IS NOT NULL
                  AND c.embedding_failed_at < coalesce(p_failed_before, 'infinity')
                  AND (c.embedding_lease_expires_at IS NULL OR c.embedding_lease_expires_at < now()
                       OR c.embedding_lease_owner = ANY (dead))
                ORDER BY c.doc_id, c.chunk_index LIMIT p_limit FOR UPDATE OF c SKIP LOCKED) q;
        ELSE
            SELECT array_agg(q.id) INTO picked FROM (
                SELECT c.id FROM {{chunks}} c
                WHERE c.doc_id = p_doc_id::{{doc_id_type}}
                  AND c.{{embedding}} IS NULL AND c.embedding_failed_at IS NOT NULL
                  AND c.embedding_failed_at < coalesce(p_failed_before, 'infinity')
                  AND (c.embedding_lease_expires_at IS NULL OR c.embedding_lease_expires_at < now()
                       OR c.embedding_lease_owner = ANY (dead))
                ORDER BY c.doc_id, c.chunk_index LIMIT p_limit FOR UPDATE OF c SKIP LOCKED) q;
        END IF;
    ELSIF p_mode = 'pending' THEN
        IF p_doc_id IS NULL THEN
            SELECT array_agg(q.id) INTO picked FROM (
                SELECT c.id FROM {{chunks}} c
                WHERE c.{{embedding}} IS NULL AND c.embedding_failed_at IS NULL
                  AND (c.embedding_lease_expires_at IS NULL OR c.embedding_lease_expires_at < now()
                       OR c.embedding_lease_owner = ANY (dead))
                ORDER BY c.doc_id, c.chunk_index LIMIT p_limit FOR UPDATE OF c SKIP LOCKED) q;
        ELSE
            SELECT array_agg(q.id) INTO picked FROM (
                SELECT c.id FROM {{chunks}} c
                WHERE c.doc_id = p_doc_id::{{doc_id_type}}
                  AND c.{{embedding}} IS NULL AND c.embedding_failed_at IS NULL
                  AND (c.embedding_lease_expires_at IS NULL OR c.embedding_lease_expires_at < now()
                       OR c.embedding_lease_owner = ANY (dead))
                ORDER BY c.doc_id, c.chunk_index LIMIT p_limit FOR UPDATE OF c SKIP LOCKED) q;
        END IF;
    ELSE
        RAISE EXCEPTION 'embq_claim_v2: unknown mode %', p_mode USING ERRCODE = '22023';
    END IF;

    RETURN QUERY
    WITH leased AS (
        UPDATE {{chunks}} c
        SET embedding_lease_owner = p_worker,
            embedding_lease_expires_at = now() + make_interval(secs => p_lease_seconds)
        WHERE c.id = ANY (picked)
        RETURNING c.id, c.doc_id, c.chunk_index, c.{{content}} AS body, c.embedding_attempts)
    SELECT l.id::text, l.doc_id::text, l.chunk_index, l.body::text, d.name::text, l.embedding_attempts
    FROM leased l LEFT JOIN {{documents}} d ON d.id = l.doc_id
    ORDER BY l.doc_id, l.chunk_index;
END;
$$;

-- Exact counts, as embq_status, with leases of p_dead_owners counted as expired (stale), and the vectors
-- made by another model than p_model (or an unrecorded one): two vector spaces that search can't mix.
-- embedded + pending + failed + in_progress = total; stale_leases are inside pending or failed;
-- other_model is inside embedded.
CREATE OR REPLACE FUNCTION {{schema}}.embq_status_v2(
    p_doc_id text DEFAULT NULL, p_model text DEFAULT NULL, p_dead_owners text[] DEFAULT '{}')
RETURNS TABLE (total bigint, embedded bigint, pending bigint, failed bigint, in_progress bigint,
               stale_leases bigint, other_model bigint)
LANGUAGE sql STABLE
SET search_path = {{search_path_v1}}
AS $$
    WITH c AS (
        SELECT c.{{embedding}} IS NOT NULL AS has_vector,
               c.embedding_failed_at IS NOT NULL AS failed,
               c.embedding_lease_expires_at IS NOT NULL AND (c.embedding_lease_expires_at < now()
                   OR c.embedding_lease_owner = ANY (coalesce(p_dead_owners, '{}'))) AS stale,
               c.embedding_lease_expires_at >= now()
                   AND NOT c.embedding_lease_owner = ANY (coalesce(p_dead_owners, '{}')) AS live,
               c.embedding_model
        FROM {{chunks}} c
        WHERE p_doc_id IS NULL OR c.doc_id = p_doc_id::{{doc_id_type}})
    SELECT count(*),
           count(*) FILTER (WHERE has_vector),
           count(*) FILTER (WHERE NOT has_vector AND NOT failed AND live IS NOT TRUE),
           count(*) FILTER (WHERE NOT has_vector AND failed AND live IS NOT TRUE),
           count(*) FILTER (WHERE NOT has_vector AND live IS TRUE),
           count(*) FILTER (WHERE NOT has_vector AND stale),
           count(*) FILTER (WHERE has_vector AND p_model IS NOT NULL AND embedding_model IS DISTINCT FROM p_model)
    FROM c;
$$;

-- The repair report, as embq_repair_report, plus degenerate vectors (zero, overflowing or underflowing
-- norm) and stale ones (the text changed after it was embedded: its hash no longer matches), and with
-- leases of p_dead_owners counted as expired.
CREATE OR REPLACE FUNCTION {{schema}}.embq_repair_report_v2(
    p_model text, p_dimensions integer, p_doc_id text DEFAULT NULL, p_dead_owners text[] DEFAULT '{}')
RETURNS TABLE (doc_id text, name text, missing bigint, expired_leases bigint, wrong_model bigint,
               wrong_dimension bigint, degenerate bigint, stale bigint, failed bigint, to_reset bigint)
LANGUAGE sql STABLE
SET search_path = {{search_path_v1}}
AS $$
    WITH rows AS (
        SELECT c.doc_id, c.{{embedding}} IS NOT NULL AS has_vector, c.embedding_failed_at IS NOT NULL AS failed,
               c.embedding_lease_expires_at IS NOT NULL AND (c.embedding_lease_expires_at < now()
                   OR c.embedding_lease_owner = ANY (coalesce(p_dead_owners, '{}'))) AS stale,
               c.embedding_lease_expires_at >= now()
                   AND NOT c.embedding_lease_owner = ANY (coalesce(p_dead_owners, '{}')) AS live,
               c.embedding_model IS DISTINCT FROM p_model AS bad_model,
               vector_dims(c.{{embedding}}) <> p_dimensions AS bad_dimension,
               NOT (vector_norm(c.{{embedding}}) BETWEEN 1e-6 AND 1e6) AS bad_norm,
               c.content_hash IS NOT NULL
                   AND c.content_hash <> encode(sha256(convert_to(c.{{content}}, 'UTF8')), 'hex') AS bad_hash
        FROM {{chunks}} c
        WHERE p_doc_id IS NULL OR c.doc_id = p_doc_id::{{doc_id_type}}),
    per_doc AS (
        SELECT r.doc_id,
               count(*) FILTER (WHERE NOT has_vector AND live IS NOT TRUE) AS missing,
               count(*) FILTER (WHERE stale) AS expired_leases,
               count(*) FILTER (WHERE has_vector AND bad_model) AS wrong_model,
               count(*) FILTER (WHERE has_vector AND bad_dimension) AS wrong_dimension,
               count(*) FILTER (WHERE has_vector AND bad_norm) AS degenerate,
               count(*) FILTER (WHERE has_vector AND bad_hash) AS stale,
               count(*) FILTER (WHERE NOT has_vector AND failed AND live IS NOT TRUE) AS failed,
               count(*) FILTER (WHERE has_vector AND (bad_model OR bad_dimension OR bad_norm OR bad_hash)) AS to_reset
        FROM rows r
        GROUP BY r.doc_id)
    SELECT p.doc_id::text, d.name::text, p.missing, p.expired_leases, p.wrong_model, p.wrong_dimension,
           p.degenerate, p.stale, p.failed, p.to_reset
    FROM per_doc p LEFT JOIN {{documents}} d ON d.id = p.doc_id
    WHERE p.missing + p.expired_leases + p.to_reset > 0
    ORDER BY p.doc_id;
$$;

-- Apply the repair in one transaction, as embq_repair_apply, plus: leases of p_dead_owners are released,
-- degenerate and stale vectors are reset, and degenerate cache entries are dropped (they would be copied
-- again).
CREATE OR REPLACE FUNCTION {{schema}}.embq_repair_apply_v2(
    p_model text, p_dimensions integer, p_doc_id text DEFAULT NULL, p_limit integer DEFAULT NULL,
    p_dead_owners text[] DEFAULT '{}')
RETURNS TABLE (released_leases bigint, wrong_model bigint, wrong_dimension bigint, degenerate bigint,
               stale bigint, reset bigint)
LANGUAGE plpgsql VOLATILE
SET search_path = {{search_path_v1}}
AS $$
DECLARE
    v_released bigint;
    v_wrong_model bigint;
    v_wrong_dimension bigint;
    v_degenerate bigint;
    v_stale bigint;
    v_reset bigint;
BEGIN
    IF p_limit IS NOT NULL AND p_limit < 0 THEN
        RAISE EXCEPTION 'embq_repair_apply_v2: p_limit must not be negative' USING ERRCODE = '22023';
    END IF;

    WITH released AS (
        UPDATE {{chunks}} c
        SET embedding_lease_owner = NULL, embedding_lease_expires_at = NULL
        WHERE c.embedding_lease_expires_at IS NOT NULL
          AND (c.embedding_lease_expires_at < now() OR c.embedding_lease_owner = ANY (coalesce(p_dead_owners, '{}')))
          AND (p_doc_id IS NULL OR c.doc_id = p_doc_id::{{doc_id_type}})
        RETURNING 1)
    SELECT count(*) INTO v_released FROM released;

    WITH picked AS (
        SELECT c.id,
               c.embedding_model IS DISTINCT FROM p_model AS bad_model,
               vector_dims(c.{{embedding}}) <> p_dimensions AS bad_dimension,
               NOT (vector_norm(c.{{embedding}}) BETWEEN 1e-6 AND 1e6) AS bad_norm,
               c.content_hash IS NOT NULL
                   AND c.content_hash <> encode(sha256(convert_to(c.{{content}}, 'UTF8')), 'hex') AS bad_hash
        FROM {{chunks}} c
        WHERE c.{{embedding}} IS NOT NULL
          AND (c.embedding_model IS DISTINCT FROM p_model OR vector_dims(c.{{embedding}}) <> p_dimensions
               OR NOT (vector_norm(c.{{embedding}}) BETWEEN 1e-6 AND 1e6)
               OR (c.content_hash IS NOT NULL
                   AND c.content_hash <> encode(sha256(convert_to(c.{{content}}, 'UTF8')), 'hex')))
          AND (p_doc_id IS NULL OR c.doc_id = p_doc_id::{{doc_id_type}})
        ORDER BY c.doc_id, c.chunk_index
        LIMIT p_limit
        FOR UPDATE OF c),
    cleared AS (
        UPDATE {{chunks}} c
        SET {{embedding}} = NULL,
            embedding_model = NULL,
            content_hash = NULL,
            embedded_at = NULL,
            embedded_by = NULL,
            embedding_attempts = 0,
            embedding_error = NULL,
            embedding_failed_at = NULL,
            embedding_lease_owner = NULL,
            embedding_lease_expires_at = NULL
        FROM picked p
        WHERE c.id = p.id
        RETURNING p.bad_model, p.bad_dimension, p.bad_norm, p.bad_hash)
    SELECT count(*) FILTER (WHERE bad_model), count(*) FILTER (WHERE bad_dimension),
           count(*) FILTER (WHERE bad_norm), count(*) FILTER (WHERE bad_hash), count(*)
    INTO v_wrong_model, v_wrong_dimension, v_degenerate, v_stale, v_reset
    FROM cleared;

    DELETE FROM {{cache}} k WHERE NOT (vector_norm(k.embedding) BETWEEN 1e-6 AND 1e6);

    RETURN QUERY SELECT v_released, v_wrong_model, v_wrong_dimension, v_degenerate, v_stale, v_reset;
END;
$$;

-- Vectors already made for these cache keys (counted as hits); a degenerate entry is never handed out.
CREATE OR REPLACE FUNCTION {{schema}}.embq_cache_lookup(p_keys text[])
RETURNS TABLE (cache_key text, embedding vector)
LANGUAGE sql VOLATILE
SET search_path = {{search_path_v1}}
AS $$
    UPDATE {{cache}} k SET hits = k.hits + 1
    WHERE k.cache_key = ANY (p_keys) AND vector_norm(k.embedding) BETWEEN 1e-6 AND 1e6
    RETURNING k.cache_key, k.embedding;
$$;

-- The queue's own columns as they are, so both stores can refuse one of an incompatible type at start.
CREATE OR REPLACE FUNCTION {{schema}}.embq_queue_columns()
RETURNS TABLE (name text, type text)
LANGUAGE sql STABLE
SET search_path = {{search_path_v1}}
AS $$
    SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
    FROM pg_attribute a
    WHERE a.attrelid = '{{chunks_regclass}}'::regclass AND a.attnum > 0 AND NOT a.attisdropped
      AND a.attname IN ('embedding_attempts', 'embedding_error', 'embedding_failed_at', 'embedding_model',
                        'content_hash', 'embedded_at', 'embedded_by', 'embedding_lease_owner',
                        'embedding_lease_expires_at')
    ORDER BY 1;
$$;

-- Only service_role may call the queue (see grants.sql): the new functions get the same rights.
DO $grants$
DECLARE
    fn regprocedure;
    role_name text;
BEGIN
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = '{{schema}}'::regnamespace AND p.proname LIKE 'embq\_%'
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
END
$grants$;

INSERT INTO {{migrations_table}} (version, name) VALUES (3, 'owned_leases') ON CONFLICT (version) DO NOTHING;
