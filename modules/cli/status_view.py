"""How the queue's state is shown: a human table (Japanese, as the guide's log) or one JSON object."""

from __future__ import annotations

from typing import Any

from modules.stores.base import CacheStats, DocumentStatus, ErrorGroup, QueueStatus


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
        f"  🔄 処理中         : {status.in_progress:,}",
    ]
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
