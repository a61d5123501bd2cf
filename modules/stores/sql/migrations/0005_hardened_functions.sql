-- supabase: 20261130000005
-- Version 5: every queue function hardened against planted overloads (see migrations/0002's
-- header for the rules). PostgreSQL picks a better-matching overload from anywhere on a function's
-- search_path, whatever its place: with public on the path, a role that may create objects in public
-- could plant, say, public.make_interval(integer) and have it run with the caller's rights. So every
-- function now runs with search_path = pg_catalog, pg_temp (nothing another role can write), and names
-- pgvector's type, functions and operators with the schema pgvector is installed in. Meanings, arguments
-- and results are unchanged, so each function is replaced in place (its definition below is the same as
-- in the fresh-install files at this version).

-- Describe the vector column and id types, so a client can check them against its settings.
CREATE OR REPLACE FUNCTION {{schema}}.embq_column_info()
RETURNS TABLE (dimensions integer, id_type text, doc_id_type text)
LANGUAGE sql STABLE
SET search_path = {{search_path}}
AS $$
    SELECT NULLIF(e.atttypmod, -1), format_type(i.atttypid, i.atttypmod), format_type(d.atttypid, d.atttypmod)
    FROM pg_attribute e, pg_attribute i, pg_attribute d
    WHERE e.attrelid = '{{chunks_regclass}}'::regclass AND e.attname = '{{embedding_name}}'
      AND i.attrelid = e.attrelid AND i.attname = 'id'
      AND d.attrelid = e.attrelid AND d.attname = 'doc_id';
$$;

-- Lease up to p_limit chunks to p_worker. SKIP LOCKED: concurrent claimers never wait for or take
-- each other's rows. A chunk whose lease expired (its worker died) is claimable again.
CREATE OR REPLACE FUNCTION {{schema}}.embq_claim(
    p_worker text, p_limit integer, p_lease_seconds integer,
    p_mode text DEFAULT 'pending', p_doc_id text DEFAULT NULL, p_failed_before timestamptz DEFAULT NULL)
RETURNS TABLE (id text, doc_id text, chunk_index integer, content text, title text, attempts integer)
LANGUAGE plpgsql VOLATILE
SET search_path = {{search_path}}
AS $$
DECLARE
    picked {{id_type}}[];
BEGIN
    -- Four static queries rather than one with OR-ed parameters, so each can use its partial index.
    IF p_mode = 'failed' THEN
        IF p_doc_id IS NULL THEN
            SELECT array_agg(q.id) INTO picked FROM (
                SELECT c.id FROM {{chunks}} c
                WHERE c.{{embedding}} IS NULL AND c.embedding_failed_at IS NOT NULL
                  AND c.embedding_failed_at < coalesce(p_failed_before, 'infinity')
                  AND (c.embedding_lease_expires_at IS NULL OR c.embedding_lease_expires_at < now())
                ORDER BY c.doc_id, c.chunk_index LIMIT p_limit FOR UPDATE OF c SKIP LOCKED) q;
        ELSE
            SELECT array_agg(q.id) INTO picked FROM (
                SELECT c.id FROM {{chunks}} c
                WHERE c.doc_id = p_doc_id::{{doc_id_type}}
                  AND c.{{embedding}} IS NULL AND c.embedding_failed_at IS NOT NULL
                  AND c.embedding_failed_at < coalesce(p_failed_before, 'infinity')
                  AND (c.embedding_lease_expires_at IS NULL OR c.embedding_lease_expires_at < now())
                ORDER BY c.doc_id, c.chunk_index LIMIT p_limit FOR UPDATE OF c SKIP LOCKED) q;
        END IF;
    ELSIF p_mode = 'pending' THEN
        IF p_doc_id IS NULL THEN
            SELECT array_agg(q.id) INTO picked FROM (
                SELECT c.id FROM {{chunks}} c
                WHERE c.{{embedding}} IS NULL AND c.embedding_failed_at IS NULL
                  AND (c.embedding_lease_expires_at IS NULL OR c.embedding_lease_expires_at < now())
                ORDER BY c.doc_id, c.chunk_index LIMIT p_limit FOR UPDATE OF c SKIP LOCKED) q;
        ELSE
            SELECT array_agg(q.id) INTO picked FROM (
                SELECT c.id FROM {{chunks}} c
                WHERE c.doc_id = p_doc_id::{{doc_id_type}}
                  AND c.{{embedding}} IS NULL AND c.embedding_failed_at IS NULL
                  AND (c.embedding_lease_expires_at IS NULL OR c.embedding_lease_expires_at < now())
                ORDER BY c.doc_id, c.chunk_index LIMIT p_limit FOR UPDATE OF c SKIP LOCKED) q;
        END IF;
    ELSE
        RAISE EXCEPTION 'embq_claim: unknown mode %', p_mode USING ERRCODE = '22023';
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

