-- Operations (schema version 6): the watcher's wake-up and its retries of failed chunks after a cooldown,
-- the run history, the watchers' heartbeats and the alerts' state. Same templating rules as queue.sql; both
-- stores call exactly these functions. The tables are in schema.sql.
--
-- A failed chunk's cooldown: it may be retried by a watcher EMBEDDING_RETRY_COOLDOWN seconds after its first
-- failure, twice that after its second, and so on up to EMBEDDING_RETRY_COOLDOWN_MAX, until it has failed
-- EMBEDDING_MAX_ATTEMPTS times; then it is quarantined: only --retry-only takes it. In SQL:
--   retry_at = embedding_failed_at + least(max, base * 2 ^ (attempts - 1)) seconds

-- The trigger that wakes the watchers: a chunk inserted without a vector, or whose text changed while it has
-- none, or whose vector was cleared (a repair), becomes pending now: its queue time is set and a
-- notification goes out on the table's channel (delivered when the transaction commits, once per
-- transaction however many rows). The WHEN clause keeps every write of a vector from calling it.
CREATE OR REPLACE FUNCTION {{schema}}.embq_on_pending()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = {{search_path}}
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.embedding_queued_at := coalesce(NEW.embedding_queued_at, now());
    ELSIF NEW.{{content}} IS DISTINCT FROM OLD.{{content}} OR OLD.{{embedding}} IS NOT NULL THEN
        NEW.embedding_queued_at := now();
    END IF;
    PERFORM pg_notify('{{notify_channel}}', '');
    RETURN NEW;
END;
$$;

DROP TRIGGER IF EXISTS embq_pending_notify ON {{chunks}};
CREATE TRIGGER embq_pending_notify
    BEFORE INSERT OR UPDATE OF {{content}}, {{embedding}} ON {{chunks}}
    FOR EACH ROW WHEN (NEW.{{embedding}} IS NULL)
    EXECUTE FUNCTION {{schema}}.embq_on_pending();

-- Lease up to p_limit chunks to p_worker: as embq_claim_v2 for the modes 'pending' and 'failed', plus the
-- watcher's mode 'due': pending chunks first, then failed chunks whose cooldown has passed and that have
-- failed fewer than p_max_attempts times (the oldest failure first). 'due' covers every document.
CREATE OR REPLACE FUNCTION {{schema}}.embq_claim_v3(
    p_worker text, p_limit integer, p_lease_seconds integer,
    p_mode text DEFAULT 'pending', p_doc_id text DEFAULT NULL, p_failed_before timestamptz DEFAULT NULL,
    p_dead_owners text[] DEFAULT '{}', p_max_attempts integer DEFAULT 5,
    p_cooldown_base double precision DEFAULT 60, p_cooldown_max double precision DEFAULT 3600)
RETURNS TABLE (id text, doc_id text, chunk_index integer, content text, title text, attempts integer)
LANGUAGE plpgsql VOLATILE
SET search_path = {{search_path}}
AS $$
DECLARE
    picked {{id_type}}[];
    due {{id_type}}[];
    dead text[] := coalesce(p_dead_owners, '{}');
