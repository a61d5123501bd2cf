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
CREATE INDEX embq_next_queue_doc_idx ON {{next_queue}} (doc_id);

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
-- Chunks inserted while the migration fills join the shadow queue; one whose text changes loses its
-- new-model vector (BEFORE UPDATE) and joins the queue again; a deleted one leaves it. The queue is
-- written AFTER the row, when the host's own BEFORE triggers (an id assigned by a trigger) have run.
-- SECURITY DEFINER: whoever writes chunks (a host role that may not touch the queue's tables) needs
-- no rights on them; their search_path holds nothing writable.
CREATE OR REPLACE FUNCTION {{schema}}.embq_next_forget()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = {{search_path}}
AS $$
BEGIN
    IF NEW.{{content}} IS DISTINCT FROM OLD.{{content}} THEN
        NEW.{{embedding_next}} := NULL;
        NEW.embedding_model_next := NULL;
        NEW.content_hash_next := NULL;
        NEW.embedded_at_next := NULL;
        NEW.embedded_by_next := NULL;
    END IF;
    RETURN NEW;
END;
$$;
CREATE OR REPLACE FUNCTION {{schema}}.embq_next_enqueue()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = {{search_path}}
AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM {{next_queue}} n WHERE n.chunk_id = OLD.id::text;
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.{{content}} IS NOT DISTINCT FROM OLD.{{content}} THEN
        RETURN NULL;
    END IF;
    INSERT INTO {{next_queue}} (chunk_id, doc_id) VALUES (NEW.id::text, NEW.doc_id::text)
    ON CONFLICT (chunk_id) DO UPDATE SET attempts = 0, error = NULL, failed_at = NULL;
    RETURN NULL;
END;
$$;

-- name: start_trigger_grants --
REVOKE EXECUTE ON FUNCTION {{schema}}.embq_next_forget() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION {{schema}}.embq_next_enqueue() FROM PUBLIC;

-- name: start_trigger --
CREATE TRIGGER embq_next_forget BEFORE UPDATE OF {{content}} ON {{chunks}}
    FOR EACH ROW EXECUTE FUNCTION {{schema}}.embq_next_forget();
CREATE TRIGGER embq_next_enqueue AFTER INSERT OR UPDATE OF {{content}} OR DELETE ON {{chunks}}
    FOR EACH ROW EXECUTE FUNCTION {{schema}}.embq_next_enqueue();

-- name: seed_batch --
-- The next chunks there were at the start (by id, after %(after)s), not yet embedded with the new
-- model, into the shadow queue: one short transaction per batch, so readers and writers never wait.
WITH batch AS (
    SELECT c.id, c.doc_id FROM {{chunks}} c
    WHERE %(after)s::text IS NULL OR c.id > %(after)s::{{id_type}}
    ORDER BY c.id LIMIT %(size)s),
queued AS (
    INSERT INTO {{next_queue}} (chunk_id, doc_id)
    SELECT b.id::text, b.doc_id::text FROM batch b JOIN {{chunks}} c ON c.id = b.id
    WHERE c.{{embedding_next}} IS NULL
    ON CONFLICT (chunk_id) DO NOTHING)
SELECT (SELECT l.id::text FROM batch l ORDER BY l.id DESC LIMIT 1) AS last, count(*) AS seen FROM batch b;

-- name: seeded --
UPDATE {{model_migrations}} SET seeded_at = now() WHERE id = %(id)s AND state = 'filling';

-- name: start_record --
INSERT INTO {{model_migrations}} (id, source_model, target_model, state)
VALUES (%(id)s, %(source)s, %(target)s, 'filling');

-- name: filling --
-- The filling migration, locked against a concurrent cut-over or abort.
SELECT id, source_model, target_model, seeded_at FROM {{model_migrations}} WHERE state = 'filling' FOR UPDATE;

-- name: drop_shadow --
-- Everything start made (the twin indexes go with their column).
DROP TRIGGER IF EXISTS embq_next_forget ON {{chunks}};
DROP TRIGGER IF EXISTS embq_next_enqueue ON {{chunks}};
DROP FUNCTION IF EXISTS {{schema}}.embq_next_forget();
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
-- Batch API jobs not done, of either model: their results must be written (or refused) before the swap.
SELECT count(*) AS jobs FROM {{batch_jobs}} WHERE state <> 'done';

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
-- Chunks still without the new model's vector: to embed (pending or leased) and failed.
SELECT count(*) FILTER (WHERE n.failed_at IS NULL) AS pending, count(*) FILTER (WHERE n.failed_at IS NOT NULL) AS failed,
       (SELECT e.error FROM {{next_queue}} e WHERE e.error IS NOT NULL
        GROUP BY e.error ORDER BY count(*) DESC LIMIT 1) AS common_error
FROM {{next_queue}} n JOIN {{chunks}} c ON c.id = n.chunk_id::{{id_type}};

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
  -- our own wake-up trigger: the swap makes it again on the new columns
  AND NOT (d.classid = 'pg_trigger'::regclass
           AND EXISTS (SELECT 1 FROM pg_trigger t WHERE t.oid = d.objid AND t.tgname = 'embq_pending_notify'))
ORDER BY 1;

-- name: column_indexes --
-- Indexes that use one of the columns the swap replaces (as a key, in an expression or a predicate),
-- with their definitions, access methods and whether they use the vector column: each gets a twin on
-- the shadow columns before the cut-over.
SELECT c.relname AS name, pg_get_indexdef(i.indexrelid) AS definition, am.amname AS method,
       EXISTS (SELECT 1 FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
               WHERE d.classid = 'pg_class'::regclass AND d.objid = i.indexrelid AND d.refobjid = i.indrelid
                 AND a.attname = '{{embedding_name}}') AS on_vector
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_am am ON am.oid = c.relam
WHERE i.indrelid = '{{chunks_regclass}}'::regclass
  AND EXISTS (SELECT 1 FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
              WHERE d.classid = 'pg_class'::regclass AND d.objid = i.indexrelid
                AND d.refobjid = i.indrelid
                AND a.attname IN ('{{embedding_name}}', 'embedding_model', 'content_hash', 'embedded_at', 'embedded_by'))
ORDER BY 1;

-- name: column_settings --
-- What the swap must carry over from each replaced column to its shadow: storage, statistics target,
-- options, comment, and column privileges (a chatbot role granted SELECT (embedding) keeps it).
SELECT a.attname AS name, a.attstorage AS storage, a.attstattarget::integer AS statistics,
       array_to_string(a.attoptions, ',') AS options, col_description(a.attrelid, a.attnum) AS comment,
       (SELECT array_agg(format('%s|%s|%s', x.privilege_type, CASE WHEN x.grantee = 0 THEN 'PUBLIC'
                                ELSE quote_ident(pg_get_userbyid(x.grantee)) END, x.is_grantable))
        FROM aclexplode(a.attacl) x) AS grants
FROM pg_attribute a
WHERE a.attrelid = '{{chunks_regclass}}'::regclass AND NOT a.attisdropped
  AND a.attname IN ('{{embedding_name}}', 'embedding_model', 'content_hash', 'embedded_at', 'embedded_by');

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

-- name: swap_failures --
-- Chunks the new model failed on (cut over with --force): failed in the live queue, with its reason.
UPDATE {{chunks}} c
SET embedding_attempts = n.attempts, embedding_error = n.error, embedding_failed_at = n.failed_at
FROM {{next_queue}} n
WHERE c.id = n.chunk_id::{{id_type}} AND n.failed_at IS NOT NULL;

-- name: swap_columns --
-- The watcher's wake-up trigger names the vector column: dropped with it and made again on the new one.
DROP TRIGGER IF EXISTS embq_pending_notify ON {{chunks}};
DROP TRIGGER IF EXISTS embq_next_forget ON {{chunks}};
DROP TRIGGER IF EXISTS embq_next_enqueue ON {{chunks}};
DROP FUNCTION IF EXISTS {{schema}}.embq_next_forget();
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
CREATE TRIGGER embq_pending_notify
    BEFORE INSERT OR UPDATE OF {{content}}, {{embedding}} ON {{chunks}}
    FOR EACH ROW WHEN (NEW.{{embedding}} IS NULL)
    EXECUTE FUNCTION {{schema}}.embq_on_pending();

-- name: swap_queue_state --
-- The live queue's leases, attempts and failures were the old model's: cleared. (No run of the old
-- model holds anything now; its writes are refused from the cut-over on anyway.)
UPDATE {{chunks}} c
SET embedding_lease_owner = NULL, embedding_lease_expires_at = NULL, embedding_attempts = 0,
    embedding_error = NULL, embedding_failed_at = NULL
WHERE c.embedding_lease_owner IS NOT NULL OR c.embedding_failed_at IS NOT NULL OR c.embedding_attempts <> 0;

-- name: swap_record --
UPDATE {{model_migrations}}
SET state = 'cut_over', cut_over_at = now(), ended_at = now(), agreement = %(agreement)s,
    agreement_sample = %(sample)s
WHERE id = %(id)s;

-- name: swap_drop_queue --
DROP TABLE IF EXISTS {{next_queue}};
