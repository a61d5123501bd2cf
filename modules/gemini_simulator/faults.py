"""Deterministic fault injection: which fault (if any) each embedding call gets.

Every call draws the same number of uniforms from one `random.Random(seed)`, in a fixed order,
so a given sequence of calls gets the same faults on every run whatever the rates are. Faults and
429 variants added later draw from a second generator (seeded from the same seed), so adding them
changed no existing seed's sequence of faults.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from enum import StrEnum

from .config import SimulatorConfig


class Fault(StrEnum):
    BURST_503 = "burst_503"
    ERROR_500 = "error_500"
    ERROR_503 = "error_503"
    DROP = "drop"
    SLOW = "slow"
    MALFORMED = "malformed"
    COUNT_MISMATCH = "count_mismatch"
    WRONG_LENGTH = "wrong_length"
    NAN = "nan"
    # hostile upstream answers (drawn from the second generator)
    REDIRECT = "redirect"
    ECHO_KEY = "echo_key"
    HANG = "hang"
    DRIP = "drip"
    ZERO_VECTOR = "zero_vector"
    OVERFLOW = "overflow"
    UNDERFLOW = "underflow"
    BARE_429 = "bare_429"  # a 429 variant, counted with the faults


# instead of an answer (the first that fires wins; burst_503 comes before all, then these, then
# the hostile ones)
_FAILURES = (Fault.ERROR_500, Fault.ERROR_503, Fault.DROP)
_HOSTILE_FAILURES = (Fault.REDIRECT, Fault.ECHO_KEY, Fault.HANG)
# a 200 whose body is wrong (the first that fires wins, the older ones first)
_CORRUPTIONS = (Fault.MALFORMED, Fault.COUNT_MISMATCH, Fault.WRONG_LENGTH, Fault.NAN)
_HOSTILE_CORRUPTIONS = (Fault.ZERO_VECTOR, Fault.OVERFLOW, Fault.UNDERFLOW)


@dataclass(frozen=True)
class FaultPlan:
    failure: Fault | None = None  # burst_503 / error_500 / error_503 / drop / redirect / echo_key / hang
    slow: bool = False
    corruption: Fault | None = None  # malformed / count_mismatch / wrong_length / nan / zero_vector / ...
    pick: float = 0.0  # a uniform in [0, 1) for choosing where a corruption goes
    drip: bool = False  # deliver the 200 a few bytes at a time


def _other_seed(seed: int) -> str:
    # a str seed is hashed with SHA-512 by random.seed (version 2): stable across runs and platforms
    return f"{seed}:other"


class FaultInjector:
    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._seed = seed
        self._rng = random.Random(seed)
        self._other = random.Random(_other_seed(seed))

    def reseed(self, seed: int) -> None:
        with self._lock:
            self._reseed(seed)

    def _reseed(self, seed: int) -> None:
        self._seed = seed
        self._rng = random.Random(seed)
        self._other = random.Random(_other_seed(seed))

    def chance(self, rate: float) -> bool:
        """True with probability `rate` (exactly: never for 0.0, always for 1.0)."""
        if rate <= 0.0:
            return False
        if rate >= 1.0:
            return True
        with self._lock:
            return self._rng.random() < rate

    def other_chance(self, rate: float) -> bool:
        """Like `chance`, from the second generator (for the 429 variants)."""
        if rate <= 0.0:
            return False
        if rate >= 1.0:
            return True
        with self._lock:
            return self._other.random() < rate

    def plan(self, config: SimulatorConfig) -> FaultPlan:
        """Draw this call's faults (and count down `config.burst_503`)."""
        with self._lock:
            if config.seed != self._seed:
                self._reseed(config.seed)
            rates = {
                Fault.ERROR_500: config.error_rate_500,
                Fault.ERROR_503: config.error_rate_503,
                Fault.DROP: config.drop_rate,
                Fault.SLOW: config.slow_rate,
                Fault.MALFORMED: config.malformed_rate,
                Fault.COUNT_MISMATCH: config.count_mismatch_rate,
                Fault.WRONG_LENGTH: config.wrong_length_rate,
                Fault.NAN: config.nan_rate,
            }
            fired = {fault for fault, rate in rates.items() if self._rng.random() < rate}
            pick = self._rng.random()
            hostile = {
                Fault.REDIRECT: config.redirect_rate,
                Fault.ECHO_KEY: config.echo_key_rate,
                Fault.HANG: config.hang_rate,
                Fault.DRIP: config.drip_rate,
                Fault.ZERO_VECTOR: config.zero_vector_rate,
                Fault.OVERFLOW: config.overflow_rate,
                Fault.UNDERFLOW: config.underflow_rate,
            }
            fired |= {fault for fault, rate in hostile.items() if self._other.random() < rate}
            if config.burst_503 > 0:
                config.burst_503 -= 1
                return FaultPlan(failure=Fault.BURST_503)
        failure = next((f for f in (*_FAILURES, *_HOSTILE_FAILURES) if f in fired), None)
        if failure is not None:
            return FaultPlan(failure=failure)
        corruption = next((f for f in (*_CORRUPTIONS, *_HOSTILE_CORRUPTIONS) if f in fired), None)
        return FaultPlan(slow=Fault.SLOW in fired, corruption=corruption, pick=pick, drip=Fault.DRIP in fired)