-- Store vectors and mark the chunks done, in one statement (one transaction, one round trip per
-- batch). A chunk whose text changed since it was claimed is skipped: its vector would be stale.
-- The same statement fills the cache, so a vector is cached only if it was stored.
CREATE OR REPLACE FUNCTION {{schema}}.embq_complete(
    p_worker text, p_model text, p_ids text[], p_vectors {{vector}}[], p_hashes text[],
    p_cache_keys text[] DEFAULT NULL)
RETURNS integer
LANGUAGE sql VOLATILE
SET search_path = {{search_path}}
AS $$
    WITH r AS (SELECT * FROM unnest(p_ids, p_vectors, p_hashes) WITH ORDINALITY AS r(id, vec, hash, n)),
    written AS (
        UPDATE {{chunks}} c
        SET {{embedding}} = r.vec,
            embedding_model = p_model,
            content_hash = r.hash,
            embedded_at = now(),
            embedding_error = NULL,
            embedding_failed_at = NULL,
            embedding_lease_owner = NULL,
            embedding_lease_expires_at = NULL
        FROM r
        WHERE c.id = r.id::{{id_type}}
          AND encode(sha256(convert_to(c.{{content}}, 'UTF8')), 'hex') = r.hash
        RETURNING r.n, r.vec),
    cached AS (
        INSERT INTO {{cache}} (cache_key, model, embedding)
        SELECT p_cache_keys[w.n], p_model, w.vec FROM written w
        WHERE p_cache_keys IS NOT NULL AND p_cache_keys[w.n] IS NOT NULL
        ON CONFLICT (cache_key) DO NOTHING)
    SELECT count(*)::integer FROM written;
$$;

-- Vectors already made for these cache keys (counted as hits); a degenerate entry is never handed out.
CREATE OR REPLACE FUNCTION {{schema}}.embq_cache_lookup(p_keys text[])
RETURNS TABLE (cache_key text, embedding {{vector}})
LANGUAGE sql VOLATILE
SET search_path = {{search_path}}
AS $$
    UPDATE {{cache}} k SET hits = k.hits + 1
    WHERE k.cache_key = ANY (p_keys) AND {{vector_schema}}.vector_norm(k.embedding) BETWEEN 1e-6 AND 1e6
    RETURNING k.cache_key, k.embedding;
$$;

CREATE OR REPLACE FUNCTION {{schema}}.embq_cache_stats()
RETURNS TABLE (entries bigint, hits bigint)
LANGUAGE sql STABLE
SET search_path = {{search_path}}
AS $$
    SELECT count(*), coalesce(sum(k.hits), 0)::bigint FROM {{cache}} k;
$$;

-- Record each chunk's own failure: one more attempt, the reason, the time; and release it.
-- A failed chunk is not claimed again until a retry of failures is asked for (p_mode = 'failed').
CREATE OR REPLACE FUNCTION {{schema}}.embq_fail(p_worker text, p_ids text[], p_errors text[])
RETURNS integer
LANGUAGE sql VOLATILE
SET search_path = {{search_path}}
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
        WHERE c.id = r.id::{{id_type}} AND c.{{embedding}} IS NULL
        RETURNING 1)
    SELECT count(*)::integer FROM failed;
$$;

-- Give leased chunks back untouched (shutdown, quota exhausted): no attempt is charged.
CREATE OR REPLACE FUNCTION {{schema}}.embq_release(p_worker text, p_ids text[])
RETURNS integer
LANGUAGE sql VOLATILE
SET search_path = {{search_path}}
AS $$
    WITH released AS (
        UPDATE {{chunks}} c
        SET embedding_lease_owner = NULL, embedding_lease_expires_at = NULL
        WHERE c.id = ANY (p_ids::{{id_type}}[]) AND c.embedding_lease_owner = p_worker
        RETURNING 1)
    SELECT count(*)::integer FROM released;
$$;