BEGIN
    IF p_mode IS DISTINCT FROM 'due' THEN
        RETURN QUERY SELECT * FROM {{schema}}.embq_claim_v2(
            p_worker, p_limit, p_lease_seconds, p_mode, p_doc_id, p_failed_before, p_dead_owners);
        RETURN;
    END IF;
    IF p_doc_id IS NOT NULL THEN
        RAISE EXCEPTION 'embq_claim_v3: mode due covers every document' USING ERRCODE = '22023';
    END IF;

    SELECT array_agg(q.id) INTO picked FROM (
        SELECT c.id FROM {{chunks}} c
        WHERE c.{{embedding}} IS NULL AND c.embedding_failed_at IS NULL
          AND (c.embedding_lease_expires_at IS NULL OR c.embedding_lease_expires_at < now()
               OR c.embedding_lease_owner = ANY (dead))
        ORDER BY c.doc_id, c.chunk_index LIMIT p_limit FOR UPDATE OF c SKIP LOCKED) q;
    picked := coalesce(picked, '{}');
    IF cardinality(picked) < p_limit THEN
        SELECT array_agg(q.id) INTO due FROM (
            SELECT c.id FROM {{chunks}} c
            WHERE c.{{embedding}} IS NULL AND c.embedding_failed_at IS NOT NULL
              AND c.embedding_attempts < p_max_attempts
              AND c.embedding_failed_at + make_interval(secs => least(p_cooldown_max,
                      p_cooldown_base * power(2::double precision, least(greatest(c.embedding_attempts, 1) - 1, 60))))
                  <= now()
              AND (c.embedding_lease_expires_at IS NULL OR c.embedding_lease_expires_at < now()
                   OR c.embedding_lease_owner = ANY (dead))
            ORDER BY c.embedding_failed_at, c.id LIMIT p_limit - cardinality(picked) FOR UPDATE OF c SKIP LOCKED) q;
        picked := picked || coalesce(due, '{}');
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

-- Exact counts, as embq_status_v2, and what a watcher will do with the failed chunks: cooling_down (failed
-- fewer than p_max_attempts times: retried by a watcher once their cooldown ends; retry_due of them now)
-- and quarantined (the rest: only --retry-only takes them); cooling_down + quarantined = failed. The oldest
-- chunk waiting for a vector (pending or in progress, not failed): when it was queued and its age in seconds
-- (NULL when there is none); and when the next cooled-down retry is due.
CREATE OR REPLACE FUNCTION {{schema}}.embq_status_v3(
    p_doc_id text DEFAULT NULL, p_model text DEFAULT NULL, p_dead_owners text[] DEFAULT '{}',
    p_max_attempts integer DEFAULT 5, p_cooldown_base double precision DEFAULT 60,
    p_cooldown_max double precision DEFAULT 3600)
RETURNS TABLE (total bigint, embedded bigint, pending bigint, failed bigint, in_progress bigint,
               stale_leases bigint, other_model bigint, cooling_down bigint, retry_due bigint, quarantined bigint,
               oldest_pending_at timestamptz, oldest_pending_age_seconds double precision,
               next_retry_at timestamptz)
LANGUAGE sql STABLE
SET search_path = {{search_path}}
AS $$
    WITH c AS (
        SELECT c.{{embedding}} IS NOT NULL AS has_vector,
               c.embedding_failed_at IS NOT NULL AS failed,
               c.embedding_lease_expires_at IS NOT NULL AND (c.embedding_lease_expires_at < now()
                   OR c.embedding_lease_owner = ANY (coalesce(p_dead_owners, '{}'))) AS stale,
               c.embedding_lease_expires_at >= now()
                   AND NOT c.embedding_lease_owner = ANY (coalesce(p_dead_owners, '{}')) AS live,
               c.embedding_model,
               c.embedding_attempts AS attempts,
               c.embedding_queued_at AS queued_at,
               c.embedding_failed_at + make_interval(secs => least(p_cooldown_max,
                   p_cooldown_base * power(2::double precision, least(greatest(c.embedding_attempts, 1) - 1, 60))))
                   AS retry_at
        FROM {{chunks}} c
        WHERE p_doc_id IS NULL OR c.doc_id = p_doc_id::{{doc_id_type}}),
    s AS (
        SELECT count(*) AS total,
               count(*) FILTER (WHERE has_vector) AS embedded,
               count(*) FILTER (WHERE NOT has_vector AND NOT failed AND live IS NOT TRUE) AS pending,
               count(*) FILTER (WHERE NOT has_vector AND failed AND live IS NOT TRUE) AS failed,
               count(*) FILTER (WHERE NOT has_vector AND live IS TRUE) AS in_progress,
               count(*) FILTER (WHERE NOT has_vector AND stale) AS stale_leases,
               count(*) FILTER (WHERE has_vector AND p_model IS NOT NULL
                                  AND embedding_model IS DISTINCT FROM p_model) AS other_model,
               count(*) FILTER (WHERE NOT has_vector AND failed AND live IS NOT TRUE
                                  AND attempts < p_max_attempts) AS cooling_down,
               count(*) FILTER (WHERE NOT has_vector AND failed AND live IS NOT TRUE
                                  AND attempts < p_max_attempts AND retry_at <= now()) AS retry_due,
               count(*) FILTER (WHERE NOT has_vector AND failed AND live IS NOT TRUE
                                  AND attempts >= p_max_attempts) AS quarantined,
               min(queued_at) FILTER (WHERE NOT has_vector AND NOT failed) AS oldest,
               min(retry_at) FILTER (WHERE NOT has_vector AND failed AND live IS NOT TRUE
                                       AND attempts < p_max_attempts) AS next_retry
        FROM c)
    SELECT s.total, s.embedded, s.pending, s.failed, s.in_progress, s.stale_leases, s.other_model,
           s.cooling_down, s.retry_due, s.quarantined, s.oldest,
           extract(epoch FROM now() - s.oldest)::double precision, s.next_retry
    FROM s;
