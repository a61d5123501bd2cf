"""Batch embedding generation: the orchestrator and the two functions the rest of the backend imports.

    from modules.batch_embedding import batch_generate_embeddings_for_document
    ok = await batch_generate_embeddings_for_document(doc_id)

A run claims batches from the database (leased, SKIP LOCKED), embeds each batch in one API call,
writes the vectors in one round trip, and records every chunk that still fails, with its reason,
so that only failures are re-run (`--retry-only`). It streams: only the batches in flight are
held in memory, however large the backlog. The per-run work is `modules.engine.run.EmbeddingRun`;
this class owns the long-lived parts (database pool, embedder) and builds one run per call.

Library code never configures logging: a host app or the CLI does (see `modules/logs.py`).
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from types import TracebackType

from modules.embedders import make_embedder
from modules.embedders.base import Embedder
from modules.embedding_models import model_info
from modules.engine.breaker import CircuitBreaker
from modules.engine.pacing import Pacer
from modules.engine.recovery import RetryPolicy
from modules.engine.resilience import finish_despite_cancel
from modules.engine.run import EmbeddingRun, RunOptions
from modules.engine.screening import Screener
from modules.engine.stats import RunStats, log_final_statistics
from modules.engine.workers import dead_local_owners, worker_name
from modules.errors import ApiUnavailableError, ModelMismatchError, StoreError, UnknownDocumentError
from modules.logs import get_logger
from modules.settings import Settings, load_settings
from modules.stores import open_store
from modules.stores.base import ChunkStore, ClaimFilter, ClaimMode, QueueStatus
from modules.text import content_hash

log = get_logger(__name__)

__all__ = [
    "BatchEmbeddingGenerator",
    "batch_generate_embeddings_for_all_pending",
    "batch_generate_embeddings_for_document",
    "content_hash",
]


class BatchEmbeddingGenerator:
    """Embeds pending chunks in batches, with recovery; use as an async context manager.

    The guide's `batch_size` (10) and `retry_batch_size` (5) keep their names. The guide's fixed
    `api_delay` between calls is gone: the pacer waits only as long as the quota requires, and a 429
    pauses every batch for the time the server asks.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: ChunkStore | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self.settings = settings or load_settings()
        self._store = store
        self._embedder = embedder
        self._owns_store = store is None
        self._owns_embedder = embedder is None
        s = self.settings
        self.batch_size = s.fixed_batch_size or 10
        self.retry_batch_size = s.retry_batch_size
        self.policy = RetryPolicy.from_settings(s)
        self.worker = worker_name()
        self.stats = RunStats()

    # --- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> BatchEmbeddingGenerator:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def open(self) -> None:
        if self._store is None:
            self._store, _ = await open_store(self.settings, pool_size=self.lanes + 2)
        if self._embedder is None:
            self._embedder = make_embedder(self.settings)

    async def close(self) -> None:
        if self._embedder is not None and self._owns_embedder:
            await self._embedder.aclose()
            self._embedder = None
        if self._store is not None and self._owns_store:
            await self._store.aclose()
            self._store = None

    @property
    def store(self) -> ChunkStore:
        if self._store is None:
            raise RuntimeError("BatchEmbeddingGenerator is not open; use 'async with'")
        return self._store

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            raise RuntimeError("BatchEmbeddingGenerator is not open; use 'async with'")
        return self._embedder

    @property
    def lanes(self) -> int:
        """Batches a run keeps going at once (the adaptive limit moves below this)."""
        s = self.settings
        if s.provider == "local":
            return 2  # one embedding on the CPU while the other batch is written
        return s.max_concurrency if s.concurrency == "auto" else s.concurrency

    # --- public operations -------------------------------------------------------------------

    async def status(self, doc_id: str | None = None) -> QueueStatus:
        return await self.store.status(doc_id)

    async def run(
        self,
        *,
        doc_id: str | None = None,
        limit: int | None = None,
        retry_failed: bool = False,
        allow_model_mix: bool | None = None,
    ) -> RunStats:
        """Embed the selected chunks and return the run's stats (`stats.ok`: nothing in scope is left
        failed or pending). Raises ApiUnavailableError when the API can't be used (chunks released),
        ModelMismatchError when the column holds another model's vectors (unless allowed)."""
        store, model_id = self.store, self.embedder.model_id
        if doc_id is not None and not await store.document_exists(doc_id):
            raise UnknownDocumentError(doc_id)
        dead = await self.dead_owners()
        whole = await store.status(model_id=model_id, dead_owners=dead)
        mix_allowed = self.settings.allow_model_mix if allow_model_mix is None else allow_model_mix
        if whole.other_model and not mix_allowed:
            raise ModelMismatchError(self._model_mix_message(whole.other_model))
        queue = whole if doc_id is None else await store.status(doc_id, model_id=model_id, dead_owners=dead)
        selected = queue.failed if retry_failed else queue.pending
        self.stats = stats = RunStats(
            total=min(selected, limit) if limit is not None else selected,
            limited=limit is not None,
            retry_only=retry_failed,
            model=model_id,
            usd_per_million_tokens=self.price_per_million_tokens(),
        )
        calls_before = self.embedder.calls_made()
        log.info("🧠 バッチエンベディング生成開始: %s", await self._describe_target(doc_id, retry_failed))
        size = "auto" if self.settings.batch_size == "auto" else str(self.batch_size)
        if limit is not None:
            log.info(
                "📋 %d個のチャンクをバッチ処理します (バッチサイズ: %s, --limit %d の限定実行: 残りは未処理のまま)",
                stats.total,
                size,
                limit,
            )
        else:
            log.info("📋 %d個のチャンクをバッチ処理します (バッチサイズ: %s)", stats.total, size)
        if dead:
            log.info("💀 停止したワーカーのチャンクを引き継ぎます: %s", ", ".join(dead))
        mode = ClaimMode.FAILED if retry_failed else ClaimMode.PENDING
        where = ClaimFilter(mode=mode, doc_id=doc_id, failed_before=await store.server_time(), dead_owners=dead)
        breaker = CircuitBreaker(outage_seconds=self.settings.outage_seconds)
        pacer = self._new_pacer()
        try:
            await self._new_run(where, limit, stats, pacer, breaker).execute()
            if limit is None:
                wait = await self._abandoned_lease_wait(doc_id)
                if wait is not None:
                    log.info("⏳ 応答のないワーカーのリース切れを %.0f秒待って引き継ぎます", wait)
                    await asyncio.sleep(wait)
                    await self._new_run(where, None, stats, pacer, breaker).execute()
        finally:
            stats.api_calls = self.embedder.calls_made() - calls_before
            stats.total = max(stats.total, stats.processed)
            stats.finished = time.monotonic()
            await self._count_scope(stats, doc_id, model_id)
            log_final_statistics(stats)
        return stats

    def _new_run(
        self, where: ClaimFilter, limit: int | None, stats: RunStats, pacer: Pacer, breaker: CircuitBreaker
    ) -> EmbeddingRun:
        return EmbeddingRun(
            store=self.store,
            embedder=self.embedder,
            pacer=pacer,
            policy=self.policy,
            screener=self._screener(),
            options=RunOptions(
                worker=self.worker,
                lease_seconds=self.settings.lease_seconds,
                retry_batch_size=self.retry_batch_size,
                lanes=self.lanes,
                secrets=tuple(self.settings.secrets()),
            ),
            where=where,
            limit=limit,
            stats=stats,
            breaker=breaker,
        )

    async def dead_owners(self) -> tuple[str, ...]:
        """Lease owners on this host whose process is gone: their chunks are taken at once."""
        return dead_local_owners(o.owner for o in await self.store.lease_owners())

    async def _abandoned_lease_wait(self, doc_id: str | None) -> float | None:
        """If chunks in scope are leased by a worker that stopped renewing (a live one renews every
        third of its lease), the seconds until those leases expire; None when there are none."""
        if (await self.store.status(doc_id)).in_progress == 0:
            return None
        now = await self.store.server_time()
        horizon = now + timedelta(seconds=self.settings.lease_seconds / 2)
        ends = [
            o.expires_at
            for o in await self.store.lease_owners()
            if o.owner != self.worker and o.expires_at is not None and o.expires_at < horizon
        ]
        if not ends:
            return None
        return max(0.0, (max(ends) - now).total_seconds()) + 0.5

    async def _count_scope(self, stats: RunStats, doc_id: str | None, model_id: str) -> None:
        """What is left in the run's scope at the end: the exit code and the summary depend on it."""
        try:
            final = await finish_despite_cancel(self.store.status(doc_id, model_id=model_id), limit_seconds=5)
        except (StoreError, asyncio.CancelledError, TimeoutError):
            return  # the summary then speaks of this run only
        stats.scope_failed = final.failed
        stats.scope_pending = final.pending

    def price_per_million_tokens(self, *, batch: bool = False) -> float | None:
        """The configured model's list price per million input tokens (0 for the local model; None for
        a Gemini model the table does not know)."""
        if self.settings.provider != "gemini":
            return 0.0
        info = model_info(self.settings.model)
        return info.usd_per_million_tokens_batch if batch else info.usd_per_million_tokens

    def _model_mix_message(self, count: int) -> str:
        t, model = self.settings.tables, self.embedder.model_id
        return (
            f"{t.chunks}.{t.embedding_column} holds {count} vectors made by another model than {model} "
            "(EMBEDDING_MODEL / EMBEDDING_DIMENSIONS), and search can't compare two models' vectors. Re-embed them "
            "with the configured model: python fix_missing_embeddings.py (add --dry-run to see what it would do); "
            "or set EMBEDDING_MODEL to the model that made them; or set EMBEDDING_ALLOW_MODEL_MIX=true while you "
            "re-embed everything"
        )

    def _new_pacer(self) -> Pacer:
        s = self.settings
        adaptive = s.concurrency == "auto" and s.provider == "gemini"
        lanes = self.lanes
        return Pacer(
            rpm=s.rpm,
            tpm=s.tpm,
            window_seconds=s.quota_window,
            concurrency=lanes if not adaptive else 1,  # auto: one batch in flight, more when answers hold it back
            max_concurrency=lanes,
            adaptive=adaptive,
            batch_size=s.fixed_batch_size,
            max_batch=self.embedder.max_batch,
            slow_seconds=s.request_timeout / 2,
        )

    def _screener(self) -> Screener:
        s = self.settings
        return Screener(
            model_id=self.embedder.model_id,
            task_type=s.task_type,
            use_title=s.use_title,
            cache=s.cache,
            max_input_tokens=s.max_input_tokens,
            overlong=s.overlong,
            estimate_tokens=self.embedder.estimate_tokens,
            framing_tokens=self.embedder.framing_tokens,
            input_format=self.embedder.input_format,
        )

    async def _describe_target(self, doc_id: str | None, retry_failed: bool) -> str:
        scope = "失敗チャンクの再処理" if retry_failed else "未処理チャンク"
        if doc_id is None:
            return f"全{scope}"
        name = await self.store.document_name(doc_id) or doc_id
        return f"{name} ({scope})"


