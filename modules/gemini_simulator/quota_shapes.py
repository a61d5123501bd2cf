"""The other two quota shapes (fixed windows, token bucket) and `make_quota`, which picks one.

Rate limiters in front of real APIs come in these three shapes, and a client's pacing that only
works against one of them is a real mistake: against fixed windows a client that spreads its calls
evenly still meets a burst of refusals at the end of each window and a burst of room at its start;
against a token bucket room comes back a little at a time, so "wait for the whole window" is far
too long and "retry at once" is too short. Google does not document which shape serves the Gemini
API's per-minute quotas; its per-day quotas reset at a fixed time (midnight Pacific,
https://ai.google.dev/gemini-api/docs/rate-limits), i.e. fixed windows of a day.

Both shapes implement `quota.Quota`: `check` with the limits of the moment, `charge` after a call is
admitted (answered 200 or left slow), nothing for refused or failed calls.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from .config import QuotaShape
from .quota import Metric, Quota, SlidingWindowQuota, Violation


class FixedWindowQuota:
    """Counters that start from zero at every multiple of `window` after a start time (`origin`,
    else the quota's creation; its last reset). A refused call is told to retry at the next
    boundary, when the counters are zero again; a call larger than a limit is told the same (and
    refused again)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, origin: float | None = None) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._origin = clock() if origin is None else origin
        self._index = 0
        self._requests = 0
        self._tokens = 0

    def reset(self) -> None:
        with self._lock:
            self._origin = self._clock()
            self._index = 0
            self._requests = 0
            self._tokens = 0

    def _roll(self, now: float, window: float) -> float:
        """Zero the counters if a boundary passed; the seconds until the next boundary."""
        index = math.floor((now - self._origin) / window)
        if index != self._index:
            self._index = index
            self._requests = 0
            self._tokens = 0
        return max(self._origin + (index + 1) * window - now, 0.0)

    def check(self, requests: int, tokens: int, rpm: int | None, tpm: int | None, window: float) -> list[Violation]:
        with self._lock:
            until_boundary = self._roll(self._clock(), window)
            found: list[Violation] = []
            if rpm is not None and self._requests + requests > rpm:
                found.append(Violation("requests", rpm, until_boundary))
            if tpm is not None and self._tokens + tokens > tpm:
                found.append(Violation("tokens", tpm, until_boundary))
            return found

    def charge(self, requests: int, tokens: int) -> None:
        with self._lock:
            # the window is not known here: the counters belong to the window the last check saw
            self._requests += requests
            self._tokens += tokens

    def usage(self, window: float) -> tuple[int, int]:
        with self._lock:
            self._roll(self._clock(), window)
            return self._requests, self._tokens


class TokenBucketQuota:
    """A bucket per metric holding `limit` units, refilled continuously at `limit / window` units a
    second. A call is admitted when its cost is in the bucket; a refused call is told how long the
    refill of the missing units takes. A call larger than the bucket is told the time until the
    bucket is full (or a whole window when it already is), and refused again then.

    Kept as "used" amounts that drain, so a limit changed at runtime applies to the room left. Calls
    count only once a limit has been seen for the metric (before, there is no bucket to take from)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._used: dict[Metric, float] = {"requests": 0.0, "tokens": 0.0}
        self._rate: dict[Metric, float] = {"requests": 0.0, "tokens": 0.0}  # units refilled a second
        self._seen = clock()

    def reset(self) -> None:
        with self._lock:
            self._used = {"requests": 0.0, "tokens": 0.0}
            self._seen = self._clock()

    def _drain(self, now: float) -> None:
        elapsed = max(now - self._seen, 0.0)
        self._seen = now
        for metric in self._used:
            self._used[metric] = max(self._used[metric] - elapsed * self._rate[metric], 0.0)

    def _violation(self, metric: Metric, need: int, limit: int | None, window: float) -> Violation | None:
        if limit is None:  # unlimited now: the bucket keeps refilling at the last limit's rate
            return None
        rate = limit / window
        self._rate[metric] = rate
        used = self._used[metric]
        if used + need <= limit:
            return None
        if need > limit:
            return Violation(metric, limit, used / rate if used > 0 else window)
        return Violation(metric, limit, (used + need - limit) / rate)

    def check(self, requests: int, tokens: int, rpm: int | None, tpm: int | None, window: float) -> list[Violation]:
        with self._lock:
            self._drain(self._clock())
            found = [self._violation("requests", requests, rpm, window), self._violation("tokens", tokens, tpm, window)]
            return [v for v in found if v is not None]

    def charge(self, requests: int, tokens: int) -> None:
        with self._lock:
            self._drain(self._clock())
            if self._rate["requests"] > 0:
                self._used["requests"] += requests
            if self._rate["tokens"] > 0:
                self._used["tokens"] += tokens

    def usage(self, window: float) -> tuple[int, int]:
        with self._lock:
            self._drain(self._clock())
            return math.ceil(self._used["requests"] - 1e-9), math.ceil(self._used["tokens"] - 1e-9)


def make_quota(shape: QuotaShape, clock: Callable[[], float] = time.monotonic, origin: float | None = None) -> Quota:
    """A new, empty quota of the given shape (fixed windows counted from `origin`, else from now)."""
    if shape == "fixed":
        return FixedWindowQuota(clock, origin)
    if shape == "token_bucket":
        return TokenBucketQuota(clock)
    return SlidingWindowQuota(clock)
