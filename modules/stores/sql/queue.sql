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
    p_worker text, p_model text, p_ids text[], p_vectors vector[], p_hashes text[],
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

-- Vectors already made for these cache keys (counted as hits).
CREATE OR REPLACE FUNCTION {{schema}}.embq_cache_lookup(p_keys text[])
RETURNS TABLE (cache_key text, embedding vector)
LANGUAGE sql VOLATILE
SET search_path = {{search_path}}
AS $$
    UPDATE {{cache}} k SET hits = k.hits + 1
    WHERE k.cache_key = ANY (p_keys)
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