$$;

-- What an idle watcher asks at each sweep, cheaply (the partial indexes): is a chunk waiting to be claimed,
-- and when is the next cooled-down retry due; and the database's clock.
CREATE OR REPLACE FUNCTION {{schema}}.embq_watch_probe(
    p_dead_owners text[] DEFAULT '{}', p_max_attempts integer DEFAULT 5,
    p_cooldown_base double precision DEFAULT 60, p_cooldown_max double precision DEFAULT 3600)
RETURNS TABLE (has_pending boolean, next_retry_at timestamptz, server_now timestamptz)
LANGUAGE sql STABLE
SET search_path = {{search_path}}
AS $$
    SELECT EXISTS (
               SELECT 1 FROM {{chunks}} c
               WHERE c.{{embedding}} IS NULL AND c.embedding_failed_at IS NULL
                 AND (c.embedding_lease_expires_at IS NULL OR c.embedding_lease_expires_at < now()
                      OR c.embedding_lease_owner = ANY (coalesce(p_dead_owners, '{}')))),
           (SELECT min(c.embedding_failed_at + make_interval(secs => least(p_cooldown_max,
                       p_cooldown_base * power(2::double precision, least(greatest(c.embedding_attempts, 1) - 1, 60)))))
            FROM {{chunks}} c
            WHERE c.{{embedding}} IS NULL AND c.embedding_failed_at IS NOT NULL
              AND c.embedding_attempts < p_max_attempts
              AND (c.embedding_lease_expires_at IS NULL OR c.embedding_lease_expires_at < now()
                   OR c.embedding_lease_owner = ANY (coalesce(p_dead_owners, '{}')))),
           now();
$$;

-- ---- run history ----------------------------------------------------------------------------------------

