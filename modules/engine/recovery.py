"""Retry policy for one embedding call, composed from tenacity's parts.

- Rate-limited (429): pause every sender for the server's RetryInfo delay (or an exponential,
  jittered backoff when it gives none) and retry the batch whole. Never charged to the chunks;
  bounded only by time, since a quota always comes back.
- Transient (5xx, timeouts, broken answers): exponential backoff with jitter, at most
  `max_retries` retries; then the caller splits the batch.
- Anything else propagates at once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from modules.engine.pacing import Pacer, QuotaHit, Send, Ticket
from modules.engine.stats import RunStats
from modules.errors import RateLimitedError, TransientEmbeddingError
from modules.logs import get_logger
from modules.settings import Settings

log = get_logger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    base_delay: float = 2.0
    max_delay: float = 60.0
    rate_limit_budget: float = 900.0  # total seconds one call may spend waiting on 429s

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            max_retries=settings.max_retries,
            base_delay=settings.retry_delay,
            max_delay=settings.max_retry_delay,
            rate_limit_budget=min(settings.rate_limit_max_wait, settings.lease_seconds * 0.5),
        )

    def backoff(self, failures: int) -> float:
        """Exponential backoff with jitter: base * 2^(n-1), capped, then scaled by 0.5..1.0."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** max(0, failures - 1))
        return float(ceiling * (0.5 + random.random() / 2))


class _CallState:
    """Counts, per call, how many transient failures and how much 429 waiting happened."""

    def __init__(self) -> None:
        self.transient = 0
        self.rate_limited = 0
        self.rate_wait = 0.0
        self.next_wait = 0.0
        self.ticket: Ticket | None = None  # the pacer's record of the attempt in flight


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    pacer: Pacer,
    send: Send,
    stats: RunStats,
) -> T:
    state = _CallState()

    def decide(retry_state: RetryCallState) -> None:
        """Runs after each failed attempt: choose the wait, tell the pacer, count."""
        outcome = retry_state.outcome
        error = outcome.exception() if outcome else None
        if isinstance(error, RateLimitedError):
            state.rate_limited += 1
            stats.rate_limited += 1
            wait = error.retry_after if error.retry_after is not None else policy.backoff(state.rate_limited)
            wait = max(0.05, wait) * (1.0 + random.random() * 0.1)  # jitter so paused senders don't stampede
            kind = error.quota_kind if error.quota_kind in ("requests", "tokens") else None
            hit = QuotaHit(error.retry_after, kind, error.quota_limit)  # type: ignore[arg-type]
            state.rate_wait += wait
            log.warning(
                "⏳ レート制限 (429): %.1f秒待機します (全バッチを一時停止%s)",
                wait,
                "" if error.retry_after is not None else "・RetryInfo なし",
            )
            if state.ticket is not None:
                pacer.rate_limited(wait, hit, state.ticket)
        else:
            state.transient += 1
            wait = policy.backoff(state.transient)
            log.warning("🔁 リトライ %d/%d (%.1f秒後): %s", state.transient, policy.max_retries, wait, error)
        state.next_wait = wait
        stats.retries += 1

    def should_stop(retry_state: RetryCallState) -> bool:
        return state.transient > policy.max_retries or state.rate_wait > policy.rate_limit_budget

    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type((RateLimitedError, TransientEmbeddingError)),
        before=lambda _: None,
        after=decide,
        stop=should_stop,
        wait=lambda _: state.next_wait,
        reraise=True,
    ):
        with attempt:
            state.ticket = await pacer.wait_turn(send)
            started = time.monotonic()
            try:
                result = await call()
            except RateLimitedError:
                raise  # decide() tells the pacer, with the pause it chose
            except BaseException as exc:
                refused = isinstance(exc, TransientEmbeddingError) and exc.refused
                pacer.failed(state.ticket, charged=not refused)
                raise
            pacer.succeeded(state.ticket, time.monotonic() - started)
            return result
    raise AssertionError("unreachable: tenacity either returns or re-raises")  # pragma: no cover
