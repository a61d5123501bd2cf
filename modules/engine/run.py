"""One run: lanes that claim a batch, embed it, write it, and go again until nothing is left.

Collaborators are handed in (store, embedder, pacer, retry policy, circuit breaker, screener); the run
owns only the order of things: claim with a lease (renewed by a heartbeat while in flight), screen,
reuse cached vectors, embed with retries, split a batch that can't be embedded (10 -> 5 -> 1) so one
bad chunk never fails its neighbours, write what was embedded in one statement, record each chunk's
own failure.

Any stop gives the batches in flight back untouched: Ctrl-C or SIGTERM (the cancellation propagates),
and a reason to stop the whole run (the API can't be used, the settings are refused, the database is
gone), which cancels the other lanes at once rather than letting them sleep on a pause.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from modules.embedders.base import Embedder, EmbedRequest, Vectors
from modules.engine.breaker import CircuitBreaker
from modules.engine.leases import LeaseKeeper
from modules.engine.pacing import Pacer, Send
from modules.engine.recovery import RetryPolicy, call_with_retries
from modules.engine.resilience import claim_despite_cancel, finish_despite_cancel, with_db_retries
from modules.engine.screening import Item, Screener
from modules.engine.stats import RunStats
from modules.errors import (
    ApiUnavailableError,
    EmbeddingError,
    PermanentEmbeddingError,
    ProviderConfigError,
    RunAborted,
    StoreUnavailableError,
    TransientEmbeddingError,
)
from modules.logs import get_logger, scrub
from modules.stores.base import Chunk, ChunkStore, ClaimFilter, Completed, Failure

log = get_logger(__name__)
_STOPS_THE_RUN = (ApiUnavailableError, ProviderConfigError, StoreUnavailableError, RunAborted)


class BatchDeferred(Exception):
    """A batch failed for the API's reasons while no call was succeeding: it is given back untouched
    (no chunk charged) and the circuit breaker decides whether the run goes on."""


@dataclass(frozen=True)
class RunOptions:
    """The scalars a run needs besides its collaborators."""

    worker: str  # the lease owner's name: host:pid:random
    lease_seconds: int
    retry_batch_size: int
    lanes: int  # batches kept going at once (the pacer's adaptive limit moves below this)
    secrets: tuple[str, ...] = ()  # never stored in an error column, whatever an upstream error quoted


class EmbeddingRun:
    """Embeds the chunks `where` selects (at most `limit`), counting into `stats`."""

    def __init__(
        self,
        *,
        store: ChunkStore,
        embedder: Embedder,
        pacer: Pacer,
        policy: RetryPolicy,
        screener: Screener,
        options: RunOptions,
        where: ClaimFilter,
        limit: int | None,
        stats: RunStats,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.pacer = pacer
        self.policy = policy
        self.screener = screener
        self.options = options
        self.where = where
        self.remaining = limit
        self.stats = stats
        self.breaker = breaker or CircuitBreaker()
        self.leases = LeaseKeeper(store, options.worker, options.lease_seconds)
        self.batch_count = 0
        self.claimed = 0
        self.stop_reason: BaseException | None = None
        self._lanes: list[asyncio.Task[None]] = []

    async def execute(self) -> None:
        """Run the lanes to the end; raise the reason that stopped the run, if any."""
        async with self.leases:
            self._lanes = [asyncio.create_task(self._lane()) for _ in range(self.options.lanes)]
            try:
                await asyncio.wait(self._lanes)
            except BaseException:  # Ctrl-C / SIGTERM: every lane gives its batch back, then we stop
                for task in self._lanes:
                    task.cancel()
                await asyncio.gather(*self._lanes, return_exceptions=True)
                raise
        if self.stop_reason is not None:
            raise self.stop_reason
        for task in self._lanes:  # a bug in a lane: let it be seen
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    def _stop(self, reason: BaseException) -> None:
        """Stop the whole run: remember why, and cancel the other lanes now (they release their batch)."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self.stats.aborted = str(reason)
            if isinstance(reason, ApiUnavailableError):
                self.stats.api_unavailable = reason.retry_hint
        current = asyncio.current_task()
        for task in self._lanes:
            if task is not current:
                task.cancel()

    @property
    def expected_batches(self) -> int:
        """Batches this run will take, as far as can be known now (auto sizes move)."""
        unclaimed = max(0, self.stats.total - self.claimed)
        return self.batch_count + math.ceil(unclaimed / self.pacer.batch_size)

    def _take_budget(self) -> int:
        size = self.pacer.batch_size
        if self.remaining is None:
            return size
        take = min(size, self.remaining)
        self.remaining -= take
        return take

    def _return_budget(self, unused: int) -> None:
        if self.remaining is not None:
            self.remaining += unused

    async def _lane(self) -> None:
        while self.stop_reason is None:
            async with self.pacer.limiter.hold():
                if self.stop_reason is not None:
                    return
                want = self._take_budget()
                if want <= 0:
                    return
                try:
                    chunks = await self._claim(want)
                except StoreUnavailableError as exc:
                    self._return_budget(want)
                    self._stop(exc)
                    return
                self._return_budget(want - len(chunks))
                if not chunks:
                    return
                self.leases.hold(c.id for c in chunks)
                self.batch_count += 1
                self.claimed += len(chunks)
                number = self.batch_count
                log.info(
                    "📦 バッチ %d/%d 処理開始 (%dチャンク)", number, max(number, self.expected_batches), len(chunks)
                )
                settled_before = self.stats.embedded + self.stats.failed + self.stats.skipped
                try:
                    await self._process(chunks)
                except BatchDeferred as exc:
                    await self._release_unfinished(chunks)
                    settled = self.stats.embedded + self.stats.failed + self.stats.skipped - settled_before
                    self._return_budget(len(chunks) - settled)
                    self.stats.deferred += 1
                    log.warning("↩️ APIの障害のためバッチ %d を未処理に戻しました (失敗扱いにしません): %s", number, exc)
                    continue
                except _STOPS_THE_RUN as exc:
                    await self._release_unfinished(chunks)
                    self._stop(exc)
                    return
                except BaseException:  # cancelled (Ctrl-C, SIGTERM, another lane's stop) or a bug
                    await self._release_unfinished(chunks)
                    raise
                finally:
                    self.leases.drop(c.id for c in chunks)
                self.stats.batches += 1
                log.info(
                    "📊 バッチ進捗: %d/%d | 成功: %d | 失敗: %d | 経過時間: %.1f秒",
                    number,
                    max(number, self.expected_batches),
                    self.stats.embedded,
                    self.stats.failed,
                    self.stats.elapsed,
                )

    async def _claim(self, want: int) -> list[Chunk]:
        o = self.options
        claim = with_db_retries("チャンクの取得", lambda: self.store.claim(o.worker, want, o.lease_seconds, self.where))
        return await claim_despite_cancel(claim, lambda chunks: self.store.release(o.worker, [c.id for c in chunks]))

    async def _release_unfinished(self, chunks: Sequence[Chunk]) -> None:
        # A Ctrl-C (even a second one) must not stop us giving the chunks back. Rows already written
        # or recorded failed are no longer leased to us, so releasing them is a no-op.
        try:
            await finish_despite_cancel(self.store.release(self.options.worker, [c.id for c in chunks]))
        except Exception as exc:  # the database may be the thing that failed; leases expire anyway
            log.warning("リース解放に失敗しました (期限切れで自動的に戻ります): %s", exc)

    async def _process(self, chunks: Sequence[Chunk]) -> None:
        items, rejected = self.screener.screen(chunks)
        if rejected:
            await self._record_failures(rejected)
        if items:
            items = await self._reuse_cached(items)
        if not items:
            return
        # One call for the whole batch, whatever documents it spans (each text carries its own title);
        # then the batch is written in one statement.
        done: list[tuple[Item, Vectors]] = []
        try:
            await self._embed_group(items, done)
        finally:
            if done:  # even when the run stops midway, vectors already computed are kept
                await self._write([item for item, _ in done], np.vstack([vector for _, vector in done]))

    async def _reuse_cached(self, items: Sequence[Item]) -> list[Item]:
        """Write vectors already made for identical text; return the items still to embed."""
        keys = [i.cache_key for i in items if i.cache_key]
        if not keys:
            return list(items)
        cached = {key: v for key, v in (await self.store.cached_vectors(keys)).items() if _is_unit(v)}
        hits = [i for i in items if i.cache_key in cached]
        if hits:
            vectors = np.vstack([cached[i.cache_key] for i in hits if i.cache_key])
            written = await self._write(hits, vectors, cache=False)
            self.stats.cache_hits += written
            log.info("♻️ キャッシュ再利用: %dチャンク (API呼び出しなし)", written)
        return [i for i in items if i.cache_key not in cached]

    async def _embed(self, items: Sequence[Item]) -> Vectors:
        """One API call for these items, paced and retried (429s and transient errors)."""
        requests = [EmbedRequest(i.text, i.chunk.title) for i in items]
        tokens = sum(i.tokens for i in items)
        send = Send(calls=1, texts=len(items), tokens=tokens)
        stats = self.stats

        async def one_call(on_sent: Callable[[], None]) -> Vectors:
            vectors = await self.embedder.embed(requests, on_sent)
            stats.tokens_sent += tokens  # what is billed: texts the API answered with vectors
            return vectors

        return await call_with_retries(
            one_call, policy=self.policy, pacer=self.pacer, send=send, stats=stats, breaker=self.breaker
        )

    async def _embed_group(self, items: Sequence[Item], done: list[tuple[Item, Vectors]]) -> None:
        """Embed a group; if it can't be, re-run it in smaller groups (10 → 5 → 1) so that one bad
        chunk never fails its neighbours. Only a single chunk's own failure is recorded. Each item
        embedded is added to `done` with its vector (one row) as soon as it is, so that a run stopped
        midway still writes what was embedded before."""
        successes_before = self.breaker.successes
        try:
            vectors = await self._embed(items)
        except (PermanentEmbeddingError, TransientEmbeddingError) as exc:
            if isinstance(exc, TransientEmbeddingError) and exc.outage and self.breaker.successes == successes_before:
                raise BatchDeferred(str(exc)) from None  # the API is failing, not these chunks
            if len(items) == 1:
                await self._record_failures([Failure(items[0].chunk.id, str(exc))])
                return
            retry_size = self.options.retry_batch_size
            size = retry_size if len(items) > retry_size else 1
            self.stats.splits += 1
            log.warning("✂️ %dチャンクのバッチが失敗したため%d件ずつ再処理します: %s", len(items), size, exc)
            for start in range(0, len(items), size):
                await self._embed_group(items[start : start + size], done)
            return
        except _STOPS_THE_RUN:
            raise
        except EmbeddingError as exc:  # an error class this run does not know: stop rather than guess
            raise RunAborted(str(exc)) from None
        done.extend((item, vectors[n : n + 1]) for n, item in enumerate(items))

    async def _write(self, items: Sequence[Item], vectors: Vectors, *, cache: bool = True) -> int:
        results = [
            Completed(i.chunk.id, vectors[n], i.content_hash, i.cache_key if cache else None)
            for n, i in enumerate(items)
        ]
        worker, model_id = self.options.worker, self.embedder.model_id
        # A Ctrl-C arriving mid-write lets the one statement finish: computed vectors are kept.
        async with self.leases.lock:
            result = await with_db_retries(
                "書き込み", lambda: finish_despite_cancel(self.store.complete(worker, model_id, results))
            )
            self.leases.drop(i.chunk.id for i in items)
        lost = len(items) - result.written - result.changed
        self.stats.embedded += result.written
        self.stats.skipped += lost
        if result.changed:
            # Edited while in flight: released with its new text; a lane takes it again in this run.
            self._return_budget(result.changed)
            log.info(
                "✏️ 処理中に内容が変わったチャンク %d件を未処理に戻しました (新しい内容で再処理します)", result.changed
            )
        if lost:
            log.warning("⏭️ リースを失ったチャンク %d件は書き込みませんでした (他のワーカーが処理します)", lost)
        return result.written

    async def _record_failures(self, failures: Sequence[Failure]) -> None:
        worker = self.options.worker
        clean = [Failure(f.chunk_id, scrub(f.error, self.options.secrets)) for f in failures]
        async with self.leases.lock:
            recorded = await with_db_retries(
                "失敗の記録", lambda: finish_despite_cancel(self.store.fail(worker, clean))
            )
            self.leases.drop(f.chunk_id for f in clean)
        self.stats.failed += recorded
        self.stats.skipped += len(clean) - recorded
        for failure in clean:
            log.error("❌ チャンク %s: %s", failure.chunk_id, failure.error)


def _is_unit(vector: Vectors) -> bool:
    """A cached vector is used only if it is sound (a degenerate one stored by an older version is not)."""
    norm = float(np.linalg.norm(np.asarray(vector, dtype=np.float64)))
    return bool(np.isfinite(vector).all()) and abs(norm - 1.0) < 1e-3