-- Record one run (kind 'run') or one watcher's period (kind 'watch'), which ends now and lasted p_seconds
-- (measured by the client's monotonic clock, so no two clocks are compared). Returns its id.
CREATE OR REPLACE FUNCTION {{schema}}.embq_run_record(
    p_kind text, p_worker text, p_scope text, p_doc_id text, p_run_limit integer, p_seconds double precision,
    p_runs integer, p_embedded integer, p_failed integer, p_cache_hits integer, p_api_calls integer,
    p_rate_limited integer, p_tokens bigint, p_cost_usd double precision, p_outcome text, p_exit_code integer,
    p_model text)
RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path = {{search_path}}
AS $$
    INSERT INTO {{runs_table}} (kind, worker, scope, doc_id, run_limit, started_at, ended_at, runs, embedded, failed,
                                cache_hits, api_calls, rate_limited, tokens, cost_usd, outcome, exit_code, model)
    VALUES (p_kind, p_worker, p_scope, p_doc_id, p_run_limit,
            now() - make_interval(secs => greatest(coalesce(p_seconds, 0), 0)), now(), p_runs, p_embedded, p_failed,
            p_cache_hits, p_api_calls, p_rate_limited, p_tokens, p_cost_usd, p_outcome, p_exit_code, p_model)
    RETURNING id;
$$;

-- The last p_limit rows of the history, newest first.
CREATE OR REPLACE FUNCTION {{schema}}.embq_runs_recent(p_limit integer DEFAULT 20)
RETURNS TABLE (id bigint, kind text, worker text, scope text, doc_id text, run_limit integer,
               started_at timestamptz, ended_at timestamptz, runs integer, embedded integer, failed integer,
               cache_hits integer, api_calls integer, rate_limited integer, tokens bigint,
               cost_usd double precision, outcome text, exit_code integer, model text)
LANGUAGE sql STABLE
SET search_path = {{search_path}}
AS $$
    SELECT r.id, r.kind, r.worker, r.scope, r.doc_id, r.run_limit, r.started_at, r.ended_at, r.runs, r.embedded,
           r.failed, r.cache_hits, r.api_calls, r.rate_limited, r.tokens, r.cost_usd, r.outcome, r.exit_code, r.model
    FROM {{runs_table}} r
    ORDER BY r.ended_at DESC, r.id DESC
    LIMIT p_limit;
$$;

-- The history since p_since in buckets of p_bucket_seconds (by when each row ended), for the throughput chart.
CREATE OR REPLACE FUNCTION {{schema}}.embq_runs_series(p_since timestamptz, p_bucket_seconds integer DEFAULT 3600)
RETURNS TABLE (bucket timestamptz, embedded bigint, failed bigint, api_calls bigint, rate_limited bigint,
               tokens bigint)
LANGUAGE sql STABLE
SET search_path = {{search_path}}
AS $$
    SELECT to_timestamp(floor(extract(epoch FROM r.ended_at) / greatest(p_bucket_seconds, 1))
                        * greatest(p_bucket_seconds, 1)),
           sum(r.embedded)::bigint, sum(r.failed)::bigint, sum(r.api_calls)::bigint, sum(r.rate_limited)::bigint,
           sum(r.tokens)::bigint
    FROM {{runs_table}} r
    WHERE r.ended_at >= p_since
    GROUP BY 1
    ORDER BY 1;
$$;

-- Sums of the history since p_since (the dashboard's today and this month). cost_usd sums the rows whose cost
-- is known; cost_rows says how many rows that is.
CREATE OR REPLACE FUNCTION {{schema}}.embq_runs_totals(p_since timestamptz)
RETURNS TABLE (runs bigint, embedded bigint, failed bigint, api_calls bigint, rate_limited bigint, tokens bigint,
               cost_usd double precision, cost_rows bigint)
LANGUAGE sql STABLE
SET search_path = {{search_path}}
AS $$
    SELECT coalesce(sum(r.runs), 0)::bigint, coalesce(sum(r.embedded), 0)::bigint, coalesce(sum(r.failed), 0)::bigint,
           coalesce(sum(r.api_calls), 0)::bigint, coalesce(sum(r.rate_limited), 0)::bigint,
           coalesce(sum(r.tokens), 0)::bigint, sum(r.cost_usd), count(r.cost_usd)
    FROM {{runs_table}} r
    WHERE r.ended_at >= p_since;
$$;

-- ---- watchers -------------------------------------------------------------------------------------------

-- A watcher's heartbeat (and, with p_outcome, the outcome of a run that used the API): creates its row on
-- the first call. Returns the database's clock.
CREATE OR REPLACE FUNCTION {{schema}}.embq_worker_report(
    p_worker text, p_kind text, p_host text, p_wake text, p_metrics text, p_outcome text DEFAULT NULL)
RETURNS timestamptz
LANGUAGE sql VOLATILE
SET search_path = {{search_path}}
AS $$
    INSERT INTO {{workers_table}} AS w (worker, kind, host, wake, metrics, last_run_at, last_outcome)
    VALUES (p_worker, p_kind, p_host, p_wake, p_metrics,
            CASE WHEN p_outcome IS NULL THEN NULL ELSE now() END, p_outcome)
    ON CONFLICT (worker) DO UPDATE
    SET heartbeat_at = now(), stopped_at = NULL, exit_code = NULL, wake = EXCLUDED.wake, metrics = EXCLUDED.metrics,
        last_run_at = CASE WHEN p_outcome IS NULL THEN w.last_run_at ELSE now() END,
        last_outcome = coalesce(p_outcome, w.last_outcome)
    RETURNING now();
$$;

-- Mark watchers stopped: a watcher's own clean stop (its exit code), or watchers found dead (exit code NULL,
-- p_outcome 'lost'). Returns how many rows changed.
CREATE OR REPLACE FUNCTION {{schema}}.embq_worker_stop(p_workers text[], p_exit_code integer, p_outcome text)
RETURNS integer
LANGUAGE sql VOLATILE
SET search_path = {{search_path}}
AS $$
    WITH stopped AS (
        UPDATE {{workers_table}} w
        SET stopped_at = now(), exit_code = p_exit_code, last_outcome = coalesce(p_outcome, w.last_outcome)
        WHERE w.worker = ANY (p_workers) AND w.stopped_at IS NULL
        RETURNING 1)
    SELECT count(*)::integer FROM stopped;
$$;

-- Watchers running, and those stopped in the last p_recent_seconds; silent_seconds since their heartbeat.
CREATE OR REPLACE FUNCTION {{schema}}.embq_workers_list(p_recent_seconds double precision DEFAULT 86400)
RETURNS TABLE (worker text, kind text, host text, wake text, metrics text, started_at timestamptz,
               heartbeat_at timestamptz, stopped_at timestamptz, exit_code integer, last_run_at timestamptz,
               last_outcome text, silent_seconds double precision)
LANGUAGE sql STABLE
SET search_path = {{search_path}}
AS $$
    SELECT w.worker, w.kind, w.host, w.wake, w.metrics, w.started_at, w.heartbeat_at, w.stopped_at, w.exit_code,
           w.last_run_at, w.last_outcome, extract(epoch FROM now() - w.heartbeat_at)::double precision
    FROM {{workers_table}} w
    WHERE w.stopped_at IS NULL OR w.stopped_at > now() - make_interval(secs => p_recent_seconds)
    ORDER BY w.stopped_at IS NULL DESC, w.started_at DESC;
$$;

-- ---- alerts ---------------------------------------------------------------------------------------------

-- Everything the alert rules read, in one round trip:
--   the success sample: the runs that ended in the last p_window_minutes, and at least the last p_last_runs;
--   the last outcome of a run that used the API (or found it unavailable), a plain run's or a watcher's;
--   the age of the oldest chunk waiting for a vector (pending or in progress, not failed);
--   watchers that have not reported for p_silence_seconds, and how many are reporting.
CREATE OR REPLACE FUNCTION {{schema}}.embq_health(
    p_window_minutes double precision, p_last_runs integer, p_silence_seconds double precision)
RETURNS TABLE (sample_runs bigint, sample_embedded bigint, sample_failed bigint, last_outcome text,
               last_outcome_at timestamptz, last_outcome_worker text, oldest_pending_age_seconds double precision,
               silent_watchers jsonb, active_watchers bigint, server_now timestamptz)
LANGUAGE sql STABLE
SET search_path = {{search_path}}
AS $$
    WITH sample AS (
        SELECT r.* FROM {{runs_table}} r
        WHERE r.ended_at >= now() - make_interval(secs => p_window_minutes * 60)
           OR r.id IN (SELECT x.id FROM {{runs_table}} x ORDER BY x.ended_at DESC, x.id DESC LIMIT p_last_runs)),
    last_api AS (
        SELECT o.outcome, o.at, o.worker FROM (
            SELECT r.outcome, r.ended_at AS at, r.worker FROM {{runs_table}} r
            WHERE r.kind = 'run' AND (r.api_calls > 0 OR r.outcome = 'api_unavailable')
            UNION ALL
            SELECT w.last_outcome, w.last_run_at, w.worker FROM {{workers_table}} w WHERE w.last_run_at IS NOT NULL
        ) o
        ORDER BY o.at DESC LIMIT 1)
    SELECT (SELECT count(*) FROM sample),
           (SELECT coalesce(sum(s.embedded), 0)::bigint FROM sample s),
           (SELECT coalesce(sum(s.failed), 0)::bigint FROM sample s),
           (SELECT l.outcome FROM last_api l), (SELECT l.at FROM last_api l), (SELECT l.worker FROM last_api l),
           (SELECT extract(epoch FROM now() - min(c.embedding_queued_at))::double precision
            FROM {{chunks}} c WHERE c.{{embedding}} IS NULL AND c.embedding_failed_at IS NULL),
           (SELECT coalesce(jsonb_agg(jsonb_build_object(
                       'worker', w.worker, 'heartbeat_at', w.heartbeat_at,
                       'silent_seconds', extract(epoch FROM now() - w.heartbeat_at)) ORDER BY w.worker), '[]'::jsonb)
            FROM {{workers_table}} w
            WHERE w.stopped_at IS NULL AND w.heartbeat_at < now() - make_interval(secs => p_silence_seconds)),
           (SELECT count(*) FROM {{workers_table}} w
            WHERE w.stopped_at IS NULL AND w.heartbeat_at >= now() - make_interval(secs => p_silence_seconds)),
           now();
$$;

-- An alert's condition holds: open an incident for p_key, or keep the open one (its summary and details
-- updated, its clearing forgotten). `opened` is true only for the call that opened it.
CREATE OR REPLACE FUNCTION {{schema}}.embq_alert_raise(p_key text, p_kind text, p_summary text, p_details jsonb)
RETURNS TABLE (id bigint, opened boolean)
LANGUAGE sql VOLATILE
SET search_path = {{search_path}}
AS $$
    INSERT INTO {{alerts_table}} AS a (alert_key, kind, summary, details)
    VALUES (p_key, p_kind, p_summary, coalesce(p_details, '{}'::jsonb))
    ON CONFLICT (alert_key) WHERE resolved_at IS NULL
    DO UPDATE SET summary = EXCLUDED.summary, details = EXCLUDED.details, updated_at = now(), clear_since = NULL
    RETURNING a.id, (a.xmax::text = '0');
