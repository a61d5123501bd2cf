"""The logic of `fix_missing_embeddings.py`: find what keeps the embeddings from being complete and
right, document by document, reset it in one transaction, and let the normal batch run fill it in.

What counts as wrong is decided in SQL (repair.sql) against the embedder's model id (which names the
model and its dimension, e.g. "gemini-embedding-001@768") and the configured dimension:

- a chunk with no vector (and no live lease) is missing: the batch run embeds it;
- a lease whose time ran out (its worker died) is cleared;
- a vector made by another model, by an unrecorded one, or of another length is cleared, so the
  chunk is pending again and the batch run re-embeds it, batch-aware, with the current model.

Chunks recorded as failed are reported but left for `batch_embedding_processor.py --retry-only`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from modules.batch_embedding import BatchEmbeddingGenerator
from modules.engine.stats import RunStats
from modules.errors import UnknownDocumentError
from modules.logs import get_logger
from modules.stores.base import QueueStatus, RepairResult, RepairRow

log = get_logger(__name__)


@dataclass(frozen=True)
class RepairTotals:
    missing: int = 0
    expired_leases: int = 0
    wrong_model: int = 0
    wrong_dimension: int = 0
    degenerate: int = 0
    stale: int = 0
    failed: int = 0
    to_reset: int = 0

    @classmethod
    def of(cls, rows: list[RepairRow]) -> RepairTotals:
        return cls(
            missing=sum(r.missing for r in rows),
            expired_leases=sum(r.expired_leases for r in rows),
            wrong_model=sum(r.wrong_model for r in rows),
            wrong_dimension=sum(r.wrong_dimension for r in rows),
            degenerate=sum(r.degenerate for r in rows),
            stale=sum(r.stale for r in rows),
            failed=sum(r.failed for r in rows),
            to_reset=sum(r.to_reset for r in rows),
        )

    @property
    def pending(self) -> int:
        """Missing and not recorded failed: what a normal run would embed as things are."""
        return self.missing - self.failed


@dataclass(frozen=True)
class RepairPlan:
    """What the database holds now, and what a repair with these options would do."""

    model_id: str
    dimensions: int
    doc_id: str | None
    limit: int | None
    rows: list[RepairRow]
    dead_owners: tuple[str, ...] = ()  # workers on this host whose process is gone

    @property
    def totals(self) -> RepairTotals:
        return RepairTotals.of(self.rows)

    @property
    def would_release(self) -> int:
        return self.totals.expired_leases

    @property
    def would_reset(self) -> int:
        """Vectors to clear; a limit caps them, so a limited repair never leaves more holes than it fills."""
        reset = self.totals.to_reset
        return reset if self.limit is None else min(reset, self.limit)

    @property
    def would_embed(self) -> int:
        embed = self.totals.pending + self.would_reset
        return embed if self.limit is None else min(embed, self.limit)


@dataclass(frozen=True)
class RepairOutcome:
    plan: RepairPlan
    dry_run: bool
    applied: RepairResult | None
    run: RunStats | None
    status: QueueStatus

    @property
    def ok(self) -> bool:
        """A repair: its run left nothing failed or pending in scope. A dry run: nothing to repair."""
        if self.dry_run:
            return not self.plan.rows
        return self.run is None or self.run.ok


async def plan_repair(
    generator: BatchEmbeddingGenerator, *, doc_id: str | None = None, limit: int | None = None
) -> RepairPlan:
    """Read the per-document report; changes nothing and calls no API."""
    store = generator.store
    if doc_id is not None and not await store.document_exists(doc_id):
        raise UnknownDocumentError(doc_id)
    model_id = generator.embedder.model_id
    dimensions = generator.embedder.dimensions
    dead = await generator.dead_owners()
    rows = await store.repair_report(model_id, dimensions, doc_id, dead)
    return RepairPlan(model_id, dimensions, doc_id, limit, rows, dead)


async def repair(
    generator: BatchEmbeddingGenerator,
    *,
    doc_id: str | None = None,
    limit: int | None = None,
    dry_run: bool = False,
    progress: Callable[[BatchEmbeddingGenerator], AbstractAsyncContextManager[None]] | None = None,
) -> RepairOutcome:
    """Report, reset (one transaction) and re-embed; with `dry_run`, only report what would be done.
    `progress`, if given, wraps the embedding run (the CLI passes its progress display)."""
    plan = await plan_repair(generator, doc_id=doc_id, limit=limit)
    log_plan(plan)
    store = generator.store
    if dry_run:
        log.info("🧪 ドライラン: データベースは変更せず、埋め込みAPIも呼び出しません")
        return RepairOutcome(plan, True, None, None, await _status(generator, doc_id))

    applied = await store.repair_apply(plan.model_id, plan.dimensions, doc_id, limit, plan.dead_owners)
    if applied.released_leases:
        log.info("🔓 期限切れ・停止したワーカーのリースを解放しました: %d件", applied.released_leases)
    if applied.reset:
        log.info(
            "♻️ 再埋め込みのためにベクトルをリセットしました: %d件"
            " (モデル違い %d, 次元違い %d, 異常なベクトル %d, 本文変更 %d)",
            applied.reset,
            applied.wrong_model,
            applied.wrong_dimension,
            applied.degenerate,
            applied.stale,
        )
    if applied.reset < plan.totals.to_reset:
        log.warning("⚠️ --limit のため %d件のリセットは次回に持ち越します", max(0, plan.totals.to_reset - applied.reset))
    # The run may meet vectors of another model still waiting for their reset (a --limit repair): that
    # is the repair's own work in progress, not a mix-up.
    if progress is not None:
        async with progress(generator):
            stats = await generator.run(doc_id=doc_id, limit=limit, allow_model_mix=True)
    else:
        stats = await generator.run(doc_id=doc_id, limit=limit, allow_model_mix=True)
    return RepairOutcome(plan, False, applied, stats, await _status(generator, doc_id))


async def _status(generator: BatchEmbeddingGenerator, doc_id: str | None) -> QueueStatus:
    return await generator.store.status(
        doc_id, model_id=generator.embedder.model_id, dead_owners=await generator.dead_owners()
    )


def log_plan(plan: RepairPlan) -> None:
    t = plan.totals
    scope = f"ドキュメント {plan.doc_id}" if plan.doc_id else "全ドキュメント"
    log.info("🔧 埋め込み修復: %s (モデル: %s, 次元: %d)", scope, plan.model_id, plan.dimensions)
    log.info(
        "📊 修復対象: %dドキュメント | 未埋め込み %d (うち失敗 %d) | 期限切れリース %d | モデル違い %d | 次元違い %d"
        " | 異常なベクトル %d | 本文変更 %d",
        len(plan.rows),
        t.missing,
        t.failed,
        t.expired_leases,
        t.wrong_model,
        t.wrong_dimension,
        t.degenerate,
        t.stale,
    )
    if t.failed:
        log.info(
            "💡 失敗チャンク %d件はこの修復では再処理しません: python batch_embedding_processor.py --retry-only",
            t.failed,
        )
