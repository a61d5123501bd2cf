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
DB_PATIENCE = 25.0  # seconds from a database operation's first failure to giving up: a restart fits


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


async def claim_despite_cancel(
    claim: Awaitable[list[T]], give_back: Callable[[list[T]], Awaitable[object]], limit_seconds: float = 15.0
) -> list[T]:
    """Run a claim; if this task is cancelled meanwhile (Ctrl-C, another lane stopping the run), let the
    claim finish and give back what it leased before re-raising: a claim cut off after its commit would
    otherwise leave chunks leased to a worker that never learns it holds them."""
    task = asyncio.ensure_future(claim)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        try:
            claimed = await asyncio.wait_for(asyncio.shield(task), limit_seconds)
        except BaseException:  # the claim failed, or took too long: its leases expire by themselves
            task.cancel()
            raise asyncio.CancelledError from None
        if claimed:
            try:
                await finish_despite_cancel(give_back(claimed), limit_seconds)
            except Exception as exc:
                log.warning("リース解放に失敗しました (期限切れで自動的に戻ります): %s", exc)
        raise


async def with_db_retries(what: str, operation: Callable[[], Awaitable[T]]) -> T:
    """Run a database operation, giving a restarting database DB_PATIENCE seconds (from the first
    failure, the attempts' own waits for a connection included) to come back. Computed vectors stay in
    memory meanwhile; nothing is marked done until the write is confirmed."""
    loop = asyncio.get_running_loop()
    first_failure: float | None = None
    attempt = 0
    while True:
        attempt += 1
        try:
            return await operation()
        except StoreUnavailableError as exc:
            now = loop.time()
            first_failure = now if first_failure is None else first_failure
            delay = min(10.0, 0.5 * 2**attempt)
            if now + delay - first_failure > DB_PATIENCE:
                raise
            log.warning("🗄️ %sに失敗しました。%.1f秒後に再試行します (%d回目): %s", what, delay, attempt, exc)
            await asyncio.sleep(delay)
