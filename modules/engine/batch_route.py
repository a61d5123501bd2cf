"""The Batch API route: a second way to embed claimed chunks, as asynchronous jobs at half the online
price, whose state lives in the database so that any run can pick a job up.

The life of a job (sql/batch.sql keeps its row):
1. claimed   one transaction creates the row and leases up to EMBEDDING_BATCH_JOB_SIZE chunks to
             'batch:<id>' for 49 hours (a job runs at most 48), so online runs leave them be;
2. submitting the requests are built (screened as online: empty text failed, long text truncated,
             cached vectors written at once) and the row records which chunks go, in order;
3. submitted  the API accepted the job under the display name <id>; the row records its name.
4. done       a run that finds it finished ingests its results through the same checks as online
             answers (one per request, of the asked length, finite, not degenerate) and the same
             owner-checked write; a request's own error is recorded on its chunk; chunks the job could
             not embed (it failed, expired or was cancelled) go back to pending for the online path.

Crash safety: a run killed in (1) leaves a row with no requests: the next run releases its chunks. One
killed in (2)-(3) leaves 'submitting': the next run asks the API for a job of that display name and
adopts it, or, if there is none, releases the chunks; no chunk is ever submitted twice. One killed in
(4) leaves the job 'submitted': the next run ingests it again, harmlessly (the write is idempotent).
Runs take jobs with a lease (SKIP LOCKED), so two runs never track the same job at once.

A model migration fills its shadow column by the same route: its jobs say target 'next', their
chunks are leased in the shadow queue, and whichever run finds such a job finished writes its
vectors there (ChunkStore.shadow()), checked against the job's own model.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from modules.embedders.base import EmbedRequest, checked_vectors
from modules.embedders.batch_base import BatchEmbedder, ItemResult, JobState, RemoteJob
from modules.engine.resilience import finish_despite_cancel
from modules.engine.screening import Item, Screener
from modules.engine.stats import RunStats
from modules.errors import (
    ApiUnavailableError,
    EmbeddingError,
    MigrationError,
    ModelRetiredError,
    ProviderConfigError,
    RateLimitedError,
    TransientEmbeddingError,
)
from modules.logs import get_logger, scrub
from modules.model_ids import dimensions_of
from modules.stores.base import BatchJob, Chunk, ChunkStore, ClaimFilter, Completed, Failure

log = get_logger(__name__)
TRACK_LEASE_SECONDS = 600  # a run tracking a job holds it this long at most before another may take it
_ENDED = {JobState.FAILED: "failed", JobState.CANCELLED: "cancelled", JobState.EXPIRED: "expired"}


@dataclass(frozen=True)
class BatchOptions:
    worker: str
    job_size: int  # chunks per job
    poll_seconds: float
    secrets: tuple[str, ...] = ()
    target: str = "live"  # where submitted jobs write: "live" (the vector column) or "next" (a migration's)


class BatchRoute:
    def __init__(
        self,
        *,
        store: ChunkStore,
        client: BatchEmbedder,
        screener: Screener,
        options: BatchOptions,
        stats: RunStats,
    ) -> None:
        self.store = store
        self.client = client
        self.screener = screener
        self.options = options
        self.stats = stats

    # --- submitting --------------------------------------------------------------------------------

    def _can_shadow(self) -> bool:
        try:
            self.store.shadow()
        except MigrationError:
            return False
        return True

    def _queue(self, target: str) -> ChunkStore:
        """The live queue, or a model migration's shadow queue."""
        return self.store.shadow() if target == "next" else self.store

    async def submit(self, where: ClaimFilter, limit: int | None) -> list[str]:
        """Put the selected chunks into jobs (at most `limit` chunks); returns the jobs' ids."""
        submitted: list[str] = []
        remaining = limit
        queue = self._queue(self.options.target)
        while remaining is None or remaining > 0:
            size = self.options.job_size if remaining is None else min(self.options.job_size, remaining)
            job_id = uuid.uuid4().hex
            # Not retried: a claim whose answer was lost leaves a job row the next run releases.
            chunks = await queue.batch_claim(job_id, self.client.model_id, self.options.worker, size, where)
            if not chunks:
                break
            if remaining is not None:
                remaining -= len(chunks)
            items = await self._screen(job_id, chunks)
            if not items:
                await self.store.batch_finish(job_id, "ingested", 0, 0)
                continue
            await self._submit_job(job_id, items)
            submitted.append(job_id)
        return submitted

    async def _screen(self, job_id: str, chunks: Sequence[Chunk]) -> list[Item]:
        """As online: refuse what must never be sent, write what the cache already has."""
        owner = f"batch:{job_id}"
        queue = self._queue(self.options.target)
        items, rejected = self.screener.screen(chunks)
        if rejected:
            self.stats.failed += await queue.fail(owner, rejected)
        keys = [i.cache_key for i in items if i.cache_key]
        cached = await self.store.cached_vectors(keys) if keys else {}
        hits = [i for i in items if i.cache_key in cached]
        if hits:
            results = [Completed(i.chunk.id, cached[i.cache_key], i.content_hash) for i in hits if i.cache_key]
            written = (await queue.complete(owner, self.client.model_id, results)).written
            self.stats.embedded += written
            self.stats.cache_hits += written
        return [i for i in items if i.cache_key not in cached]

    async def _submit_job(self, job_id: str, items: list[Item]) -> None:
        tokens = sum(i.tokens for i in items)
        await self.store.batch_prepared(
            job_id, [i.chunk.id for i in items], [i.content_hash for i in items], [i.cache_key for i in items], tokens
        )
        requests = [EmbedRequest(i.text, i.chunk.title) for i in items]
        try:
            remote = await self.client.submit(job_id, requests)
        except ProviderConfigError:
            await self._abandon(job_id, "the API refused the settings")
            raise
        except TransientEmbeddingError as exc:
            # The job may exist even though the answer was lost: never release (and so pay for) its
            # chunks twice. Ask for it by its display name; if the API can't say, leave the row
            # 'submitting' for the next run to settle.
            found = None if exc.unsent else await self._find_after_lost_answer(job_id)
            if found is None:
                await self._abandon(job_id, str(exc))
                raise self._unavailable(exc) from None
            remote = found
        except EmbeddingError as exc:
            await self._abandon(job_id, str(exc))
            raise self._unavailable(exc) from None
        if not await self.store.batch_submitted(job_id, remote.name, remote.state.value):
            await self._cancel_closed(remote.name)
            return
        self.stats.tokens_sent += tokens
        self.stats.batch_tokens_sent += tokens
        self.stats.batch_jobs_submitted += 1
        self.stats.batch_chunks_submitted += len(items)
        log.info("📮 バッチジョブを送信しました: %s (%dチャンク, 推定 %dトークン)", remote.name, len(items), tokens)

    async def _cancel_closed(self, name: str) -> None:
        """The job was closed while it was being submitted (a model migration aborted under it): the
        API must not run it for nothing."""
        log.warning("🛑 送信中にジョブが閉じられました (モデル移行の中止など): %s を取り消します", name)
        try:
            await self.client.cancel(name)
        except EmbeddingError as exc:
            log.warning("⚠️ バッチジョブ %s を取り消せませんでした: %s", name, exc)

    async def _find_after_lost_answer(self, job_id: str) -> RemoteJob | None:
        try:
            return await self.client.find(job_id)
        except EmbeddingError as exc:
            raise ApiUnavailableError(
                f"the Batch API lost the answer to a job's creation and can't say whether it has the job: "
                f"{scrub(str(exc), self.options.secrets)}; the next run settles it",
                "in a few minutes",
            ) from None

    def _unavailable(self, exc: BaseException) -> ApiUnavailableError:
        return ApiUnavailableError(
            f"the Batch API did not accept the job: {scrub(str(exc), self.options.secrets)}",
            "in a few minutes, or without --batch-api (online)",
        )

    async def _abandon(self, job_id: str, reason: str) -> None:
        released = await finish_despite_cancel(self.store.batch_finish(job_id, "abandoned", 0, 0, reason))
        log.warning("↩️ バッチジョブを送信できなかったため %dチャンクを未処理に戻しました: %s", released, reason)

    # --- tracking ----------------------------------------------------------------------------------

    async def track(self, dead_owners: Sequence[str] = ()) -> int:
        """Look at every job no other live run is tracking: adopt, ingest or close what can be. Returns
        how many of them are still running at the API."""
        running = 0
        for job in await self.store.batch_take(self.options.worker, TRACK_LEASE_SECONDS, 100, dead_owners):
            if job.target == "next" and not self._can_shadow():
                await self.store.batch_seen(job.id, self.options.worker, job.remote_state)
                continue  # a model migration's job: for a run with a database connection
            try:
                remote = await self._remote(job)
            except (TransientEmbeddingError, RateLimitedError) as exc:  # try again at the next look
                await self.store.batch_seen(job.id, self.options.worker, job.remote_state)
                log.warning("🔭 バッチジョブ %s の状態を取得できませんでした (次回再確認): %s", job.name or job.id, exc)
                running += 1
                continue
            if remote is None:
                continue  # closed: never submitted
            if not remote.state.done:
                await self.store.batch_seen(job.id, self.options.worker, remote.state.value)
                running += 1
            elif remote.state is JobState.SUCCEEDED:
                try:
                    await self._ingest(job, remote)
                except ModelRetiredError as exc:  # a cut-over or an abort since the job was submitted
                    released = await self.store.batch_finish(job.id, "retired", 0, 0, str(exc))
                    log.warning(
                        "🔀 バッチジョブ %s のモデルは使われなくなりました: 取り込まず、%dチャンクを戻しました",
                        remote.name,
                        released,
                    )
            else:
                released = await self.store.batch_finish(
                    job.id, _ENDED[remote.state], 0, 0, remote.error or remote.state.value
                )
                log.warning(
                    "⚠️ バッチジョブ %s は %s で終わりました: %dチャンクをオンライン処理に戻します",
                    remote.name,
                    remote.state.value,
                    released,
                )
        return running

    async def _remote(self, job: BatchJob) -> RemoteJob | None:
        """The API's view of a job; for a job whose submission was cut short, adopt it or close it."""
        if job.state == "claimed":  # killed before its requests were recorded: nothing was sent
            await self.store.batch_finish(job.id, "abandoned", 0, 0, "the run stopped before submitting")
            return None
        if job.state == "submitting":
            found = await self.client.find(job.id)
            if found is None:
                await self.store.batch_finish(job.id, "abandoned", 0, 0, "the run stopped before the API had it")
                return None
            if not await self.store.batch_submitted(job.id, found.name, found.state.value):
                await self._cancel_closed(found.name)
                return None
            log.info("🔁 送信途中で止まったバッチジョブを見つけて引き継ぎます: %s", found.name)
            return found
        assert job.name is not None
        return await self.client.get(job.name)

    async def _ingest(self, job: BatchJob, remote: RemoteJob) -> None:
        owner = f"batch:{job.id}"
        queue = self._queue(job.target)
        dimensions = _dimensions_of(job.model)
        results = await self.client.results(remote, len(job.chunk_ids))
        done: list[Completed] = []
        failures: list[Failure] = []
        for index, chunk_id in enumerate(job.chunk_ids):
            result = results[index] if index < len(results) else None
            if result is None:
                continue  # no answer for it: released below, embedded online
            problem = self._problem(result, dimensions)
            if problem is not None:
                failures.append(Failure(chunk_id, scrub(problem, self.options.secrets)))
                continue
            assert result.values is not None
            vector = checked_vectors(np.asarray([result.values], dtype=np.float64))[0]
            cache_key = job.cache_keys[index] if index < len(job.cache_keys) else None
            done.append(Completed(chunk_id, vector, job.content_hashes[index], cache_key))
        written = (await queue.complete(owner, job.model, done)).written if done else 0
        recorded = await queue.fail(owner, failures) if failures else 0
        released = await self.store.batch_finish(job.id, "ingested", written, recorded)
        self.stats.embedded += written
        self.stats.failed += recorded
        for failure in failures:
            log.error("❌ チャンク %s: %s", failure.chunk_id, failure.error)
        log.info(
            "📥 バッチジョブ %s を取り込みました: 成功 %d | 失敗 %d | 未処理に戻した %d",
            remote.name,
            written,
            recorded,
            released,
        )

    def _problem(self, result: ItemResult, dimensions: int) -> str | None:
        """Why an item's answer can't be stored, or None: the same checks as an online answer."""
        if result.error is not None:
            return f"batch item error: {result.error}"
        if result.values is None or len(result.values) != dimensions:
            got = 0 if result.values is None else len(result.values)
            return f"answer had a vector of {got} dimensions; {dimensions} were asked for"
        try:
            checked_vectors(np.asarray([result.values], dtype=np.float64))
        except TransientEmbeddingError as exc:
            return str(exc)
        return None

    async def wait(self, *, dead_owners: Sequence[str] = (), deadline: float | None = None) -> int:
        """Track until no job is running at the API (or `deadline`, a time.monotonic() value, passes);
        returns how many are still running."""
        every = self.options.poll_seconds
        while True:
            running = await self.track(dead_owners)
            if running == 0 or (deadline is not None and time.monotonic() >= deadline):
                return running
            log.info("⏳ バッチジョブ %d件の完了を待っています (%.0f秒ごとに確認)", running, every)
            await asyncio.sleep(every)


def _dimensions_of(model_id: str) -> int:
    """A job's vector length, from the model id it records (`gemini-embedding-001@768`)."""
    dimensions = dimensions_of(model_id)
    if dimensions is None:
        raise ValueError(f"a model id without dimensions: {model_id!r}")
    return dimensions
