"""`--status --history [N]`: the last runs, as a table in Japanese or as JSON."""

from __future__ import annotations

from typing import Any

from modules.stores.ops_base import HistoryRow

_KINDS = {"run": "実行", "watch": "監視"}
_SCOPES = {"pending": "未処理", "failed": "失敗の再処理", "watch": "監視"}
_OUTCOMES = {"ok": "✅", "failed": "⚠️", "api_unavailable": "🛑", "database_lost": "🗄️", "stopped": "⏹️", "error": "❌"}


def history_dicts(rows: list[HistoryRow]) -> list[dict[str, Any]]:
    return [
        {
            "id": r.id,
            "kind": r.kind,
            "worker": r.worker,
            "scope": r.scope,
            "doc_id": r.doc_id,
            "limit": r.run_limit,
            "started_at": r.started_at.isoformat(),
            "ended_at": r.ended_at.isoformat(),
            "runs": r.runs,
            "embedded": r.embedded,
            "failed": r.failed,
            "cache_hits": r.cache_hits,
            "api_calls": r.api_calls,
            "rate_limited": r.rate_limited,
            "tokens": r.tokens,
            "cost_usd": r.cost_usd,
            "outcome": r.outcome,
            "exit_code": r.exit_code,
            "model": r.model,
        }
        for r in rows
    ]


def format_history(rows: list[HistoryRow]) -> str:
    if not rows:
        return "🗒️ 実行履歴はまだありません"
    lines = [
        f"🗒️ 実行履歴 (新しい順, {len(rows)}件)",
        "  終了               種類  範囲          秒数   埋込  失敗  API  429  トークン    費用     終了  ワーカー",
    ]
    for r in rows:
        seconds = (r.ended_at - r.started_at).total_seconds()
        scope = _SCOPES.get(r.scope, r.scope) + (f" {r.doc_id}" if r.doc_id else "")
        cost = "-" if r.cost_usd is None else f"${r.cost_usd:.4f}"
        code = "-" if r.exit_code is None else str(r.exit_code)
        lines.append(
            f"  {r.ended_at.astimezone().strftime('%Y-%m-%d %H:%M:%S')}  {_KINDS.get(r.kind, r.kind):<4}"
            f"{scope[:12]:<12}{seconds:>7.1f}{r.embedded:>6}{r.failed:>6}{r.api_calls:>5}{r.rate_limited:>5}"
            f"{r.tokens:>10}{cost:>10}  {_OUTCOMES.get(r.outcome, '')}{code:>3}  {r.worker}"
        )
    return "\n".join(lines)
