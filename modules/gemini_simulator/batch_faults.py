"""The Batch and Files APIs' random draws: which jobs fail or expire, which items fail, which calls
are answered 503 or lose their answer.

They come from a generator of their own, seeded from `seed` (as "<seed>:batch"), so batch traffic
leaves the online endpoints' fault sequences unchanged. Every draw with a rate strictly between 0
and 1 consumes one uniform, so a given sequence of calls sees the same draws on every run.
"""

from __future__ import annotations

import random
import threading

from .batch_jobs import Outcome
from .config import SimulatorConfig


class BatchDice:
    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._seed = seed
        self._rng = random.Random(f"{seed}:batch")

    def reseed(self, seed: int) -> None:
        with self._lock:
            self._seed = seed
            self._rng = random.Random(f"{seed}:batch")

    def _follow(self, config: SimulatorConfig) -> None:
        if config.seed != self._seed:
            self.reseed(config.seed)

    def chance(self, rate: float, config: SimulatorConfig) -> bool:
        """True with probability `rate` (exactly: never for 0.0, always for 1.0)."""
        self._follow(config)
        if rate <= 0.0:
            return False
        if rate >= 1.0:
            return True
        with self._lock:
            return self._rng.random() < rate

    def outcome(self, config: SimulatorConfig) -> Outcome:
        """How a new job will end: FAIL with `batch_fail_rate`, else EXPIRE with
        `batch_expire_rate`, else SUCCEED."""
        if self.chance(config.batch_fail_rate, config):
            return Outcome.FAIL
        if self.chance(config.batch_expire_rate, config):
            return Outcome.EXPIRE
        return Outcome.SUCCEED
