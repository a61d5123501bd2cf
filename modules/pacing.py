"""Pacing shared by every batch of a run: quota buckets, a global pause on 429, adaptive concurrency,
and the batch size when EMBEDDING_BATCH_SIZE=auto.

The quota is either given (EMBEDDING_RPM / EMBEDDING_TPM, per minute) or learned. A 429 from Gemini
names the quota it hit (QuotaFailure: requests or input tokens, and the limit) and when room frees
(RetryInfo). From the sends of the last minutes the pacer then infers the window those limits apply
to, and paces every later call so that the quota is used to the full without being crossed.

Google does not document whether a batch call counts as one request or as one per text. The pacer
first assumes one per call (the optimistic reading, under which big batches are free); a 429 on the
request quota that the call-counting bucket did not predict proves texts are counted, and it switches.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

Unit = Literal["calls", "texts", "tokens"]
_LOG_SECONDS = 600.0  # how far back sends are remembered, to infer a quota window
_SAFETY = 0.99  # pace at 99% of a learned rate: timing noise must not turn into 429s


@dataclass(frozen=True)
class Send:
    """What one API call cost, in each unit a quota may count."""

    calls: int
    texts: int
    tokens: int

    def units(self, unit: Unit) -> int:
        return {"calls": self.calls, "texts": self.texts, "tokens": self.tokens}[unit]


@dataclass(frozen=True)
class QuotaHit:
    """What a 429 said: which quota (requests or tokens), its limit, and when to retry."""

    retry_after: float | None
    kind: Literal["requests", "tokens"] | None = None
    limit: int | None = None


class TokenBucket:
    """A refilling allowance of `rate` units per `period` seconds, holding at most `capacity`."""

    def __init__(
        self, rate: float, period: float = 60.0, capacity: float | None = None, quota: int | None = None
    ) -> None:
        self.limit = rate
        self.quota = quota if quota is not None else int(rate)  # the server's limit this bucket serves
        self.period = period
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

    def level(self) -> float:
        self._refill(time.monotonic())
        return self._level

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


class BatchSizer:
    """EMBEDDING_BATCH_SIZE=auto: big batches (fewer calls never cost more quota), grown while calls
    succeed fast, cut when answers slow, and kept to a small share of any quota that counts texts or
    tokens: a call that is a large share of its window makes the pacing coarse (one call's worth of
    the quota must stay free), so under such a quota many small calls get closer to the limit."""

    TARGET_SHARE = 0.025  # at most this share of a text or token quota in one call

    def __init__(self, fixed: int | None, maximum: int, slow_seconds: float) -> None:
        self.fixed = fixed
        self.maximum = maximum
        self.slow_seconds = slow_seconds
        self.size = fixed if fixed is not None else min(20, maximum)

    def succeeded(self, latency: float) -> None:
        if self.fixed is not None:
            return
        if latency > self.slow_seconds:
            self.maximum = max(1, int(self.size * 0.7))
            self.size = self.maximum
        else:
            self.size = min(self.maximum, self.size + max(1, self.size // 4))

    def rate_limited(self, texts: int, share_of_limit: float) -> None:
        """A call of `texts` texts was refused; it was `share_of_limit` of a quota counted in texts or
        tokens. Scale from that call's own size, so that several refusals in a row don't compound."""
        if self.fixed is None and share_of_limit > self.TARGET_SHARE:
            self.maximum = min(self.maximum, max(1, int(texts * self.TARGET_SHARE / share_of_limit)))
            self.size = min(self.size, self.maximum)


@dataclass
class PacerStats:
    waited_for_quota: float = 0.0
    pauses: int = 0
    learned: str = ""


class Pacer:
    """What every sender asks before each API call, and tells after it."""

    def __init__(
        self,
        *,
        rpm: int | None = None,
        tpm: int | None = None,
        window_seconds: float = 60.0,
        concurrency: int = 1,
        max_concurrency: int = 8,
        adaptive: bool = False,
        batch_size: int | None = 10,
        max_batch: int = 100,
        slow_seconds: float = 30.0,
    ) -> None:
        self.request_unit: Unit = "calls"
        self.buckets: dict[Unit, TokenBucket] = {}
        if rpm:
            self.buckets["calls"] = TokenBucket(rpm, window_seconds)
        if tpm:
            self.buckets["tokens"] = TokenBucket(tpm, window_seconds)
        self.limiter = AdaptiveLimiter(concurrency, max_concurrency, adaptive)
        self.sizer = BatchSizer(batch_size, max_batch, slow_seconds)
        self.stats = PacerStats()
        self._paused_until = 0.0
        self._gate = asyncio.Lock()  # one sender at a time checks and takes from the buckets
        self._sent: deque[tuple[float, Send]] = deque()

    @property
    def batch_size(self) -> int:
        return self.sizer.size

    async def wait_turn(self, send: Send) -> None:
        """Wait until a global pause is over and every quota bucket has room, then take from them."""
        async with self._gate:
            while True:
                wait = max(
                    [self._paused_until - time.monotonic()]
                    + [bucket.wait_time(send.units(unit)) for unit, bucket in self.buckets.items()]
                )
                if wait <= 0:
                    break
                self.stats.waited_for_quota += wait
                await asyncio.sleep(wait)
            for unit, bucket in self.buckets.items():
                bucket.take(send.units(unit))
            # The server counts a call when it accepts it, not when the answer comes back: log it now
            # (a 429 takes it out again, since a refused call costs no quota).
            now = time.monotonic()
            self._sent.append((now, send))
            while self._sent and self._sent[0][0] < now - _LOG_SECONDS:
                self._sent.popleft()

    def paused_for(self) -> float:
        return max(0.0, self._paused_until - time.monotonic())

    def succeeded(self, send: Send, latency: float) -> None:
        self.limiter.grow()
        self.sizer.succeeded(latency)

    def rate_limited(self, pause_seconds: float, hit: QuotaHit, send: Send) -> None:
        """A 429: every sender waits `pause_seconds` from now, fewer batches go at once, and the
        quota it names is learned so that later calls stay under it."""
        self._forget(send)
        now = time.monotonic()
        if now + pause_seconds > self._paused_until:
            self._paused_until = now + pause_seconds
            self.stats.pauses += 1
        if hit.kind is None or not hit.limit:
            # Nothing learned to pace by: fewer batches at once is the only lever left.
            self.limiter.shrink()
            for bucket in self.buckets.values():
                bucket.drain()
            return
        unit: Unit = "tokens" if hit.kind == "tokens" else self._request_unit_after(send, hit.limit, now)
        frees_at = now + (hit.retry_after or pause_seconds)
        window = self._infer_window(unit, hit.limit - send.units(unit), frees_at)
        if window is None and unit == "calls" and send.texts > 1:
            # Our calls can't add up to what the server counted, but our texts may: it counts texts.
            by_texts = self._infer_window("texts", hit.limit - send.texts, frees_at)
            if by_texts is not None:
                unit, window, self.request_unit = "texts", by_texts, "texts"
                self.buckets.pop("calls", None)
        one_call = float(send.units(unit))
        if unit != "calls":  # a call-counting quota is the same for any batch size
            self.sizer.rate_limited(send.texts, send.units(unit) / hit.limit)
            one_call *= min(1.0, self.sizer.size / max(1, send.texts))  # the calls to come are this size
        current = self.buckets.get(unit)
        period = window / _SAFETY if window else (current.period if current else None)
        if period is None:  # nothing to go on yet: the pause alone, until a later 429 tells more
            return
        if current is None or abs(current.period - period) / period > 0.05 or current.quota != hit.limit:
            # A small capacity spreads calls evenly over the window: a sliding-window quota then holds
            # exactly `limit` at every moment, where bursts would overrun it after every pause.
            # And the rate leaves one call's worth of room, so that however the calls fall, no window
            # ever holds more than the limit.
            rate = max(hit.limit * 0.5, hit.limit - one_call)
            capacity = max(one_call, hit.limit * 0.1)
            self.buckets[unit] = TokenBucket(rate, period, capacity, quota=hit.limit)
            self.stats.learned = f"{hit.limit} {unit} / {period:.1f}s"
        self.buckets[unit].drain()

    def _forget(self, send: Send) -> None:
        for index in range(len(self._sent) - 1, -1, -1):
            if self._sent[index][1] is send:
                del self._sent[index]
                return

    def _request_unit_after(self, send: Send, limit: int, now: float) -> Unit:
        """Decide whether the request quota counts calls or texts. If the calls sent within the quota's
        window stay well under its limit while the texts sent reach it, the server counts texts."""
        if self.request_unit == "calls" and send.texts > 1:
            calls = self.buckets.get("calls")
            window = calls.period if calls else None
            if window:
                recent = [sent for at, sent in self._sent if at >= now - window]
                calls_sent = sum(x.calls for x in recent) + send.calls
                texts_sent = sum(x.texts for x in recent) + send.texts
                if calls_sent < 0.5 * limit and texts_sent >= 0.8 * limit:
                    self.request_unit = "texts"
                    del self.buckets["calls"]
        return self.request_unit

    def _infer_window(self, unit: Unit, used_before: int, frees_at: float) -> float | None:
        """The window W of a sliding quota: walking back through our sends until they add up to what
        the server counted before this call (our token counts are estimates, so take the send where
        the sum comes closest), the oldest of them leaves the window at `frees_at`: W = frees_at - its
        time. None when our log can't explain the count."""
        total = 0
        previous: tuple[int, float] | None = None
        for at, send in reversed(self._sent):
            total += send.units(unit)
            if total >= used_before:
                best = at
                if previous is not None and used_before - previous[0] < total - used_before:
                    best = previous[1]
                window = frees_at - best
                return window if window > 0 else None
            previous = (total, at)
        return None
