"""The pacer's replica of the server's quotas: a log of the calls sent, and the limits it paces by.

A quota is "at most `level` units in any window of W seconds", counted in calls, texts or tokens.
`SendLog.wait` says how long until one more call fits: every call counts from when it was sent for
one window (and for as long as it is in flight: a slow call may still be counted); a call bigger than
the whole quota goes alone, once nothing else is counted.

A `Limit` is exact when the server named it (QuotaFailure's quotaValue) or the user gave it
(EMBEDDING_RPM / EMBEDDING_TPM). A 429 that names no limit gives a bracket instead: the window held
`used` units when a call of `amount` more was refused, so the limit is below `used + amount`
(`high`); a level that ran a whole window at the quota without a 429 is within it (`low`). The pacer
paces by `low` and, after each such window, tries halfway to `high` (`quiet`).
"""

from __future__ import annotations

import math
from collections import deque
from contextlib import suppress
from dataclasses import dataclass
from typing import Literal

Unit = Literal["calls", "texts", "tokens"]
UNIT_NAMES: dict[Unit, str] = {"calls": "リクエスト", "texts": "テキスト", "tokens": "トークン"}


@dataclass(frozen=True, slots=True)
class Send:
    """What one API call costs, in each unit a quota may count."""

    calls: int
    texts: int
    tokens: int

    def units(self, unit: Unit) -> int:
        value: int = getattr(self, unit)  # the unit names are the field names
        return value


@dataclass(eq=False, slots=True)
class Ticket:
    """One call as the pacer logged it: let through at `admitted_at`, sent at `sent_at` (when its
    request left, once known; until then when it was let through), answered at `answered_at` (None
    while in flight)."""

    send: Send
    admitted_at: float
    sent_at: float = 0.0
    answered_at: float | None = None

    def __post_init__(self) -> None:
        self.sent_at = self.sent_at or self.admitted_at


class SendLog:
    """The calls sent (in order) that may still be counted by the server, and those in flight."""

    def __init__(self) -> None:
        self._sent: deque[Ticket] = deque()
        self._in_flight: set[Ticket] = set()

    def add(self, ticket: Ticket) -> None:
        self._sent.append(ticket)
        self._in_flight.add(ticket)

    def answered(self, ticket: Ticket, now: float) -> bool:
        """The call was answered: it stays counted for its window. False if it was not in flight."""
        if ticket not in self._in_flight:
            return False
        self._in_flight.discard(ticket)
        ticket.answered_at = now
        return True

    def withdraw(self, ticket: Ticket) -> bool:
        """The server refused the call or did no work for it: it is not counted. False if not in flight."""
        if ticket not in self._in_flight:
            return False
        self._in_flight.discard(ticket)
        with suppress(ValueError):
            self._sent.remove(ticket)
        return True

    def counted(self, now: float, window: float) -> list[Ticket]:
        """Calls the server may still count at `now`, oldest first: sent in the last window (before
        `now`), or in flight. (A call's send time moves to when its request leaves, so the log is only
        nearly in order; it holds about a window of calls, so it is read whole.)"""
        counted = [
            t for t in self._sent if now - window < t.sent_at <= now or (t.sent_at <= now and t in self._in_flight)
        ]
        return sorted(counted, key=lambda t: t.sent_at)

    def used(self, unit: Unit, now: float, window: float) -> int:
        return sum(t.send.units(unit) for t in self.counted(now, window))

    def wait(self, unit: Unit, amount: int, room: float, now: float, window: float) -> float | None:
        """Seconds until `amount` more units fit `room` (0: now); None when only calls still in flight
        hold the room (their answers must come first)."""
        counted = self.counted(now, window)
        used = sum(t.send.units(unit) for t in counted)
        if used + amount <= room or used == 0:
            return 0.0
        excess = used + amount - room
        for ticket in counted:  # oldest first: the first to leave the window
            excess -= ticket.send.units(unit)
            if excess <= 0:
                return max(0.0, ticket.sent_at + window - now) if ticket.sent_at > now - window else None
        return None

    def in_flight_count(self) -> int:
        return len(self._in_flight)

    def trim(self, now: float, keep: float) -> None:
        """Forget answered calls sent more than `keep` seconds ago."""
        while self._sent and self._sent[0].sent_at < now - keep and self._sent[0] not in self._in_flight:
            self._sent.popleft()

    def __len__(self) -> int:
        return len(self._sent)


