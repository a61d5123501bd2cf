"""How the queue's state is shown: a human table (Japanese, as the guide's log) or one JSON object."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from modules.engine.migration import MigrationProgress
from modules.stores.base import BatchJobSummary, CacheStats, DocumentStatus, ErrorGroup, QueueStatus


def status_dict(
    status: QueueStatus,
    *,
    documents: list[DocumentStatus] | None = None,
    errors: list[ErrorGroup] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "total": status.total,
        "embedded": status.embedded,
        "pending": status.pending,
        "failed": status.failed,
        "in_progress": status.in_progress,
        "stale_leases": status.stale_leases,
        "other_model": status.other_model,
        "percent_embedded": round(status.percent_embedded, 2),
        # inside `failed` (cooling_down + quarantined = failed), so the sums above still hold
        "cooling_down": status.cooling_down,
        "quarantined": status.quarantined,
        "retry_due": status.retry_due,
        "next_retry_at": status.next_retry_at.isoformat() if status.next_retry_at else None,
        "oldest_pending_age_seconds": (
            None if status.oldest_pending_age_seconds is None else round(status.oldest_pending_age_seconds, 1)
        ),
    }
    if documents is not None:
        data["documents"] = [
            {
                "doc_id": d.doc_id,
                "name": d.name,
                "total": d.total,
                "embedded": d.embedded,
                "pending": d.pending,
                "failed": d.failed,
                "in_progress": d.in_progress,
            }
            for d in documents
        ]
    if errors is not None:
        data["errors"] = [
            {"error": e.error, "chunks": e.chunks, "last_seen": e.last_seen.isoformat() if e.last_seen else None}
            for e in errors
        ]
    if extra:
        data.update(extra)
    return data


def format_status(
    status: QueueStatus,
    *,
    documents: list[DocumentStatus] | None = None,
    errors: list[ErrorGroup] | None = None,
    cache: CacheStats | None = None,
    cost: dict[str, Any] | None = None,
    header: str = "📊 エンベディング処理状況",
) -> str:
    lines = [
        header,
        f"  総チャンク数      : {status.total:,}",
        f"  ✅ 埋め込み済み   : {status.embedded:,} ({status.percent_embedded:.1f}%)",
        f"  ⏳ 未処理         : {status.pending:,}",
        f"  ❌ 失敗           : {status.failed:,}",
    ]
    if status.failed:
        lines.append(f"     🧊 クールダウン中: {status.cooling_down:,} (監視モード --watch が時間をおいて自動で再試行)")
        lines.append(f"     🚫 隔離         : {status.quarantined:,} (再試行の上限に達した分: --retry-only で再処理)")
    lines.append(f"  🔄 処理中         : {status.in_progress:,}")
    if status.oldest_pending_age_seconds is not None:
        lines.append(f"  ⏱️ 最古の未処理   : {age_text(status.oldest_pending_age_seconds)}前から待っています")
    if status.stale_leases:
        lines.append(
            f"  ⚠️ 期限切れリース : {status.stale_leases:,}"
            " (停止したワーカーの分。未処理・失敗に含み、次の実行で再処理されます)"
        )
    if status.other_model:
        lines.append(
            f"  ❗ 別モデルのベクトル: {status.other_model:,}"
            " (設定と違うモデルで作られたベクトル。検索で混ぜられません: python fix_missing_embeddings.py で再埋め込み)"
        )
    if cache is not None and cache.entries:
        lines.append(
            f"  ♻️ キャッシュ       : {cache.entries:,}件 (再利用 {cache.hits:,}回 = その分のAPI呼び出しを節約)"
        )
    if cost is not None and cost.get("tokens_estimate") and cost.get("cost_usd") is not None:
        lines.append(
            f"  💰 未処理分の推定 : 約{cost['tokens_estimate']:,}トークン → ${cost['cost_usd']:.4f}"
            f" (Batch API なら ${cost['cost_usd_batch']:.4f})"
        )
    if status.failed:
        lines.append("  💡 失敗分の再処理: python batch_embedding_processor.py --retry-only")
    if documents:
        lines.append("")
        lines.append("📄 ドキュメント別")
        for d in documents:
            lines.append(
                f"  {d.name or d.doc_id} [{d.doc_id}]: {d.embedded}/{d.total} 済"
                f" | 未処理 {d.pending} | 失敗 {d.failed} | 処理中 {d.in_progress}"
            )
    if errors is not None and not errors:
        lines.append("")
        lines.append("🧾 記録されたエラーはありません")
    if errors:
        lines.append("")
        lines.append("🧾 よくあるエラー")
        for e in errors:
            when = e.last_seen.strftime("%Y-%m-%d %H:%M") if e.last_seen else "-"
            lines.append(f"  {e.chunks:>6} 件 (最終 {when}): {e.error}")
    return "\n".join(lines)


def batch_jobs_list(jobs: list[BatchJobSummary]) -> list[dict[str, Any]]:
    """Batch API jobs for --status --json: those in flight, then the last ones done."""
    now = datetime.now(UTC)
    return [
        {
            "id": j.id,
            "name": j.name,
            "model": j.model,
            "target": j.target,
            "state": j.state,
            "remote_state": j.remote_state,
            "outcome": j.outcome,
            "chunks": j.chunks,
            "tokens": j.tokens,
            "embedded": j.embedded,
            "failed": j.failed,
            "released": j.released,
            "age_seconds": round((now - j.created_at).total_seconds()),
            "submitted_at": j.submitted_at.isoformat() if j.submitted_at else None,
            "finished_at": j.finished_at.isoformat() if j.finished_at else None,
        }
        for j in jobs
    ]


def format_batch_jobs(jobs: list[BatchJobSummary]) -> str:
    now = datetime.now(UTC)
    lines = ["", "📮 Batch API ジョブ"]
    for j in jobs:
        age = age_text((now - j.created_at).total_seconds())
        if j.state != "done":
            lines.append(f"  {j.name or j.id}: {j.remote_state or j.state} | {j.chunks}チャンク | 経過 {age}")
        else:
            lines.append(
                f"  {j.name or j.id}: 完了 ({j.outcome}) | 成功 {j.embedded or 0} | 失敗 {j.failed or 0}"
                f" | 未処理に戻した {j.released or 0}"
            )
    return "\n".join(lines)


def format_migration(progress: MigrationProgress) -> str:
    """A model migration for --status: where it stands and what is left to pay."""
    m, q = progress.migration, progress.queue
    head = f"🔀 モデル移行: {m.source_model or '(記録なし)'} → {m.target_model}"
    if m.state == "cut_over":
        agreement = f" | 一致率 {100 * m.agreement:.1f}%" if m.agreement is not None else ""
        when = m.cut_over_at.strftime("%Y-%m-%d %H:%M") if m.cut_over_at else "?"
        return f"\n{head} (切り替え済み {when}{agreement})"
    if m.state == "aborted":
        return f"\n{head} (中止)"
    lines = ["", f"{head} (進行中)"]
    if q is not None:
        lines.append(
            f"  {q.embedded} / {q.total} チャンク ({q.percent_embedded:.1f}%) | 未処理 {q.pending} | 失敗 {q.failed}"
            f" | 処理中 {q.in_progress}"
        )
    cost = ""
    if progress.cost_usd_batch is not None and progress.cost_usd_online is not None:
        cost = f" ≈ Batch API ${progress.cost_usd_batch:.4f} / オンライン ${progress.cost_usd_online:.4f}"
    lines.append(f"  残り推定 最大 {progress.remaining_tokens} トークン{cost}")
    if q is not None and q.pending == 0 and q.failed == 0 and q.in_progress == 0:
        lines.append("  💡 すべて埋め込み済みです: python batch_embedding_processor.py --migrate-cutover")
    return "\n".join(lines)


def age_text(seconds: float) -> str:
    """A wait in words: 45秒, 12分, 3.5時間, 2.0日."""
    if seconds < 120:
        return f"{seconds:.0f}秒"
    if seconds < 7200:
        return f"{seconds / 60:.0f}分"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}時間"
    return f"{seconds / 86400:.1f}日"
