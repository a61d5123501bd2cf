-- Repair functions for fix_missing_embeddings.py: find, per document, what keeps the embeddings from
-- being complete and right, and reset it so that the normal batch run fills it in again. Loaded
-- after queue.sql, with the same placeholders; both stores call exactly these functions.

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

-- ==== version 3: degenerate vectors, dead workers' leases (see migrations/0003_owned_leases.sql) ====

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
