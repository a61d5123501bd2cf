"""The circuit breaker: when whole calls keep failing for reasons that are the API's, not the chunks'
(connection refused, DNS, timeouts, 5xx), the run stops instead of charging every chunk.

The rule, shared by every lane of a run: it opens once at least `min_failures` (5) attempts in a row
have failed AND no call has succeeded for `outage_seconds` (EMBEDDING_OUTAGE_SECONDS, 30 s; counted
from the run's start if nothing succeeded yet). Any success resets the count. A burst of 503s that
passes within seconds, or a 30% fault rate, never opens it; an unreachable API opens it after about
`outage_seconds`, a hung one after about five call deadlines spread over the lanes. Once open it
stays open for the rest of the run. Broken answers (a wrong count, NaN, a degenerate vector) and 400s
are not counted: they may be one text's doing, and are split and recorded per chunk instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class CircuitBreaker:
    def __init__(
        self,
        *,
        outage_seconds: float = 30.0,
        min_failures: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.outage_seconds = outage_seconds
        self.min_failures = min_failures
        self._clock = clock
        self._failures = 0
        self._last_success = clock()
        self.successes = 0
        self.reason: str | None = None  # set when open: what happened

    @property
    def open(self) -> bool:
        return self.reason is not None

    def success(self) -> None:
        self._failures = 0
        self._last_success = self._clock()
        self.successes += 1

    def failure(self, reason: str) -> bool:
        """Count a failed attempt; True if this one opened the breaker."""
        if self.open:
            return False
        self._failures += 1
        silent_for = self._clock() - self._last_success
        if self._failures >= self.min_failures and silent_for >= self.outage_seconds:
            self.reason = (
                f"{self._failures} calls in a row failed and none succeeded for {silent_for:.0f}s; the last: {reason}"
            )
            return True
        return False
