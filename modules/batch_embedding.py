"""Batch embedding generation: the orchestrator and the two functions the rest of the backend imports.

    from modules.batch_embedding import batch_generate_embeddings_for_document
    ok = await batch_generate_embeddings_for_document(doc_id)

A run claims batches from the database (leased, SKIP LOCKED), embeds each batch in one API call,
writes the vectors in one round trip, and records every chunk that still fails, with its reason,
so that only failures are re-run (`--retry-only`). It streams: only the batches in flight are
held in memory, however large the backlog.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

import numpy as np

from modules.embedders import EmbedRequest, make_embedder
from modules.embedders.base import Embedder, Vectors
from modules.errors import (
    EmbeddingError,
    PermanentEmbeddingError,
    ProviderConfigError,
    RateLimitedError,
    RunAborted,
    StoreUnavailableError,
    TransientEmbeddingError,
    UnknownDocumentError,
)
from modules.knowledge.chunking import normalize_text
from modules.pacing import Pacer, Send
from modules.recovery import RetryPolicy, call_with_retries
from modules.reporting import RunStats, configure_logging, log_final_statistics, logging_configured
from modules.settings import Settings, load_settings
from modules.stores import open_store
from modules.stores.base import Chunk, ChunkStore, ClaimFilter, ClaimMode, Completed, Failure, QueueStatus

log = logging.getLogger("batch_embedding")

T = TypeVar("T")
_DB_ATTEMPTS = 6  # 1 + 2 + 4 + 8 + 10 s: long enough for a database restart


@dataclass(frozen=True)
class _Item:
    """A claimed chunk ready to send: the text actually sent (maybe truncated) and its hash."""

    chunk: Chunk
    text: str
    tokens: int
    cache_key: str | None = None

    @property
    def content_hash(self) -> str:
        return content_hash(self.chunk.content)


def content_hash(text: str) -> str:
    """sha256 of the chunk's stored text, as SQL computes it, to detect edits made while in flight."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class BatchEmbeddingGenerator:
    """Embeds pending chunks in batches, with recovery; use as an async context manager.

    The guide's knobs keep their names: `batch_size` (10), `max_retries` (3), `retry_delay` (2 s).
    The guide's fixed `api_delay` between calls is gone: the pacer waits only as long as the quota
    requires, and a 429 pauses every batch for exactly the time the server asks.
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
        self.max_retries = s.max_retries
        self.retry_delay = s.retry_delay
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

    async def run(self, *, doc_id: str | None = None, limit: int | None = None, retry_failed: bool = False) -> RunStats:
        """Embed the selected chunks. Returns the run's stats; `stats.ok` is True when none failed."""
        if doc_id is not None and not await self.store.document_exists(doc_id):
            raise UnknownDocumentError(doc_id)
        mode = ClaimMode.FAILED if retry_failed else ClaimMode.PENDING
        where = ClaimFilter(mode=mode, doc_id=doc_id, failed_before=await self.store.server_time())
        queue = await self.store.status(doc_id)
        selected = queue.failed if retry_failed else queue.pending
        self.stats = stats = RunStats(total=min(selected, limit) if limit is not None else selected)
        calls_before = self.embedder.calls_made()
        run = _Run(self, where, limit, stats)
        log.info("🧠 バッチエンベディング生成開始: %s", await self._describe_target(doc_id, retry_failed))
        size = "auto" if self.settings.batch_size == "auto" else str(self.batch_size)
        log.info("📋 %d個のチャンクをバッチ処理します (バッチサイズ: %s)", stats.total, size)
        try:
            await run.execute()
        finally:
            stats.api_calls = self.embedder.calls_made() - calls_before
            stats.total = max(stats.total, stats.processed)
            stats.finished = time.monotonic()
            log_final_statistics(stats)
        return stats

    async def _describe_target(self, doc_id: str | None, retry_failed: bool) -> str:
        scope = "失敗チャンクの再処理" if retry_failed else "未処理チャンク"
        if doc_id is None:
            return f"全{scope}"
        name = await self.store.document_name(doc_id) or doc_id
        return f"{name} ({scope})"

    # --- one batch ---------------------------------------------------------------------------

    def screen(self, chunks: Sequence[Chunk]) -> tuple[list[_Item], list[Failure]]:
        """Split claimed chunks into ones to send and ones that must never be sent (bad input)."""
        ready: list[_Item] = []
        rejected: list[Failure] = []
        limit = self.settings.max_input_tokens
        for chunk in chunks:
            text = chunk.content
            if not text.strip():
                rejected.append(Failure(chunk.id, "empty content: the chunk has no text to embed"))
                continue
            tokens = self.embedder.estimate_tokens(text)
            if tokens > limit:
                if self.settings.overlong == "fail":
                    rejected.append(Failure(chunk.id, f"text too long: about {tokens} tokens, the model takes {limit}"))
                    continue
                text = truncate_to_tokens(text, limit, self.embedder.estimate_tokens)
                log.warning("✂️ チャンク %s は約%dトークンのため%dトークンに切り詰めます", chunk.id, tokens, limit)
                tokens = self.embedder.estimate_tokens(text)
            ready.append(_Item(chunk, text, tokens, self.cache_key(chunk, text)))
        return ready, rejected

    def cache_key(self, chunk: Chunk, text: str) -> str | None:
        """Identical text (normalized) under the same model, dimension, task type and title shares one
        vector. None when the cache is off."""
        if not self.settings.cache:
            return None
        title = (chunk.title or "") if self.settings.use_title else ""
        parts = (self.embedder.model_id, self.settings.task_type, title, normalize_text(text))
        return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()

    async def embed_items(self, items: Sequence[_Item], pacer: Pacer, stats: RunStats) -> Vectors:
        requests = [EmbedRequest(i.text, i.chunk.title) for i in items]
        tokens = sum(i.tokens for i in items)
        send = Send(calls=1, texts=len(items), tokens=tokens)  # _process sends one title per call

        async def one_call() -> Vectors:
            stats.tokens_sent += tokens
            return await self.embedder.embed(requests)

        return await call_with_retries(one_call, policy=self.policy, pacer=pacer, send=send, stats=stats)


