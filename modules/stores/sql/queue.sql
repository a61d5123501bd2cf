-- Queue functions: the one source of truth for claim, complete, fail, release and status. Both the
-- PostgreSQL store (psycopg) and the Supabase store (PostgREST RPC) call exactly these functions.
-- Ids travel as text and are cast to the host's own id types ({{id_type}}, {{doc_id_type}}).

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

-- ==== version 3: owned, renewed leases; honest counts (see migrations/0003_owned_leases.sql) ====

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
