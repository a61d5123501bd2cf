"""Quotas: the interface every quota shape implements, the sliding-window shape, and the
`google.protobuf.Duration` formatting of retry delays.

A quota tracks two metrics at once (requests and input tokens) against limits that are passed on
every check, so a runtime config change takes effect on the next call. Shapes (`quota_shapes`) differ
only in how used room comes back: a sliding log, fixed windows, or a continuously refilled bucket.

Sliding window: every admitted call is logged as (time, requests, tokens). A new call is admitted
when the sums over the last `window_seconds` plus its own cost stay within the limits. When it
is not, the retry delay is the time until enough logged calls leave the window to make room, so
a client that waits exactly that long is admitted (unless others took the room first). A call
that alone exceeds a limit (e.g. a 100-text batch with rpm=50 in 'text' mode) can never be
admitted; it is told to wait for the whole window to drain, as Google keeps answering 429.
Rejected calls (any non-200 answer) are not logged: they cost no quota.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

Metric = Literal["requests", "tokens"]
Period = Literal["minute", "day"]


@dataclass(frozen=True)
class Violation:
    metric: Metric
    limit: int
    retry_after: float  # seconds until the window has room for the call
    period: Period = "minute"  # which quota: the per-minute one, or the per-day one

    @property
    def kind(self) -> str:
        """ "minute_requests", "minute_tokens" or "day_requests" (the keys of the 429 stats)."""
        return f"{self.period}_{self.metric}"


class Quota(Protocol):
    """What the server needs from a quota shape. `check` charges nothing (a call may still fail
    after it); `charge` counts an admitted call. Thread-safe."""

    def check(self, requests: int, tokens: int, rpm: int | None, tpm: int | None, window: float) -> list[Violation]:
        """The limits this call would exceed now (empty: admit it)."""
        ...

    def charge(self, requests: int, tokens: int) -> None: ...

    def usage(self, window: float) -> tuple[int, int]:
        """(requests, tokens) counted now."""
        ...

    def reset(self) -> None: ...


class SlidingWindowQuota:
    """Thread-safe sliding-window log of admitted calls."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._log: deque[tuple[float, int, int]] = deque()
        self._requests = 0
        self._tokens = 0

    def reset(self) -> None:
        with self._lock:
            self._log.clear()
            self._requests = 0
            self._tokens = 0

    def _evict(self, now: float, window: float) -> None:
        log = self._log
        while log and log[0][0] <= now - window:
            _, requests, tokens = log.popleft()
            self._requests -= requests
            self._tokens -= tokens

    def _wait_for(self, now: float, window: float, used: int, need: int, limit: int, index: int) -> float:
        """Seconds until `used + need <= limit` as entries leave the window."""
        if need > limit:
            return (self._log[-1][0] + window - now) if self._log else window
        excess = used + need - limit
        for entry in self._log:
            excess -= int(entry[index])
            if excess <= 0:
                return max(entry[0] + window - now, 0.0)
        return window  # unreachable: the whole log frees `used`

    def check(self, requests: int, tokens: int, rpm: int | None, tpm: int | None, window: float) -> list[Violation]:
        """The limits this call would exceed now (empty: admit it). Charges nothing."""
        with self._lock:
            now = self._clock()
            self._evict(now, window)
            found: list[Violation] = []
            if rpm is not None and self._requests + requests > rpm:
                found.append(Violation("requests", rpm, self._wait_for(now, window, self._requests, requests, rpm, 1)))
            if tpm is not None and self._tokens + tokens > tpm:
                found.append(Violation("tokens", tpm, self._wait_for(now, window, self._tokens, tokens, tpm, 2)))
            return found

    def charge(self, requests: int, tokens: int) -> None:
        with self._lock:
            self._log.append((self._clock(), requests, tokens))
            self._requests += requests
            self._tokens += tokens

    def usage(self, window: float) -> tuple[int, int]:
        """(requests, tokens) currently inside the window."""
        with self._lock:
            self._evict(self._clock(), window)
            return self._requests, self._tokens


def format_retry_delay(seconds: float) -> str:
    """A google.protobuf.Duration in JSON: "34s", "0.5s", "1.234567s" (rounded up to the
    microsecond, so waiting exactly this long is always enough)."""
    micros = max(math.ceil(seconds * 1_000_000 - 1e-6), 0)
    whole, fraction = divmod(micros, 1_000_000)
    if not fraction:
        return f"{whole}s"
    return f"{whole}.{fraction:06d}".rstrip("0") + "s"
