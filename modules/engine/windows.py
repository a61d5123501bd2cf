"""Inferring a quota's window from 429s.

A sliding-window quota refuses a call when what it counted in the last W seconds, plus the call,
exceeds the limit; its RetryInfo says when enough of the oldest counted calls leave the window. So
walking back through our own sends until they add up to what the server counted finds the send
whose leaving makes room: W = frees_at - the moment the server counted that send. We only know that
moment within [sent, answered], and token counts are our estimates, so each 429 gives an interval
that should hold W, not a point. `WindowVotes` keeps the intervals and takes the stretch most of
them agree on, so that one odd 429 cannot set the pace of a whole run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

# (sent_at, answered_at or None while in flight, units counted), in the order sent
LoggedSend = tuple[float, float | None, int]


def window_interval(
    sends: Sequence[LoggedSend], *, counted_before: int, frees_at: float, now: float, tolerance: float
) -> tuple[float, float] | None:
    """The range of windows consistent with one 429. `counted_before` is the most the server may
    still hold once room is made (its limit minus the refused call's own size); `tolerance` is how
    far off our unit counts may be (0 for calls and texts, a few percent for estimated tokens).
    None when our log cannot explain the server's count."""
    low_mark = counted_before * (1.0 - tolerance)
    high_mark = counted_before * (1.0 + tolerance)
    candidates: list[int] = []
    newer = 0  # units sent after the send being looked at
    for index in range(len(sends) - 1, -1, -1):
        units = sends[index][2]
        if newer > high_mark:
            break
        if newer + units > low_mark:
            candidates.append(index)
        newer += units
    if not candidates:
        return None
    # Concurrent calls may reach the server in another order than we sent them: a neighbour whose
    # flight overlaps the candidates' may be the one that frees the room.
    first, last = min(candidates), max(candidates)
    span_start = sends[first][0]
    span_end = max(_answered(sends[i], now) for i in candidates)
    if first > 0 and _answered(sends[first - 1], now) >= span_start:
        first -= 1
    if last + 1 < len(sends) and sends[last + 1][0] <= span_end:
        last += 1
    earliest_sent = min(sends[i][0] for i in range(first, last + 1))
    latest_answer = max(_answered(sends[i], now) for i in range(first, last + 1))
    longest = frees_at - earliest_sent
    shortest = max(frees_at - latest_answer, 0.0)
    if longest <= 0:
        return None
    return shortest, longest


def _answered(send: LoggedSend, now: float) -> float:
    return send[1] if send[1] is not None else now


class WindowVotes:
    """Intervals from successive 429s; the window is where most of them overlap.

    The pace starts at the long end of that stretch (safe within the evidence). A window too long is
    never corrected by a 429, so after each quiet spell the pacer tries a shorter one (`relaxed`). A
    429 on a call that the replica let through proves the window in use too short (`refused_at`); a
    quiet spell at the quota suggests the window in use is long enough. Between the two, the search
    halves the gap, and after a refusal the pace goes back to the last window that ran quiet. Timing
    jitter between our send and the server's count is covered the same way."""

    STEP = 0.01  # after a refusal with no quiet window known, this much longer
    RELAX = 0.03  # the first probes' step, before any refusal
    RESOLUTION = 0.003  # stop probing once the refused and the quiet window are this close

    def __init__(self, keep: int = 32) -> None:
        self._intervals: deque[tuple[float, float]] = deque(maxlen=keep)
        self._too_short = 0.0  # the longest window a 429 proved too short
        self._quiet: float | None = None  # the shortest window that ran a quiet spell
        self.refusals = 0

    def refused_at(self, window: float) -> None:
        self._too_short = max(self._too_short, window)
        if self._quiet is not None and self._quiet <= window:
            self._quiet = None  # a window that once ran quiet was refused: timing moved, prove one again
        self.refusals += 1

    def quiet_windows(self) -> float:
        """How many quiet windows before trying shorter: each refusal makes the probing rarer, since
        every probe below the true window costs a few 429s."""
        return float(2 ** min(self.refusals, 3))

    def pace(self) -> float | None:
        """The window to pace by after a 429."""
        best = self.best()
        if not self._too_short:
            return best
        if self._quiet is not None and self._quiet > self._too_short:
            return self._quiet
        above_refused = self._too_short * (1 + self.STEP)
        return min(best, above_refused) if best is not None and best > self._too_short else above_refused

    def relaxed(self, current: float) -> float:
        """`current` ran a quiet spell: the next, shorter window to try."""
        if self._quiet is None or current < self._quiet:
            self._quiet = current
        if self._too_short:
            if current - self._too_short <= self.RESOLUTION * current:
                return current
            return (current + self._too_short) / 2
        shortest = self.shortest()
        if shortest is None or current <= shortest:
            return current
        return max(shortest, current * (1 - self.RELAX))

    def add(self, interval: tuple[float, float]) -> None:
        self._intervals.append(interval)

    def _best_region(self) -> tuple[float, float] | None:
        """The stretch covered by the most intervals; on a tie the shortest windows win, since a
        window too short shows itself by more 429s and one too long never does."""
        if not self._intervals:
            return None
        # Sweep: starts sort before ends at the same point, so touching intervals count as overlapping.
        events = sorted([(lo, 0) for lo, _ in self._intervals] + [(hi, 1) for _, hi in self._intervals])
        depth = best_depth = 0
        best: tuple[float, float] | None = None
        for position, (point, kind) in enumerate(events):
            if kind == 0:
                depth += 1
                if depth > best_depth:
                    best_depth = depth
                    end = next(p for p, k in events[position + 1 :] if k == 1)
                    best = (point, end)
            else:
                depth -= 1
        return best

    def best(self) -> float | None:
        """The window to pace by: the long end of the best-agreed stretch (safe within the evidence)."""
        region = self._best_region()
        return region[1] if region else None

    def shortest(self) -> float | None:
        """The shortest window the evidence still allows."""
        region = self._best_region()
        return region[0] if region else None
