"""`--watch`: a loop around the same orchestrator, so that chunks are embedded as they arrive.

    idle ──(NOTIFY from the chunks' trigger, or the sweep every EMBEDDING_WATCH_INTERVAL, or a cooldown
            that ends)──▶ probe (is a chunk waiting? when is the next retry due?) ──▶ generator.run(watch=True)

- Several watchers share one database: the queue's claims (SKIP LOCKED, leases) give each chunk to one.
- Failed chunks are retried by themselves after their cooldown (the claim mode 'due', in SQL), until
  EMBEDDING_MAX_ATTEMPTS; then they are quarantined and wait for --retry-only.
- A lost database or API is ridden out: the watcher logs it, waits (longer each time, at most ten
  minutes), and goes on. Only errors that waiting can't fix (settings, schema, another model's vectors)
  end it, with their exit code.
- `stop` set (SIGTERM): the run in flight is cancelled, which writes the vectors already computed and
  gives every other chunk it holds back; the watcher records its last period and stops (exit 0).
- Every min(EMBEDDING_WATCH_INTERVAL, 30 s) it reports its heartbeat; watchers found dead on this host
  (process gone) are marked lost at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from modules.batch_embedding import BatchEmbeddingGenerator
from modules.engine.workers import dead_local_owners
from modules.errors import (
    ApiUnavailableError,
    DatabaseLostError,
    ModelMismatchError,
    ProviderConfigError,
    SchemaMismatchError,
    StoreError,
)
from modules.logs import get_logger
from modules.ops.period import PeriodRecorder
from modules.ops.wakeup import Wakeup
from modules.settings import Settings
from modules.stores.ops_base import OperationsStore, WorkerInfo, operations_store

log = get_logger(__name__)
MAX_BACKOFF = 600.0
_FATAL = (ProviderConfigError, SchemaMismatchError, ModelMismatchError)


class Watcher:
    def __init__(
        self,
        generator: BatchEmbeddingGenerator,
        settings: Settings,
        wakeup: Wakeup,
        *,
        metrics_address: str | None = None,
        background: list[Callable[[], Coroutine[Any, Any, None]]] | None = None,
    ) -> None:
        self.generator = generator
        self.settings = settings
        self.wakeup = wakeup
        self.interval = settings.watch_interval
        self.beat_seconds = max(0.5, min(30.0, settings.watch_interval))
        self.info = WorkerInfo(
            worker=generator.worker, host=socket.gethostname(), wake=wakeup.mode, metrics=metrics_address
        )
        self.ops: OperationsStore = operations_store(generator.store)
        self.period = PeriodRecorder(self.ops, self.info, settings.watch_period)
        self.background = background or []  # loops that live as long as the watcher (alerts, metrics)
        self.runs = 0
        self.probes = 0
        self._last_prune = 0.0

    async def serve(self, stop: asyncio.Event) -> int:
        """Watch until `stop` is set; returns the exit code (0). Raises what waiting can't fix."""
        generator = self.generator
        generator.write_history = False
        generator.observers.insert(0, self.period)
        await self._start()
        tasks = [asyncio.create_task(self._heartbeat(stop), name="embq-heartbeat")]
        tasks += [asyncio.create_task(loop(), name="embq-background") for loop in self.background]
        code = 0
        try:
            await self._loop(stop)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._finish(code)
        return code

    async def _start(self) -> None:
        await self.wakeup.start()
        try:
            await self.ops.worker_report(self.info)
            open_here = [w.worker for w in await self.ops.workers_list(0) if w.stopped_at is None]
            lost = dead_local_owners(open_here)
            if lost and await self.ops.worker_stop(list(lost), None, "lost"):
                log.info("💀 停止していた監視ワーカーの記録を閉じました: %s", ", ".join(lost))
        except StoreError as exc:
            log.warning("🗄️ ワーカーの登録に失敗しました (続行します): %s", exc)
        how = "LISTEN/NOTIFY で即時" if self.wakeup.mode == "listen" else "ポーリング"
        log.info(
            "👀 監視モードを開始しました (起床: %s + %.0f秒ごとの確認, 自動再試行: 最大%d回, ワーカー: %s)",
            how,
            self.interval,
            self.settings.max_attempts,
            self.info.worker,
        )

    async def _finish(self, code: int) -> None:
        try:
            await asyncio.wait_for(self.period.close(code), 5)
            await asyncio.wait_for(self.ops.worker_stop([self.info.worker], code, "stopped"), 5)
        except (StoreError, TimeoutError) as exc:
            log.warning("🗄️ 停止の記録に失敗しました: %s", exc)
        await self.wakeup.aclose()
        log.info("👋 監視モードを終了しました (実行 %d回)", self.runs)

    async def _loop(self, stop: asyncio.Event) -> None:
        backoff = 0.0
        while not stop.is_set():
            if backoff:
                log.info("⏸️ %.0f秒待ってから再開します", backoff)
                if await _wait(stop, backoff):
                    return
            try:
                self.wakeup.clear()  # before looking: a notification that comes after it wakes the next sleep
                wait = await self._work_or_wait()
                if wait is None:
                    stats = await _until_stopped(self.generator.run(watch=True), stop)
                    self.runs += 1
                    backoff = 0.0
                    if stats is None:
                        return
                    if stats.processed == 0:  # nothing was ours after all (another watcher took it)
                        await _wait(stop, min(self.interval, 1.0))
                    continue
            except DatabaseLostError as exc:  # the database went away mid-run: as any lost database
                backoff = _next(backoff, self.interval)
                log.warning("🗄️ データベースに接続できません。監視は続けます: %s", exc)
                continue
            except ApiUnavailableError as exc:
                backoff = _next(backoff, self.interval)
                log.warning("🛑 埋め込みAPIを利用できません。監視は続けます: %s | 再開の目安: %s", exc, exc.retry_hint)
                continue
            except _FATAL:
                raise
            except StoreError as exc:
                backoff = _next(backoff, self.interval)
                log.warning("🗄️ データベースに接続できません。監視は続けます: %s", exc)
                continue
            woke = await self._sleep(stop, wait)
            if woke:
                log.debug("🔔 通知で起床しました")

    async def _work_or_wait(self) -> float | None:
        """None when there is work now; else how long to sleep (until the sweep or the next retry)."""
        self.probes += 1
        probe = await self.ops.watch_probe(await self.generator.dead_owners(), self.generator.retry_rule)
        if probe.has_pending:
            return None
        wait = self.interval
        if probe.next_retry_at is not None:
            due = (probe.next_retry_at - probe.server_now).total_seconds()
            if due <= 0:
                return None
            wait = min(wait, due + 0.05)
        return wait

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> bool:
        """Sleep until woken, stopped or `seconds` pass; True if a notification woke us."""
        woke = asyncio.create_task(self.wakeup.wait(seconds))
        stopped = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({woke, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (woke, stopped):
                task.cancel()
            await asyncio.gather(woke, stopped, return_exceptions=True)
        return woke.done() and not woke.cancelled() and woke.result()

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await _wait(stop, self.beat_seconds)
            try:
                await self.ops.worker_report(self.info)
                await self.period.maybe_flush()
                if time.monotonic() - self._last_prune > 3600:
                    self._last_prune = time.monotonic()
                    await self.ops.prune(self.settings.history_days)
            except StoreError as exc:
                log.debug("💓 ハートビートの記録に失敗しました: %s", exc)


def _next(backoff: float, interval: float) -> float:
    return min(MAX_BACKOFF, backoff * 2 if backoff else max(1.0, min(interval, 30.0)))


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep `seconds` or until stopped; True if stopped."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


T = TypeVar("T")


async def _until_stopped(run: Awaitable[T], stop: asyncio.Event) -> T | None:
    """Run `run` unless `stop` is set first; then cancel it (its batches are written or released)."""
    task = asyncio.ensure_future(run)
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return None
    return task.result()
