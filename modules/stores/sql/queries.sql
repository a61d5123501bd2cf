-- Named statements, run by name from Python (modules/stores/sql_templates.py). Each is a call to a
-- queue function defined in queue.sql, except two plain reads (server_time, text_to_embed); values
-- are always bound parameters.

-- name: column_info --
-- Describe the vector column and the id types.
SELECT dimensions, id_type, doc_id_type FROM {{schema}}.embq_column_info();

-- name: claim --
-- Lease chunks to a worker (dead workers' leases count as expired; mode 'due': the watcher's).
SELECT id, doc_id, chunk_index, content, title, attempts
FROM {{schema}}.embq_claim_v3(%(worker)s, %(limit)s, %(lease_seconds)s, %(mode)s, %(doc_id)s, %(failed_before)s,
                              %(dead_owners)s, %(max_attempts)s, %(cooldown_base)s, %(cooldown_max)s);

-- name: complete --
-- Store a batch of vectors and mark the chunks done (only those the worker still holds).
SELECT written, changed
FROM {{schema}}.embq_complete_v3(%(worker)s, %(model)s, %(ids)s, %(vectors)b, %(hashes)s, %(cache_keys)s);

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
-- Exact counts, for all chunks or one document, with vectors of another model, cooling down and quarantined.
SELECT total, embedded, pending, failed, in_progress, stale_leases, other_model, cooling_down, retry_due,
       quarantined, oldest_pending_age_seconds, next_retry_at
FROM {{schema}}.embq_status_v3(%(doc_id)s, %(model)s, %(dead_owners)s, %(max_attempts)s, %(cooldown_base)s,
                               %(cooldown_max)s);

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
SELECT doc_id, name, missing, expired_leases, wrong_model, wrong_dimension, degenerate, stale, failed, to_reset
FROM {{schema}}.embq_repair_report_v2(%(model)s, %(dimensions)s, %(doc_id)s, %(dead_owners)s);

-- name: repair_apply --
-- Clear dead leases and reset wrong vectors to pending, in one transaction.
SELECT released_leases, wrong_model, wrong_dimension, degenerate, stale, reset
FROM {{schema}}.embq_repair_apply_v3(%(model)s, %(dimensions)s, %(doc_id)s, %(limit)s, %(dead_owners)s);

-- name: ingest_document --
-- Save a document and its chunks in one transaction.
SELECT {{schema}}.embq_ingest_document(%(name)s, %(type)s, %(chunks)s, %(doc_id)s) AS doc_id;

-- name: list_documents --
-- Documents with their chunk counts.
SELECT doc_id, name, type, chunks, embedded, failed FROM {{schema}}.embq_list_documents(%(limit)s);

-- name: delete_document --
-- Delete a document and its chunks.
SELECT {{schema}}.embq_delete_document(%(doc_id)s) AS removed;

-- name: save_document --
-- Save an upload by name: unchanged, replaced in place, or created.
SELECT doc_id, outcome, kept, added, removed
FROM {{schema}}.embq_ingest_document_v2(%(name)s, %(type)s, %(chunks)s, %(mode)s);

-- name: search --
-- Nearest chunks to a query vector, each text once.
SELECT chunk_id, doc_id, name, chunk_index, content, distance, model
FROM {{schema}}.embq_search_v3(%(query)b, %(limit)s, %(model)s);

-- name: table_access --
-- Whether Supabase's API roles can read the host tables.
SELECT table_name, role_name, can_select, row_security, policies FROM {{schema}}.embq_table_access();

-- ==== operations (schema version 6): each statement is named after its function, less "embq_", and takes the
-- function's own argument names, so that both stores pass the same parameters (modules/stores/operations.py).

-- name: watch_probe --
-- Is a chunk waiting to be claimed, and when is the next cooled-down retry due.
SELECT has_pending, next_retry_at, server_now
FROM {{schema}}.embq_watch_probe(%(p_dead_owners)s, %(p_max_attempts)s, %(p_cooldown_base)s, %(p_cooldown_max)s);

