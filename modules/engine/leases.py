"""The heartbeat: while batches are in flight, their leases are renewed every third of the lease, so
a lease can be short (a crashed worker's chunks come back within about a minute) without a slow API
call losing the chunks it is working on. A lease the renewal finds lost (another worker took it after
it expired, e.g. during a long database outage) is dropped: its result is not ours to write, and the
store refuses it anyway (embq_complete_v2 checks the owner)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

from modules.errors import StoreError
from modules.logs import get_logger
from modules.stores.base import ChunkStore

log = get_logger(__name__)


class LeaseKeeper:
    def __init__(self, store: ChunkStore, worker: str, lease_seconds: int) -> None:
        self.store = store
        self.worker = worker
        self.lease_seconds = lease_seconds
        self.interval = max(0.3, lease_seconds / 3)
        self.held: set[str] = set()
        self.lost: set[str] = set()
        self.lock = asyncio.Lock()  # a renewal never overlaps a write: a chunk just written is not "lost"
        self._task: asyncio.Task[None] | None = None

    def hold(self, chunk_ids: Iterable[str]) -> None:
        self.held.update(chunk_ids)

    def drop(self, chunk_ids: Iterable[str]) -> None:
        self.held.difference_update(chunk_ids)

    async def __aenter__(self) -> LeaseKeeper:
        self._task = asyncio.create_task(self._beat())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.renew()

    async def renew(self) -> None:
        async with self.lock:
            ids = sorted(self.held)
            if not ids:
                return
            try:
                kept = await self.store.renew_leases(self.worker, ids, self.lease_seconds)
            except StoreError as exc:  # the next beat tries again; the lease still has two thirds left
                log.warning("💓 リースの更新に失敗しました (次回再試行): %s", exc)
                return
        lost = set(ids) - kept - (set(ids) - self.held)  # ids released meanwhile are not lost
        if lost:
            self.lost.update(lost)
            self.held.difference_update(lost)
            log.warning("💓 %d件のチャンクのリースを失いました (他のワーカーが引き継ぎました)", len(lost))
