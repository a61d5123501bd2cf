-- supabase: 20261130000004
-- Version 4: the upload API made fit to face the network (see migrations/0002's header for the rules).
--
-- - embq_ingest_document_v2: an upload saved by name, in one transaction: the same file again is the
--   document already there, an edited one replaces it keeping its unchanged chunks' vectors; concurrent
--   uploads of one name are serialized by an advisory lock. embq_ingest_document stays for older workers.
-- - embq_search_v2: each text once, never a chunk twice, no NaN distance. embq_search stays.
-- - Row-level security on the tables the queue created, their grants to anon and authenticated revoked,
--   and embq_table_access() for the self-test's warning about host tables the public roles can read.
-- - Every queue function's search_path becomes pg_catalog, extensions, <schema>, public, pg_temp, so
--   that a role able to create objects in public cannot plant a function (say public.vector_dims) or an
--   operator that shadows pgvector's and runs with the service role's rights. Nothing else about the
--   existing functions changes, so this is done in place (ALTER FUNCTION ... SET).

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
SET search_path = {{search_path_v4}}
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
CREATE OR REPLACE FUNCTION {{schema}}.embq_search_v2(p_query vector, p_limit integer DEFAULT 5)
RETURNS TABLE (chunk_id text, doc_id text, name text, chunk_index integer, content text, distance double precision)
LANGUAGE sql STABLE
SET search_path = {{search_path_v4}}
AS $$
    WITH nearest AS (
        SELECT c.id, c.doc_id, c.chunk_index, c.{{content}}::text AS body,
               (c.{{embedding}} <=> p_query)::double precision AS dist
        FROM {{chunks}} c
        WHERE c.{{embedding}} IS NOT NULL
        ORDER BY c.{{embedding}} <=> p_query
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

-- The queue's own tables: always ours.
ALTER TABLE {{cache}} ENABLE ROW LEVEL SECURITY;
ALTER TABLE {{migrations_table}} ENABLE ROW LEVEL SECURITY;

-- The host tables, when the queue created them: exactly what host_tables.sql (and the Supabase file of
-- version 1) creates, a documents table of (id, name, type, created_at) whose text ids default to
-- gen_random_uuid()::text, and chunks with text ids of the same default. A host's own tables differ.
DO $rls$
DECLARE
    role_name text;
BEGIN
    IF (SELECT array_agg(a.attname::text || ' ' || format_type(a.atttypid, a.atttypmod) ORDER BY a.attname::text)
        FROM pg_attribute a
        WHERE a.attrelid = '{{documents}}'::regclass AND a.attnum > 0 AND NOT a.attisdropped)
           = ARRAY['created_at timestamp with time zone', 'id text', 'name text', 'type text']
       AND (SELECT count(*) FROM pg_attribute a JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE a.attrelid IN ('{{documents}}'::regclass, '{{chunks_regclass}}'::regclass) AND a.attname = 'id'
              AND a.atttypid = 'text'::regtype AND pg_get_expr(d.adbin, d.adrelid) = '(gen_random_uuid())::text') = 2
       AND NOT EXISTS (SELECT 1 FROM {{documents}}) AND NOT EXISTS (SELECT 1 FROM {{chunks}})
    THEN
        ALTER TABLE {{documents}} ENABLE ROW LEVEL SECURITY;
        ALTER TABLE {{chunks}} ENABLE ROW LEVEL SECURITY;
        FOREACH role_name IN ARRAY ARRAY['anon', 'authenticated'] LOOP
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
                EXECUTE format('REVOKE ALL ON TABLE %s, %s FROM %I', '{{documents}}', '{{chunks}}', role_name);
            END IF;
        END LOOP;
    END IF;
END
$rls$;

-- What Supabase's API roles may read of the host tables: per table and role (roles that don't exist,
-- as on a plain PostgreSQL, give no rows), whether it holds SELECT, whether RLS is on, and how many
-- permissive policies let it (or PUBLIC) read. It can read rows when it holds SELECT and RLS is off,
-- or a policy lets it.
CREATE OR REPLACE FUNCTION {{schema}}.embq_table_access()
RETURNS TABLE (table_name text, role_name text, can_select boolean, row_security boolean, policies integer)
LANGUAGE sql STABLE
SET search_path = {{search_path_v4}}
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

-- Every queue function, the old ones included, runs with the hardened search_path.
DO $search_path$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = '{{schema}}'::regnamespace AND p.proname LIKE 'embq\_%'
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %s', fn, '{{search_path_v4}}');
    END LOOP;
END
$search_path$;

-- Who may call the new functions: only the owner and service_role (as grants.sql does for all).
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
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        -- The functions run with the caller's rights: service_role needs the tables (Supabase grants
        -- these already; a plain PostgreSQL may not).
        GRANT USAGE ON SCHEMA {{schema}} TO service_role;
        GRANT SELECT, INSERT, UPDATE, DELETE ON {{chunks}}, {{documents}}, {{cache}} TO service_role;
        GRANT SELECT ON {{migrations_table}} TO service_role;
    END IF;
    -- The cache and the version table are the queue's own: not for the public API roles at all.
    FOREACH role_name IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
            EXECUTE format('REVOKE ALL ON TABLE %s FROM %I', '{{cache}}', role_name);
            EXECUTE format('REVOKE ALL ON TABLE %s FROM %I', '{{migrations_table}}', role_name);
        END IF;
    END LOOP;
END
$grants$;

INSERT INTO {{migrations_table}} (version, name) VALUES (4, 'upload_security')
ON CONFLICT (version) DO NOTHING;