# --- the functions the upload API and other modules import ------------------------------------


async def batch_generate_embeddings_for_document(
    doc_id: str, max_chunks: int | None = None, *, generator: BatchEmbeddingGenerator | None = None
) -> bool:
    """Embed one document's pending chunks (at most `max_chunks`). True only if every selected
    chunk ended embedded; failures stay recorded for `--retry-only`. Pass an open `generator` to
    reuse its database pool and embedder (the upload API does)."""
    return await _run_once(generator, doc_id=doc_id, limit=max_chunks)


async def batch_generate_embeddings_for_all_pending(
    limit: int | None = None, *, generator: BatchEmbeddingGenerator | None = None
) -> bool:
    """Embed every pending chunk (at most `limit`). True only if every selected chunk ended embedded."""
    return await _run_once(generator, limit=limit)


async def _run_once(generator: BatchEmbeddingGenerator | None, *, doc_id: str | None = None, limit: int | None) -> bool:
    try:
        if generator is not None:
            stats = await generator.run(doc_id=doc_id, limit=limit)
        else:
            async with BatchEmbeddingGenerator(load_settings()) as own:
                stats = await own.run(doc_id=doc_id, limit=limit)
    except ApiUnavailableError:
        return False  # already logged, with when to try again; every chunk went back to pending
    return stats.ok