class _Run:
    """One run's moving parts: lanes that claim, embed and write batches until nothing is left."""

    def __init__(self, generator: BatchEmbeddingGenerator, where: ClaimFilter, limit: int | None, stats: RunStats):
        self.g = generator
        self.where = where
        self.remaining = limit
        self.stats = stats
        s = generator.settings
        adaptive = s.concurrency == "auto" and s.provider == "gemini"
        lanes = generator.lanes
        self.lanes = lanes
        self.pacer = Pacer(
            rpm=s.rpm,
            tpm=s.tpm,
            window_seconds=s.quota_window,
            concurrency=lanes if not adaptive else min(4, lanes),
            max_concurrency=lanes,
            adaptive=adaptive,
            batch_size=s.fixed_batch_size,
            max_batch=generator.embedder.max_batch,
            slow_seconds=s.request_timeout / 2,
        )
        self.batch_count = 0
        self.claimed = 0
        self.abort: BaseException | None = None

    async def execute(self) -> None:
        tasks = [asyncio.create_task(self._lane()) for _ in range(self.lanes)]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        if self.abort is not None:
            raise self.abort

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
        while self.abort is None:
            async with self.pacer.limiter.hold():
                if self.abort is not None:
                    return
                want = self._take_budget()
                if want <= 0:
                    return
                try:
                    chunks = await self._claim(want)
                except StoreUnavailableError as exc:
                    self._return_budget(want)
                    self._abort(exc)
                    return
                self._return_budget(want - len(chunks))
                if not chunks:
                    return
                self.batch_count += 1
                self.claimed += len(chunks)
                number = self.batch_count
                log.info(
                    "📦 バッチ %d/%d 処理開始 (%dチャンク)",
                    number,
                    max(number, self.expected_batches),
                    len(chunks),
                )
                try:
                    await self._process(chunks)
                except (RunAborted, ProviderConfigError, StoreUnavailableError) as exc:
                    await self._release_unfinished(chunks)
                    self._abort(exc)
                    return
                except BaseException:  # Ctrl-C, SIGTERM, or a bug: give the batch back, then stop
                    await self._release_unfinished(chunks)
                    raise
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
        settings = self.g.settings
        return await _with_db_retries(
            "チャンクの取得", lambda: self.g.store.claim(self.g.worker, want, settings.lease_seconds, self.where)
        )

    def _abort(self, exc: BaseException) -> None:
        if self.abort is None:
            self.abort = exc if isinstance(exc, RunAborted) else RunAborted(str(exc))
            self.stats.aborted = str(exc)

    async def _release_unfinished(self, chunks: Sequence[Chunk]) -> None:
        # A Ctrl-C (even a second one) must not stop us giving the chunks back. Rows already written
        # or recorded failed are no longer leased to us, so releasing them is a no-op.
        try:
            await finish_despite_cancel(self.g.store.release(self.g.worker, [c.id for c in chunks]))
        except Exception as exc:  # the database may be the thing that failed; leases expire anyway
            log.warning("リース解放に失敗しました (期限切れで自動的に戻ります): %s", exc)

    async def _process(self, chunks: Sequence[Chunk]) -> None:
        items, rejected = self.g.screen(chunks)
        if rejected:
            await self._record_failures(rejected)
        if items:
            items = await self._reuse_cached(items)
        if not items:
            return
        # The API takes one title per call: embed each document's part of the batch on its own, so a
        # failure in one part never re-sends the others; then write the whole batch in one statement.
        done: list[tuple[_Item, Vectors]] = []
        try:
            for group in self._title_groups(items):
                done.extend(await self._embed_group(group))
        finally:
            if done:  # even when the run stops midway, vectors already computed are kept
                await self._write([item for item, _ in done], np.vstack([vector for _, vector in done]))

    def _title_groups(self, items: Sequence[_Item]) -> list[list[_Item]]:
        if not self.g.settings.use_title:
            return [list(items)]
        groups: dict[str | None, list[_Item]] = {}
        for item in items:
            groups.setdefault(item.chunk.title, []).append(item)
        return list(groups.values())

    async def _reuse_cached(self, items: Sequence[_Item]) -> list[_Item]:
        """Write vectors already made for identical text; return the items still to embed."""
        keys = [i.cache_key for i in items if i.cache_key]
        if not keys:
            return list(items)
        cached = await self.g.store.cached_vectors(keys)
        hits = [i for i in items if i.cache_key in cached]
        if hits:
            vectors = np.vstack([cached[i.cache_key] for i in hits if i.cache_key])
            written = await self._write(hits, vectors, cache=False)
            self.stats.cache_hits += written
            log.info("♻️ キャッシュ再利用: %dチャンク (API呼び出しなし)", written)
        return [i for i in items if i.cache_key not in cached]

    async def _embed_group(self, items: Sequence[_Item]) -> list[tuple[_Item, Vectors]]:
        """Embed a group; if it can't be, re-run it in smaller groups (10 → 5 → 1) so that one bad
        chunk never fails its neighbours. Only a single chunk's own failure is recorded. Returns the
        items embedded, each with its vector (one row)."""
        try:
            vectors = await self.g.embed_items(items, self.pacer, self.stats)
        except RateLimitedError as exc:
            raise RunAborted(
                f"the API quota stayed exhausted for over {self.g.policy.rate_limit_budget:.0f}s ({exc}); "
                "the chunks were released untouched: run again later, or lower EMBEDDING_RPM / EMBEDDING_TPM"
            ) from None
        except ProviderConfigError as exc:
            raise RunAborted(f"the embedding API refused the settings: {exc}") from None
        except (PermanentEmbeddingError, TransientEmbeddingError) as exc:
            if len(items) == 1:
                await self._record_failures([Failure(items[0].chunk.id, str(exc))])
                log.error("❌ チャンク %s の処理失敗: %s", items[0].chunk.id, exc)
                return []
            size = self.g.retry_batch_size if len(items) > self.g.retry_batch_size else 1
            self.stats.splits += 1
            log.warning("✂️ %dチャンクのバッチが失敗したため%d件ずつ再処理します: %s", len(items), size, exc)
            done: list[tuple[_Item, Vectors]] = []
            for start in range(0, len(items), size):
                done.extend(await self._embed_group(items[start : start + size]))
            return done
        except EmbeddingError as exc:  # any other embedding error: treat as this group's failure
            raise RunAborted(str(exc)) from None
        return [(item, vectors[n : n + 1]) for n, item in enumerate(items)]

    async def _write(self, items: Sequence[_Item], vectors: Vectors, *, cache: bool = True) -> int:
        results = [
            Completed(i.chunk.id, vectors[n], i.content_hash, i.cache_key if cache else None)
            for n, i in enumerate(items)
        ]
        # A Ctrl-C arriving mid-write lets the one statement finish: computed vectors are kept.
        written = await _with_db_retries(
            "書き込み",
            lambda: finish_despite_cancel(self.g.store.complete(self.g.worker, self.g.embedder.model_id, results)),
        )
        self.stats.embedded += written
        self.stats.skipped += len(items) - written
        return written

    async def _record_failures(self, failures: Sequence[Failure]) -> None:
        await _with_db_retries("失敗の記録", lambda: finish_despite_cancel(self.g.store.fail(self.g.worker, failures)))
        self.stats.failed += len(failures)
        for failure in failures:
            log.error("❌ チャンク %s: %s", failure.chunk_id, failure.error)


