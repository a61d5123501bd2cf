"""Pacing shared by every batch of a run: what each call waits for before it is sent.

Design (what Google states is taken as given; nothing is inferred that only one simulator rewards):

1. Quotas count per window of EMBEDDING_QUOTA_WINDOW seconds (60: Google's quotas are per minute,
   plus per day). The pacer keeps a log of its calls and lets a call through only when, for every
   limit it knows, what the log holds in the last window plus the call fits (`quotas.SendLog`).
   That one rule is exact for a sliding window and safe for fixed windows and token buckets: a
   pattern that never has more than L in any W seconds never puts more than L in a fixed window of
   W, nor drains a bucket of L refilled at L/W.
2. A call counts from when its request has left, which the embedder reports (the SDK takes tens of
   milliseconds to build a request of 100 texts), so a call is let through a little before its room
   frees (3/4 of the shortest such delay of late). The next call is let through once the last one
   has left (LEAVE_WAIT at most; not at all once an answer came for a request never reported leaving),
   so that two requests are never built at once on the one event loop, each delaying the other's
   leaving.
3. A limit is given (EMBEDDING_RPM / EMBEDDING_TPM) or learned from a 429: its QuotaFailure names the
   quota (requests or tokens) and its limit (quotaValue). Google does not say whether a batch is one
   request or one per text: a request limit counts texts when the calls in the last window could not
   have reached it (under 3/4 of it), else calls.
4. A 429 that names no limit (no quotaValue; or a bare 429 from a proxy or Vertex, which names no
   quota either) teaches a bracket, in tokens for a token quota and else in texts (which serve a
   per-call limit too): the window held `used` when a call was refused, so the limit is below
   `used + call`. The pacer paces halfway into the
   bracket and, after a whole window at that level with a window filled to within a call of it and
   no 429, halfway up (`quotas.Limit`).
5. Margins, because the server counts a call a moment after it leaves (on a loaded machine, tens of
   milliseconds) and token counts are local estimates: a call counts for the window stretched by
   `stretch` (1%) and `skew` (25 ms), and 1% of a token quota is kept free. All double (up to 8%,
   200 ms and 16%) each time the server refuses a call that the pacer let through under a limit the
   server named, or under a level that had run a window quiet: the margins were too small for this
   machine or server. Once they are at their widest, such a 429 means someone else spends the same
   quota (another worker): this run's `share` of every limit drops by 30%, and grows back by 5% of
   the limit after every two windows without a 429.
6. Waits: a 429 pauses every sender for its RetryInfo (the retry policy calls `pause`); without
   RetryInfo, `retry_hint` is when the log says the refused call fits under what was just learned.
7. Concurrency (`lanes`, with auto): until a limit is known, one call in flight (and one lane more,
   which claims and writes meanwhile), one more per two windows without a 429 while all were in
   flight, so that the first 429 finds few calls to refuse with it (EMBEDDING_RPM / EMBEDDING_TPM
   make limits known from the start). Once limits are known, Little's law: the calls a second they
   allow times the answers' latency and a quarter (at least two lanes, so that a backoff or a slow
   answer doesn't leave the quota idle; more would only queue here).
8. Batch size (auto): `batch_size.BatchSizer`: 100 texts a call unless a known quota can't take that.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from contextlib import suppress
from dataclasses import dataclass
from typing import Literal

from modules.engine.batch_size import TOKEN_SLACK, BatchSizer
from modules.engine.lanes import AdaptiveLimiter
from modules.engine.quotas import UNIT_NAMES, Limit, Send, SendLog, Ticket, Unit
from modules.logs import get_logger

__all__ = ["Pacer", "QuotaHit", "Send", "Ticket"]

log = get_logger(__name__)
STRETCH, MAX_STRETCH = 0.01, 0.08  # a call counts for window * (1 + stretch) + skew from when it left
SKEW, MAX_SKEW = 0.025, 0.2  # seconds: on a loaded machine the server may count a call that long after it left
LEAD_SHARE = 0.75  # a call is let through this share of the shortest recent build time before its room frees
TOKEN_MARGIN, MAX_TOKEN_MARGIN = 0.01, 0.16  # share of a token quota kept free (counts are estimates)
TEXTS_IF_CALLS_BELOW = 0.75  # a request limit counts texts when the window's calls were under this share
_ANSWER_POLL = 1.0  # re-check at least this often while only in-flight calls can free room
LEAVE_WAIT = 0.5  # the longest the next call waits for the last one's request to have left
MIN_SHARE = 0.05  # the least share of a limit this run keeps when others spend the same quota


@dataclass(frozen=True)
class QuotaHit:
    """What a 429 said: which quota (requests or tokens; None: it named none), its limit (quotaValue),
    and when to retry (RetryInfo)."""

    retry_after: float | None
    kind: Literal["requests", "tokens"] | None = None
    limit: int | None = None


@dataclass
class PacerStats:
    waited_for_quota: float = 0.0
    pauses: int = 0
    learned: str = ""  # the limits in force, for logs and benchmarks
    margin_raises: int = 0  # 429s on calls let through under a limit the server named


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
        self.window = window_seconds
        self.stretch = STRETCH
        self.skew = SKEW
        self.share = 1.0  # of every limit, for this run (less when another spends the same quota)
        self.token_margin = TOKEN_MARGIN
        self.limits: dict[Unit, Limit] = {}
        if rpm:  # read as calls until a 429 shows the server counts texts
            self.limits["calls"] = Limit.named("calls", rpm, 0.0)
        if tpm:
            self.limits["tokens"] = Limit.named("tokens", tpm, 0.0)
        self.limiter = AdaptiveLimiter(concurrency, max_concurrency, adaptive)
        self.sizer = BatchSizer(batch_size, max_batch, slow_seconds)
        self.stats = PacerStats()
        self.retry_hint = 0.0  # after a 429 without RetryInfo: seconds until the refused call fits
        self.sends = SendLog()  # the replica of the server's windows: what was sent, when, and what is in flight
        self._paused_until = 0.0
        self._gate = asyncio.Lock()  # one sender at a time checks the quotas and logs its call
        self._answer = asyncio.Event()  # set whenever a call in flight is answered or withdrawn
        self.texts_sent = 0  # all this pacer let through: their ratio sizes calls to a token quota
        self.tokens_sent = 0
        self._last_429 = time.monotonic()
        self._last_growth: float | None = None  # the first send, then the last time a lane was added
        self._latency: float | None = None  # seconds from a request leaving to its answer (smoothed)
        self._leads: deque[float] = deque(maxlen=16)  # seconds from letting a call through to its leaving
        self._unsent: Ticket | None = None  # the last call let through, until its request has left
        self._left = asyncio.Event()
        self._reports_leaving = True  # the embedder reports when a request has left (until shown otherwise)
        self._blind = 1  # calls in flight while no limit is known
        self.limiter.target(self._blind + 1)
        self._share_since = 0.0
        self._fit()

    @property
    def batch_size(self) -> int:
        return self.sizer.size

    @property
    def span(self) -> float:
        """How long a call counts in the replica: the window, stretched, and the skew."""
        return self.window * (1.0 + self.stretch) + self.skew

    def paused_for(self) -> float:
        return max(0.0, self._paused_until - time.monotonic())

    def room(self, unit: Unit) -> float:
        """What the pacer lets a window hold of `unit` (0 when it knows no limit for it)."""
        limit = self.limits.get(unit)
        if limit is None:
            return 0.0
        return limit.level * self.share * (1.0 - (self.token_margin if unit == "tokens" else 0.0))

    async def wait_turn(self, send: Send) -> Ticket:
        """Wait until a global pause is over and every known quota has room for `send`, then log it."""
        async with self._gate:
            started = time.monotonic()
            if self._unsent is not None and self._reports_leaving:
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._left.wait(), timeout=LEAVE_WAIT)
            while True:
                now = time.monotonic()
                self.relax(now)
                quota_wait, blocked = self._quota_wait(send, now, press=True)
                blocked = blocked or self._blind_wait()
                pause = self._paused_until - now
                if pause <= 0 and quota_wait <= 0 and not blocked:
                    break
                self._answer.clear()
                if blocked and pause <= 0:
                    with suppress(TimeoutError):
                        await asyncio.wait_for(self._answer.wait(), timeout=max(quota_wait, _ANSWER_POLL))
                else:
                    await asyncio.sleep(max(pause, quota_wait))
            self.stats.waited_for_quota += now - started
            self._note_peaks(send, now)
            ticket = Ticket(send, now)
            self._unsent = ticket
            self._left.clear()
            if self._last_growth is None:
                self._last_growth = now
            self.sends.add(ticket)
            self.texts_sent += send.texts
            self.tokens_sent += send.tokens
            self.sends.trim(now, self.window * (1.0 + MAX_STRETCH) + MAX_SKEW + 1.0)
            return ticket

    def sent(self, ticket: Ticket) -> None:
        """The call's request is leaving now: it counts from now (the server counts it on arrival)."""
        now = time.monotonic()
        if now > ticket.sent_at:
            ticket.sent_at = now
            self._leads.append(now - ticket.admitted_at)
        self._gone(ticket)

    def _ended(self, ticket: Ticket) -> None:
        """The server answered the call (vectors or a 429). One answered without the embedder having
        reported it leaving means the embedder can't tell (another HTTP stack): stop waiting for that."""
        if ticket.sent_at == ticket.admitted_at:
            self._reports_leaving = False
        self._gone(ticket)

    def _gone(self, ticket: Ticket) -> None:
        """The call has left (or ended): the next may be let through."""
        if ticket is self._unsent:
            self._unsent = None
            self._left.set()

    def succeeded(self, ticket: Ticket, latency: float) -> None:
        now = time.monotonic()
        self._ended(ticket)
        if self.sends.answered(ticket, now):
            self._answer.set()
        self.sizer.succeeded(latency)
        self._fit()  # tokens per text move with what was sent
        self._latency = latency if self._latency is None else 0.8 * self._latency + 0.2 * latency
        if self.limits:
            self.limiter.target(self.lanes_needed(self._latency))
        elif self.sends.in_flight_count() + 1 >= self._blind and now - max(
            self._last_429, self._last_growth or now
        ) >= (2 * self.span):
            # No limit known yet, and two windows without a 429 (a fixed window may take two to fill)
            # while every call allowed was in flight: answers hold the run back. One more call in
            # flight at most that often, so that the first 429 finds few calls to refuse with it.
            self._blind += 1
            self.limiter.target(self._blind + 1)
            self._last_growth = now

    def failed(self, ticket: Ticket, *, charged: bool) -> None:
        """A call failed without a 429. A server error answer (5xx) did no work and is taken as not
        charged; a timeout or a broken connection may have been, so it stays counted."""
        self._gone(ticket)  # it may never have left (a refused connection): no conclusion on reports
        changed = self.sends.answered(ticket, time.monotonic()) if charged else self.sends.withdraw(ticket)
        if changed:
            self._answer.set()

    def pause(self, seconds: float) -> None:
        """Every sender waits `seconds` from now (after a 429: the time the server asked, or the hint)."""
        until = time.monotonic() + seconds
        if until > self._paused_until:
            self._paused_until = until
            self.stats.pauses += 1

    def rate_limited(self, ticket: Ticket, hit: QuotaHit) -> None:
        """A 429: learn the limit it names (or bracket it), and set `retry_hint`. The pause itself
        comes from the retry policy (`pause`)."""
        now = time.monotonic()
        self._ended(ticket)
        if self.sends.withdraw(ticket):  # a refused call costs no quota
            self._answer.set()
        self._last_429 = now
        overrun: set[Unit] = set()  # limits this 429 shows the margins too small for
        named_overrun = False
        for unit in self._suspects(ticket, hit):
            known = self.limits.get(unit)
            if known is not None and known.exact and (hit.limit is None or known.level == hit.limit):
                if ticket.sent_at >= known.since:  # a limit we knew, and kept: the margins were too small
                    overrun.add(unit)
                    named_overrun = True
            elif hit.limit is not None:
                self.limits[unit] = Limit.named(unit, hit.limit, now)
                log.info("📏 クォータを学習: %gs あたり %d %s", self.window, hit.limit, UNIT_NAMES[unit])
            else:
                used = self.sends.used(unit, ticket.sent_at, self.span)
                limit = self.limits.setdefault(unit, Limit(unit, 0.0, False, now))
                if not limit.refused(used, ticket.send.units(unit), now, self._fill(unit)):
                    overrun.add(unit)  # refused below a level that ran quiet: the margins may be too small
        if overrun:
            self._widen(overrun, shared=named_overrun and self.stretch >= MAX_STRETCH, now=now)
        self._fit()
        wait, blocked = self._quota_wait(ticket.send, now, press=False)
        self.retry_hint = self.window / 10 if blocked else wait

    def _widen(self, overrun: set[Unit], *, shared: bool, now: float) -> None:
        """The server refused what the pacer let through: double the margins; once they are at their
        widest and a named limit is still overrun, someone else spends the quota: take less of it."""
        if shared:
            self.share = max(MIN_SHARE, self.share * 0.7)
            self._share_since = now
            log.info("🤝 同じクォータを使う送信者が他にもいるようです: 上限の %.0f%% で送ります", self.share * 100)
            return
        self.stretch = min(MAX_STRETCH, self.stretch * 2)
        self.skew = min(MAX_SKEW, self.skew * 2)
        if "tokens" in overrun:
            self.token_margin = min(MAX_TOKEN_MARGIN, self.token_margin * 2)
        self.stats.margin_raises += 1
        log.info(
            "📏 余裕を広げます: 窓 +%.0f%% +%.0fms、トークン枠の %.0f%%",
            self.stretch * 100,
            self.skew * 1000,
            self.token_margin * 100,
        )

    def _suspects(self, ticket: Ticket, hit: QuotaHit) -> tuple[Unit, ...]:
        """The units the 429 may be about. Without the limit there is no telling calls from texts, and
        without the quota's name none from tokens either: a bracket in texts serves them all (a limit
        of c calls of n texts is searched as c*n texts, a token limit as the texts that carry that
        many tokens), where brackets in two units would each hold the other back."""
        if hit.kind == "tokens":
            return ("tokens",)
        if hit.kind is None or hit.limit is None:
            return ("texts",)
        calls = self.sends.used("calls", ticket.sent_at, self.span) + ticket.send.calls
        unit: Unit = "texts" if calls <= hit.limit * TEXTS_IF_CALLS_BELOW and ticket.send.texts > 1 else "calls"
        other: Unit = "calls" if unit == "texts" else "texts"
        mistaken = self.limits.get(other)
        if mistaken is not None and mistaken.exact and mistaken.level == hit.limit:
            del self.limits[other]  # the same request limit, read in the other unit before
        return (unit,)

    def _quota_wait(self, send: Send, now: float, *, press: bool) -> tuple[float, bool]:
        """The longest any known limit makes `send` wait, and whether only calls in flight hold it. A
        call leaves a while after it is let through (the SDK builds its request): it is let through
        when its room will be there by then (the shortest of the recent such whiles)."""
        longest, blocked = 0.0, False
        leaves_at = now + self._lead()
        for unit, limit in self.limits.items():
            wait = self.sends.wait(unit, send.units(unit), self.room(unit), leaves_at, self.span)
            if wait is None or wait > 0:
                limit.pressed = limit.pressed or press
            if wait is None:
                blocked = True
            else:
                longest = max(longest, wait)
        return longest, blocked

    def _blind_wait(self) -> bool:
        """Before any limit is known, at most `_blind` calls are in flight (the lanes, one more, claim
        and write meanwhile): a 429 then finds few calls to refuse with it."""
        return self.limiter.adaptive and not self.limits and self.sends.in_flight_count() >= self._blind

    def lanes_needed(self, latency: float) -> int:
        """Little's law: the calls a second the known limits allow, times how long a lane takes per call
        (its answer, and a quarter more for claiming, checking and writing); at least two, so that a
        retry's backoff or a slow answer never leaves the quota idle (the second waits here)."""
        size = max(1, self.batch_size)
        per_call: dict[Unit, float] = {
            "calls": 1.0,
            "texts": float(size),
            "tokens": size * (self.tokens_sent / self.texts_sent if self.texts_sent else 500.0),
        }
        rate = min((self.room(unit) / self.span / per_call[unit] for unit in self.limits), default=0.0)
        return max(2, math.ceil(rate * 1.25 * latency))

    def _fill(self, unit: Unit) -> float:
        """How full of its limit's level a window gets: the margin kept free, and the token slack the
        batch sizer leaves for the spread of calls' sizes."""
        margin = self.token_margin if unit == "tokens" else 0.0
        return self.share * (1.0 - margin) / (1.0 + (TOKEN_SLACK if unit == "tokens" else 0.0))

    def _lead(self) -> float:
        """How long before its room frees a call may be let through: it leaves that much later."""
        return LEAD_SHARE * min(self._leads) if self._leads else 0.0

    def _note_peaks(self, send: Send, now: float) -> None:
        """What the window will hold with this call, for the limits still being searched."""
        leaves_at = now + self._lead()
        for unit, limit in self.limits.items():
            if not limit.exact:
                limit.let_through(float(self.sends.used(unit, leaves_at, self.span) + send.units(unit)))

    def relax(self, now: float) -> None:
        """A bracketed limit that ran a whole window at the quota without a 429 tries higher; a share
        below the whole grows back after two windows without a 429."""
        moved = False
        if self.share < 1.0 and now - max(self._last_429, self._share_since) >= 2 * self.span:
            self.share, self._share_since, moved = min(1.0, self.share + 0.05), now, True
        for unit, limit in self.limits.items():
            if now - self._last_429 >= self.span and limit.quiet(now, self.span, self._fill(unit)):
                moved = True
        if moved:
            self._fit()

    def _fit(self) -> None:
        tokens_per_text = self.tokens_sent / self.texts_sent if self.texts_sent else 500.0
        rooms = {unit: self.room(unit) for unit in self.limits}
        self.sizer.fit(self.limits, rooms, tokens_per_text)
        self.stats.learned = ", ".join(
            f"{limit.level:.0f} {unit}{'' if limit.exact else '?'} / {self.window:g}s"
            for unit, limit in self.limits.items()
        )
