"""Zero-downtime model migration: re-embed everything with another model while search keeps reading
the vector column, then swap in one transaction.

    start     --migrate-to MODEL[@DIMS]: shadow columns and a shadow queue of every chunk (a trigger
              queues chunks uploaded or edited meanwhile), then the fill;
    fill      the new model's vectors into the shadow columns, through the Batch API at half price
              where the provider has it (else online), by this command and, for new uploads, by every
              ordinary run while the migration fills;
    cut-over  --migrate-cutover: once every chunk has its new vector, indexes built concurrently on the
              shadow column, the agreement check (how many sampled chunks keep their nearest
              neighbour among the new model's five nearest), then the swap in one transaction;
    abort     --migrate-abort: the shadow columns, queue and jobs go; the vector column was never
              touched.

Search and every write hold the cut-over lock shared and check the live model (model_migration.sql),
so no search compares a query of one model with vectors of the other, and a run that began before the
cut-over writes nothing after it. Runs started after it embed with the new model whatever
EMBEDDING_MODEL says (BatchEmbeddingGenerator follows the live model).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from modules.embedding_models import model_info
from modules.engine.breaker import CircuitBreaker
from modules.engine.stats import RunStats, log_final_statistics
from modules.engine.workers import dead_local_owners
from modules.errors import MigrationError, MigrationNotReadyError, ProviderConfigError
from modules.logs import get_logger
from modules.model_ids import dimensions_of, model_id_of, parse_model_spec
from modules.settings import Settings
from modules.stores.base import ClaimFilter, ClaimMode, ModelMigrationRow, QueueStatus

if TYPE_CHECKING:
    from modules.batch_embedding import BatchEmbeddingGenerator
    from modules.stores.model_migration import MigrationSchema

log = get_logger(__name__)
AGREEMENT_SAMPLE = 200  # chunks whose neighbours are compared before a cut-over
_FINAL_FILLS = 3  # online fills of late uploads between the index build and the swap


@dataclass(frozen=True)
class MigrationProgress:
    """A migration as --status shows it."""

    migration: ModelMigrationRow
    queue: QueueStatus | None  # the shadow queue's counts while it fills
    remaining_tokens: int  # an upper estimate (one token per character, as for Japanese text)
    cost_usd_batch: float | None
    cost_usd_online: float | None

    def as_dict(self) -> dict[str, object]:
        m, q = self.migration, self.queue
        return {
            "id": m.id,
            "source_model": m.source_model,
            "target_model": m.target_model,
            "state": m.state,
            "started_at": m.started_at.isoformat(),
            "cut_over_at": m.cut_over_at.isoformat() if m.cut_over_at else None,
            "ended_at": m.ended_at.isoformat() if m.ended_at else None,
            "total": q.total if q else None,
            "embedded": q.embedded if q else None,
            "pending": q.pending if q else None,
            "failed": q.failed if q else None,
            "in_progress": q.in_progress if q else None,
            "remaining_tokens": self.remaining_tokens,
            "estimated_cost_usd": {"batch": self.cost_usd_batch, "online": self.cost_usd_online},
            "agreement": m.agreement,
            "agreement_sample": m.agreement_sample,
        }


@dataclass
class CutoverReport:
    migration_id: str
    source_model: str | None
    target_model: str
    agreement: float | None
    agreement_sample: int
    indexes: list[str]
    timeline: list[tuple[str, float]] = field(default_factory=list)  # (step, seconds since the cut-over began)
    post_run: RunStats | None = None


class ModelMigrator:
    """The commands of a model migration, on an open BatchEmbeddingGenerator (its store, its live
    model's embedder, its settings)."""

    def __init__(self, generator: BatchEmbeddingGenerator) -> None:
        self.generator = generator

    # --- reading ---------------------------------------------------------------------------------

    async def progress(self) -> MigrationProgress | None:
        store = self.generator.store
        current = await store.migration_current()
        if current is None:
            return None
        queue = None
        tokens = 0
        if current.state == "filling":
            queue = await store.shadow().status(model_id=current.target_model)
            tokens = await store.migration_remaining_chars()
        name = current.target_model.rpartition("@")[0]
        info = model_info(name)
        return MigrationProgress(
            current,
            queue,
            tokens,
            info.cost_usd(tokens, batch=True),
            info.cost_usd(tokens, batch=False),
        )

    # --- start and fill --------------------------------------------------------------------------

    async def start(self, spec: str) -> tuple[ModelMigrationRow, Settings]:
        """Begin a migration to `spec` (or find the one to it that fills). Returns it and its model's
        settings."""
        g = self.generator
        choice = parse_model_spec(spec, g.settings.dimensions)
        target = choice.settings(g.settings)
        target_id = model_id_of(target)
        current = await g.store.migration_current()
        if current is None or current.state != "filling":
            current = await self._begin(choice.dimensions, target_id)
        elif current.target_model != target_id:
            raise MigrationError(
                f"a migration to {current.target_model} is under way: finish it (--migrate-cutover) or "
                "drop it (--migrate-abort) first"
            )
        if current.seeded_at is None:  # a start cut short: queue the rest (queueing twice is harmless)
            seen = await self.schema_for(choice.dimensions).seed(current.id)
            log.info("📋 移行先モデルの処理待ちに既存のチャンクを登録しました: %d件", seen)
            current = await g.store.migration_current()
            assert current is not None
        return current, target

    async def _begin(self, dimensions: int, target_id: str) -> ModelMigrationRow:
        g = self.generator
        live_id = g.embedder.model_id
        status = await g.store.status(model_id=live_id)
        if target_id == live_id and not status.other_model:
            raise MigrationError(f"the vector column already holds {live_id}: there is nothing to migrate")
        # Vectors of an unrecorded or another model (an older system's): the source is not known.
        source = None if status.other_model else live_id
        schema = self.schema_for(dimensions)
        vector_indexes = await schema.vector_indexes()
        if dimensions > 2000 and vector_indexes:
            raise MigrationError(
                f"{target_id} has {dimensions} dimensions, and pgvector indexes take at most 2,000: the "
                f"index {', '.join(vector_indexes)} could not be built for it. Choose 2,000 dimensions or fewer "
                "(e.g. @1536)"
            )
        try:
            await schema.start(uuid.uuid4().hex, source, target_id)
        except MigrationError:
            other = await g.store.migration_current()  # another process started one at the same moment
            if other is not None and other.state == "filling" and other.target_model == target_id:
                return other
            raise
        log.info(
            "🔀 モデル移行を開始しました: %s → %s (%dチャンク、うち記録のないモデル・別モデルのベクトル %d件)",
            source or "(記録のないモデル)",
            target_id,
            status.total,
            status.other_model,
        )
        started = await g.store.migration_current()
        assert started is not None
        return started

    async def fill(
        self,
        target: Settings,
        *,
        batch_api: bool | None = None,
        wait: bool = True,
        limit: int | None = None,
        retry_failed: bool = False,
        doc_id: str | None = None,
    ) -> RunStats:
        """Embed the shadow queue's chunks with the target model: through the Batch API where the
        provider has it (unless `batch_api` is False), waiting for the jobs unless `wait` is False,
        then online whatever is left (what a job could not embed, and new uploads)."""
        g = self.generator
        embedder = g.migration_embedder(target)
        shadow = g.store.shadow()
        stats = RunStats(
            retry_only=retry_failed,
            limited=limit is not None,
            model=embedder.model_id,
            usd_per_million_tokens=g.price_per_million_tokens(settings=target),
            usd_per_million_tokens_batch=g.price_per_million_tokens(batch=True, settings=target),
        )
        dead = dead_local_owners([o.owner for o in await shadow.lease_owners()] + await g.store.batch_workers())
        mode = ClaimMode.FAILED if retry_failed else ClaimMode.PENDING
        where = ClaimFilter(
            mode=mode,
            doc_id=doc_id,
            failed_before=await g.store.server_time(),
            dead_owners=dead,
            model_id=embedder.model_id,  # a run of another migration's model is refused
        )
        before = await shadow.status(doc_id, model_id=embedder.model_id, dead_owners=dead)
        stats.total = (before.failed if retry_failed else before.pending) if limit is None else limit
        calls_before = embedder.calls_made()
        route = g.batch_route(stats, embedder=embedder, settings=target, target="next")
        use_batch = route is not None and batch_api is not False
        if batch_api and route is None:
            raise ProviderConfigError("--batch-api needs a Gemini model (the Batch API is Google's)")
        log.info(
            "🔀 移行先モデル %s で埋め込みます: 残り %dチャンク (%s)",
            embedder.model_id,
            before.failed if retry_failed else before.pending,
            "Batch API: オンラインの半額" if use_batch else "オンライン",
        )
        try:
            if route is not None:
                await route.track(dead)
            if use_batch and route is not None:
                await route.submit(where, limit)
                if not wait:
                    return stats
                await route.wait(dead_owners=dead)
                if limit is not None:
                    limit = max(0, limit - stats.processed)
            breaker = CircuitBreaker(outage_seconds=g.settings.outage_seconds)
            run = g.new_run(
                where, limit, stats, g.new_pacer(embedder), breaker, store=shadow, embedder=embedder, settings=target
            )
            await run.execute()
        finally:
            stats.api_calls = embedder.calls_made() - calls_before
            stats.total = max(stats.total, stats.processed)
            stats.finished = time.monotonic()
            after = await shadow.status(doc_id, model_id=embedder.model_id)
            stats.scope_failed, stats.scope_pending = after.failed, after.pending
            log_final_statistics(stats)
        return stats

    # --- cut-over and abort ----------------------------------------------------------------------

    async def cutover(self, *, force: bool = False) -> CutoverReport:
        """Swap the columns once every chunk has the new model's vector. With `force`, chunks the new
        model failed on don't hold it up: after the swap they are failed in the live queue."""
        g = self.generator
        began = time.monotonic()
        current = await g.store.migration_current()
        if current is None or current.state != "filling":
            raise MigrationError("no model migration is under way: start one with --migrate-to MODEL[@DIMENSIONS]")
        command = f"python batch_embedding_processor.py --migrate-to {current.target_model}"
        if current.seeded_at is None:
            raise MigrationNotReadyError(f"the migration's start was cut short: run {command} first")
        dims = dimensions_of(current.target_model) or g.settings.dimensions
        schema = self.schema_for(dims)
        target = parse_model_spec(current.target_model, dims).settings(g.settings)
        report = CutoverReport(current.id, current.source_model, current.target_model, None, 0, [])

        def step(name: str) -> None:
            report.timeline.append((name, round(time.monotonic() - began, 3)))

        jobs = await schema.jobs_in_flight()
        if jobs:
            raise MigrationNotReadyError(
                f"{jobs} Batch API job(s) are still running: let them finish ({command}, or any run) and cut over then"
            )
        await schema.requeue_stale()
        left = await schema.unfilled()
        if left.pending:
            raise MigrationNotReadyError(
                f"{left.pending} chunk(s) have no {current.target_model} vector yet: run {command}, then cut over"
            )
        if left.failed and not force:
            raise MigrationNotReadyError(
                f"{left.failed} chunk(s) failed with {current.target_model} (most often: {left.common_error}): retry "
                f"them with {command} --retry-only, or cut over anyway with --migrate-cutover --force (they will "
                "then have no vector, recorded as failed, until they are fixed)"
            )
        dependents = await schema.dependents()
        if dependents:
            raise MigrationError(
                "these objects use the columns the cut-over replaces, and would keep the old model's: "
                + "; ".join(dependents)
                + ". Drop them before the cut-over and create them again after it"
            )
        step("checked")
        twins = await schema.index_plan()
        for twin in twins:
            log.info("🏗️ 新しいベクトル列のインデックスを作成しています (CONCURRENTLY): %s", twin.final_name)
            await schema.build_index(twin)
        report.indexes = [t.final_name for t in twins]
        step("indexes built")
        queries, kept = await schema.agreement(AGREEMENT_SAMPLE)
        report.agreement_sample = queries
        report.agreement = kept / queries if queries else None
        if report.agreement is not None:
            log.info(
                "🔎 検索結果の一致率: %.1f%% (旧モデルで最も近いチャンクが新モデルの上位5件に残った割合、%d件中%d件)",
                100 * report.agreement,
                queries,
                kept,
            )
        else:
            log.info("🔎 検索結果の一致率: 比較できるチャンクがありません (旧モデルのベクトルがありません)")
        step("agreement checked")
        # Chunks uploaded while the indexes were built: embedded now; any still arriving after the last
        # look are pending in the live queue after the swap (the run after the cut-over embeds them).
        for _ in range(_FINAL_FILLS):
            await schema.requeue_stale()
            if not (await schema.unfilled()).pending:
                break
            await self.fill(target, batch_api=False)
        step("late uploads embedded")
        await schema.swap(current.id, twins, report.agreement, queries, force=force)
        step("swapped")
        log.info(
            "✅ 切り替え完了: ベクトル列は %s になりました (検索は同じ瞬間から新モデルで行われます)",
            current.target_model,
        )
        g.adopt_model(target, g.migration_embedder(target))
        return report

    async def abort(self) -> ModelMigrationRow:
        g = self.generator
        current = await g.store.migration_current()
        if current is None or current.state != "filling":
            raise MigrationError("no model migration is under way: there is nothing to abort")
        await self._cancel_jobs(current)
        await self.schema_for(dimensions_of(current.target_model) or g.settings.dimensions).abort()
        log.info(
            "↩️ モデル移行を中止しました: %s への移行の列・キュー・ジョブを削除しました (ベクトル列はそのままです)",
            current.target_model,
        )
        aborted = await g.store.migration_current()
        assert aborted is not None
        return aborted

    async def _cancel_jobs(self, current: ModelMigrationRow) -> None:
        """Ask the API to cancel the migration's jobs still running (best effort: abort drops them anyway)."""
        g = self.generator
        jobs = [j for j in await g.store.batch_jobs(100) if j.target == "next" and j.state != "done" and j.name]
        if not jobs:
            return
        target = parse_model_spec(current.target_model, g.settings.dimensions).settings(g.settings)
        client = g.migration_embedder(target).batch_client()
        if client is None:
            return
        for job in jobs:
            assert job.name is not None
            try:
                await client.cancel(job.name)
                log.info("🛑 バッチジョブを取り消しました: %s", job.name)
            except Exception as exc:  # the job is dropped from our side either way
                log.warning("⚠️ バッチジョブ %s を取り消せませんでした: %s", job.name, exc)

    def schema_for(self, dimensions: int) -> MigrationSchema:
        """The DDL side of a migration to vectors of `dimensions` (PostgreSQL only)."""
        from modules.stores.model_migration import MigrationSchema
        from modules.stores.postgres import PostgresStore

        store = self.generator.store
        if not isinstance(store, PostgresStore):
            store.shadow()  # raises the store's own explanation (the Supabase REST path)
            raise MigrationError("model migration needs a PostgreSQL connection (DATABASE_URL)")
        return MigrationSchema(store, dimensions)