@dataclass
class Limit:
    """What the pacer paces one unit by: `level` units per window, since `since`.

    Exact (named by the server or given by the user), or a bracket searched from 429s that named no
    limit: `low` is the most a window held while it ran at the quota without a 429, `high` the least
    the server refused to hold. The search aims a window at the middle of the bracket, until the
    bracket is within COARSE of `low` (every probe above the limit costs a 429 and a call's place in
    its window), then once more after every REPROBE_AFTER quiet windows, down to FINE. A window
    holds `fill` of the level (what the batch sizer's calls make of it): the level aims at
    target / fill."""

    unit: Unit
    level: float
    exact: bool
    since: float
    low: float = 0.0
    high: float = math.inf
    pressed: bool = False  # the replica held a call back for this limit since `since`
    peak: float = 0.0  # the most a window held (with the call let through) since `since`
    calm: int = 0  # quiet windows since the search settled (or last probed)

    COARSE = 0.08  # a bracket this narrow (relative to `low`) is settled for a while
    FINE = 0.01  # and this narrow, for good
    REPROBE_AFTER = 10

    @classmethod
    def named(cls, unit: Unit, value: int, now: float) -> Limit:
        return cls(unit, float(value), True, now)

    def refused(self, used: int, amount: int, now: float, fill: float = 1.0) -> bool:
        """A call of `amount` units was refused while the window held `used`: the limit is below
        `used + amount`, and (the window having been let hold `used`) most likely not below `used`.
        Pace halfway between the last level that ran quiet (else `used`) and that; a call refused
        with nothing else in the window can't pass at its size: half of it then.

        False when the refusal contradicts a level that ran quiet (it came at or below it): the
        pacer's timing margins were too small, or the windows are fixed and a quiet sliding window
        straddled two of them. Either way the refusal stands and that level is forgotten."""
        contradicts = used + amount <= self.low
        self.high = min(self.high, float(used + amount))
        if self.low >= self.high:  # that quiet level was luck (or the server changed): forget it
            self.low = 0.0
        floor = self.low or float(used)
        self.level = max(1.0, ((floor + self.high) / 2 if 0 < floor < self.high else self.high / 2) / fill)
        self.since, self.pressed, self.peak = now, False, 0.0
        return not contradicts

    @property
    def settled(self) -> bool:
        """Exact, or a bracket narrow enough not to search now."""
        return self.exact or self.high - self.low <= max(1.0, self.low * self.COARSE)

    def let_through(self, held: float) -> None:
        """A call was let through, the window then holding `held` with it."""
        self.peak = max(self.peak, held)

    def quiet(self, now: float, window: float, fill: float) -> bool:
        """After a whole window at this level with the quota binding, a window filled to `fill` of the
        level (as full as the calls' sizes let it be, less FINE), and no 429: what the window held at
        most is within the limit (`low`); aim halfway to `high`. True when the level moved."""
        if self.exact or not self.pressed or now - self.since < window:
            return False
        if self.peak < self.level * fill * (1 - self.FINE):
            return False  # no window was filled to the level yet (calls of an earlier size, say)
        self.low = max(self.low, self.peak)
        self.since, self.pressed, self.peak = now, False, 0.0
        if self.high - self.low <= max(1.0, self.low * self.FINE):
            return False
        if self.settled and self.calm < self.REPROBE_AFTER:
            self.calm += 1
            return False
        self.calm = 0
        self.level = ((self.low + self.high) / 2 if math.isfinite(self.high) else self.low * 1.25) / fill
        return True
