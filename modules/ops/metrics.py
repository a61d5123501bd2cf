"""Prometheus metrics, one registry per process (`process_metrics()`), every name under `batch_embedding_`
(each documented in the README, "Metrics"): the queue's chunks by state and the oldest pending chunk's age
(gauges read from the queue's SQL counts at each scrape), API calls by outcome, 429s, tokens and cost by
model, runs by exit code and chunks processed (counters of this process), and the time of each embedding
call (a histogram). The gauges are the database's, the same in every process: aggregate them with max().
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import cache

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from modules.embedders.base import Embedder, EmbedRequest, Vectors
from modules.embedders.batch_base import BatchEmbedder
from modules.engine.history import RunReport
from modules.errors import (
    PermanentEmbeddingError,
    ProviderConfigError,
    RateLimitedError,
    StoreError,
)
from modules.logs import get_logger
from modules.stores.base import ChunkStore, RetryRule

log = get_logger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATES = ("embedded", "pending", "cooling_down", "quarantined", "in_progress", "other_model")
_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        if registry is None:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)
        self.chunks = Gauge("batch_embedding_chunks", "Chunks by state (the queue's SQL counts)", ["state"], registry=r)
        self.oldest_pending = Gauge(
            "batch_embedding_oldest_pending_age_seconds", "Age of the oldest chunk waiting for a vector", registry=r
        )
        self.database_up = Gauge("batch_embedding_database_up", "1 if the last scrape read the counts", registry=r)
        self.api_calls = Counter(
            "batch_embedding_api_calls", "Embedding API calls by outcome", ["model", "outcome"], registry=r
        )
        self.rate_limited = Counter("batch_embedding_rate_limited", "429 answers", ["model"], registry=r)
        self.tokens = Counter("batch_embedding_tokens", "Tokens sent by finished runs", ["model"], registry=r)
        self.cost = Counter("batch_embedding_cost_usd", "Cost of finished runs in US dollars", ["model"], registry=r)
        self.batch_seconds = Histogram(
            "batch_embedding_batch_duration_seconds",
            "Time of one embedding call",
            ["model"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.chunks_processed = Counter(
            "batch_embedding_chunks_processed", "Chunks embedded or recorded failed", ["result"], registry=r
        )
        self.runs = Counter("batch_embedding_runs", "Finished runs by exit code", ["exit_code"], registry=r)

    async def refresh(self, store: ChunkStore, *, model_id: str | None, retry: RetryRule) -> None:
        """Read the queue's counts into the gauges (at each scrape)."""
        try:
            status = await store.status(model_id=model_id, retry=retry)
        except StoreError as exc:
            self.database_up.set(0)
            log.debug("📈 メトリクス用の件数を読めませんでした: %s", exc)
            return
        self.database_up.set(1)
        values = {
            "embedded": status.embedded,
            "pending": status.pending,
            "cooling_down": status.cooling_down,
            "quarantined": status.quarantined,
            "in_progress": status.in_progress,
            "other_model": status.other_model,
        }
        for state, value in values.items():
            self.chunks.labels(state=state).set(value)
        self.oldest_pending.set(status.oldest_pending_age_seconds or 0.0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


@cache
def process_metrics() -> Metrics:
    """The process's one registry (created on first use)."""
    return Metrics()


class MetricsObserver:
    """A RunObserver: counts finished runs, their chunks, tokens and cost."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def run_finished(self, report: RunReport) -> None:
        m, model = self.metrics, report.model or "unknown"
        m.runs.labels(exit_code=str(report.exit_code)).inc()
        m.chunks_processed.labels(result="embedded").inc(report.stats.embedded)
        m.chunks_processed.labels(result="failed").inc(report.stats.failed)
        if report.tokens:
            m.tokens.labels(model=model).inc(report.tokens)
        if report.cost_usd:
            m.cost.labels(model=model).inc(report.cost_usd)


class MeteredEmbedder:
    """An Embedder that counts each call's outcome and time, around the real one (which it owns)."""

    def __init__(self, inner: Embedder, metrics: Metrics) -> None:
        self.inner = inner
        self.metrics = metrics

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def dimensions(self) -> int:
        return self.inner.dimensions

    @property
    def max_batch(self) -> int:
        return self.inner.max_batch

    async def embed(self, requests: Sequence[EmbedRequest], on_sent: Callable[[], None] | None = None) -> Vectors:
        started = time.perf_counter()
        outcome = "error"
        try:
            vectors = await self.inner.embed(requests, on_sent)
            outcome = "ok"
            return vectors
        except RateLimitedError:
            outcome = "rate_limited"
            self.metrics.rate_limited.labels(model=self.model_id).inc()
            raise
        except ProviderConfigError:
            outcome = "config"
            raise
        except PermanentEmbeddingError:
            outcome = "invalid"
            raise
        finally:
            self.metrics.api_calls.labels(model=self.model_id, outcome=outcome).inc()
            self.metrics.batch_seconds.labels(model=self.model_id).observe(time.perf_counter() - started)

    async def embed_query(self, text: str) -> Vectors:
        outcome = "error"
        try:
            vectors = await self.inner.embed_query(text)
            outcome = "ok"
            return vectors
        except RateLimitedError:
            outcome = "rate_limited"
            self.metrics.rate_limited.labels(model=self.model_id).inc()
            raise
        finally:
            self.metrics.api_calls.labels(model=self.model_id, outcome=outcome).inc()

    def estimate_tokens(self, text: str) -> int:
        return self.inner.estimate_tokens(text)

    @property
    def input_format(self) -> str:
        return self.inner.input_format

    def framing_tokens(self, title: str | None) -> int:
        return self.inner.framing_tokens(title)

    def calls_made(self) -> int:
        return self.inner.calls_made()

    def batch_client(self) -> BatchEmbedder | None:
        return self.inner.batch_client()

    async def aclose(self) -> None:
        await self.inner.aclose()
