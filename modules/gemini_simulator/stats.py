"""What the simulator saw and answered, for tests and for `GET /_sim/stats`."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

_KEPT_REDIRECTS = 20


@dataclass
class SimulatorStats:
    """Counters updated by the server. Reading single fields is safe from any thread; use
    `snapshot()` for a consistent copy while the server runs in another thread."""

    calls_by_endpoint: Counter[str] = field(default_factory=Counter)  # "batchEmbedContents", ...
    successful_calls: int = 0  # clean 200 answers (corrupted 200s are counted in `faults`)
    texts_embedded: int = 0  # texts in clean 200 answers
    embeds_per_text: Counter[str] = field(default_factory=Counter)  # text sha256 -> clean embeds
    status_counts: Counter[int] = field(default_factory=Counter)  # every answered HTTP status
    faults: Counter[str] = field(default_factory=Counter)  # injected: burst_503, drop, slow, nan, ...
    drops: int = 0  # connections closed without an answer
    tokens_counted: int = 0  # input tokens charged to the quota (truncated texts count 2,048)
    max_batch_seen: int = 0  # largest number of requests in one well-formed call body
    # quota 429s by the limit they name: "minute_requests", "minute_tokens", "day_requests" (a 429
    # naming two limits counts under both; bare 429s count under the limit that refused the call)
    rate_limits_by_kind: Counter[str] = field(default_factory=Counter)
    calls_by_model: Counter[str] = field(default_factory=Counter)  # embedding calls by the model in the URL
    texts_embedded_by_model: Counter[str] = field(default_factory=Counter)  # texts in clean 200s, by model
    # requests that followed a redirect to /redirected/..., and how many of them carried an API key
    # (x-goog-api-key, ?key= or Authorization); the last few kept, key-bearing values redacted
    redirected_calls: int = 0
    redirected_with_key: int = 0
    redirected_requests: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def rate_limited(self) -> int:
        return self.status_counts[429]

    @property
    def bad_requests(self) -> int:
        return self.status_counts[400]

    @property
    def not_found(self) -> int:
        return self.status_counts[404]

    @property
    def server_errors(self) -> int:
        return sum(n for code, n in self.status_counts.items() if code >= 500)

    @property
    def total_calls(self) -> int:
        return sum(self.calls_by_endpoint.values())

    def record_call(self, endpoint: str, model: str | None = None) -> None:
        with self._lock:
            self.calls_by_endpoint[endpoint] += 1
            if model is not None:
                self.calls_by_model[model] += 1

    def record_batch_size(self, size: int) -> None:
        with self._lock:
            self.max_batch_seen = max(self.max_batch_seen, size)

    def record_status(self, status: int) -> None:
        with self._lock:
            self.status_counts[status] += 1

    def record_fault(self, kind: str) -> None:
        with self._lock:
            self.faults[kind] += 1
            if kind == "drop":
                self.drops += 1

    def record_rate_limit(self, kinds: list[str]) -> None:
        with self._lock:
            self.rate_limits_by_kind.update(kinds)

    def record_redirected(self, request: dict[str, Any], carried_key: bool) -> None:
        with self._lock:
            self.redirected_calls += 1
            self.redirected_with_key += int(carried_key)
            self.redirected_requests.append({**request, "carried_key": carried_key})
            del self.redirected_requests[:-_KEPT_REDIRECTS]

    def record_tokens(self, tokens: int) -> None:
        with self._lock:
            self.tokens_counted += tokens

    def record_success(self, text_hashes: list[str], model: str = "gemini-embedding-001") -> None:
        with self._lock:
            self.successful_calls += 1
            self.texts_embedded += len(text_hashes)
            self.embeds_per_text.update(text_hashes)
            self.texts_embedded_by_model[model] += len(text_hashes)

    def clear(self) -> None:
        """Zero everything in place (references to this object stay valid)."""
        with self._lock:
            self.calls_by_endpoint.clear()
            self.successful_calls = 0
            self.texts_embedded = 0
            self.embeds_per_text.clear()
            self.status_counts.clear()
            self.faults.clear()
            self.drops = 0
            self.tokens_counted = 0
            self.max_batch_seen = 0
            self.rate_limits_by_kind.clear()
            self.calls_by_model.clear()
            self.texts_embedded_by_model.clear()
            self.redirected_calls = 0
            self.redirected_with_key = 0
            self.redirected_requests.clear()

    def snapshot(self) -> SimulatorStats:
        with self._lock:
            return SimulatorStats(
                calls_by_endpoint=Counter(self.calls_by_endpoint),
                successful_calls=self.successful_calls,
                texts_embedded=self.texts_embedded,
                embeds_per_text=Counter(self.embeds_per_text),
                status_counts=Counter(self.status_counts),
                faults=Counter(self.faults),
                drops=self.drops,
                tokens_counted=self.tokens_counted,
                max_batch_seen=self.max_batch_seen,
                rate_limits_by_kind=Counter(self.rate_limits_by_kind),
                calls_by_model=Counter(self.calls_by_model),
                texts_embedded_by_model=Counter(self.texts_embedded_by_model),
                redirected_calls=self.redirected_calls,
                redirected_with_key=self.redirected_with_key,
                redirected_requests=[dict(r) for r in self.redirected_requests],
            )

    def to_dict(self) -> dict[str, Any]:
        copy = self.snapshot()
        return {
            "calls_by_endpoint": dict(copy.calls_by_endpoint),
            "total_calls": copy.total_calls,
            "successful_calls": copy.successful_calls,
            "texts_embedded": copy.texts_embedded,
            "distinct_texts_embedded": len(copy.embeds_per_text),
            "embeds_per_text": dict(copy.embeds_per_text),
            "status_counts": {str(code): n for code, n in sorted(copy.status_counts.items())},
            "rate_limited": copy.rate_limited,
            "bad_requests": copy.bad_requests,
            "not_found": copy.not_found,
            "server_errors": copy.server_errors,
            "drops": copy.drops,
            "faults": dict(copy.faults),
            "tokens_counted": copy.tokens_counted,
            "max_batch_seen": copy.max_batch_seen,
            "rate_limits_by_kind": dict(copy.rate_limits_by_kind),
            "calls_by_model": dict(copy.calls_by_model),
            "texts_embedded_by_model": dict(copy.texts_embedded_by_model),
            "redirected_calls": copy.redirected_calls,
            "redirected_with_key": copy.redirected_with_key,
            "redirected_requests": copy.redirected_requests,
        }