$$;

-- Every open incident whose key is not in p_firing is clearing; one that has stayed clear for
-- p_cooldown_seconds is resolved. Returns how many were resolved by this call.
CREATE OR REPLACE FUNCTION {{schema}}.embq_alert_settle(p_firing text[], p_cooldown_seconds double precision)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = {{search_path}}
AS $$
DECLARE
    resolved integer;
BEGIN
    UPDATE {{alerts_table}} a SET clear_since = now(), updated_at = now()
    WHERE a.resolved_at IS NULL AND a.clear_since IS NULL AND NOT (a.alert_key = ANY (coalesce(p_firing, '{}')));
    UPDATE {{alerts_table}} a SET resolved_at = now(), updated_at = now()
    WHERE a.resolved_at IS NULL AND a.clear_since IS NOT NULL
      AND a.clear_since <= now() - make_interval(secs => greatest(p_cooldown_seconds, 0))
      AND NOT (a.alert_key = ANY (coalesce(p_firing, '{}')));
    GET DIAGNOSTICS resolved = ROW_COUNT;
    RETURN resolved;
END;
$$;

-- Take the notifications to send now: an open incident not yet announced, or a resolved one whose opening was
-- announced and whose resolution was not; not one another process took in the last p_retry_seconds.
CREATE OR REPLACE FUNCTION {{schema}}.embq_alert_claim(p_retry_seconds double precision DEFAULT 60)
RETURNS TABLE (id bigint, alert_key text, kind text, summary text, details jsonb, opened_at timestamptz,
               resolved_at timestamptz, state text)
