"""The operations port's implementation, shared by both stores: each method is one call of a function of
operations.sql, by its named statement (queries.sql: the function's name less "embq_", its own argument
names). A store provides `_ops_rows(name, params)`, which runs it and returns the rows as dicts: psycopg
against PostgreSQL, PostgREST RPC on Supabase. Values come back as Python objects from psycopg and as JSON
from PostgREST; the readers here accept both."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from modules.stores.base import QueueStatus, RetryRule
from modules.stores.ops_base import (
    AlertRow,
    Health,
    HistoryRow,
    RunRecord,
    SeriesPoint,
    SilentWatcher,
    Totals,
    WatchProbe,
    WorkerInfo,
    WorkerRow,
)


def timestamp(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def _when(value: Any) -> datetime:
    found = timestamp(value)
    if found is None:
        raise ValueError("a timestamp the database always sets came back NULL")
    return found


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _scalar(rows: list[dict[str, Any]]) -> Any:
    return next(iter(rows[0].values())) if rows else None


class OperationsQueries:
    """Mixed into PostgresStore and SupabaseStore."""

    async def _ops_rows(self, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def watch_probe(self, dead_owners: Sequence[str], retry: RetryRule) -> WatchProbe:
        rows = await self._ops_rows(
            "watch_probe",
            {
                "p_dead_owners": list(dead_owners),
                "p_max_attempts": retry.max_attempts,
                "p_cooldown_base": retry.cooldown_base,
                "p_cooldown_max": retry.cooldown_max,
            },
        )
        r = rows[0]
        return WatchProbe(bool(r["has_pending"]), timestamp(r["next_retry_at"]), _when(r["server_now"]))

    async def record_run(self, record: RunRecord) -> int:
        rows = await self._ops_rows(
            "run_record",
            {
                "p_kind": record.kind,
                "p_worker": record.worker,
                "p_scope": record.scope,
                "p_doc_id": record.doc_id,
                "p_run_limit": record.run_limit,
                "p_seconds": float(record.seconds),
                "p_runs": record.runs,
                "p_embedded": record.embedded,
                "p_failed": record.failed,
                "p_cache_hits": record.cache_hits,
                "p_api_calls": record.api_calls,
                "p_rate_limited": record.rate_limited,
                "p_tokens": record.tokens,
                "p_cost_usd": record.cost_usd,
                "p_outcome": record.outcome,
                "p_exit_code": record.exit_code,
                "p_model": record.model,
            },
        )
        return int(_scalar(rows))

    async def runs_recent(self, limit: int = 20) -> list[HistoryRow]:
        rows = await self._ops_rows("runs_recent", {"p_limit": limit})
        return [
            HistoryRow(
                id=int(r["id"]),
                kind=str(r["kind"]),
                worker=str(r["worker"]),
                scope=str(r["scope"]),
                doc_id=r["doc_id"],
                run_limit=_int(r["run_limit"]),
                started_at=_when(r["started_at"]),
                ended_at=_when(r["ended_at"]),
                runs=int(r["runs"]),
                embedded=int(r["embedded"]),
                failed=int(r["failed"]),
                cache_hits=int(r["cache_hits"]),
                api_calls=int(r["api_calls"]),
                rate_limited=int(r["rate_limited"]),
                tokens=int(r["tokens"]),
                cost_usd=_float(r["cost_usd"]),
                outcome=str(r["outcome"]),
                exit_code=_int(r["exit_code"]),
                model=r["model"],
            )
            for r in rows
        ]

    async def runs_series(self, since: datetime, bucket_seconds: int) -> list[SeriesPoint]:
        rows = await self._ops_rows("runs_series", {"p_since": since, "p_bucket_seconds": bucket_seconds})
        return [
            SeriesPoint(
                _when(r["bucket"]),
                int(r["embedded"]),
                int(r["failed"]),
                int(r["api_calls"]),
                int(r["rate_limited"]),
                int(r["tokens"]),
            )
            for r in rows
        ]

    async def runs_totals(self, since: datetime) -> Totals:
        r = (await self._ops_rows("runs_totals", {"p_since": since}))[0]
        return Totals(
            runs=int(r["runs"]),
            embedded=int(r["embedded"]),
            failed=int(r["failed"]),
            api_calls=int(r["api_calls"]),
            rate_limited=int(r["rate_limited"]),
            tokens=int(r["tokens"]),
            cost_usd=_float(r["cost_usd"]),
            cost_rows=int(r["cost_rows"]),
        )

    async def worker_report(self, info: WorkerInfo, outcome: str | None = None) -> datetime:
        rows = await self._ops_rows(
            "worker_report",
            {
                "p_worker": info.worker,
                "p_kind": info.kind,
                "p_host": info.host,
                "p_wake": info.wake,
                "p_metrics": info.metrics,
                "p_outcome": outcome,
            },
        )
        return _when(_scalar(rows))

    async def worker_stop(self, workers: Sequence[str], exit_code: int | None, outcome: str | None) -> int:
        if not workers:
            return 0
        rows = await self._ops_rows(
            "worker_stop", {"p_workers": list(workers), "p_exit_code": exit_code, "p_outcome": outcome}
        )
        return int(_scalar(rows) or 0)

    async def workers_list(self, recent_seconds: float = 86400.0) -> list[WorkerRow]:
        rows = await self._ops_rows("workers_list", {"p_recent_seconds": float(recent_seconds)})
        return [
            WorkerRow(
                worker=str(r["worker"]),
                kind=str(r["kind"]),
                host=r["host"],
                wake=r["wake"],
                metrics=r["metrics"],
                started_at=_when(r["started_at"]),
                heartbeat_at=_when(r["heartbeat_at"]),
                stopped_at=timestamp(r["stopped_at"]),
                exit_code=_int(r["exit_code"]),
                last_run_at=timestamp(r["last_run_at"]),
                last_outcome=r["last_outcome"],
                silent_seconds=float(r["silent_seconds"]),
            )
            for r in rows
        ]

    async def health(self, window_minutes: float, last_runs: int, silence_seconds: float) -> Health:
        r = (
            await self._ops_rows(
                "health",
                {
                    "p_window_minutes": float(window_minutes),
                    "p_last_runs": last_runs,
                    "p_silence_seconds": float(silence_seconds),
                },
            )
        )[0]
        silent = tuple(
            SilentWatcher(str(w["worker"]), timestamp(w.get("heartbeat_at")), float(w.get("silent_seconds") or 0))
            for w in _json(r["silent_watchers"]) or []
        )
        return Health(
            sample_runs=int(r["sample_runs"]),
            sample_embedded=int(r["sample_embedded"]),
            sample_failed=int(r["sample_failed"]),
            last_outcome=r["last_outcome"],
            last_outcome_at=timestamp(r["last_outcome_at"]),
            last_outcome_worker=r["last_outcome_worker"],
            oldest_pending_age_seconds=_float(r["oldest_pending_age_seconds"]),
            silent_watchers=silent,
            active_watchers=int(r["active_watchers"]),
            server_now=_when(r["server_now"]),
        )

    async def alert_raise(self, key: str, kind: str, summary: str, details: dict[str, Any]) -> bool:
        rows = await self._ops_rows(
            "alert_raise", {"p_key": key, "p_kind": kind, "p_summary": summary, "p_details": details}
        )
        return bool(rows[0]["opened"])

    async def alert_settle(self, firing: Sequence[str], cooldown_seconds: float) -> int:
        rows = await self._ops_rows(
            "alert_settle", {"p_firing": list(firing), "p_cooldown_seconds": float(cooldown_seconds)}
        )
        return int(_scalar(rows) or 0)

    async def alert_claim(self, retry_seconds: float) -> list[AlertRow]:
        rows = await self._ops_rows("alert_claim", {"p_retry_seconds": float(retry_seconds)})
        return [_alert(r) for r in rows]

    async def alert_delivered(self, alert_id: int, state: str) -> bool:
        return bool(_scalar(await self._ops_rows("alert_delivered", {"p_id": alert_id, "p_state": state})))

    async def alerts_list(self, limit: int = 20) -> list[AlertRow]:
        return [_alert(r) for r in await self._ops_rows("alerts_list", {"p_limit": limit})]

    async def prune(self, days: int) -> int:
        return int(_scalar(await self._ops_rows("prune", {"p_days": days})) or 0)


def _alert(r: dict[str, Any]) -> AlertRow:
    details = _json(r["details"])
    return AlertRow(
        id=int(r["id"]),
        alert_key=str(r["alert_key"]),
        kind=str(r["kind"]),
        summary=str(r["summary"]),
        details=details if isinstance(details, dict) else {},
        opened_at=_when(r["opened_at"]),
        resolved_at=timestamp(r["resolved_at"]),
        fired_sent_at=timestamp(r.get("fired_sent_at")),
        resolved_sent_at=timestamp(r.get("resolved_sent_at")),
        state=str(r.get("state") or ""),
    )


def queue_status(row: dict[str, Any]) -> QueueStatus:
    """A row of embq_status_v3, from psycopg or PostgREST."""
    age = row.get("oldest_pending_age_seconds")
    return QueueStatus(
        **{k: int(row[k]) for k in _COUNTS},
        oldest_pending_age_seconds=None if age is None else max(0.0, float(age)),
        next_retry_at=timestamp(row.get("next_retry_at")),
    )


_COUNTS = (
    "total",
    "embedded",
    "pending",
    "failed",
    "in_progress",
    "stale_leases",
    "other_model",
    "cooling_down",
    "retry_due",
    "quarantined",
)
