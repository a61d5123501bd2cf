"""`fix_missing_embeddings.py`: the guide's repair script, kept thin over `modules.engine.repair`."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from modules.batch_embedding import BatchEmbeddingGenerator
from modules.cli.common import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_OK,
    add_logging_options,
    parse_args,
    run_main,
    safe_secrets,
    setup,
)
from modules.cli.processor import positive_int
from modules.cli.progress import show_progress
from modules.cli.status_view import format_status, status_dict
from modules.engine.repair import RepairOutcome, repair
from modules.stores.base import RepairRow

MAX_DOCUMENT_LINES = 50  # the human report lists at most this many documents; --json lists all


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fix_missing_embeddings.py",
        description=(
            "Find, by document, chunks without an embedding, leases left by dead workers, and vectors of another "
            "model or dimension; reset them and embed everything missing in batches."
        ),
        epilog=EXIT_CODES_HELP,
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="only report what would be done: no chunk is changed, no API call; exit 0 if nothing needs repair, "
        "1 if something does",
    )
    parser.add_argument("--doc-id", metavar="ID", help="only this document's chunks")
    parser.add_argument(
        "--limit", type=positive_int, metavar="N", help="reset at most N wrong vectors and embed at most N chunks"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--no-progress", action="store_true", help="no live progress bar")
    add_logging_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    if isinstance(args, int):
        return args

    async def body() -> int:
        settings = setup(args)
        async with BatchEmbeddingGenerator(settings) as generator:
            outcome = await repair(
                generator,
                doc_id=args.doc_id,
                limit=args.limit,
                dry_run=args.dry_run,
                progress=None if (args.no_progress or args.json) else show_progress,
            )
        if args.json:
            print(json.dumps(outcome_dict(outcome), ensure_ascii=False))
        else:
            print(format_outcome(outcome))
        return EXIT_OK if outcome.ok else EXIT_FAILED

    return run_main(body, safe_secrets)


def format_row(row: RepairRow) -> str:
    return (
        f"  {row.name or row.doc_id} [{row.doc_id}]: 未埋め込み {row.missing} (うち失敗 {row.failed})"
        f" | 期限切れリース {row.expired_leases} | モデル違い {row.wrong_model} | 次元違い {row.wrong_dimension}"
        f" | 異常なベクトル {row.degenerate} | 本文変更 {row.stale}"
    )


def format_outcome(outcome: RepairOutcome) -> str:
    plan = outcome.plan
    t = plan.totals
    lines = [f"🔧 埋め込み修復レポート (モデル: {plan.model_id}, 次元: {plan.dimensions})"]
    if not plan.rows:
        lines.append("  ✨ 修復が必要なチャンクはありません")
    else:
        lines.append("📄 ドキュメント別")
        lines.extend(format_row(r) for r in plan.rows[:MAX_DOCUMENT_LINES])
        if len(plan.rows) > MAX_DOCUMENT_LINES:
            lines.append(f"  … 他 {len(plan.rows) - MAX_DOCUMENT_LINES} ドキュメント (--json で全件)")
        lines.append(
            f"  合計: 未埋め込み {t.missing} (うち失敗 {t.failed}) | 期限切れリース {t.expired_leases}"
            f" | モデル違い {t.wrong_model} | 次元違い {t.wrong_dimension} | 異常なベクトル {t.degenerate}"
            f" | 本文変更 {t.stale}"
        )
    lines.append("")
    if outcome.dry_run:
        lines.append("🧪 ドライラン: 何も変更していません。実行すると次の処理を行います")
        lines.append(f"  🔓 期限切れリースの解放: {plan.would_release}件")
        lines.append(
            f"  ♻️ 再埋め込みのためのリセット: {plan.would_reset}件 (モデル違い・次元違い・異常なベクトル・本文変更)"
        )
        lines.append(f"  🧠 バッチ埋め込み: {plan.would_embed}件")
        if t.failed:
            lines.append(
                f"  💡 失敗チャンク {t.failed}件は再処理しません: python batch_embedding_processor.py --retry-only"
            )
    else:
        applied = outcome.applied
        if applied is not None:
            lines.append(f"🔓 期限切れリースを解放: {applied.released_leases}件")
            lines.append(
                f"♻️ リセット: {applied.reset}件 (モデル違い {applied.wrong_model}, 次元違い {applied.wrong_dimension},"
                f" 異常なベクトル {applied.degenerate}, 本文変更 {applied.stale})"
            )
        if outcome.run is not None:
            run = outcome.run
            lines.append(f"🧠 バッチ埋め込み: 成功 {run.embedded}件 | 失敗 {run.failed}件")
        lines.append("")
        lines.append(format_status(outcome.status))
    return "\n".join(lines)


def outcome_dict(outcome: RepairOutcome) -> dict[str, Any]:
    plan = outcome.plan
    return {
        "dry_run": outcome.dry_run,
        "model": plan.model_id,
        "dimensions": plan.dimensions,
        "doc_id": plan.doc_id,
        "limit": plan.limit,
        "documents": [asdict(r) for r in plan.rows],
        "totals": asdict(plan.totals),
        "plan": {"release_leases": plan.would_release, "reset": plan.would_reset, "embed": plan.would_embed},
        "applied": asdict(outcome.applied) if outcome.applied is not None else None,
        "run": outcome.run.as_dict() if outcome.run is not None else None,
        "status": status_dict(outcome.status),
    }
