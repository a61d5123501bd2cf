"""A watcher's run history: the runs of one period (EMBEDDING_WATCH_PERIOD) added up into one row, written
when the period ends if the watcher did something in it, and one last row when the watcher stops (with its
exit code), so the history is not a row per wake-up. It also tells the watchers' table the last outcome of a
run that used the API, which is what the 'API unavailable' alert reads."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from modules.engine.history import RunReport
from modules.logs import get_logger
from modules.stores.ops_base import OperationsStore, RunRecord, WorkerInfo

log = get_logger(__name__)

# The worst outcome of a period's runs names the period.
_SEVERITY = {"ok": 0, "stopped": 1, "failed": 2, "error": 3, "database_lost": 4, "api_unavailable": 5}


@dataclass
class _Sums:
    runs: int = 0
    embedded: int = 0
    failed: int = 0
    cache_hits: int = 0
    api_calls: int = 0
    rate_limited: int = 0
    tokens: int = 0
    cost_usd: float | None = None
    outcome: str = "ok"
    model: str | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def active(self) -> bool:
        return self.runs > 0 and bool(self.embedded or self.failed or self.api_calls or self.outcome != "ok")


class PeriodRecorder:
    """A RunObserver for the watcher."""

    def __init__(self, store: OperationsStore, info: WorkerInfo, period_seconds: float) -> None:
        self.store = store
        self.info = info
        self.period = period_seconds
        self.sums = _Sums()
        self.rows_written = 0

    async def run_finished(self, report: RunReport) -> None:
        s, stats = self.sums, report.stats
        s.runs += 1
        s.embedded += stats.embedded
        s.failed += stats.failed
        s.cache_hits += stats.cache_hits
        s.api_calls += stats.api_calls
        s.rate_limited += stats.rate_limited
        s.tokens += report.tokens
        if report.cost_usd is not None:
            s.cost_usd = (s.cost_usd or 0.0) + report.cost_usd
        if report.outcome != "stopped" and _SEVERITY.get(report.outcome, 3) > _SEVERITY.get(s.outcome, 0):
            s.outcome = report.outcome
        s.model = report.model or s.model
        if (stats.api_calls or report.outcome == "api_unavailable") and report.outcome != "database_lost":
            await self.store.worker_report(self.info, outcome=report.outcome)
        await self.maybe_flush()

    async def maybe_flush(self) -> None:
        """End the period if it is over: a row if anything happened in it, then a new period."""
        if time.monotonic() - self.sums.started < self.period:
            return
        if self.sums.active:
            await self._write(exit_code=None, outcome=self.sums.outcome)
        self.sums = _Sums()

    async def close(self, exit_code: int) -> None:
        """The watcher stops: its last row (whatever happened in the period), with the exit code."""
        outcome = self.sums.outcome if self.sums.active else "stopped"
        await self._write(exit_code=exit_code, outcome=outcome)
        self.sums = _Sums()

    async def _write(self, *, exit_code: int | None, outcome: str) -> None:
        s = self.sums
        await self.store.record_run(
            RunRecord(
                kind="watch",
                worker=self.info.worker,
                scope="watch",
                seconds=time.monotonic() - s.started,
                outcome=outcome,
                exit_code=exit_code,
                runs=s.runs,
                embedded=s.embedded,
                failed=s.failed,
                cache_hits=s.cache_hits,
                api_calls=s.api_calls,
                rate_limited=s.rate_limited,
                tokens=s.tokens,
                cost_usd=s.cost_usd,
                model=s.model,
            )
        )
        self.rows_written += 1
