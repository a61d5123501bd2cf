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
CREATE OR REPLACE FUNCTION {{schema}}.embq_search(p_query vector, p_limit integer DEFAULT 5)
RETURNS TABLE (chunk_id text, doc_id text, name text, chunk_index integer, content text, distance double precision)
LANGUAGE sql STABLE
SET search_path = {{search_path}}
AS $$
    SELECT c.id::text, c.doc_id::text, d.name::text, c.chunk_index, c.{{content}}::text,
           (c.{{embedding}} <=> p_query)::double precision
    FROM {{chunks}} c LEFT JOIN {{documents}} d ON d.id = c.doc_id
    WHERE c.{{embedding}} IS NOT NULL
    ORDER BY c.{{embedding}} <=> p_query
    LIMIT p_limit;
$$;