async def finish_despite_cancel(operation: Awaitable[T], limit_seconds: float = 15.0) -> T:
    """Run a short database statement to its end even if this task is cancelled meanwhile (Ctrl-C,
    SIGTERM, a sibling's failure) — once or repeatedly — then re-raise the cancellation. Bounded by
    `limit_seconds`, so a dead database can't hold a shutdown forever (its leases expire instead)."""
    task = asyncio.ensure_future(operation)
    cancelled = False
    deadline = asyncio.get_running_loop().time() + limit_seconds
    while not task.done():
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            task.cancel()
            break
        try:
            await asyncio.wait({task}, timeout=left)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.warning("中断中の書き込みに失敗しました: %s", task.exception())
        raise asyncio.CancelledError
    return await task


async def _with_db_retries(what: str, operation: Callable[[], Awaitable[T]]) -> T:
    """Run a database operation, giving a restarting database a few seconds to come back. Computed
    vectors stay in memory meanwhile; nothing is marked done until the write is confirmed."""
    for attempt in range(1, _DB_ATTEMPTS + 1):
        try:
            return await operation()
        except StoreUnavailableError as exc:
            if attempt == _DB_ATTEMPTS:
                raise
            delay = min(10.0, 0.5 * 2**attempt)
            log.warning(
                "🗄️ %sに失敗しました。%.1f秒後に再試行します (%d/%d): %s", what, delay, attempt, _DB_ATTEMPTS, exc
            )
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


def truncate_to_tokens(text: str, limit: int, estimate: Callable[[str], int]) -> str:
    """The longest prefix whose estimated token count fits the limit (binary search on length)."""
    low, high = 0, len(text)
    while low < high:
        mid = (low + high + 1) // 2
        if estimate(text[:mid]) <= limit:
            low = mid
        else:
            high = mid - 1
    return text[:low]


# --- the functions the upload API and other modules import ------------------------------------


def _ensure_logging(settings: Settings) -> None:
    if not logging_configured():
        configure_logging(settings.log_file, settings.secrets())


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
    if generator is not None:
        stats = await generator.run(doc_id=doc_id, limit=limit)
    else:
        settings = load_settings()
        _ensure_logging(settings)
        async with BatchEmbeddingGenerator(settings) as own:
            stats = await own.run(doc_id=doc_id, limit=limit)
    return stats.ok and stats.embedded + stats.skipped >= stats.total