-- Exact counts (never capped, never estimated). embedded + pending + failed + in_progress = total;
-- stale_leases (a dead worker's chunks) are counted inside pending or failed, where they will be taken.
CREATE OR REPLACE FUNCTION {{schema}}.embq_status(p_doc_id text DEFAULT NULL)
RETURNS TABLE (total bigint, embedded bigint, pending bigint, failed bigint, in_progress bigint, stale_leases bigint)
LANGUAGE sql STABLE
SET search_path = {{search_path}}
AS $$
    SELECT count(*),
           count(*) FILTER (WHERE c.{{embedding}} IS NOT NULL),
           count(*) FILTER (WHERE c.{{embedding}} IS NULL AND c.embedding_failed_at IS NULL
                              AND (c.embedding_lease_expires_at IS NULL OR c.embedding_lease_expires_at < now())),
           count(*) FILTER (WHERE c.{{embedding}} IS NULL AND c.embedding_failed_at IS NOT NULL
                              AND (c.embedding_lease_expires_at IS NULL OR c.embedding_lease_expires_at < now())),
           count(*) FILTER (WHERE c.{{embedding}} IS NULL AND c.embedding_lease_expires_at >= now()),
           count(*) FILTER (WHERE c.{{embedding}} IS NULL AND c.embedding_lease_owner IS NOT NULL
                              AND c.embedding_lease_expires_at < now())
    FROM {{chunks}} c
    WHERE p_doc_id IS NULL OR c.doc_id = p_doc_id::{{doc_id_type}};
$$;

CREATE OR REPLACE FUNCTION {{schema}}.embq_status_by_document(p_limit integer DEFAULT 50)
RETURNS TABLE (doc_id text, name text, total bigint, embedded bigint, pending bigint, failed bigint,
               in_progress bigint)
LANGUAGE sql STABLE
SET search_path = {{search_path}}
AS $$
    SELECT c.doc_id::text, max(d.name::text),
           count(*),
           count(*) FILTER (WHERE c.{{embedding}} IS NOT NULL),
           count(*) FILTER (WHERE c.{{embedding}} IS NULL AND c.embedding_failed_at IS NULL
                              AND (c.embedding_lease_expires_at IS NULL OR c.embedding_lease_expires_at < now())),
           count(*) FILTER (WHERE c.{{embedding}} IS NULL AND c.embedding_failed_at IS NOT NULL
                              AND (c.embedding_lease_expires_at IS NULL OR c.embedding_lease_expires_at < now())),
           count(*) FILTER (WHERE c.{{embedding}} IS NULL AND c.embedding_lease_expires_at >= now())
    FROM {{chunks}} c LEFT JOIN {{documents}} d ON d.id = c.doc_id
    GROUP BY c.doc_id
    ORDER BY count(*) FILTER (WHERE c.{{embedding}} IS NULL) DESC, c.doc_id
    LIMIT p_limit;
$$;

-- The most common reasons for recorded failures, grouped.
CREATE OR REPLACE FUNCTION {{schema}}.embq_recent_errors(p_limit integer DEFAULT 10)
RETURNS TABLE (error text, chunks bigint, last_seen timestamptz)
LANGUAGE sql STABLE
SET search_path = {{search_path}}
AS $$
    SELECT c.embedding_error, count(*), max(c.embedding_failed_at)
    FROM {{chunks}} c
    WHERE c.{{embedding}} IS NULL AND c.embedding_failed_at IS NOT NULL
    GROUP BY c.embedding_error
    ORDER BY count(*) DESC, max(c.embedding_failed_at) DESC
    LIMIT p_limit;
$$;

CREATE OR REPLACE FUNCTION {{schema}}.embq_document_exists(p_doc_id text)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = {{search_path}}
AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM {{documents}} d WHERE d.id = p_doc_id::{{doc_id_type}});
EXCEPTION WHEN invalid_text_representation THEN
    RETURN false;  -- e.g. 'abc' against a uuid column: simply not a document of ours
END;
$$;