-- name: run_record --
-- One row of run history.
SELECT {{schema}}.embq_run_record(%(p_kind)s, %(p_worker)s, %(p_scope)s, %(p_doc_id)s, %(p_run_limit)s,
    %(p_seconds)s, %(p_runs)s, %(p_embedded)s, %(p_failed)s, %(p_cache_hits)s, %(p_api_calls)s, %(p_rate_limited)s,
    %(p_tokens)s, %(p_cost_usd)s, %(p_outcome)s, %(p_exit_code)s, %(p_model)s) AS id;

-- name: runs_recent --
-- The last rows of the run history.
SELECT id, kind, worker, scope, doc_id, run_limit, started_at, ended_at, runs, embedded, failed, cache_hits,
       api_calls, rate_limited, tokens, cost_usd, outcome, exit_code, model
FROM {{schema}}.embq_runs_recent(%(p_limit)s);

-- name: runs_series --
-- The run history in time buckets.
SELECT bucket, embedded, failed, api_calls, rate_limited, tokens
FROM {{schema}}.embq_runs_series(%(p_since)s, %(p_bucket_seconds)s);

-- name: runs_totals --
-- Sums of the run history since a time.
SELECT runs, embedded, failed, api_calls, rate_limited, tokens, cost_usd, cost_rows
FROM {{schema}}.embq_runs_totals(%(p_since)s);

-- name: worker_report --
-- A watcher's heartbeat.
SELECT {{schema}}.embq_worker_report(%(p_worker)s, %(p_kind)s, %(p_host)s, %(p_wake)s, %(p_metrics)s,
    %(p_outcome)s) AS now;

-- name: worker_stop --
-- Watchers stopped (or found dead).
SELECT {{schema}}.embq_worker_stop(%(p_workers)s, %(p_exit_code)s, %(p_outcome)s) AS stopped;

-- name: workers_list --
-- Watchers running and recently stopped.
SELECT worker, kind, host, wake, metrics, started_at, heartbeat_at, stopped_at, exit_code, last_run_at,
       last_outcome, silent_seconds
FROM {{schema}}.embq_workers_list(%(p_recent_seconds)s);

-- name: health --
-- What the alert rules read.
SELECT sample_runs, sample_embedded, sample_failed, last_outcome, last_outcome_at, last_outcome_worker,
       oldest_pending_age_seconds, silent_watchers, active_watchers, server_now
FROM {{schema}}.embq_health(%(p_window_minutes)s, %(p_last_runs)s, %(p_silence_seconds)s);

-- name: alert_raise --
-- Open (or keep open) an incident.
SELECT id, opened FROM {{schema}}.embq_alert_raise(%(p_key)s, %(p_kind)s, %(p_summary)s, %(p_details)s);

-- name: alert_settle --
-- Clear and resolve the incidents whose condition no longer holds.
SELECT {{schema}}.embq_alert_settle(%(p_firing)s, %(p_cooldown_seconds)s) AS resolved;

-- name: alert_claim --
-- Take the notifications to send.
SELECT id, alert_key, kind, summary, details, opened_at, resolved_at, state
FROM {{schema}}.embq_alert_claim(%(p_retry_seconds)s);

-- name: alert_delivered --
-- A notification was delivered.
SELECT {{schema}}.embq_alert_delivered(%(p_id)s, %(p_state)s) AS delivered;

-- name: alerts_list --
-- Open incidents, then the latest resolved.
SELECT id, alert_key, kind, summary, details, opened_at, resolved_at, fired_sent_at, resolved_sent_at
FROM {{schema}}.embq_alerts_list(%(p_limit)s);

-- name: prune --
-- Forget old history, incidents and watchers.
SELECT {{schema}}.embq_prune(%(p_days)s) AS deleted;

-- name: batch_claim --
-- Create a Batch API job and lease chunks to it, in one transaction.
SELECT id, doc_id, chunk_index, content, title, attempts
FROM {{schema}}.embq_batch_claim(%(job_id)s, %(model)s, %(worker)s, %(limit)s, %(mode)s, %(doc_id)s,
                                 %(failed_before)s, %(dead_owners)s);

-- name: batch_prepared --
-- Record which chunks a job carries, in the order sent.
SELECT {{schema}}.embq_batch_prepared(%(job_id)s, %(chunk_ids)s, %(hashes)s, %(cache_keys)s, %(tokens)s) AS done;

