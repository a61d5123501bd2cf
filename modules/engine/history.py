"""What a run leaves behind when it ends: one report, handed to the run's observers (the run-history writer by
default; a watcher adds its period and its metrics). The report carries the exit code the command line gives
for that ending, so the history says what cron saw. A failing observer never breaks a run."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol

from modules.engine.stats import RunStats
from modules.errors import (
    ApiUnavailableError,
    BatchEmbeddingError,
    DatabaseLostError,
    ModelMismatchError,
    ProviderConfigError,
    RunAborted,
    StoreError,
    UnknownDocumentError,
)
from modules.logs import get_logger
from modules.stores.ops_base import OperationsStore, RunRecord

log = get_logger(__name__)

# The command line's exit codes (modules/cli/common.py says the same; a test holds them together).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_API_UNAVAILABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


@dataclass(frozen=True)
class RunReport:
    worker: str
    scope: str  # pending, failed (--retry-only) or watch
    doc_id: str | None
    limit: int | None
    seconds: float
    stats: RunStats
    outcome: str  # ok, failed, api_unavailable, database_lost, stopped, error
    exit_code: int
    model: str | None

    @property
    def tokens(self) -> int:
        return tokens_and_cost(self.stats)[0]

    @property
    def cost_usd(self) -> float | None:
        return tokens_and_cost(self.stats)[1]


class RunObserver(Protocol):
    async def run_finished(self, report: RunReport) -> None: ...


def ending(stats: RunStats, error: BaseException | None) -> tuple[str, int]:
    """(outcome, exit code) of a run that returned `stats` or raised `error`, as the CLI ends it."""
    if error is None:
        return stats.outcome, EXIT_OK if stats.ok else EXIT_FAILED
    if isinstance(error, DatabaseLostError):
        return "database_lost", EXIT_API_UNAVAILABLE
    if isinstance(error, ApiUnavailableError):
        return "api_unavailable", EXIT_API_UNAVAILABLE
    if isinstance(error, (UnknownDocumentError, ProviderConfigError, ModelMismatchError, StoreError)):
        return "error", EXIT_USAGE
    if isinstance(error, RunAborted):
        return "stopped", EXIT_FAILED
    if isinstance(error, (asyncio.CancelledError, KeyboardInterrupt)):
        return "stopped", EXIT_INTERRUPTED
    if isinstance(error, BatchEmbeddingError):
        return "error", EXIT_FAILED
    return "error", EXIT_FAILED


def tokens_and_cost(stats: RunStats) -> tuple[int, float | None]:
    """Tokens sent and their cost, as the run's stats know them (`tokens` / `cost_usd` when the stats carry
    them, else the estimate `tokens_sent` and an unknown cost)."""
    data = stats.as_dict()
    tokens = data.get("tokens", data.get("tokens_sent", 0))
    cost = data.get("cost_usd")
    return (
        int(tokens) if isinstance(tokens, int | float) else 0,
        float(cost) if isinstance(cost, int | float) else None,
    )


class HistoryWriter:
    """Writes one run-history row per run (kind 'run')."""

    def __init__(self, store: OperationsStore) -> None:
        self.store = store

    async def run_finished(self, report: RunReport) -> None:
        s = report.stats
        record = RunRecord(
            kind="run",
            worker=report.worker,
            scope=report.scope,
            doc_id=report.doc_id,
            run_limit=report.limit,
            seconds=report.seconds,
            outcome=report.outcome,
            exit_code=report.exit_code,
            embedded=s.embedded,
            failed=s.failed,
            cache_hits=s.cache_hits,
            api_calls=s.api_calls,
            rate_limited=s.rate_limited,
            tokens=report.tokens,
            cost_usd=report.cost_usd,
            model=report.model,
        )
        await self.store.record_run(record)


async def notify_observers(observers: list[RunObserver], report: RunReport, limit_seconds: float = 5.0) -> None:
    """Hand the report to each observer; one that fails or takes longer than `limit_seconds` (the database is
    gone, say) is logged and skipped. Runs to its end even while the run is being cancelled (Ctrl-C), and then
    re-raises that cancellation; a time limit never turns into one."""
    for observer in observers:
        try:
            await _within(observer.run_finished(report), limit_seconds)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            log.warning("🗒️ 実行履歴の記録が %.0f秒で終わらなかったため省きました (処理には影響しません)", limit_seconds)
        except Exception as exc:
            log.warning("🗒️ 実行履歴を記録できませんでした (処理には影響しません): %s", exc)


async def _within(operation: Awaitable[None], limit_seconds: float) -> None:
    """Await `operation` to its end or for `limit_seconds` (then TimeoutError), shielded from this task's
    cancellation meanwhile, which is re-raised afterwards."""
    task = asyncio.ensure_future(operation)
    loop = asyncio.get_running_loop()
    deadline, cancelled = loop.time() + limit_seconds, False
    while not task.done():
        left = deadline - loop.time()
        if left <= 0:
            task.cancel()
            await asyncio.wait({task})
            if cancelled:
                raise asyncio.CancelledError
            raise TimeoutError
        try:
            await asyncio.wait({task}, timeout=left)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    task.result()
