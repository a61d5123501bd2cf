"""EMBEDDING_BATCH_SIZE=auto: as many texts per call as the API takes (100), since a call costs one
request whatever it holds; fewer only when

- a known quota that counts texts or tokens can't take whole calls of that size: then the fewest
  calls that fill the quota's window, of equal size (a window of 375 texts takes 4 calls of 93, not
  3 of 100 and a 75-text gap; for tokens, the calls' expected tokens leave TOKEN_SLACK free for the
  spread of their sizes), unless full calls already fill FULL_CALLS_FILL of it (a window of 420
  texts takes 4 calls of 100, not 5 of 84: 25% more calls to fill the last 5%) and the limit is
  known (a limit still being searched is filled, or its level would never be tried);
- answers come slower than `slow_seconds`: 30% smaller, growing back by a quarter on fast answers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from modules.engine.quotas import Limit, Unit

TOKEN_SLACK = 0.03
FULL_CALLS_FILL = 0.9  # full calls that fill this share of a window are kept full


class BatchSizer:
    def __init__(self, fixed: int | None, maximum: int, slow_seconds: float) -> None:
        self.fixed = fixed
        self.maximum = maximum
        self.slow_seconds = slow_seconds
        self.cap = maximum  # the most a call may hold under the known quotas
        self._by_latency = maximum  # the most a call may hold for its answer to come in time

    @property
    def size(self) -> int:
        return self.fixed if self.fixed is not None else min(self.cap, self._by_latency)

    def succeeded(self, latency: float) -> None:
        if latency > self.slow_seconds:
            self._by_latency = max(1, int(min(self._by_latency, self.size) * 0.7))
        else:
            self._by_latency = min(self.maximum, self._by_latency + max(1, self._by_latency // 4))

    def fit(self, limits: Mapping[Unit, Limit], rooms: Mapping[Unit, float], tokens_per_text: float) -> None:
        """Size calls to the known quotas: `rooms[unit]` is what the pacer lets a window hold."""
        cap = self.maximum
        for unit, limit in limits.items():
            if unit == "calls":
                continue  # a call costs one request whatever its size
            per_text = 1.0 if unit == "texts" else max(tokens_per_text, 1.0) * (1 + TOKEN_SLACK)
            room = rooms[unit]
            whole = room / (self.maximum * per_text)  # full calls a window holds
            if limit.settled and math.floor(whole) / whole >= FULL_CALLS_FILL:
                continue  # full calls fill the window well enough: fewer calls win
            cap = min(cap, max(1, math.floor(room / (math.ceil(whole) * per_text))))  # the fewest equal calls
        self.cap = cap