-- A document's name (NULL when there is no such document).
CREATE OR REPLACE FUNCTION {{schema}}.embq_document_name(p_doc_id text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = {{search_path}}
AS $$
BEGIN
    RETURN (SELECT d.name::text FROM {{documents}} d WHERE d.id = p_doc_id::{{doc_id_type}});
EXCEPTION WHEN invalid_text_representation THEN
    RETURN NULL;
END;
$$;

-- The version a database has, for clients that cannot read the table (the Supabase REST path).
CREATE OR REPLACE FUNCTION {{schema}}.embq_schema_version()
RETURNS integer
LANGUAGE sql STABLE
SET search_path = {{search_path}}
AS $$
    SELECT coalesce(max(m.version), 1) FROM {{migrations_table}} m;
$$;

-- The database's clock, which leases and failure times are measured by (callable over RPC too).
CREATE OR REPLACE FUNCTION {{schema}}.embq_server_time()
RETURNS timestamptz
LANGUAGE sql STABLE
SET search_path = {{search_path}}
AS $$
    SELECT now();
$$;

-- Store vectors and mark the chunks done, only for chunks p_worker still holds (or wrote itself: a retry
-- after a lost answer). A chunk whose text changed since it was claimed is released instead (pending again
-- with its new text). Returns how many were written and how many were released for a changed text.
CREATE OR REPLACE FUNCTION {{schema}}.embq_complete_v2(
    p_worker text, p_model text, p_ids text[], p_vectors {{vector}}[], p_hashes text[],
    p_cache_keys text[] DEFAULT NULL)
RETURNS TABLE (written integer, changed integer)
LANGUAGE sql VOLATILE
SET search_path = {{search_path}}
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
SET search_path = {{search_path}}
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
SET search_path = {{search_path}}
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
SET search_path = {{search_path}}
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
SET search_path = {{search_path}}
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
SET search_path = {{search_path}}
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

-- The queue's own columns as they are, so both stores can refuse one of an incompatible type at start.
CREATE OR REPLACE FUNCTION {{schema}}.embq_queue_columns()
RETURNS TABLE (name text, type text)
LANGUAGE sql STABLE
SET search_path = {{search_path}}
AS $$
    SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
    FROM pg_attribute a
    WHERE a.attrelid = '{{chunks_regclass}}'::regclass AND a.attnum > 0 AND NOT a.attisdropped
      AND a.attname IN ('embedding_attempts', 'embedding_error', 'embedding_failed_at', 'embedding_model',
                        'content_hash', 'embedded_at', 'embedded_by', 'embedding_lease_owner',
                        'embedding_lease_expires_at')
    ORDER BY 1;
$$;

-- Per document, counts of what needs attention (documents with nothing to repair are left out):
--   missing          no vector and not leased live (includes `failed` and dead workers' chunks)
--   expired_leases   a lease whose time ran out (its worker died); cleared by embq_repair_apply
--   wrong_model      a vector made by another model than p_model, or by an unrecorded one
--   wrong_dimension  a vector whose length is not p_dimensions (possible in an undeclared `vector` column)
--   failed           no vector, recorded failed by an earlier run (left for --retry-only)
--   to_reset         vectors embq_repair_apply would clear: wrong model or wrong dimension, counted once
CREATE OR REPLACE FUNCTION {{schema}}.embq_repair_report(
    p_model text, p_dimensions integer, p_doc_id text DEFAULT NULL)
RETURNS TABLE (doc_id text, name text, missing bigint, expired_leases bigint, wrong_model bigint,
               wrong_dimension bigint, failed bigint, to_reset bigint)
LANGUAGE sql STABLE
SET search_path = {{search_path}}
AS $$
    WITH per_doc AS (
        SELECT c.doc_id,
               count(*) FILTER (WHERE c.{{embedding}} IS NULL
                   AND (c.embedding_lease_expires_at IS NULL OR c.embedding_lease_expires_at < now())) AS missing,
               count(*) FILTER (WHERE c.embedding_lease_expires_at < now()) AS expired_leases,
               count(*) FILTER (WHERE c.{{embedding}} IS NOT NULL
                   AND c.embedding_model IS DISTINCT FROM p_model) AS wrong_model,
               count(*) FILTER (WHERE c.{{embedding}} IS NOT NULL
                   AND {{vector_schema}}.vector_dims(c.{{embedding}}) <> p_dimensions) AS wrong_dimension,
               count(*) FILTER (WHERE c.{{embedding}} IS NULL AND c.embedding_failed_at IS NOT NULL
                   AND (c.embedding_lease_expires_at IS NULL OR c.embedding_lease_expires_at < now())) AS failed,
               count(*) FILTER (WHERE c.{{embedding}} IS NOT NULL
                   AND (c.embedding_model IS DISTINCT FROM p_model
                        OR {{vector_schema}}.vector_dims(c.{{embedding}}) <> p_dimensions)) AS to_reset
        FROM {{chunks}} c
        WHERE p_doc_id IS NULL OR c.doc_id = p_doc_id::{{doc_id_type}}
        GROUP BY c.doc_id)
    SELECT p.doc_id::text, d.name::text, p.missing, p.expired_leases, p.wrong_model, p.wrong_dimension,
           p.failed, p.to_reset
    FROM per_doc p LEFT JOIN {{documents}} d ON d.id = p.doc_id
    WHERE p.missing + p.expired_leases + p.wrong_model + p.wrong_dimension > 0
    ORDER BY p.doc_id;
$$;

-- Apply the repair in one transaction: clear expired leases, and clear every vector of the wrong
-- model or dimension (with its model, hash, time and any failure record) so that it is pending
-- again. At most p_limit vectors are cleared (in document, chunk order), so that a limited repair
-- never leaves more chunks without a vector than its run can fill. Returns what was done.
CREATE OR REPLACE FUNCTION {{schema}}.embq_repair_apply(
    p_model text, p_dimensions integer, p_doc_id text DEFAULT NULL, p_limit integer DEFAULT NULL)
RETURNS TABLE (released_leases bigint, wrong_model bigint, wrong_dimension bigint, reset bigint)
LANGUAGE plpgsql VOLATILE
SET search_path = {{search_path}}
AS $$
DECLARE
    v_released bigint;
    v_wrong_model bigint;
    v_wrong_dimension bigint;
    v_reset bigint;
BEGIN
    IF p_limit IS NOT NULL AND p_limit < 0 THEN
        RAISE EXCEPTION 'embq_repair_apply: p_limit must not be negative' USING ERRCODE = '22023';
    END IF;

    WITH released AS (
        UPDATE {{chunks}} c
        SET embedding_lease_owner = NULL, embedding_lease_expires_at = NULL
        WHERE c.embedding_lease_expires_at < now()
          AND (p_doc_id IS NULL OR c.doc_id = p_doc_id::{{doc_id_type}})
        RETURNING 1)
    SELECT count(*) INTO v_released FROM released;

    WITH picked AS (
        SELECT c.id,
               c.embedding_model IS DISTINCT FROM p_model AS bad_model,
               {{vector_schema}}.vector_dims(c.{{embedding}}) <> p_dimensions AS bad_dimension
        FROM {{chunks}} c
        WHERE c.{{embedding}} IS NOT NULL
          AND (c.embedding_model IS DISTINCT FROM p_model OR {{vector_schema}}.vector_dims(c.{{embedding}}) <> p_dimensions)
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
            embedding_attempts = 0,
            embedding_error = NULL,
            embedding_failed_at = NULL,
            embedding_lease_owner = NULL,
            embedding_lease_expires_at = NULL
        FROM picked p
        WHERE c.id = p.id
        RETURNING p.bad_model, p.bad_dimension)
    SELECT count(*) FILTER (WHERE bad_model), count(*) FILTER (WHERE bad_dimension), count(*)
    INTO v_wrong_model, v_wrong_dimension, v_reset
    FROM cleared;

    RETURN QUERY SELECT v_released, v_wrong_model, v_wrong_dimension, v_reset;
END;
$$;

-- The repair report, as embq_repair_report, plus degenerate vectors (zero, overflowing or underflowing
-- norm) and stale ones (the text changed after it was embedded: its hash no longer matches), and with
-- leases of p_dead_owners counted as expired.
CREATE OR REPLACE FUNCTION {{schema}}.embq_repair_report_v2(
    p_model text, p_dimensions integer, p_doc_id text DEFAULT NULL, p_dead_owners text[] DEFAULT '{}')
RETURNS TABLE (doc_id text, name text, missing bigint, expired_leases bigint, wrong_model bigint,
               wrong_dimension bigint, degenerate bigint, stale bigint, failed bigint, to_reset bigint)
LANGUAGE sql STABLE
SET search_path = {{search_path}}
AS $$
    WITH rows AS (
        SELECT c.doc_id, c.{{embedding}} IS NOT NULL AS has_vector, c.embedding_failed_at IS NOT NULL AS failed,
               c.embedding_lease_expires_at IS NOT NULL AND (c.embedding_lease_expires_at < now()
                   OR c.embedding_lease_owner = ANY (coalesce(p_dead_owners, '{}'))) AS stale,
               c.embedding_lease_expires_at >= now()
                   AND NOT c.embedding_lease_owner = ANY (coalesce(p_dead_owners, '{}')) AS live,
               c.embedding_model IS DISTINCT FROM p_model AS bad_model,
               {{vector_schema}}.vector_dims(c.{{embedding}}) <> p_dimensions AS bad_dimension,
               NOT ({{vector_schema}}.vector_norm(c.{{embedding}}) BETWEEN 1e-6 AND 1e6) AS bad_norm,
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
SET search_path = {{search_path}}
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
               {{vector_schema}}.vector_dims(c.{{embedding}}) <> p_dimensions AS bad_dimension,
               NOT ({{vector_schema}}.vector_norm(c.{{embedding}}) BETWEEN 1e-6 AND 1e6) AS bad_norm,
               c.content_hash IS NOT NULL
                   AND c.content_hash <> encode(sha256(convert_to(c.{{content}}, 'UTF8')), 'hex') AS bad_hash
        FROM {{chunks}} c
        WHERE c.{{embedding}} IS NOT NULL
          AND (c.embedding_model IS DISTINCT FROM p_model OR {{vector_schema}}.vector_dims(c.{{embedding}}) <> p_dimensions
               OR NOT ({{vector_schema}}.vector_norm(c.{{embedding}}) BETWEEN 1e-6 AND 1e6)
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

    DELETE FROM {{cache}} k WHERE NOT ({{vector_schema}}.vector_norm(k.embedding) BETWEEN 1e-6 AND 1e6);

    RETURN QUERY SELECT v_released, v_wrong_model, v_wrong_dimension, v_degenerate, v_stale, v_reset;
END;
$$;

-- Save a document and its chunks atomically; returns the document's id. The chunks wait, with no
-- embedding, for the batch embedder (run by the upload hook or the CLI).
CREATE OR REPLACE FUNCTION {{schema}}.embq_ingest_document(
    p_name text, p_type text, p_chunks text[], p_doc_id text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = {{search_path}}
AS $$
DECLARE
    new_id {{doc_id_type}};
BEGIN
    IF p_doc_id IS NULL THEN
        INSERT INTO {{documents}} (name, type) VALUES (p_name, p_type) RETURNING id INTO new_id;
    ELSE
        INSERT INTO {{documents}} (id, name, type) VALUES (p_doc_id::{{doc_id_type}}, p_name, p_type)
        RETURNING id INTO new_id;
    END IF;
    INSERT INTO {{chunks}} (doc_id, chunk_index, {{content}})
    SELECT new_id, (t.n - 1)::integer, t.body FROM unnest(p_chunks) WITH ORDINALITY AS t(body, n);
    RETURN new_id::text;
END;
$$;

CREATE OR REPLACE FUNCTION {{schema}}.embq_list_documents(p_limit integer DEFAULT 100)
RETURNS TABLE (doc_id text, name text, type text, chunks bigint, embedded bigint, failed bigint)
LANGUAGE sql STABLE
SET search_path = {{search_path}}
AS $$
    SELECT d.id::text, d.name::text, d.type::text, count(c.id),
           count(c.id) FILTER (WHERE c.{{embedding}} IS NOT NULL),
           count(c.id) FILTER (WHERE c.{{embedding}} IS NULL AND c.embedding_failed_at IS NOT NULL)
    FROM {{documents}} d LEFT JOIN {{chunks}} c ON c.doc_id = d.id
    GROUP BY d.id, d.name, d.type
    ORDER BY d.name, d.id
    LIMIT p_limit;
$$;

-- Delete a document and its chunks; returns the number of chunks removed (NULL: no such document).
CREATE OR REPLACE FUNCTION {{schema}}.embq_delete_document(p_doc_id text)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = {{search_path}}
AS $$
DECLARE
    removed integer;
BEGIN
    IF NOT {{schema}}.embq_document_exists(p_doc_id) THEN
        RETURN NULL;
    END IF;
    DELETE FROM {{chunks}} c WHERE c.doc_id = p_doc_id::{{doc_id_type}};
    GET DIAGNOSTICS removed = ROW_COUNT;
    DELETE FROM {{documents}} d WHERE d.id = p_doc_id::{{doc_id_type}};
    RETURN removed;
END;
$$;

-- Nearest chunks by cosine distance (pgvector's <=>), with their documents' names.
CREATE OR REPLACE FUNCTION {{schema}}.embq_search(p_query {{vector}}, p_limit integer DEFAULT 5)
RETURNS TABLE (chunk_id text, doc_id text, name text, chunk_index integer, content text, distance double precision)
LANGUAGE sql STABLE
SET search_path = {{search_path}}
AS $$
    SELECT c.id::text, c.doc_id::text, d.name::text, c.chunk_index, c.{{content}}::text,
           (c.{{embedding}} OPERATOR({{vector_schema}}.<=>) p_query)::double precision
    FROM {{chunks}} c LEFT JOIN {{documents}} d ON d.id = c.doc_id
    WHERE c.{{embedding}} IS NOT NULL
    ORDER BY c.{{embedding}} OPERATOR({{vector_schema}}.<=>) p_query
    LIMIT p_limit;
$$;

-- Save an upload by name (version 2 of embq_ingest_document, which stays for older workers), in one
-- transaction; returns what it did:
--   p_mode 'new'      always a new document ('created').
--   p_mode 'replace'  a document of this name whose chunks are exactly p_chunks is that document
--                     ('unchanged', nothing written); else the one document of this name is replaced in
--                     place ('replaced'): each chunk whose text is unchanged keeps its row, vector and
--                     queue state (only its index may move), new texts become pending rows, texts no
--                     longer there are deleted; with no document of this name, a new one ('created');
--                     with several and none unchanged, nothing is written ('ambiguous').
-- Saves of one name take a transaction-scoped advisory lock on it first, so concurrent uploads of the
-- same file are serialized and end as one document (each later one sees the first as 'unchanged').
CREATE OR REPLACE FUNCTION {{schema}}.embq_ingest_document_v2(
    p_name text, p_type text, p_chunks text[], p_mode text DEFAULT 'replace')
RETURNS TABLE (doc_id text, outcome text, kept integer, added integer, removed integer)
LANGUAGE plpgsql VOLATILE
SET search_path = {{search_path}}
AS $$
DECLARE
    v_doc {{doc_id_type}};
    v_same_name {{doc_id_type}}[];
    v_keep_ids {{id_type}}[];
    v_keep_at integer[];
    v_removed integer;
    v_added integer;
    v_offset integer;
BEGIN
    IF p_mode IS NULL OR p_mode NOT IN ('replace', 'new') THEN
        RAISE EXCEPTION 'embq_ingest_document_v2: unknown mode %', p_mode USING ERRCODE = '22023';
    END IF;
    IF p_name IS NULL OR coalesce(cardinality(p_chunks), 0) = 0 THEN
        RAISE EXCEPTION 'embq_ingest_document_v2: a document needs a name and at least one chunk'
            USING ERRCODE = '22023';
    END IF;

    IF p_mode = 'replace' THEN
        PERFORM pg_advisory_xact_lock(1701667442, hashtext(p_name));  -- 1701667442: "embr", this function's
        SELECT array_agg(d.id ORDER BY d.id) INTO v_same_name FROM {{documents}} d WHERE d.name = p_name;

        SELECT s.id INTO v_doc
        FROM unnest(v_same_name) AS s(id)
        WHERE (SELECT array_agg(c.{{content}}::text ORDER BY c.chunk_index) FROM {{chunks}} c WHERE c.doc_id = s.id)
              = p_chunks
        LIMIT 1;
        IF v_doc IS NOT NULL THEN
            RETURN QUERY SELECT v_doc::text, 'unchanged'::text, cardinality(p_chunks), 0, 0;
            RETURN;
        END IF;
        IF cardinality(v_same_name) > 1 THEN
            RETURN QUERY SELECT NULL::text, 'ambiguous'::text, 0, 0, 0;
            RETURN;
        END IF;
        v_doc := v_same_name[1];
    END IF;

    IF v_doc IS NULL THEN
        INSERT INTO {{documents}} (name, type) VALUES (p_name, p_type) RETURNING id INTO v_doc;
        INSERT INTO {{chunks}} (doc_id, chunk_index, {{content}})
        SELECT v_doc, (t.n - 1)::integer, t.body FROM unnest(p_chunks) WITH ORDINALITY AS t(body, n);
        RETURN QUERY SELECT v_doc::text, 'created'::text, 0, cardinality(p_chunks), 0;
        RETURN;
    END IF;

    -- Replace: pair old and new chunks by text (the k-th copy of a text with its k-th copy).
    SELECT array_agg(o.id ORDER BY f.at), array_agg(f.at ORDER BY f.at)
    INTO v_keep_ids, v_keep_at
    FROM (SELECT t.body, (t.n - 1)::integer AS at, row_number() OVER (PARTITION BY t.body ORDER BY t.n) AS k
          FROM unnest(p_chunks) WITH ORDINALITY AS t(body, n)) f
    JOIN (SELECT c.id, c.{{content}}::text AS body,
                 row_number() OVER (PARTITION BY c.{{content}}::text ORDER BY c.chunk_index, c.id) AS k
          FROM {{chunks}} c WHERE c.doc_id = v_doc) o
      ON o.body = f.body AND o.k = f.k;
    v_keep_ids := coalesce(v_keep_ids, '{}');
    v_keep_at := coalesce(v_keep_at, '{}');

    DELETE FROM {{chunks}} c WHERE c.doc_id = v_doc AND c.id <> ALL (v_keep_ids);
    GET DIAGNOSTICS v_removed = ROW_COUNT;
    -- Kept chunks move to their new places through indexes above every old and new one, so that a
    -- unique (doc_id, chunk_index) constraint, if the host has one, never sees two rows at one place.
    SELECT coalesce(max(c.chunk_index), 0) + cardinality(p_chunks) + 1 INTO v_offset
    FROM {{chunks}} c WHERE c.doc_id = v_doc;
    UPDATE {{chunks}} c SET chunk_index = v_offset + k.at
    FROM unnest(v_keep_ids, v_keep_at) AS k(id, at)
    WHERE c.id = k.id AND c.chunk_index IS DISTINCT FROM k.at;
    UPDATE {{chunks}} c SET chunk_index = k.at
    FROM unnest(v_keep_ids, v_keep_at) AS k(id, at)
    WHERE c.id = k.id AND c.chunk_index = v_offset + k.at;
    INSERT INTO {{chunks}} (doc_id, chunk_index, {{content}})
    SELECT v_doc, (t.n - 1)::integer, t.body FROM unnest(p_chunks) WITH ORDINALITY AS t(body, n)
    WHERE (t.n - 1)::integer <> ALL (v_keep_at);
    GET DIAGNOSTICS v_added = ROW_COUNT;
    UPDATE {{documents}} d SET type = p_type WHERE d.id = v_doc AND d.type IS DISTINCT FROM p_type;
    RETURN QUERY SELECT v_doc::text, 'replaced'::text, cardinality(v_keep_ids), v_added, v_removed;
END;
$$;

-- Nearest chunks by cosine distance (version 2 of embq_search, which stays for older workers): each
-- text once, as its nearest copy (a file uploaded twice must not fill the answer with pairs), never a
-- chunk twice, and no chunk whose distance is undefined (a zero vector has no direction: NaN). The
-- nearest p_limit * 4 + 20 chunks are taken first, by the index where there is one, then thinned.
CREATE OR REPLACE FUNCTION {{schema}}.embq_search_v2(p_query {{vector}}, p_limit integer DEFAULT 5)
RETURNS TABLE (chunk_id text, doc_id text, name text, chunk_index integer, content text, distance double precision)
LANGUAGE sql STABLE
SET search_path = {{search_path}}
AS $$
    WITH nearest AS (
        SELECT c.id, c.doc_id, c.chunk_index, c.{{content}}::text AS body,
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
           e.chunk_index, e.body, e.dist
    FROM each_text e
    ORDER BY e.dist, e.id
    LIMIT p_limit;
$$;

-- What Supabase's API roles may read of the host tables: per table and role (roles that don't exist,
-- as on a plain PostgreSQL, give no rows), whether it holds SELECT, whether RLS is on, and how many
-- permissive policies let it (or PUBLIC) read. It can read rows when it holds SELECT and RLS is off,
-- or a policy lets it.
CREATE OR REPLACE FUNCTION {{schema}}.embq_table_access()
RETURNS TABLE (table_name text, role_name text, can_select boolean, row_security boolean, policies integer)
LANGUAGE sql STABLE
SET search_path = {{search_path}}
AS $$
    SELECT c.relname::text, r.rolname::text,
           has_table_privilege(r.oid, c.oid, 'SELECT'),
           c.relrowsecurity,
           (SELECT count(*)::integer FROM pg_policy p
            WHERE p.polrelid = c.oid AND p.polpermissive AND p.polcmd IN ('r', '*')
              AND (p.polroles = '{0}'::oid[] OR r.oid = ANY (p.polroles)))
    FROM pg_class c CROSS JOIN pg_roles r
    WHERE c.oid IN ('{{chunks_regclass}}'::regclass, '{{documents}}'::regclass)
      AND r.rolname IN ('anon', 'authenticated')
    ORDER BY 1, 2;
$$;

-- Any queue function not defined above (none today) gets the same search_path.
DO $search_path$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = '{{schema}}'::regnamespace AND p.proname LIKE 'embq\_%'
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %s', fn, '{{search_path}}');
    END LOOP;
END
$search_path$;

INSERT INTO {{migrations_table}} (version, name) VALUES (5, 'hardened_functions')
ON CONFLICT (version) DO NOTHING;
