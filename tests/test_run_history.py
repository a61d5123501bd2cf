"""How a run's ending is reported: the exit code the history records is the one the CLI gives for the same
ending, and a slow or failing observer (the database gone) never changes how the run ends."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from modules.cli.common import run_main
from modules.engine.history import RunReport, ending, notify_observers
from modules.engine.stats import RunStats
from modules.errors import (
    ApiUnavailableError,
    BatchEmbeddingError,
    DatabaseLostError,
    ModelMismatchError,
    ProviderConfigError,
    RunAborted,
    SchemaMismatchError,
    StoreError,
    StoreUnavailableError,
    UnknownDocumentError,
)

ERRORS: list[BaseException] = [
    ApiUnavailableError("outage", "in a minute"),
    DatabaseLostError("gone", "later"),
    UnknownDocumentError("x"),
    ProviderConfigError("key"),
    ModelMismatchError("mix"),
    SchemaMismatchError("column"),
    StoreError("broken"),
    StoreUnavailableError("down"),
    RunAborted("stop"),
    BatchEmbeddingError("other"),
    RuntimeError("a bug"),
    asyncio.CancelledError(),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_the_history_records_the_exit_code_the_cli_gives(
    error: BaseException, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EMBEDDING_LOG_FILE", str(tmp_path / "batch_embedding.log"))  # the CLI's one line goes there

    async def body() -> int:
        raise error

    assert ending(RunStats(), error)[1] == run_main(body, lambda: [])


def test_a_run_that_returned_ends_as_its_stats_say() -> None:
    assert ending(RunStats(), None) == ("ok", 0)
    assert ending(RunStats(failed=1), None) == ("failed", 1)
    assert ending(RunStats(scope_pending=3), None) == ("failed", 1)
    assert ending(RunStats(scope_pending=3, limited=True), None) == ("ok", 0)


REPORT = RunReport("host:1:a", "pending", None, None, 1.0, RunStats(), "ok", 0, None)


async def test_a_slow_observer_is_skipped_and_never_becomes_a_cancellation() -> None:
    seen: list[RunReport] = []

    class Slow:
        async def run_finished(self, report: RunReport) -> None:
            await asyncio.sleep(30)

    class Broken:
        async def run_finished(self, report: RunReport) -> None:
            raise StoreUnavailableError("the database is gone")

    class Quick:
        async def run_finished(self, report: RunReport) -> None:
            seen.append(report)

    await notify_observers([Slow(), Broken(), Quick()], REPORT, limit_seconds=0.2)
    assert seen == [REPORT]


async def test_a_cancellation_while_reporting_lets_the_report_finish_then_cancels() -> None:
    done: list[int] = []

    class Short:
        async def run_finished(self, report: RunReport) -> None:
            await asyncio.sleep(0.2)
            done.append(1)

    task = asyncio.create_task(notify_observers([Short()], REPORT))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert done == [1]