-- name: batch_submitted --
-- The API accepted the job (false: the job was closed meanwhile).
SELECT {{schema}}.embq_batch_submitted(%(job_id)s, %(name)s, %(remote_state)s) AS done;

-- name: batch_take --
-- Lease the unfinished jobs no live run is tracking.
SELECT id, name, model, target, state, remote_state, chunk_ids, content_hashes, cache_keys, tokens, created_at,
       submitted_at
FROM {{schema}}.embq_batch_take(%(worker)s, %(lease_seconds)s, %(limit)s, %(dead_owners)s);

-- name: batch_seen --
-- What the API last said of a job; its lease is given back.
SELECT {{schema}}.embq_batch_seen(%(job_id)s, %(worker)s, %(remote_state)s) AS done;

-- name: batch_finish --
-- End a job; its unwritten chunks go back to pending.
SELECT {{schema}}.embq_batch_finish(%(job_id)s, %(outcome)s, %(embedded)s, %(failed)s, %(error)s) AS released;

-- name: batch_jobs --
-- Jobs not done, then the last ones done.
SELECT id, name, model, target, state, remote_state, outcome, chunks, tokens, embedded, failed, released,
       created_at, submitted_at, finished_at, error
FROM {{schema}}.embq_batch_jobs(%(recent)s);

-- name: batch_workers --
-- Who is tracking a job right now.
SELECT worker FROM {{schema}}.embq_batch_workers() AS worker;

-- name: live_model --
-- The model the vector column holds, as the last cut-over recorded (NULL: as EMBEDDING_MODEL says).
SELECT {{schema}}.embq_live_model() AS model;

-- name: migration_current --
-- The model migration that fills, or the last one.
SELECT id, source_model, target_model, state, started_at, seeded_at, cut_over_at, ended_at, agreement,
       agreement_sample, note
FROM {{schema}}.embq_migration_current();

-- name: migration_remaining_chars --
-- Characters left to embed with the migration's model.
SELECT {{schema}}.embq_next_remaining_chars() AS chars;

-- The shadow queue of a model migration: the same statements as claim, complete, fail, renew_leases,
-- lease_owners, release, status and batch_claim, with the same parameters and rows (PostgresStore's
-- shadow view runs these under those names).

-- name: next_claim --
SELECT id, doc_id, chunk_index, content, title, attempts
FROM {{schema}}.embq_next_claim(%(worker)s, %(limit)s, %(lease_seconds)s, %(mode)s, %(doc_id)s, %(failed_before)s,
                                %(dead_owners)s, %(model)s);

-- name: next_complete --
SELECT written, changed
FROM {{schema}}.embq_next_complete(%(worker)s, %(model)s, %(ids)s, %(vectors)b, %(hashes)s, %(cache_keys)s);

-- name: next_fail --
SELECT {{schema}}.embq_next_fail(%(worker)s, %(ids)s, %(errors)s) AS recorded;

-- name: next_renew_leases --
SELECT id FROM {{schema}}.embq_next_renew_leases(%(worker)s, %(ids)s, %(lease_seconds)s) AS id;

-- name: next_lease_owners --
SELECT owner, chunks, expires_at FROM {{schema}}.embq_next_lease_owners();

-- name: next_release --
SELECT {{schema}}.embq_next_release(%(worker)s, %(ids)s) AS released;

-- name: next_status --
-- (The shadow queue has no cooldowns: a migration's failures are retried by --migrate-to --retry-only.)
SELECT total, embedded, pending, failed, in_progress, stale_leases, other_model, 0 AS cooling_down, 0 AS retry_due,
       0 AS quarantined, NULL::double precision AS oldest_pending_age_seconds, NULL::timestamptz AS next_retry_at
FROM {{schema}}.embq_next_status(%(doc_id)s, %(model)s, %(dead_owners)s);

-- name: next_batch_claim --
SELECT id, doc_id, chunk_index, content, title, attempts
FROM {{schema}}.embq_next_batch_claim(%(job_id)s, %(model)s, %(worker)s, %(limit)s, %(mode)s, %(doc_id)s,
                                      %(failed_before)s, %(dead_owners)s);
