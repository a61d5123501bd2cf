"""`batch_embedding_processor.py`: the guide's processor CLI, kept thin over the library."""

from __future__ import annotations

import argparse
import json
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
from modules.cli.progress import show_progress
from modules.cli.status_view import format_status, status_dict
from modules.engine.stats import ESTIMATE_METHOD, RunStats
from modules.errors import ApiUnavailableError, StoreError, UnknownDocumentError
from modules.logs import get_logger
from modules.settings import Settings
from modules.stores import open_store, store_kind
from modules.stores.base import TextToEmbed
from modules.stores.migrations import latest_version

log = get_logger(__name__)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batch_embedding_processor.py",
        description="Embed chunks that have no embedding, in batches, with recovery; or show the status.",
        epilog=EXIT_CODES_HELP,
    )
    parser.add_argument("--limit", type=positive_int, metavar="N", help="process at most N chunks")
    parser.add_argument("--doc-id", metavar="ID", help="only this document's chunks")
    parser.add_argument("--retry-only", action="store_true", help="only chunks recorded as failed by earlier runs")
    parser.add_argument("--status", action="store_true", help="show counts only (nothing is embedded)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--by-document", action="store_true", help="with --status: a line per document")
    parser.add_argument("--errors", action="store_true", help="with --status: the most common recorded errors")
    parser.add_argument("--no-progress", action="store_true", help="no live progress bar")
    parser.add_argument(
        "--setup",
        action="store_true",
        help="first-time setup of a database: create the host tables if missing and the queue's schema, then exit",
    )
    add_logging_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    if isinstance(args, int):
        return args

    async def body() -> int:
        settings = setup(args)
        if args.setup:
            return await first_time_setup(settings)
        async with BatchEmbeddingGenerator(settings) as generator:
            if args.status:
                return await show_status(generator, args)
            try:
                if args.no_progress or args.json:
                    stats = await run(generator, args)
                else:
                    async with show_progress(generator):
                        stats = await run(generator, args)
            except ApiUnavailableError:
                await report(generator, args, generator.stats)  # what was done, and that nothing was charged
                raise
            await report(generator, args, stats)
            return exit_code(stats)

    return run_main(body, safe_secrets)


async def first_time_setup(settings: Settings) -> int:
    """--setup: the one command that may create the host's tables on a database that is not the embedded one."""
    if store_kind(settings) == "supabase":
        raise StoreError(
            "--setup needs a database connection (DATABASE_URL); on the Supabase REST path apply the files in "
            "supabase/migrations/ instead (supabase db push, or the SQL editor)"
        )
    store, info = await open_store(settings, create_tables=True)
    await store.aclose()
    t = settings.tables
    log.info(
        "✅ セットアップ完了: %s.%s / %s.%s (vector(%s)) とキューのスキーマ (バージョン %d) を用意しました",
        t.schema,
        t.documents,
        t.schema,
        t.chunks,
        info.dimensions or "次元なし",
        latest_version(),
    )
    return EXIT_OK


async def run(generator: BatchEmbeddingGenerator, args: argparse.Namespace) -> RunStats:
    return await generator.run(doc_id=args.doc_id, limit=args.limit, retry_failed=args.retry_only)


async def report(generator: BatchEmbeddingGenerator, args: argparse.Namespace, stats: RunStats) -> None:
    status = await generator.store.status(
        args.doc_id, model_id=generator.embedder.model_id, dead_owners=await generator.dead_owners()
    )
    if args.json:
        print(json.dumps({"run": stats.as_dict(), "status": status_dict(status)}, ensure_ascii=False))
    else:
        print(format_status(status))


async def show_status(generator: BatchEmbeddingGenerator, args: argparse.Namespace) -> int:
    store = generator.store
    if args.doc_id is not None and not await store.document_exists(args.doc_id):
        raise UnknownDocumentError(args.doc_id)
    status = await store.status(
        args.doc_id, model_id=generator.embedder.model_id, dead_owners=await generator.dead_owners()
    )
    documents = await store.status_by_document() if args.by_document else None
    errors = await store.recent_errors() if args.errors else None
    cache = await store.cache_stats()
    cost = cost_estimate(generator, await store.text_to_embed(args.doc_id))
    if args.json:
        extra = {
            "model": generator.embedder.model_id,
            "dimensions": generator.settings.dimensions,
            "cache_entries": cache.entries,
            "cache_hits": cache.hits,
            **cost,
        }
        print(json.dumps(status_dict(status, documents=documents, errors=errors, extra=extra), ensure_ascii=False))
    else:
        print(format_status(status, documents=documents, errors=errors, cache=cache, cost=cost))
    return EXIT_OK


def cost_estimate(generator: BatchEmbeddingGenerator, text: TextToEmbed | None) -> dict[str, Any]:
    """What embedding the chunks without a vector would cost: their estimated tokens at the configured
    model's online and Batch API prices (None where the store or the price can't tell)."""
    online = generator.price_per_million_tokens()
    batch = generator.price_per_million_tokens(batch=True)
    tokens = text.tokens if text is not None else None

    def cost(price: float | None) -> float | None:
        return None if tokens is None or price is None else round(tokens * price / 1_000_000, 6)

    return {
        "tokens_estimate": tokens,
        "tokens_estimate_method": ESTIMATE_METHOD,
        "cost_usd": cost(online),
        "cost_usd_batch": cost(batch),
    }


def exit_code(stats: RunStats) -> int:
    return EXIT_OK if stats.ok else EXIT_FAILED