LANGUAGE sql VOLATILE
SET search_path = {{search_path}}
AS $$
    UPDATE {{alerts_table}} a SET send_claimed_at = now()
    WHERE ((a.fired_sent_at IS NULL AND a.resolved_at IS NULL)
           OR (a.fired_sent_at IS NOT NULL AND a.resolved_at IS NOT NULL AND a.resolved_sent_at IS NULL))
      AND (a.send_claimed_at IS NULL OR a.send_claimed_at < now() - make_interval(secs => p_retry_seconds))
    RETURNING a.id, a.alert_key, a.kind, a.summary, a.details, a.opened_at, a.resolved_at,
              CASE WHEN a.resolved_at IS NULL THEN 'firing' ELSE 'resolved' END;
$$;

-- A notification taken by embq_alert_claim was delivered (p_state 'firing' or 'resolved').
CREATE OR REPLACE FUNCTION {{schema}}.embq_alert_delivered(p_id bigint, p_state text)
RETURNS boolean
LANGUAGE sql VOLATILE
SET search_path = {{search_path}}
AS $$
    WITH done AS (
        UPDATE {{alerts_table}} a
        SET fired_sent_at = CASE WHEN p_state = 'firing' THEN now() ELSE a.fired_sent_at END,
            resolved_sent_at = CASE WHEN p_state = 'resolved' THEN now() ELSE a.resolved_sent_at END,
            send_claimed_at = NULL
        WHERE a.id = p_id
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM done);
$$;

