"""Pacing shared by every batch of a run: a replica of the server's quotas, a global pause on 429,
adaptive concurrency, and the batch size when EMBEDDING_BATCH_SIZE=auto.

A quota is "at most `limit` units in any `window` seconds". The pacer keeps its own log of what it
sent and admits a call only when the log says the server's window has room for it: a sliding-window
replica. That is exact for a sliding-window quota, and also safe for a fixed-window or token-bucket
one (a pattern that keeps every window of W seconds under the limit never overruns those either).
A call counts for one window from when it was sent; the learned window absorbs the moment between
sending and the server counting it, since it is measured from our send times too.

The quota is either given (EMBEDDING_RPM / EMBEDDING_TPM over EMBEDDING_QUOTA_WINDOW) or learned.
A 429 from Gemini names the quota it hit (QuotaFailure: requests or input tokens, and the limit)
and when room frees (RetryInfo). Walking back through the log to where the sends add up to what the
server counted tells which send frees that room, hence the window (see `windows.py`).

Google does not document whether a batch call counts as one request or as one per text. The pacer
first assumes one per call (the optimistic reading, under which big batches are free); a 429 on the
request quota that the calls sent cannot explain but the texts sent can proves texts are counted.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from collections.abc import Set as AbstractSet
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Literal

from modules.engine.windows import WindowVotes, window_interval
from modules.logs import get_logger

Unit = Literal["calls", "texts", "tokens"]
_UNIT_NAMES: dict[Unit, str] = {"calls": "リクエスト", "texts": "テキスト", "tokens": "トークン"}
log = get_logger(__name__)
_LOG_SECONDS = 300.0  # how far back sends are remembered, to infer a quota window (minutes are typical)
_TOKEN_MARGIN = 0.02  # token counts are local estimates: keep this share of a token quota free
_ANSWER_POLL = 1.0  # re-check at least this often while only in-flight calls can free room


@dataclass(frozen=True, slots=True)
class Send:
    """What one API call costs, in each unit a quota may count."""

    calls: int
    texts: int
    tokens: int

    def units(self, unit: Unit) -> int:
        value: int = getattr(self, unit)  # the unit names are the field names
        return value


@dataclass(frozen=True)
class QuotaHit:
    """What a 429 said: which quota (requests or tokens), its limit, and when to retry."""

    retry_after: float | None
    kind: Literal["requests", "tokens"] | None = None
    limit: int | None = None


@dataclass(eq=False, slots=True)
class Ticket:
    """One call as the pacer logged it: sent at `sent_at`, answered at `answered_at` (None in flight)."""

    send: Send
    sent_at: float
    answered_at: float | None = None


@dataclass
class Quota:
    """The pacer's model of one server quota: `limit` units per `window` seconds, `margin` kept free."""

    unit: Unit
    limit: int
    window: float
    margin: float = 0.0
    since: float = 0.0  # when this model took effect: calls sent before it were not admitted by it

    @property
    def room(self) -> float:
        return self.limit * (1.0 - self.margin)

    def wait_time(
        self, amount: int, sent: Sequence[Ticket], in_flight: AbstractSet[Ticket], now: float
    ) -> float | None:
        """Seconds until the window has room for `amount` more (0: now). None when only calls still
        in flight hold the room: their answers must come first. A call bigger than the whole quota
        goes alone, once nothing else is counted."""
        counted: list[Ticket] = []  # sends still inside the window, newest first
        for ticket in reversed(sent):
            if ticket.sent_at <= now - self.window:
                break
            counted.append(ticket)
        stuck = [t for t in in_flight if t.sent_at <= now - self.window]  # slow calls are still counted
        used = sum(t.send.units(self.unit) for t in counted) + sum(t.send.units(self.unit) for t in stuck)
        if used + amount <= self.room or used == 0:
            return 0.0
        excess = used + amount - self.room
        for ticket in reversed(counted):  # oldest first: the first to leave the window
            excess -= ticket.send.units(self.unit)
            if excess <= 0:
                return ticket.sent_at + self.window - now
        return None


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
    """EMBEDDING_BATCH_SIZE=auto: start big (fewer calls never cost more quota), shrink when answers
    slow and grow back while they are fast, and keep each call a small share of any quota that counts
    texts or tokens: near the limit a call waits until its whole size fits, so smaller calls fill the
    window more finely and a refused call costs less."""

    TARGET_SHARE = 0.025  # at most this share of a text or token quota in one call

    def __init__(self, fixed: int | None, maximum: int, slow_seconds: float) -> None:
        self.fixed = fixed
        self.maximum = maximum
        self.slow_seconds = slow_seconds
        self.size = fixed if fixed is not None else maximum

    def succeeded(self, latency: float) -> None:
        if self.fixed is not None:
            return
        if latency > self.slow_seconds:
            self.size = max(1, int(self.size * 0.7))
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
    """What every sender asks before each API call (`wait_turn`), and tells after it."""

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
        self.quotas: dict[Unit, Quota] = {}
        # A given quota's window is stretched by 1%: the server counts a call a moment after we send it.
        if rpm:
            self.quotas["calls"] = Quota("calls", rpm, window_seconds * 1.01)
        if tpm:
            self.quotas["tokens"] = Quota("tokens", tpm, window_seconds * 1.01, _TOKEN_MARGIN)
        self.limiter = AdaptiveLimiter(concurrency, max_concurrency, adaptive)
        self.sizer = BatchSizer(batch_size, max_batch, slow_seconds)
        self.stats = PacerStats()
        self._votes: dict[Unit, WindowVotes] = {}
        self._paused_until = 0.0
        self._gate = asyncio.Lock()  # one sender at a time checks the quotas and logs its call
        self._answer = asyncio.Event()  # set whenever a call in flight is answered or withdrawn
        self._sent: deque[Ticket] = deque()  # every call, in the order sent (to infer windows)
        self._in_flight: set[Ticket] = set()
        self._last_429 = time.monotonic()

    @property
    def batch_size(self) -> int:
        return self.sizer.size

    def paused_for(self) -> float:
        return max(0.0, self._paused_until - time.monotonic())

    async def wait_turn(self, send: Send) -> Ticket:
        """Wait until a global pause is over and every quota has room for `send`, then log it as sent."""
        async with self._gate:
            started = time.monotonic()
            while True:
                now = time.monotonic()
                self._relax_windows(now)
                waits = [self._paused_until - now]
                blocked_by_flight = False
                for unit, quota in self.quotas.items():
                    wait = quota.wait_time(send.units(unit), self._sent, self._in_flight, now)
                    if wait is None:
                        blocked_by_flight = True
                    else:
                        waits.append(wait)
                wait = max(waits)
                if wait <= 0 and not blocked_by_flight:
                    break
                self._answer.clear()
                if blocked_by_flight:
                    with suppress(TimeoutError):
                        await asyncio.wait_for(self._answer.wait(), timeout=max(wait, _ANSWER_POLL))
                else:
                    await asyncio.sleep(wait)
            now = time.monotonic()
            self.stats.waited_for_quota += now - started
            ticket = Ticket(send, now)
            self._sent.append(ticket)
            self._in_flight.add(ticket)
            self._trim(now)
            return ticket

    def succeeded(self, ticket: Ticket, latency: float) -> None:
        self._answered_now(ticket)
        self.limiter.grow()
        self.sizer.succeeded(latency)

    def failed(self, ticket: Ticket, *, charged: bool) -> None:
        """A call failed without a 429. A server error answer (5xx) did no work and is taken as not
        charged; a timeout or a broken connection may have been, so it stays counted."""
        if charged:
            self._answered_now(ticket)
        else:
            self._withdraw(ticket)

    def pause(self, seconds: float) -> None:
        """Every sender waits `seconds` from now (after a 429: the time the server asked, or a backoff)."""
        until = time.monotonic() + seconds
        if until > self._paused_until:
            self._paused_until = until
            self.stats.pauses += 1

    def rate_limited(self, ticket: Ticket, hit: QuotaHit) -> None:
        """A 429: the quota it names is learned so that later calls stay under it. Without details,
        fewer batches go at once instead. (The pause itself comes from the retry policy: `pause`.)"""
        self._withdraw(ticket)  # a refused call costs no quota
        now = time.monotonic()
        self._last_429 = now
        if hit.kind is None or not hit.limit:
            self.limiter.shrink()
            return
        send = ticket.send
        unit: Unit = "tokens" if hit.kind == "tokens" else self._request_unit_after(send, hit.limit, ticket.sent_at)
        if unit != "calls":  # a call-counting quota is the same for any batch size
            self.sizer.rate_limited(send.texts, send.units(unit) / hit.limit)
        known = self.quotas.get(unit)
        votes = self._votes.setdefault(unit, WindowVotes())
        # The window our replica let this call through with, if it did: that window was too short.
        in_use = known.window if known and known.limit == hit.limit and ticket.sent_at >= known.since else None
        if in_use is not None:
            votes.refused_at(in_use)
        self._add_window_evidence(unit, votes, hit.limit, hit.retry_after, ticket, in_use or 0.0, now)
        window = votes.pace() or (known.window if known else None)
        if window is None:  # no RetryInfo yet to infer the window from: the pause, and fewer at once
            self.limiter.shrink()
            return
        margin = known.margin if known else (_TOKEN_MARGIN if unit == "tokens" else 0.0)
        if known is None or known.window != window or known.limit != hit.limit:
            self.quotas[unit] = Quota(unit, hit.limit, window, margin, since=now)
            if known is None or known.limit != hit.limit:
                log.info("📏 クォータを学習: %.2f秒あたり %d %s", window, hit.limit, _UNIT_NAMES[unit])
        self.stats.learned = f"{hit.limit} {unit} / {window:.2f}s"

    def _add_window_evidence(
        self,
        unit: Unit,
        votes: WindowVotes,
        limit: int,
        retry_after: float | None,
        ticket: Ticket,
        in_use: float,
        now: float,
    ) -> None:
        interval = window_interval(
            [(t.sent_at, t.answered_at, t.send.units(unit)) for t in self._sent if t.sent_at <= ticket.sent_at],
            counted_before=limit - ticket.send.units(unit),
            frees_at=now + (retry_after or 0.0),
            now=now,
            tolerance=0.05 if unit == "tokens" else 0.0,
        )
        if interval is None:
            return
        if retry_after is None:
            # Without RetryInfo we only know the send that would free the room is still counted: the
            # window is longer than the time since it was sent, and than the window in use if that
            # let the call through. Guess half as long again, and send fewer at once while guessing.
            votes.refused_at(max(interval[1], in_use) * 1.5)
            self.limiter.shrink()
        else:
            votes.add(interval)

    def _relax_windows(self, now: float) -> None:
        """After a quiet spell, try a shorter window (a window too long never shows itself)."""
        for unit, quota in self.quotas.items():
            votes = self._votes.get(unit)
            if votes is not None and now - self._last_429 >= votes.quiet_windows() * quota.window:
                quota.window, quota.since = votes.relaxed(quota.window), now
                self._last_429 = now  # one step per quiet spell

    def _request_unit_after(self, send: Send, limit: int, sent_at: float) -> Unit:
        """Decide whether the request quota counts calls or texts: if all the calls we sent before
        this one can't reach its limit but the texts can, the server counts texts."""
        if self.request_unit == "calls" and send.texts > 1:
            earlier = [t.send for t in self._sent if t.sent_at <= sent_at]
            calls_sent = sum(s.calls for s in earlier)  # the refused call is not among them
            texts_sent = sum(s.texts for s in earlier)
            if calls_sent + send.calls <= limit < texts_sent + send.texts:
                self.request_unit = "texts"
                self.quotas.pop("calls", None)
                self._votes.pop("calls", None)
        return self.request_unit

    def _answered_now(self, ticket: Ticket) -> None:
        if ticket in self._in_flight:
            self._in_flight.discard(ticket)
            ticket.answered_at = time.monotonic()
            self._answer.set()

    def _withdraw(self, ticket: Ticket) -> None:
        if ticket in self._in_flight:
            self._in_flight.discard(ticket)
            with suppress(ValueError):
                self._sent.remove(ticket)
            self._answer.set()

    def _trim(self, now: float) -> None:
        while self._sent and self._sent[0].sent_at < now - _LOG_SECONDS and self._sent[0] not in self._in_flight:
            self._sent.popleft()
