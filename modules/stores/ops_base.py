"""The operations port (schema version 6): the watcher's probe, the run history, the watchers' heartbeats and
the alerts' state, kept in the database (operations.sql) so that every process, the dashboard and the alert
rules read one truth. Both stores implement it with the same SQL functions (ops_queries.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from modules.stores.base import RetryRule


@dataclass(frozen=True)
class WatchProbe:
    has_pending: bool  # a chunk is waiting to be claimed
    next_retry_at: datetime | None  # when the next cooled-down failed chunk is due
    server_now: datetime


@dataclass(frozen=True)
class RunRecord:
    """One row of run history: a run, or a watcher's period (kind 'watch', `runs` runs added up)."""

    kind: str  # run | watch
    worker: str
    scope: str  # pending | failed | watch
    seconds: float
    outcome: str  # ok | failed | api_unavailable | stopped | error
    exit_code: int | None
    doc_id: str | None = None
    run_limit: int | None = None
    runs: int = 1
    embedded: int = 0
    failed: int = 0
    cache_hits: int = 0
    api_calls: int = 0
    rate_limited: int = 0
    tokens: int = 0
    cost_usd: float | None = None
    model: str | None = None


@dataclass(frozen=True)
class HistoryRow:
    id: int
    kind: str
    worker: str
    scope: str
    doc_id: str | None
    run_limit: int | None
    started_at: datetime
    ended_at: datetime
    runs: int
    embedded: int
    failed: int
    cache_hits: int
    api_calls: int
    rate_limited: int
    tokens: int
    cost_usd: float | None
    outcome: str
    exit_code: int | None
    model: str | None


@dataclass(frozen=True)
class SeriesPoint:
    bucket: datetime
    embedded: int
    failed: int
    api_calls: int
    rate_limited: int
    tokens: int


@dataclass(frozen=True)
class Totals:
    runs: int
    embedded: int
    failed: int
    api_calls: int
    rate_limited: int
    tokens: int
    cost_usd: float | None  # the sum over the rows whose cost is known
    cost_rows: int


@dataclass(frozen=True)
class WorkerRow:
    worker: str
    kind: str
    host: str | None
    wake: str | None
    metrics: str | None
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    exit_code: int | None
    last_run_at: datetime | None
    last_outcome: str | None
    silent_seconds: float


@dataclass(frozen=True)
class SilentWatcher:
    worker: str
    heartbeat_at: datetime | None
    silent_seconds: float


@dataclass(frozen=True)
class Health:
    """What the alert rules read (embq_health)."""

    sample_runs: int
    sample_embedded: int
    sample_failed: int
    last_outcome: str | None
    last_outcome_at: datetime | None
    last_outcome_worker: str | None
    oldest_pending_age_seconds: float | None
    silent_watchers: tuple[SilentWatcher, ...]
    active_watchers: int
    server_now: datetime

    @property
    def success_rate(self) -> float | None:
        """Chunks embedded / chunks tried over the sample, in percent; None when nothing was tried."""
        tried = self.sample_embedded + self.sample_failed
        return 100.0 * self.sample_embedded / tried if tried else None


@dataclass(frozen=True)
class AlertRow:
    id: int
    alert_key: str
    kind: str
    summary: str
    details: dict[str, Any]
    opened_at: datetime
    resolved_at: datetime | None
    fired_sent_at: datetime | None = None
    resolved_sent_at: datetime | None = None
    state: str = ""  # for a claimed notification: firing or resolved


@dataclass(frozen=True)
class WorkerInfo:
    """How a watcher describes itself in its heartbeat."""

    worker: str
    kind: str = "watch"
    host: str | None = None
    wake: str | None = None
    metrics: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class OperationsStore(Protocol):
    async def watch_probe(self, dead_owners: Sequence[str], retry: RetryRule) -> WatchProbe: ...

    async def record_run(self, record: RunRecord) -> int: ...

    async def runs_recent(self, limit: int = 20) -> list[HistoryRow]: ...

    async def runs_series(self, since: datetime, bucket_seconds: int) -> list[SeriesPoint]: ...

    async def runs_totals(self, since: datetime) -> Totals: ...

    async def worker_report(self, info: WorkerInfo, outcome: str | None = None) -> datetime: ...

    async def worker_stop(self, workers: Sequence[str], exit_code: int | None, outcome: str | None) -> int: ...

    async def workers_list(self, recent_seconds: float = 86400.0) -> list[WorkerRow]: ...

    async def health(self, window_minutes: float, last_runs: int, silence_seconds: float) -> Health: ...

    async def alert_raise(self, key: str, kind: str, summary: str, details: dict[str, Any]) -> bool:
        """True only for the call that opened the incident."""
        ...

    async def alert_settle(self, firing: Sequence[str], cooldown_seconds: float) -> int: ...

    async def alert_claim(self, retry_seconds: float) -> list[AlertRow]: ...

    async def alert_delivered(self, alert_id: int, state: str) -> bool: ...

    async def alerts_list(self, limit: int = 20) -> list[AlertRow]: ...

    async def prune(self, days: int) -> int: ...


def operations_store(store: object) -> OperationsStore:
    """The store as its operations port (both stores implement it)."""
    if not hasattr(store, "record_run"):
        raise TypeError(f"{type(store).__name__} does not keep run history")
    return store  # type: ignore[return-value]
