"""TEST-ONLY: a database in a known state for the dashboard's tests (the ASGI one and the browser one): chunks in
every state, run history, watchers and alerts, with the figures the page must show in KNOWN."""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg

LOCAL_MODEL = "wordllama-l2_supercat-256@768"
KNOWN: dict[str, Any] = {
    "cards": {"embedded": 6, "pending": 3, "cooling-down": 2, "quarantined": 1, "in-progress": 1, "other-model": 1},
    "tokens_today": 20000,
    "rate_limited": 5,
}


async def fill_known_state(url: str) -> None:
    vector = "[" + ",".join(["%.8f" % (1 / np.sqrt(768))] * 768) + "]"
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO document_sources (id, name, type) VALUES ('rules', '就業規則.md', 'md'), "
            "('faq', '<script>alert(1)</script>.txt', 'txt')"
        )
        states = ["embedded"] * 5 + ["other"] + ["pending"] * 3 + ["cooling"] * 2 + ["quarantined"] + ["leased"]
        for i, state in enumerate(states):
            doc = "rules" if i < 8 else "faq"
            await conn.execute(
                "INSERT INTO chunks (id, doc_id, chunk_index, content) VALUES (%s, %s, %s, %s)",
                (f"c{i:02d}", doc, i, f"段落{i}: {state}"),
            )
            if state in ("embedded", "other"):
                model = LOCAL_MODEL if state == "embedded" else "text-embedding-004@768"
                await conn.execute(
                    "UPDATE chunks SET embedding = %s::vector, embedding_model = %s, embedded_at = now(), "
                    "content_hash = encode(sha256(convert_to(content, 'UTF8')), 'hex') WHERE id = %s",
                    (vector, model, f"c{i:02d}"),
                )
            elif state in ("cooling", "quarantined"):
                await conn.execute(
                    "UPDATE chunks SET embedding_attempts = %s, embedding_failed_at = now() - interval '10 seconds', "
                    "embedding_error = '400 INVALID_ARGUMENT: 入力が不正です' WHERE id = %s",
                    (1 if state == "cooling" else 5, f"c{i:02d}"),
                )
            elif state == "leased":
                await conn.execute(
                    "UPDATE chunks SET embedding_lease_owner = 'host:1:live', "
                    "embedding_lease_expires_at = now() + interval '1 hour' WHERE id = %s",
                    (f"c{i:02d}",),
                )
        await conn.execute("UPDATE chunks SET embedding_queued_at = now() - interval '2 hours' WHERE id = 'c06'")
        await conn.execute(
            "INSERT INTO embq_runs (kind, worker, scope, started_at, ended_at, runs, embedded, failed, api_calls, "
            "rate_limited, tokens, cost_usd, outcome, exit_code, model) VALUES "
            "('run', 'host:7:cron', 'pending', now() - interval '3 minutes', now() - interval '2 minutes', 1, 50, 10, "
            " 6, 3, 12000, 0.0012, 'failed', 1, %s), "
            "('watch', 'host:8:watch', 'watch', now() - interval '5 minutes', now(), 4, 100, 0, 10, 2, 8000, NULL, "
            " 'ok', NULL, %s)",
            (LOCAL_MODEL, LOCAL_MODEL),
        )
        await conn.execute(
            "INSERT INTO embq_workers (worker, kind, host, wake, started_at, heartbeat_at, last_run_at, last_outcome) "
            "VALUES ('host:8:watch', 'watch', 'host', 'listen', now() - interval '1 hour', now(), now(), 'ok')"
        )
        await conn.execute(
            "INSERT INTO embq_alerts (alert_key, kind, summary, details, fired_sent_at) VALUES "
            "('success_rate', 'success_rate', '成功率が 83.3% に下がっています (しきい値 90%)', '{}', now())"
        )
        await conn.execute(
            "INSERT INTO embq_alerts (alert_key, kind, summary, opened_at, resolved_at) VALUES "
            "('backlog_age', 'backlog_age', '最も古い未処理チャンクが 45分 待っています', now() - interval '3 hours', "
            " now() - interval '2 hours')"
        )
        await conn.execute(
            "INSERT INTO embq_batch_jobs (id, name, model, state, remote_state, chunk_ids, tokens, created_at, "
            "submitted_at) VALUES ('job-1', 'batches/running-1', 'gemini-embedding-001@768', 'submitted', "
            "'JOB_STATE_RUNNING', ARRAY['c06','c07','c08'], 120, now() - interval '40 minutes', "
            "now() - interval '40 minutes')"
        )
        await conn.execute(
            "INSERT INTO embq_model_migrations (id, source_model, target_model, state, started_at, cut_over_at, "
            "ended_at, agreement, agreement_sample) VALUES ('m1', 'text-embedding-004@768', %s, 'cut_over', "
            "now() - interval '1 day', now() - interval '20 hours', now() - interval '20 hours', 0.9, 50)",
            (LOCAL_MODEL,),
        )
