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
    title_by_text: dict[str, str] = field(default_factory=dict)  # text sha256 -> title of its last clean embed
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
    # Batch API. Batch embeds are kept apart from the online ones: `embeds_per_text`,
    # `texts_embedded` and `tokens_counted` count online calls only, the batch_* fields count the
    # items of succeeded batch jobs (when the job succeeds, whether or not anyone fetches the results)
    batch_jobs_created: int = 0  # every job created (a retried create is a second job)
    batch_jobs_by_display_name: Counter[str] = field(default_factory=Counter)  # created, by displayName
    batch_items_per_job: dict[str, int] = field(default_factory=dict)  # job name -> its items
    batch_jobs_by_state: Counter[str] = field(default_factory=Counter)  # stored jobs by current state
    batch_jobs_deleted: int = 0
    batch_texts_embedded: int = 0  # items answered with a vector
    batch_items_failed: int = 0  # items of succeeded jobs answered with an error
    batch_embeds_per_text: Counter[str] = field(default_factory=Counter)  # text sha256 -> batch embeds
    batch_texts_embedded_by_model: Counter[str] = field(default_factory=Counter)
    batch_tokens: int = 0  # input tokens of the items answered with a vector (billed at the batch price)
    files_uploaded: int = 0
    file_bytes_uploaded: int = 0
    files_downloaded: int = 0
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

    def record_success(
        self, text_hashes: list[str], model: str = "gemini-embedding-001", titles: list[str | None] | None = None
    ) -> None:
        with self._lock:
            self.successful_calls += 1
            self.texts_embedded += len(text_hashes)
            self.embeds_per_text.update(text_hashes)
            self.texts_embedded_by_model[model] += len(text_hashes)
            for text_hash, title in zip(text_hashes, titles or [None] * len(text_hashes), strict=True):
                self.title_by_text[text_hash] = title or ""

    def record_batch_created(self, name: str, display_name: str, items: int, state: str) -> None:
        with self._lock:
            self.batch_jobs_created += 1
            self.batch_jobs_by_display_name[display_name] += 1
            self.batch_items_per_job[name] = items
            self.batch_jobs_by_state[state] += 1

    def record_batch_state(self, before: str, after: str) -> None:
        with self._lock:
            self._uncount_state(before)
            self.batch_jobs_by_state[after] += 1

    def _uncount_state(self, state: str) -> None:
        self.batch_jobs_by_state[state] -= 1
        if self.batch_jobs_by_state[state] <= 0:
            del self.batch_jobs_by_state[state]

    def record_batch_deleted(self, state: str) -> None:
        with self._lock:
            self.batch_jobs_deleted += 1
            self._uncount_state(state)

    def record_batch_results(self, model: str, text_hashes: list[str], tokens: int, failed: int) -> None:
        with self._lock:
            self.batch_texts_embedded += len(text_hashes)
            self.batch_embeds_per_text.update(text_hashes)
            self.batch_texts_embedded_by_model[model] += len(text_hashes)
            self.batch_tokens += tokens
            self.batch_items_failed += failed

    def record_upload(self, size: int) -> None:
        with self._lock:
            self.files_uploaded += 1
            self.file_bytes_uploaded += size

    def record_download(self) -> None:
        with self._lock:
            self.files_downloaded += 1

    def clear(self) -> None:
        """Zero everything in place (references to this object stay valid)."""
        with self._lock:
            self.calls_by_endpoint.clear()
            self.successful_calls = 0
            self.texts_embedded = 0
            self.embeds_per_text.clear()
            self.title_by_text.clear()
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
            self.batch_jobs_created = 0
            self.batch_jobs_by_display_name.clear()
            self.batch_items_per_job.clear()
            self.batch_jobs_by_state.clear()
            self.batch_jobs_deleted = 0
            self.batch_texts_embedded = 0
            self.batch_items_failed = 0
            self.batch_embeds_per_text.clear()
            self.batch_texts_embedded_by_model.clear()
            self.batch_tokens = 0
            self.files_uploaded = 0
            self.file_bytes_uploaded = 0
            self.files_downloaded = 0

    def snapshot(self) -> SimulatorStats:
        with self._lock:
            return SimulatorStats(
                calls_by_endpoint=Counter(self.calls_by_endpoint),
                successful_calls=self.successful_calls,
                texts_embedded=self.texts_embedded,
                embeds_per_text=Counter(self.embeds_per_text),
                title_by_text=dict(self.title_by_text),
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
                batch_jobs_created=self.batch_jobs_created,
                batch_jobs_by_display_name=Counter(self.batch_jobs_by_display_name),
                batch_items_per_job=dict(self.batch_items_per_job),
                batch_jobs_by_state=Counter(self.batch_jobs_by_state),
                batch_jobs_deleted=self.batch_jobs_deleted,
                batch_texts_embedded=self.batch_texts_embedded,
                batch_items_failed=self.batch_items_failed,
                batch_embeds_per_text=Counter(self.batch_embeds_per_text),
                batch_texts_embedded_by_model=Counter(self.batch_texts_embedded_by_model),
                batch_tokens=self.batch_tokens,
                files_uploaded=self.files_uploaded,
                file_bytes_uploaded=self.file_bytes_uploaded,
                files_downloaded=self.files_downloaded,
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
            "title_by_text": copy.title_by_text,
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
            "batch_jobs_created": copy.batch_jobs_created,
            "batch_jobs_by_display_name": dict(copy.batch_jobs_by_display_name),
            "batch_items_per_job": copy.batch_items_per_job,
            "batch_jobs_by_state": dict(copy.batch_jobs_by_state),
            "batch_jobs_deleted": copy.batch_jobs_deleted,
            "batch_texts_embedded": copy.batch_texts_embedded,
            "batch_items_failed": copy.batch_items_failed,
            "batch_embeds_per_text": dict(copy.batch_embeds_per_text),
            "batch_texts_embedded_by_model": dict(copy.batch_texts_embedded_by_model),
            "batch_tokens": copy.batch_tokens,
            "tokens_by_path": {"online": copy.tokens_counted, "batch": copy.batch_tokens},
            "files_uploaded": copy.files_uploaded,
            "file_bytes_uploaded": copy.file_bytes_uploaded,
            "files_downloaded": copy.files_downloaded,
        }
