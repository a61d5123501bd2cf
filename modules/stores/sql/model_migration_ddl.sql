-- The DDL of a model migration (modules/stores/model_migration.py runs these by name; templated as
-- queue.sql, with {{dimensions}} the new model's). Start and abort each run in one transaction;
-- the cut-over builds its indexes concurrently first, then swaps in one transaction.

-- name: start_columns --
-- The shadow columns: adding nullable columns without a default changes no row (instant).
ALTER TABLE {{chunks}}
    ADD COLUMN {{embedding_next}} {{vector}}({{dimensions}}),
    ADD COLUMN embedding_model_next text,
    ADD COLUMN content_hash_next text,
    ADD COLUMN embedded_at_next timestamptz,
    ADD COLUMN embedded_by_next text;

-- name: start_queue --
-- The shadow queue: one row per chunk still to embed with the new model (leases, attempts, errors).
CREATE TABLE {{next_queue}} (
    seq               bigserial,
    chunk_id          text PRIMARY KEY,
    doc_id            text,
    lease_owner       text,
    lease_expires_at  timestamptz,
    attempts          integer NOT NULL DEFAULT 0,
    error             text,
    failed_at         timestamptz
);

-- name: start_queue_index --
CREATE INDEX embq_next_queue_seq_idx ON {{next_queue}} (seq);

-- name: start_queue_security --
-- The queue's own table: RLS on, nothing for Supabase's public API roles, service_role may use it.
DO $security$
DECLARE
    role_name text;
BEGIN
    ALTER TABLE {{next_queue}} ENABLE ROW LEVEL SECURITY;
    FOREACH role_name IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
            EXECUTE format('REVOKE ALL ON TABLE %s FROM %I', '{{next_queue}}', role_name);
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON {{next_queue}} TO service_role;
        GRANT USAGE ON SEQUENCE {{schema}}.embq_next_queue_seq_seq TO service_role;
    END IF;
END
$security$;

-- name: start_trigger_function --
-- A chunk inserted while the migration fills joins the shadow queue; one whose text changes loses its
-- new-model vector and joins it again. SECURITY DEFINER: whoever inserts chunks (a host role that may
-- not touch the queue's tables) needs no rights on them; its search_path holds nothing writable.
CREATE OR REPLACE FUNCTION {{schema}}.embq_next_enqueue()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = {{search_path}}
AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NEW.{{content}} IS NOT DISTINCT FROM OLD.{{content}} THEN
            RETURN NEW;
        END IF;
        NEW.{{embedding_next}} := NULL;
        NEW.embedding_model_next := NULL;
        NEW.content_hash_next := NULL;
        NEW.embedded_at_next := NULL;
        NEW.embedded_by_next := NULL;
    END IF;
    INSERT INTO {{next_queue}} (chunk_id, doc_id) VALUES (NEW.id::text, NEW.doc_id::text)
    ON CONFLICT (chunk_id) DO UPDATE SET attempts = 0, error = NULL, failed_at = NULL;
    RETURN NEW;
END;
$$;

-- name: start_trigger_grants --
REVOKE EXECUTE ON FUNCTION {{schema}}.embq_next_enqueue() FROM PUBLIC;

-- name: start_trigger --
CREATE TRIGGER embq_next_enqueue BEFORE INSERT OR UPDATE OF {{content}} ON {{chunks}}
    FOR EACH ROW EXECUTE FUNCTION {{schema}}.embq_next_enqueue();

-- name: start_enqueue_all --
-- Every chunk there is now, in the order runs take them.
INSERT INTO {{next_queue}} (chunk_id, doc_id)
SELECT c.id::text, c.doc_id::text FROM {{chunks}} c ORDER BY c.doc_id, c.chunk_index
ON CONFLICT (chunk_id) DO NOTHING;

-- name: start_record --
INSERT INTO {{model_migrations}} (id, source_model, target_model, state)
VALUES (%(id)s, %(source)s, %(target)s, 'filling');

-- name: filling --
-- The filling migration, locked against a concurrent cut-over or abort.
SELECT id, source_model, target_model FROM {{model_migrations}} WHERE state = 'filling' FOR UPDATE;

-- name: drop_shadow --
-- Everything start made (the twin indexes go with their column).
DROP TRIGGER IF EXISTS embq_next_enqueue ON {{chunks}};
DROP FUNCTION IF EXISTS {{schema}}.embq_next_enqueue();
DROP TABLE IF EXISTS {{next_queue}};
ALTER TABLE {{chunks}}
    DROP COLUMN IF EXISTS {{embedding_next}},
    DROP COLUMN IF EXISTS embedding_model_next,
    DROP COLUMN IF EXISTS content_hash_next,
    DROP COLUMN IF EXISTS embedded_at_next,
    DROP COLUMN IF EXISTS embedded_by_next;

-- name: abort_jobs --
-- The migration's Batch API jobs that are not done (the caller cancels them at the API first).
UPDATE {{batch_jobs}} SET state = 'done', outcome = 'abandoned', finished_at = now(),
    error = 'the model migration was aborted', worker = NULL, lease_expires_at = NULL
WHERE target = 'next' AND state <> 'done';

-- name: record_abort --
UPDATE {{model_migrations}} SET state = 'aborted', ended_at = now() WHERE id = %(id)s;

-- name: jobs_in_flight --
SELECT count(*) AS jobs FROM {{batch_jobs}} WHERE target = 'next' AND state <> 'done';

-- name: stale_shadow --
-- Vectors of the new model whose text changed since (a host's own update, before the trigger): back
-- to the shadow queue.
WITH stale AS (
    UPDATE {{chunks}} c
    SET {{embedding_next}} = NULL, embedding_model_next = NULL, content_hash_next = NULL,
        embedded_at_next = NULL, embedded_by_next = NULL
    WHERE c.{{embedding_next}} IS NOT NULL
      AND c.content_hash_next IS DISTINCT FROM encode(sha256(convert_to(c.{{content}}, 'UTF8')), 'hex')
    RETURNING c.id, c.doc_id)
INSERT INTO {{next_queue}} (chunk_id, doc_id) SELECT s.id::text, s.doc_id::text FROM stale s
ON CONFLICT (chunk_id) DO NOTHING
RETURNING 1;

-- name: unfilled --
-- Chunks still without the new model's vector.
SELECT count(*) AS chunks FROM {{next_queue}} n JOIN {{chunks}} c ON c.id = n.chunk_id::{{id_type}};

-- name: column_dependents --
-- Objects other than indexes that use the columns the cut-over drops (views, triggers, constraints,
-- policies): they would keep the old column, so the cut-over refuses to run until they are moved.
SELECT DISTINCT pg_describe_object(d.classid, d.objid, d.objsubid) AS object
FROM pg_depend d
JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = '{{chunks_regclass}}'::regclass
  AND a.attname IN ('{{embedding_name}}', 'embedding_model', 'content_hash', 'embedded_at', 'embedded_by')
  AND NOT (d.classid = 'pg_class'::regclass
           AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indexrelid = d.objid))
  AND d.deptype IN ('n', 'a')
ORDER BY 1;

-- name: column_indexes --
-- Indexes that use the vector column (as a key, in an expression or a predicate), with their
-- definitions and access methods: each gets a twin on the shadow column before the cut-over.
SELECT c.relname AS name, pg_get_indexdef(i.indexrelid) AS definition, am.amname AS method
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_am am ON am.oid = c.relam
WHERE i.indrelid = '{{chunks_regclass}}'::regclass
  AND EXISTS (SELECT 1 FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
              WHERE d.classid = 'pg_class'::regclass AND d.objid = i.indexrelid
                AND d.refobjid = i.indrelid AND a.attname = '{{embedding_name}}')
ORDER BY 1;

-- name: index_state --
-- Whether an index exists and is valid (a concurrent build that failed leaves an invalid one).
SELECT i.indisvalid AS valid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE c.relname = %(name)s AND c.relnamespace = '{{schema}}'::regnamespace;

-- name: agreement --
-- How many sampled chunks keep their nearest neighbour among the new model's five nearest.
SELECT queries, kept FROM {{schema}}.embq_migration_agreement(%(sample)s);

-- name: swap_lock --
-- The cut-over's one transaction begins: no search or write of either model runs while it swaps.
SELECT pg_advisory_xact_lock({{cutover_lock}});

-- name: swap_columns --
DROP TRIGGER IF EXISTS embq_next_enqueue ON {{chunks}};
DROP FUNCTION IF EXISTS {{schema}}.embq_next_enqueue();
ALTER TABLE {{chunks}}
    DROP COLUMN {{embedding}},
    DROP COLUMN embedding_model,
    DROP COLUMN content_hash,
    DROP COLUMN embedded_at,
    DROP COLUMN embedded_by;
ALTER TABLE {{chunks}} RENAME COLUMN {{embedding_next}} TO {{embedding}};
ALTER TABLE {{chunks}} RENAME COLUMN embedding_model_next TO embedding_model;
ALTER TABLE {{chunks}} RENAME COLUMN content_hash_next TO content_hash;
ALTER TABLE {{chunks}} RENAME COLUMN embedded_at_next TO embedded_at;
ALTER TABLE {{chunks}} RENAME COLUMN embedded_by_next TO embedded_by;

-- name: swap_queue_state --
-- The live queue's leases and failures were the old model's: chunks with a new vector are done, and
-- no run of the old model holds anything (its writes are refused from now on anyway).
UPDATE {{chunks}} c
SET embedding_lease_owner = NULL, embedding_lease_expires_at = NULL,
    embedding_attempts = CASE WHEN c.{{embedding}} IS NULL THEN c.embedding_attempts ELSE 0 END,
    embedding_error = CASE WHEN c.{{embedding}} IS NULL THEN c.embedding_error END,
    embedding_failed_at = CASE WHEN c.{{embedding}} IS NULL THEN c.embedding_failed_at END
WHERE c.embedding_lease_owner IS NOT NULL OR (c.{{embedding}} IS NOT NULL AND c.embedding_failed_at IS NOT NULL);

-- name: swap_record --
UPDATE {{model_migrations}}
SET state = 'cut_over', cut_over_at = now(), ended_at = now(), agreement = %(agreement)s,
    agreement_sample = %(sample)s
WHERE id = %(id)s;

-- name: swap_drop_queue --
DROP TABLE IF EXISTS {{next_queue}};