-- Open incidents first, then the latest resolved ones.
CREATE OR REPLACE FUNCTION {{schema}}.embq_alerts_list(p_limit integer DEFAULT 20)
RETURNS TABLE (id bigint, alert_key text, kind text, summary text, details jsonb, opened_at timestamptz,
               resolved_at timestamptz, fired_sent_at timestamptz, resolved_sent_at timestamptz)
LANGUAGE sql STABLE
SET search_path = {{search_path}}
AS $$
    SELECT a.id, a.alert_key, a.kind, a.summary, a.details, a.opened_at, a.resolved_at, a.fired_sent_at,
           a.resolved_sent_at
    FROM {{alerts_table}} a
    ORDER BY a.resolved_at IS NULL DESC, coalesce(a.resolved_at, a.opened_at) DESC, a.id DESC
    LIMIT p_limit;
$$;

-- Forget history rows, resolved incidents and stopped watchers older than p_days. Returns the rows deleted.
CREATE OR REPLACE FUNCTION {{schema}}.embq_prune(p_days integer)
RETURNS integer
LANGUAGE sql VOLATILE
SET search_path = {{search_path}}
AS $$
    WITH runs AS (
        DELETE FROM {{runs_table}} r WHERE r.ended_at < now() - make_interval(days => p_days) RETURNING 1),
    alerts AS (
        DELETE FROM {{alerts_table}} a WHERE a.resolved_at < now() - make_interval(days => p_days) RETURNING 1),
    workers AS (
        DELETE FROM {{workers_table}} w WHERE w.stopped_at < now() - make_interval(days => p_days) RETURNING 1)
    SELECT ((SELECT count(*) FROM runs) + (SELECT count(*) FROM alerts) + (SELECT count(*) FROM workers))::integer;
$$;
