"""Two database habits every run shares: a short statement finishes even when the task is being
cancelled, and a restarting database gets a few seconds to come back before a run gives up."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from modules.errors import StoreUnavailableError
from modules.logs import get_logger

log = get_logger(__name__)
T = TypeVar("T")
DB_ATTEMPTS = 6  # 1 + 2 + 4 + 8 + 10 s: long enough for a database restart


async def finish_despite_cancel(operation: Awaitable[T], limit_seconds: float = 15.0) -> T:
    """Run a short database statement to its end even if this task is cancelled meanwhile (Ctrl-C,
    SIGTERM, a sibling's failure) — once or repeatedly — then re-raise the cancellation. Bounded by
    `limit_seconds`, so a dead database can't hold a shutdown forever (its leases expire instead)."""
    task = asyncio.ensure_future(operation)
    cancelled = False
    deadline = asyncio.get_running_loop().time() + limit_seconds
    while not task.done():
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            task.cancel()
            break
        try:
            await asyncio.wait({task}, timeout=left)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.warning("中断中の書き込みに失敗しました: %s", task.exception())
        raise asyncio.CancelledError
    return await task


async def with_db_retries(what: str, operation: Callable[[], Awaitable[T]]) -> T:
    """Run a database operation, giving a restarting database a few seconds to come back. Computed
    vectors stay in memory meanwhile; nothing is marked done until the write is confirmed."""
    for attempt in range(1, DB_ATTEMPTS + 1):
        try:
            return await operation()
        except StoreUnavailableError as exc:
            if attempt == DB_ATTEMPTS:
                raise
            delay = min(10.0, 0.5 * 2**attempt)
            log.warning(
                "🗄️ %sに失敗しました。%.1f秒後に再試行します (%d/%d): %s", what, delay, attempt, DB_ATTEMPTS, exc
            )
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")
