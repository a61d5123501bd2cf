"""`QuotaBook`: every quota the simulator keeps, per model, and what a refused call is told.

Google's embedding quotas are per project and per model (the quota ids end in "PerProjectPerModel",
and the QuotaFailure names the model), so each model has its own per-minute quota (requests and
input tokens, `window_seconds` long) and its own per-day request quota (`day_seconds` long). The
shapes come from the config (`quota_shape`, `day_quota_shape`); a shape change starts that quota
afresh on the next call. Fixed windows of every model count from the book's start (the simulator's
creation or last reset), so their boundaries are the same for all models.

What a refused call is told about a per-day quota follows `day_retry_delay`:
- "short" (Google's, as captured): a RetryInfo of seconds, here the time to the next multiple of
  `window_seconds` since the book started, whatever the day quota's real reset is;
- "reset": the true wait until the day quota has room;
- "none": no RetryInfo and no "Please retry in" at all.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .config import QuotaShape, SimulatorConfig
from .quota import Quota, Violation
from .quota_shapes import make_quota


@dataclass
class _ModelQuotas:
    minute_shape: QuotaShape
    day_shape: QuotaShape
    minute: Quota
    day: Quota


@dataclass(frozen=True)
class Refusal:
    """What a refused call is answered: the exceeded limits (their `retry_after` is what to
    report) and whether the 429 may carry RetryInfo at all."""

    violations: list[Violation] = field(default_factory=list)
    retry_info_allowed: bool = True


class QuotaBook:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._models: dict[str, _ModelQuotas] = {}
        self._origin = clock()

    def reset(self) -> None:
        with self._lock:
            self._models.clear()
            self._origin = self._clock()

    def _quotas(self, model: str, config: SimulatorConfig) -> _ModelQuotas:
        minute_shape, day_shape = config.quota_shape, config.day_quota_shape
        with self._lock:
            quotas = self._models.get(model)
            if quotas is None:
                quotas = _ModelQuotas(
                    minute_shape,
                    day_shape,
                    make_quota(minute_shape, self._clock, self._origin),
                    make_quota(day_shape, self._clock, self._origin),
                )
            if quotas.minute_shape != minute_shape:
                quotas = dataclasses.replace(
                    quotas, minute_shape=minute_shape, minute=make_quota(minute_shape, self._clock, self._origin)
                )
            if quotas.day_shape != day_shape:
                quotas = dataclasses.replace(
                    quotas, day_shape=day_shape, day=make_quota(day_shape, self._clock, self._origin)
                )
            self._models[model] = quotas
            return quotas

    def _short_delay(self, window: float) -> float:
        elapsed = self._clock() - self._origin
        return (math.floor(elapsed / window) + 1) * window - elapsed

    def check(self, model: str, requests: int, tokens: int, config: SimulatorConfig) -> Refusal | None:
        """None when the call fits every quota of `model` now; else what to tell it. Charges nothing."""
        quotas = self._quotas(model, config)
        found = quotas.minute.check(requests, tokens, config.rpm, config.tpm, config.window_seconds)
        day = quotas.day.check(requests, 0, config.rpd, None, config.day_seconds)
        if not found and not day:
            return None
        allowed = True
        for violation in day:
            reported = violation.retry_after
            if config.day_retry_delay == "short":
                reported = self._short_delay(config.window_seconds)
            elif config.day_retry_delay == "none":
                allowed = False
            found.append(dataclasses.replace(violation, period="day", retry_after=reported))
        return Refusal(found, allowed)

    def charge(self, model: str, requests: int, tokens: int, config: SimulatorConfig) -> None:
        quotas = self._quotas(model, config)
        quotas.minute.charge(requests, tokens)
        quotas.day.charge(requests, 0)

    def usage(self, model: str, config: SimulatorConfig) -> tuple[int, int]:
        """(requests, tokens) counted now by `model`'s per-minute quota."""
        return self._quotas(model, config).minute.usage(config.window_seconds)

    def day_usage(self, model: str, config: SimulatorConfig) -> int:
        """Requests counted now by `model`'s per-day quota."""
        return self._quotas(model, config).day.usage(config.day_seconds)[0]
