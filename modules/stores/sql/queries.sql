-- Named statements, run by name from Python (modules/stores/sql_templates.py). Each is a call to a
-- queue function defined in queue.sql, except two plain reads (server_time, text_to_embed); values
-- are always bound parameters.

-- name: column_info --
-- Describe the vector column and the id types.
SELECT dimensions, id_type, doc_id_type FROM {{schema}}.embq_column_info();

-- name: claim --
-- Lease chunks to a worker (dead workers' leases count as expired).
SELECT id, doc_id, chunk_index, content, title, attempts
FROM {{schema}}.embq_claim_v2(%(worker)s, %(limit)s, %(lease_seconds)s, %(mode)s, %(doc_id)s, %(failed_before)s,
                              %(dead_owners)s);

-- name: complete --
-- Store a batch of vectors and mark the chunks done (only those the worker still holds).
SELECT written, changed
FROM {{schema}}.embq_complete_v2(%(worker)s, %(model)s, %(ids)s, %(vectors)b, %(hashes)s, %(cache_keys)s);

-- name: cache_lookup --
-- Cached vectors for these keys.
SELECT cache_key, embedding FROM {{schema}}.embq_cache_lookup(%(keys)s);

-- name: cache_stats --
-- How big the cache is and how often it saved an embedding.
SELECT entries, hits FROM {{schema}}.embq_cache_stats();

-- name: fail --
-- Record chunks' own failures (only those the worker still holds).
SELECT {{schema}}.embq_fail_v2(%(worker)s, %(ids)s, %(errors)s) AS recorded;

-- name: renew_leases --
-- The heartbeat: extend the leases the worker still holds.
SELECT id FROM {{schema}}.embq_renew_leases(%(worker)s, %(ids)s, %(lease_seconds)s) AS id;

-- name: lease_owners --
-- Who holds leases now.
SELECT owner, chunks, expires_at FROM {{schema}}.embq_lease_owners();

-- name: queue_columns --
-- The queue's own columns and their types.
SELECT name, type FROM {{schema}}.embq_queue_columns();

-- name: release --
-- Give chunks back untouched.
SELECT {{schema}}.embq_release(%(worker)s, %(ids)s) AS released;

-- name: status --
-- Exact counts, for all chunks or one document, with vectors of another model.
SELECT total, embedded, pending, failed, in_progress, stale_leases, other_model
FROM {{schema}}.embq_status_v2(%(doc_id)s, %(model)s, %(dead_owners)s);

-- name: text_to_embed --
-- The chunks without a vector (all, or one document's) and their tokens by the local estimate of
-- modules/text.py (estimate_tokens): a token per non-ASCII character, and per run of ASCII characters
-- one per four, rounded up. A plain read of the table (no queue function): it reads every such text.
SELECT count(*) AS chunks,
       coalesce(sum(char_length(c.{{content}}) - a.ascii_chars + a.ascii_tokens), 0) AS tokens
FROM {{chunks}} c
CROSS JOIN LATERAL (
    SELECT coalesce(sum(char_length(m[1])), 0) AS ascii_chars,
           coalesce(sum((char_length(m[1]) + 3) / 4), 0) AS ascii_tokens
    FROM regexp_matches(c.{{content}}, '([\x01-\x7f]+)', 'g') AS m
) a
WHERE c.{{embedding}} IS NULL AND (%(doc_id)s::text IS NULL OR c.doc_id::text = %(doc_id)s::text);

-- name: status_by_document --
-- Counts per document, most pending first.
SELECT doc_id, name, total, embedded, pending, failed, in_progress FROM {{schema}}.embq_status_by_document(%(limit)s);

-- name: recent_errors --
-- Failure reasons, grouped.
SELECT error, chunks, last_seen FROM {{schema}}.embq_recent_errors(%(limit)s);

-- name: document_exists --
-- Whether a document id is known.
SELECT {{schema}}.embq_document_exists(%(doc_id)s) AS found;

-- name: document_name --
-- A document's name.
SELECT {{schema}}.embq_document_name(%(doc_id)s) AS name;

-- name: server_time --
-- The database's clock, which leases and failure times are measured by.
SELECT now() AS now;

-- name: repair_report --
-- Per document: missing vectors, dead leases, vectors of the wrong model, dimension or norm, failures.
SELECT doc_id, name, missing, expired_leases, wrong_model, wrong_dimension, degenerate, failed, to_reset
FROM {{schema}}.embq_repair_report_v2(%(model)s, %(dimensions)s, %(doc_id)s, %(dead_owners)s);

-- name: repair_apply --
-- Clear dead leases and reset wrong vectors to pending, in one transaction.
SELECT released_leases, wrong_model, wrong_dimension, degenerate, reset
FROM {{schema}}.embq_repair_apply_v2(%(model)s, %(dimensions)s, %(doc_id)s, %(limit)s, %(dead_owners)s);

-- name: ingest_document --
-- Save a document and its chunks in one transaction.
SELECT {{schema}}.embq_ingest_document(%(name)s, %(type)s, %(chunks)s, %(doc_id)s) AS doc_id;

-- name: list_documents --
-- Documents with their chunk counts.
SELECT doc_id, name, type, chunks, embedded, failed FROM {{schema}}.embq_list_documents(%(limit)s);

-- name: delete_document --
-- Delete a document and its chunks.
SELECT {{schema}}.embq_delete_document(%(doc_id)s) AS removed;

-- name: search --
-- Nearest chunks to a query vector.
SELECT chunk_id, doc_id, name, chunk_index, content, distance FROM {{schema}}.embq_search(%(query)b, %(limit)s);
