"""How many batches may be in flight at once: EMBEDDING_CONCURRENCY, or with `auto` a limit the pacer
moves (see pacing.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class AdaptiveLimiter:
    """At most `limit` holders at once; with `adaptive`, the limit moves between 1 and `ceiling`."""

    def __init__(self, initial: int, ceiling: int, adaptive: bool) -> None:
        self.ceiling = max(1, ceiling)
        self.limit = max(1, min(initial, self.ceiling))
        self.adaptive = adaptive
        self._in_use = 0
        self._changed = asyncio.Condition()

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def saturated(self) -> bool:
        return self._in_use >= self.limit

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: self._in_use < self.limit)
            self._in_use += 1
        try:
            yield
        finally:
            async with self._changed:
                self._in_use -= 1
                self._changed.notify_all()

    def target(self, lanes: int) -> None:
        """Set the limit (with `adaptive`), within 1..ceiling."""
        if self.adaptive:
            self.limit = max(1, min(lanes, self.ceiling))

    def grow(self) -> bool:
        if not self.adaptive or self.limit >= self.ceiling:
            return False
        self.limit += 1
        return True
