-- Named statements, run by name from Python (modules/stores/sql_templates.py). Each is a call to a
-- queue function defined in queue.sql; values are always bound parameters.

-- name: column_info --
-- Describe the vector column and the id types.
SELECT dimensions, id_type, doc_id_type FROM {{schema}}.embq_column_info();

-- name: claim --
-- Lease chunks to a worker.
SELECT id, doc_id, chunk_index, content, title, attempts
FROM {{schema}}.embq_claim(%(worker)s, %(limit)s, %(lease_seconds)s, %(mode)s, %(doc_id)s, %(failed_before)s);

-- name: complete --
-- Store a batch of vectors and mark the chunks done.
SELECT {{schema}}.embq_complete(%(worker)s, %(model)s, %(ids)s, %(vectors)b, %(hashes)s, %(cache_keys)s);

-- name: cache_lookup --
-- Cached vectors for these keys.
SELECT cache_key, embedding FROM {{schema}}.embq_cache_lookup(%(keys)s);

-- name: cache_stats --
-- How big the cache is and how often it saved an embedding.
SELECT entries, hits FROM {{schema}}.embq_cache_stats();

-- name: fail --
-- Record chunks' own failures.
SELECT {{schema}}.embq_fail(%(worker)s, %(ids)s, %(errors)s);

-- name: release --
-- Give chunks back untouched.
SELECT {{schema}}.embq_release(%(worker)s, %(ids)s);

-- name: status --
-- Exact counts, for all chunks or one document.
SELECT total, embedded, pending, failed, in_progress, stale_leases FROM {{schema}}.embq_status(%(doc_id)s);

-- name: status_by_document --
-- Counts per document, most pending first.
SELECT doc_id, name, total, embedded, pending, failed, in_progress FROM {{schema}}.embq_status_by_document(%(limit)s);

-- name: recent_errors --
-- Failure reasons, grouped.
SELECT error, chunks, last_seen FROM {{schema}}.embq_recent_errors(%(limit)s);

-- name: document_exists --
-- Whether a document id is known.
SELECT {{schema}}.embq_document_exists(%(doc_id)s);

-- name: document_name --
-- A document's name.
SELECT {{schema}}.embq_document_name(%(doc_id)s);

-- name: server_time --
-- The database's clock, which leases and failure times are measured by.
SELECT now();

-- name: repair_report --
-- Per document: missing vectors, expired leases, vectors of the wrong model or dimension, failures.
SELECT doc_id, name, missing, expired_leases, wrong_model, wrong_dimension, failed, to_reset
FROM {{schema}}.embq_repair_report(%(model)s, %(dimensions)s, %(doc_id)s);

-- name: repair_apply --
-- Clear expired leases and reset wrong vectors to pending, in one transaction.
SELECT released_leases, wrong_model, wrong_dimension, reset
FROM {{schema}}.embq_repair_apply(%(model)s, %(dimensions)s, %(doc_id)s, %(limit)s);

-- name: ingest_document --
-- Save a document and its chunks in one transaction.
SELECT {{schema}}.embq_ingest_document(%(name)s, %(type)s, %(chunks)s, %(doc_id)s);

-- name: list_documents --
-- Documents with their chunk counts.
SELECT doc_id, name, type, chunks, embedded, failed FROM {{schema}}.embq_list_documents(%(limit)s);

-- name: delete_document --
-- Delete a document and its chunks.
SELECT {{schema}}.embq_delete_document(%(doc_id)s);

-- name: save_document --
-- Save an upload by name: unchanged, replaced in place, or created.
SELECT doc_id, outcome, kept, added, removed
FROM {{schema}}.embq_ingest_document_v2(%(name)s, %(type)s, %(chunks)s, %(mode)s);

-- name: search --
-- Nearest chunks to a query vector, each text once.
SELECT chunk_id, doc_id, name, chunk_index, content, distance FROM {{schema}}.embq_search_v2(%(query)b, %(limit)s);

-- name: table_access --
-- Whether Supabase's API roles can read the host tables.
SELECT table_name, role_name, can_select, row_security, policies FROM {{schema}}.embq_table_access();
