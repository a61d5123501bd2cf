"""Pacing shared by every batch of a run: quota buckets, a global pause on 429, adaptive concurrency.

A 429 is the quota's signal, not a chunk's fault: it pauses *all* senders until the server's
RetryInfo time (or a backoff when there is none) and halves the number of batches in flight;
successes grow it back one step at a time (AIMD, as TCP does).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass


class TokenBucket:
    """A refilling allowance of `rate` units per `period` seconds, holding at most `capacity`."""

    def __init__(self, rate: float, period: float = 60.0, capacity: float | None = None) -> None:
        self.rate_per_second = rate / period
        self.capacity = capacity if capacity is not None else rate
        self._level = self.capacity
        self._stamp = time.monotonic()

    def _refill(self, now: float) -> None:
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate_per_second)
        self._stamp = now

    def wait_time(self, amount: float) -> float:
        """Seconds until `amount` units are available (0 when they are now). Amounts over capacity
        are allowed once the bucket is full, so one oversized request never blocks forever."""
        now = time.monotonic()
        self._refill(now)
        needed = min(amount, self.capacity) - self._level
        return 0.0 if needed <= 0 else needed / self.rate_per_second

    def take(self, amount: float) -> None:
        self._refill(time.monotonic())
        self._level -= amount

    def drain(self) -> None:
        """The server says the quota is spent: trust it over our own count."""
        self._refill(time.monotonic())
        self._level = min(self._level, 0.0)


class AdaptiveLimiter:
    """At most `limit` holders at once; the limit moves between 1 and `ceiling` (AIMD)."""

    def __init__(self, initial: int, ceiling: int, adaptive: bool) -> None:
        self.ceiling = max(1, ceiling)
        self.limit = float(max(1, min(initial, self.ceiling)))
        self.adaptive = adaptive
        self._in_use = 0
        self._changed = asyncio.Condition()

    @property
    def in_use(self) -> int:
        return self._in_use

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: self._in_use < int(self.limit))
            self._in_use += 1
        try:
            yield
        finally:
            async with self._changed:
                self._in_use -= 1
                self._changed.notify_all()

    def grow(self) -> None:
        if self.adaptive and self.limit < self.ceiling:
            self.limit = min(float(self.ceiling), self.limit + 1.0 / self.limit)

    def shrink(self) -> None:
        # Holders above the new limit finish their batch; no new one starts until the count drops.
        if self.adaptive:
            self.limit = max(1.0, self.limit / 2)


@dataclass
class PacerStats:
    waited_for_quota: float = 0.0
    pauses: int = 0


class Pacer:
    """What every sender asks before each API call."""

    def __init__(
        self,
        *,
        rpm: int | None = None,
        tpm: int | None = None,
        window_seconds: float = 60.0,
        concurrency: int = 1,
        max_concurrency: int = 8,
        adaptive: bool = False,
    ) -> None:
        self.requests = TokenBucket(rpm, window_seconds) if rpm else None
        self.tokens = TokenBucket(tpm, window_seconds) if tpm else None
        self.limiter = AdaptiveLimiter(concurrency, max_concurrency, adaptive)
        self.stats = PacerStats()
        self._paused_until = 0.0
        self._gate = asyncio.Lock()  # one sender at a time checks and takes from the buckets

    async def wait_turn(self, requests: int, tokens: int) -> None:
        """Wait until a global pause is over and the quota has room, then take from it."""
        await self._wait_for_quota(requests, tokens)

    async def _wait_for_quota(self, requests: int, tokens: int) -> None:
        async with self._gate:
            while True:
                now = time.monotonic()
                wait = max(
                    self._paused_until - now,
                    self.requests.wait_time(requests) if self.requests else 0.0,
                    self.tokens.wait_time(tokens) if self.tokens else 0.0,
                )
                if wait <= 0:
                    break
                self.stats.waited_for_quota += wait
                await asyncio.sleep(wait)
            if self.requests:
                self.requests.take(requests)
            if self.tokens:
                self.tokens.take(tokens)

    def paused_for(self) -> float:
        return max(0.0, self._paused_until - time.monotonic())

    def rate_limited(self, pause_seconds: float) -> None:
        """A 429: every sender waits `pause_seconds` from now, and fewer batches go at once."""
        until = time.monotonic() + pause_seconds
        if until > self._paused_until:
            self._paused_until = until
            self.stats.pauses += 1
        for bucket in (self.requests, self.tokens):
            if bucket:
                bucket.drain()
        self.limiter.shrink()

    def succeeded(self) -> None:
        self.limiter.grow()
