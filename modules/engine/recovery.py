"""The retry policy for one embedding call, composed from tenacity's own parts, and the rules that end
a run when the API can't be used.

Two nested layers, each a plain `AsyncRetrying`:

- inner, transient errors (5xx, timeouts, dropped connections, broken answers): `stop_after_attempt`
  (1 + EMBEDDING_MAX_RETRIES), `wait_exponential_jitter` from EMBEDDING_RETRY_DELAY up to
  EMBEDDING_MAX_RETRY_DELAY; then the caller splits the batch;
- outer, 429s: `stop_after_delay(EMBEDDING_MAX_WAIT)`, waiting the server's RetryInfo (a request, not
  an order: without one, or with a 0s, negative or unreadable one, the pacer's `retry_hint`, when its
  log says the refused call fits again, and if the same call is refused again at least
  `wait_exponential_jitter` from EMBEDDING_RETRY_DELAY); every sender pauses that long. Never charged
  to the chunks.

A run ends with ApiUnavailableError (exit 3, chunks released untouched) when the circuit breaker opens
(breaker.py), when a 429 asks for longer than EMBEDDING_MAX_WAIT or the 429s add up to more, when a
per-day quota is spent, or when the key stops working after calls had succeeded.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)
from tenacity.wait import wait_base

from modules.engine.breaker import CircuitBreaker
from modules.engine.pacing import Pacer, QuotaHit, Send
from modules.engine.stats import RunStats
from modules.errors import ApiUnavailableError, ProviderConfigError, RateLimitedError, TransientEmbeddingError
from modules.logs import get_logger
from modules.settings import Settings

log = get_logger(__name__)
T = TypeVar("T")
_PACIFIC = ZoneInfo("America/Los_Angeles")  # Google resets per-day quotas at midnight Pacific time


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    base_delay: float = 2.0
    max_delay: float = 60.0
    max_wait: float = 300.0  # EMBEDDING_MAX_WAIT: the longest a call waits for the quota

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            max_retries=settings.max_retries,
            base_delay=settings.retry_delay,
            max_delay=settings.max_retry_delay,
            max_wait=settings.max_wait,
        )

    def transient_retrying(self, stats: RunStats) -> AsyncRetrying:
        def before_sleep(state: RetryCallState) -> None:
            stats.retries += 1
            error = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            log.warning("🔁 リトライ %d/%d (%.1f秒後): %s", state.attempt_number, self.max_retries, wait, error)

        return AsyncRetrying(
            retry=retry_if_exception_type(TransientEmbeddingError),
            stop=stop_after_attempt(self.max_retries + 1),
            wait=wait_exponential_jitter(initial=self.base_delay, max=self.max_delay, jitter=self.base_delay),
            before_sleep=before_sleep,
            reraise=True,
        )

    def rate_limit_retrying(self, pacer: Pacer, stats: RunStats) -> AsyncRetrying:
        def before_sleep(state: RetryCallState) -> None:
            stats.retries += 1
            error = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            pacer.pause(wait)  # every sender waits, not only this one
            told = isinstance(error, RateLimitedError) and error.retry_after is not None
            log.warning(
                "⏳ レート制限 (429): %.1f秒待機します (全バッチを一時停止%s)", wait, "" if told else "・RetryInfo なし"
            )

        return AsyncRetrying(
            retry=retry_if_exception_type(RateLimitedError),
            stop=stop_after_delay(self.max_wait),
            wait=ServerDelay(
                fallback=PacerHint(
                    pacer, wait_exponential_jitter(initial=self.base_delay, max=self.max_delay, jitter=self.base_delay)
                )
            ),
            before_sleep=before_sleep,
            reraise=True,
        )


class ServerDelay(wait_base):
    """Wait what a 429's RetryInfo asks (plus up to 10% jitter, so paused senders don't stampede),
    or `fallback` when it gave no usable delay."""

    def __init__(self, fallback: wait_base) -> None:
        self.fallback = fallback

    def __call__(self, retry_state: RetryCallState) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(error, RateLimitedError) and error.retry_after is not None:
            return error.retry_after * (1.0 + random.random() * 0.1)
        return float(self.fallback(retry_state))


class PacerHint(wait_base):
    """Without a usable RetryInfo: the pacer's hint (when its log says the refused call fits under what
    the 429 taught), and at least `backoff` when the same call is refused again."""

    def __init__(self, pacer: Pacer, backoff: wait_base) -> None:
        self.pacer = pacer
        self.backoff = backoff

    def __call__(self, retry_state: RetryCallState) -> float:
        hint = self.pacer.retry_hint
        if retry_state.attempt_number <= 1:
            return hint
        return max(hint, float(self.backoff(retry_state)))


async def call_with_retries(
    call: Callable[[Callable[[], None]], Awaitable[T]],
    *,
    policy: RetryPolicy,
    pacer: Pacer,
    send: Send,
    stats: RunStats,
    breaker: CircuitBreaker,
) -> T:
    """One API call, paced, retried by the policy; ApiUnavailableError when the API can't be used.
    `call` gets a callback to call when its request leaves (the pacer counts the call from then)."""

    async def attempt() -> T:
        if breaker.open:
            raise _outage(breaker)
        ticket = await pacer.wait_turn(send)
        started = time.monotonic()
        try:
            result = await call(lambda: pacer.sent(ticket))
        except RateLimitedError as exc:
            stats.rate_limited += 1
            kind = exc.quota_kind if exc.quota_kind in ("requests", "tokens") else None
            pacer.rate_limited(ticket, QuotaHit(exc.retry_after, kind, exc.quota_limit))  # type: ignore[arg-type]
            _stop_if_unwaitable(exc, policy)
            raise
        except TransientEmbeddingError as exc:
            pacer.failed(ticket, charged=not exc.refused)
            if exc.outage and breaker.failure(str(exc)):
                raise _outage(breaker) from None
            raise
        except ProviderConfigError as exc:
            pacer.failed(ticket, charged=False)
            if breaker.successes:  # it worked before: the key was revoked or the project suspended mid-run
                raise ApiUnavailableError(
                    f"the API stopped accepting the key mid-run ({exc})",
                    "check GOOGLE_API_KEY and the project in Google AI Studio, then run again",
                ) from None
            raise
        except BaseException:
            pacer.failed(ticket, charged=True)
            raise
        breaker.success()
        pacer.succeeded(ticket, time.monotonic() - started)
        return result

    try:
        async for outer in policy.rate_limit_retrying(pacer, stats):
            with outer:
                async for inner in policy.transient_retrying(stats):
                    with inner:
                        return await attempt()
    except RateLimitedError as exc:
        raise ApiUnavailableError(
            f"the API quota stayed exhausted for over {policy.max_wait:.0f}s (EMBEDDING_MAX_WAIT): {exc}",
            "in a few minutes, or lower EMBEDDING_RPM / EMBEDDING_TPM",
        ) from None
    raise AssertionError("unreachable: tenacity either returns or re-raises")  # pragma: no cover


def _outage(breaker: CircuitBreaker) -> ApiUnavailableError:
    return ApiUnavailableError(
        f"the embedding API is unreachable or failing ({breaker.reason})",
        "in a few minutes, once the API answers again (check the network and GOOGLE_GEMINI_BASE_URL)",
    )


def _stop_if_unwaitable(exc: RateLimitedError, policy: RetryPolicy) -> None:
    if exc.per_day:
        reset = _next_pacific_midnight()
        raise ApiUnavailableError(
            f"the per-day quota is spent ({exc})",
            f"after midnight Pacific time ({reset.astimezone().strftime('%Y-%m-%d %H:%M %Z')}), or with a higher quota",
        ) from None
    if exc.retry_after is not None and exc.retry_after > policy.max_wait:
        until = datetime.now().astimezone() + timedelta(seconds=exc.retry_after)
        raise ApiUnavailableError(
            f"the API asked to wait {exc.retry_after:.0f}s, longer than EMBEDDING_MAX_WAIT "
            f"({policy.max_wait:.0f}s): {exc}",
            f"after {until.strftime('%Y-%m-%d %H:%M %Z')}",
        ) from None


def _next_pacific_midnight() -> datetime:
    now = datetime.now(UTC).astimezone(_PACIFIC)
    return (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
