"""What the dashboard shows, read in one go from the queue's SQL counts and the run history (never from a
process's own counters): the backlog, per-document progress, the most common errors, throughput and 429s
per hour over the last day, tokens and cost today and this month, watchers, recent runs, alerts, Batch API
jobs and a model migration."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from modules.batch_embedding import BatchEmbeddingGenerator
from modules.engine.migration import MigrationProgress, ModelMigrator
from modules.stores.base import BatchJobSummary, DocumentStatus, ErrorGroup, QueueStatus
from modules.stores.ops_base import AlertRow, HistoryRow, SeriesPoint, Totals, WorkerRow, operations_store

CHART_HOURS = 24


@dataclass(frozen=True)
class DashboardData:
    now: datetime  # the database's clock, in the dashboard's time zone
    zone: ZoneInfo
    model: str
    status: QueueStatus
    documents: list[DocumentStatus]
    errors: list[ErrorGroup]
    series: list[SeriesPoint]  # one point per hour of the last CHART_HOURS, oldest first, gaps filled
    today: Totals
    month: Totals
    workers: list[WorkerRow]
    runs: list[HistoryRow]
    alerts: list[AlertRow]
    silence_seconds: float
    max_attempts: int
    batch_jobs: list[BatchJobSummary]  # in flight, then the last ones done
    migration: MigrationProgress | None  # the last model migration, if any

    @property
    def open_alerts(self) -> list[AlertRow]:
        return [a for a in self.alerts if a.resolved_at is None]

    @property
    def active_watchers(self) -> list[WorkerRow]:
        return [w for w in self.workers if w.stopped_at is None and w.silent_seconds < self.silence_seconds]

    @property
    def health(self) -> str:
        """ok, warn or bad: the page's colour at a glance."""
        s = self.status
        if self.open_alerts:
            return "bad"
        if (
            s.failed
            or s.other_model
            or any(w.stopped_at is None and w not in self.active_watchers for w in self.workers)
        ):
            return "warn"
        return "ok"


async def gather(generator: BatchEmbeddingGenerator, *, zone: str, silence_seconds: float) -> DashboardData:
    store = generator.store
    ops = operations_store(store)
    tz = ZoneInfo(zone)
    status = await store.status(
        model_id=generator.embedder.model_id, dead_owners=await generator.dead_owners(), retry=generator.retry_rule
    )
    now = (await store.server_time()).astimezone(tz)
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month_start = day_start.replace(day=1)
    hour = now.replace(minute=0, second=0, microsecond=0)
    since = hour - timedelta(hours=CHART_HOURS - 1)
    points = {
        p.bucket.astimezone(tz).replace(minute=0, second=0, microsecond=0): p
        for p in await ops.runs_series(since, 3600)
    }
    series = [
        points.get(since + timedelta(hours=h)) or SeriesPoint(since + timedelta(hours=h), 0, 0, 0, 0, 0)
        for h in range(CHART_HOURS)
    ]
    return DashboardData(
        now=now,
        zone=tz,
        model=generator.embedder.model_id,
        status=status,
        documents=await store.status_by_document(50),
        errors=await store.recent_errors(8),
        series=series,
        today=await ops.runs_totals(day_start),
        month=await ops.runs_totals(month_start),
        workers=await ops.workers_list(86400),
        runs=await ops.runs_recent(15),
        alerts=await ops.alerts_list(10),
        silence_seconds=silence_seconds,
        max_attempts=generator.retry_rule.max_attempts,
        batch_jobs=await store.batch_jobs(recent=5),
        migration=await ModelMigrator(generator).progress(),
    )
