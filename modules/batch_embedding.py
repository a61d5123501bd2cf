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
from collections.abc import Callable
from datetime import timedelta
from types import TracebackType

from modules.embedders import make_embedder
from modules.embedders.base import Embedder
from modules.embedding_models import model_info
from modules.engine.batch_route import BatchOptions, BatchRoute
from modules.engine.breaker import CircuitBreaker
from modules.engine.history import HistoryWriter, RunObserver, RunReport, ending, notify_observers
from modules.engine.pacing import Pacer
from modules.engine.recovery import RetryPolicy
from modules.engine.resilience import finish_despite_cancel
from modules.engine.run import EmbeddingRun, RunOptions
from modules.engine.screening import Screener
from modules.engine.stats import RunStats, log_final_statistics
from modules.engine.workers import dead_local_owners, worker_name
from modules.errors import (
    ApiUnavailableError,
    DatabaseLostError,
    MigrationError,
    ModelMismatchError,
    ModelRetiredError,
    ProviderConfigError,
    StoreError,
    StoreUnavailableError,
    UnknownDocumentError,
)
from modules.logs import get_logger
from modules.model_ids import model_id_of, settings_for_model_id
from modules.settings import Settings, SettingsError, load_settings
from modules.stores import open_store
from modules.stores.base import ChunkStore, ClaimFilter, ClaimMode, QueueStatus, RetryRule
from modules.stores.ops_base import operations_store
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
        self.migration_stats: RunStats | None = None  # the shadow fill of the last run, if a migration filled
        self._migration_embedders: dict[str, Embedder] = {}  # by model id: a migration's target
        self._retired: list[Embedder] = []  # embedders of a model a cut-over retired (closed at close())
        self.retry_rule = RetryRule(s.max_attempts, s.retry_cooldown, s.retry_cooldown_max)
        self.write_history = True  # one run-history row per run (a watcher writes one per period instead)
        self.observers: list[RunObserver] = []  # told of every run's end, after the history row
        self.embedder_wrapper: Callable[[Embedder], Embedder] | None = None  # e.g. metrics around its own embedder

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
            await self.follow_live_model()
            self._embedder = make_embedder(self.settings)
            if self.embedder_wrapper is not None:
                self._embedder = self.embedder_wrapper(self._embedder)

    async def follow_live_model(self) -> None:
        """After a model migration's cut-over the column holds its model: embed with that one, whatever
        EMBEDDING_MODEL still says (mixing two models would break search). Checked when the generator
        opens and at the start of every run (a cut-over may happen while a long-lived app runs); an
        embedder passed in by the caller is left alone."""
        if not self._owns_embedder:
            return
        try:
            live = await self.store.live_model()
        except StoreError:
            return  # a schema without migrations (an older Supabase push): nothing was cut over
        current = self._embedder.model_id if self._embedder is not None else model_id_of(self.settings)
        if live is None or live == current:
            return
        try:
            followed = settings_for_model_id(self.settings, live)
        except SettingsError as exc:
            raise ProviderConfigError(
                f"the vector column holds {live} since a model migration's cut-over, and these settings can't "
                f"embed with it: {exc}"
            ) from None
        log.warning(
            "🔀 ベクトル列は %s に切り替え済みです (設定は %s): %s で埋め込みます。"
            ".env の EMBEDDING_MODEL / EMBEDDING_DIMENSIONS を更新してください",
            live,
            current,
            live,
        )
        if self._embedder is None:
            self.settings = followed
        else:
            self.adopt_model(followed, make_embedder(followed))

    def adopt_model(self, settings: Settings, embedder: Embedder) -> None:
        """Embed with another model from now on (a cut-over just made it the column's)."""
        if self._owns_embedder and self._embedder is not None and self._embedder is not embedder:
            self._retired.append(self._embedder)
        self.settings, self._embedder, self._owns_embedder = settings, embedder, True
        self._migration_embedders = {k: e for k, e in self._migration_embedders.items() if e is not embedder}

    def migration_embedder(self, settings: Settings) -> Embedder:
        """The embedder of a migration's target model (made once, closed with the generator)."""
        model_id = model_id_of(settings)
        if model_id not in self._migration_embedders:
            self._migration_embedders[model_id] = make_embedder(settings)
        return self._migration_embedders[model_id]

    async def close(self) -> None:
        for extra in [*self._migration_embedders.values(), *self._retired]:
            await extra.aclose()
        self._migration_embedders.clear()
        self._retired.clear()
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
        batch_api: bool | None = None,
        wait_for_batch: bool = True,
        watch: bool = False,
    ) -> RunStats:
        """Embed the selected chunks and return the run's stats (`stats.ok`: nothing in scope is left
        failed or pending). Raises ApiUnavailableError when the API can't be used (chunks released),
        ModelMismatchError when the column holds another model's vectors (unless allowed). `watch`: the
        watcher's selection, pending chunks and failed ones whose cooldown has passed (not quarantined).
        However it ends, the run is reported to the run history and the observers.

        Every run first ingests Batch API jobs that finished meanwhile. With `batch_api` (default: when
        EMBEDDING_BATCH_API_THRESHOLD is set and the selection is larger), the selected chunks go into
        Batch API jobs instead; with `wait_for_batch` the run tracks them until they end and embeds
        online whatever they could not. While a model migration fills, the run then embeds the same
        selection with the new model too (`migration_stats`)."""
        scope = "watch" if watch else "failed" if retry_failed else "pending"
        started = time.monotonic()
        self.stats = RunStats(limited=limit is not None, retry_only=retry_failed)
        try:
            stats = await self._run_selected(
                doc_id=doc_id,
                limit=limit,
                retry_failed=retry_failed,
                allow_model_mix=allow_model_mix,
                watch=watch,
                batch_api=batch_api,
                wait_for_batch=wait_for_batch,
            )
        except BaseException as exc:
            await self._report(scope, doc_id, limit, started, self.stats, exc)
            raise
        await self._report(scope, doc_id, limit, started, stats, None)
        await self._fill_migration(doc_id, limit, retry_failed)
        return stats

    async def _report(
        self,
        scope: str,
        doc_id: str | None,
        limit: int | None,
        started: float,
        stats: RunStats,
        error: BaseException | None,
    ) -> None:
        observers = list(self.observers)
        reachable = not isinstance(error, StoreUnavailableError | DatabaseLostError)  # nowhere to write it
        if self.write_history and reachable and hasattr(self._store, "record_run"):  # a store without history: none
            observers.insert(0, HistoryWriter(operations_store(self._store)))
        if not observers:
            return
        outcome, code = ending(stats, error)
        model = self._embedder.model_id if self._embedder is not None else None
        report = RunReport(self.worker, scope, doc_id, limit, time.monotonic() - started, stats, outcome, code, model)
        await notify_observers(observers, report)

    async def _run_selected(
        self,
        *,
        doc_id: str | None,
        limit: int | None,
        retry_failed: bool,
        allow_model_mix: bool | None,
        watch: bool,
        batch_api: bool | None,
        wait_for_batch: bool,
    ) -> RunStats:
        await self.follow_live_model()
        store, model_id = self.store, self.embedder.model_id
        if doc_id is not None and not await store.document_exists(doc_id):
            raise UnknownDocumentError(doc_id)
        dead = await self.dead_owners()
        whole = await store.status(model_id=model_id, dead_owners=dead, retry=self.retry_rule)
        mix_allowed = self.settings.allow_model_mix if allow_model_mix is None else allow_model_mix
        if whole.other_model and not mix_allowed:
            raise ModelMismatchError(self._model_mix_message(whole.other_model))
        queue = whole if doc_id is None else await store.status(doc_id, model_id=model_id, dead_owners=dead)
        selected = queue.pending + queue.retry_due if watch else queue.failed if retry_failed else queue.pending
        self.stats = stats = RunStats(
            total=min(selected, limit) if limit is not None else selected,
            limited=limit is not None,
            retry_only=retry_failed,
            model=model_id,
            usd_per_million_tokens=self.price_per_million_tokens(),
            usd_per_million_tokens_batch=self.price_per_million_tokens(batch=True),
        )
        calls_before = self.embedder.calls_made()
        log.info("🧠 バッチエンベディング生成開始: %s", await self._describe_target(doc_id, retry_failed, watch))
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
        mode = ClaimMode.DUE if watch else ClaimMode.FAILED if retry_failed else ClaimMode.PENDING
        where = ClaimFilter(
            mode=mode, doc_id=doc_id, failed_before=await store.server_time(), dead_owners=dead, retry=self.retry_rule
        )
        breaker = CircuitBreaker(outage_seconds=self.settings.outage_seconds)
        pacer = self.new_pacer()
        route = self.batch_route(stats)
        threshold = self.settings.batch_api_threshold
        use_batch = batch_api if batch_api is not None else threshold is not None and selected > threshold
        try:
            if route is not None:
                await route.track(dead)  # jobs that finished since the last run: ingested now
            if use_batch:
                if route is None:
                    raise ProviderConfigError("--batch-api needs EMBEDDING_PROVIDER=gemini (the Batch API is Google's)")
                log.info("📮 Batch API で処理します (オンラインの半額・24時間以内に完了)")
                await route.submit(where, limit)
                if not wait_for_batch:
                    return stats
                await route.wait(dead_owners=dead)
                if limit is not None:
                    limit = max(0, limit - stats.processed)
            await self.new_run(where, limit, stats, pacer, breaker).execute()
            if limit is None and not watch:  # a watcher takes them at a later sweep
                wait = await self._abandoned_lease_wait(doc_id)
                if wait is not None:
                    log.info("⏳ 応答のないワーカーのリース切れを %.0f秒待って引き継ぎます", wait)
                    await asyncio.sleep(wait)
                    await self.new_run(where, None, stats, pacer, breaker).execute()
        except StoreUnavailableError as exc:  # began, then lost the database: "try later", not "nothing attempted"
            lost = DatabaseLostError(
                f"the database was lost mid-run: {exc}", "once the database answers again (check DATABASE_URL)"
            )
            stats.aborted, stats.api_unavailable, stats.database_lost = str(lost), lost.retry_hint, True
            raise lost from None
        finally:
            stats.api_calls = self.embedder.calls_made() - calls_before
            stats.total = max(stats.total, stats.processed)
            stats.finished = time.monotonic()
            await self._count_scope(stats, doc_id, model_id)
            log_final_statistics(stats)
        return stats

    async def _fill_migration(self, doc_id: str | None, limit: int | None, retry_failed: bool) -> None:
        """While a model migration fills, an ordinary run embeds its chunks with the new model too
        (online: new uploads are few), so that no chunk is missing a vector at the cut-over."""
        self.migration_stats = None
        try:
            current = await self.store.migration_current()
            if current is None or current.state != "filling":
                return
            self.store.shadow()
        except MigrationError as exc:
            log.warning("⚠️ モデル移行中ですが、この接続では移行先モデルの埋め込みを行えません: %s", exc)
            return
        except StoreError:
            return  # a schema without migrations
        from modules.engine.migration import ModelMigrator

        target = settings_for_model_id(self.settings, current.target_model)
        try:
            self.migration_stats = await ModelMigrator(self).fill(
                target, batch_api=False, limit=limit, retry_failed=retry_failed, doc_id=doc_id
            )
        except ModelRetiredError:
            log.info("🔀 モデル移行は切り替え済みか中止されました: 移行先モデルの埋め込みは不要です")

    def batch_route(
        self,
        stats: RunStats,
        *,
        embedder: Embedder | None = None,
        settings: Settings | None = None,
        target: str = "live",
    ) -> BatchRoute | None:
        """The Batch API route, where the provider has one (Gemini); `target` "next" submits a model
        migration's jobs (with its model's `embedder`)."""
        embedder = embedder or self.embedder
        client = embedder.batch_client()
        if client is None:
            return None
        s = self.settings
        return BatchRoute(
            store=self.store,
            client=client,
            screener=self._screener(embedder, settings),
            options=BatchOptions(
                worker=self.worker,
                job_size=s.batch_job_size,
                poll_seconds=s.batch_poll_seconds,
                secrets=tuple(s.secrets()),
                target=target,
            ),
            stats=stats,
        )

    def new_run(
        self,
        where: ClaimFilter,
        limit: int | None,
        stats: RunStats,
        pacer: Pacer,
        breaker: CircuitBreaker,
        *,
        store: ChunkStore | None = None,
        embedder: Embedder | None = None,
        settings: Settings | None = None,
    ) -> EmbeddingRun:
        """One run over `store` (default: the live queue; a migration passes its shadow view) with
        `embedder` and its model's `settings` (default: the live model's)."""
        embedder = embedder or self.embedder
        return EmbeddingRun(
            store=store or self.store,
            embedder=embedder,
            pacer=pacer,
            policy=self.policy,
            screener=self._screener(embedder, settings),
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
        owners = [o.owner for o in await self.store.lease_owners()] + await self.store.batch_workers()
        return dead_local_owners(owners)

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

    def price_per_million_tokens(self, *, batch: bool = False, settings: Settings | None = None) -> float | None:
        """The configured model's (or `settings`') list price per million input tokens (0 for the local
        model; None for a Gemini model the table does not know)."""
        settings = settings or self.settings
        if settings.provider != "gemini":
            return 0.0
        info = model_info(settings.model)
        return info.usd_per_million_tokens_batch if batch else info.usd_per_million_tokens

    def _model_mix_message(self, count: int) -> str:
        t, model = self.settings.tables, self.embedder.model_id
        return (
            f"{t.chunks}.{t.embedding_column} holds {count} vectors made by another model than {model} "
            "(EMBEDDING_MODEL / EMBEDDING_DIMENSIONS), and search can't compare two models' vectors. Re-embed "
            f"everything with {model} while search keeps working: python batch_embedding_processor.py "
            f"--migrate-to {model} (then --migrate-cutover); or in place, search degraded meanwhile: python "
            "fix_missing_embeddings.py; or set EMBEDDING_MODEL to the model that made them (EMBEDDING_ALLOW_MODEL_MIX="
            "true lets runs add vectors meanwhile)"
        )

    def new_pacer(self, embedder: Embedder | None = None) -> Pacer:
        s = self.settings
        embedder = embedder or self.embedder
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
            max_batch=embedder.max_batch,
            slow_seconds=s.request_timeout / 2,
        )

    def _screener(self, embedder: Embedder | None = None, settings: Settings | None = None) -> Screener:
        s = settings or self.settings
        embedder = embedder or self.embedder
        return Screener(
            model_id=embedder.model_id,
            task_type=s.task_type,
            use_title=s.use_title,
            cache=s.cache,
            max_input_tokens=s.max_input_tokens,
            overlong=s.overlong,
            estimate_tokens=embedder.estimate_tokens,
            framing_tokens=embedder.framing_tokens,
            input_format=embedder.input_format,
        )

    async def _describe_target(self, doc_id: str | None, retry_failed: bool, watch: bool = False) -> str:
        if watch:
            return "監視: 未処理チャンクと再試行時期の来た失敗チャンク"
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
