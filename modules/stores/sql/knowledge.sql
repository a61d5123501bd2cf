-- The knowledge side: save an uploaded document with its chunks (one transaction), list, delete,
-- and search by vector. Same templating rules as queue.sql.

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
