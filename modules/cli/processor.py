"""`batch_embedding_processor.py`: the guide's processor CLI, kept thin over the library."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from modules.batch_embedding import BatchEmbeddingGenerator
from modules.cli.common import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    add_logging_options,
    parse_args,
    run_main,
    safe_secrets,
    setup,
)
from modules.cli.history_view import format_history, history_dicts
from modules.cli.migration import add_migration_options, migration_asked, run_migration_command
from modules.cli.progress import show_progress
from modules.cli.status_view import (
    batch_jobs_list,
    format_batch_jobs,
    format_migration,
    format_status,
    status_dict,
)
from modules.engine.migration import ModelMigrator
from modules.engine.stats import ESTIMATE_METHOD, RunStats
from modules.errors import ApiUnavailableError, StoreError, UnknownDocumentError
from modules.logs import get_logger, scrub
from modules.settings import Settings
from modules.stores import open_store, store_kind
from modules.stores.base import ErrorGroup, TextToEmbed
from modules.stores.migrations import latest_version
from modules.stores.ops_base import operations_store

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
    parser.add_argument(
        "--history",
        type=positive_int,
        nargs="?",
        const=10,
        metavar="N",
        help="with --status (implied): the last N runs from the run history (default 10)",
    )
    parser.add_argument(
        "--watch",
        action="store_true",
        help="stay running and embed chunks as they arrive (LISTEN/NOTIFY, or polling every "
        "EMBEDDING_WATCH_INTERVAL); failed chunks are retried after a cooldown, up to EMBEDDING_MAX_ATTEMPTS; "
        "SIGTERM stops it (exit 0)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no live progress bar")
    parser.add_argument(
        "--batch-api",
        action="store_true",
        help="embed through Google's Batch API: half the price, done within 24 h; the jobs are tracked in the "
        "database, so any later run picks them up",
    )
    parser.add_argument(
        "--no-wait", action="store_true", help="with --batch-api: submit the jobs and exit (a later run ingests them)"
    )
    parser.add_argument(
        "--setup",
        action="store_true",
        help="first-time setup of a database: create the host tables if missing and the queue's schema, then exit",
    )
    add_migration_options(parser)
    add_logging_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    if isinstance(args, int):
        return args
    if args.history is not None:
        args.status = True
    if args.watch:
        others = [
            flag
            for flag, on in (
                ("--status", args.status),
                ("--doc-id", args.doc_id is not None),
                ("--limit", args.limit is not None),
                ("--retry-only", args.retry_only),
                ("--setup", args.setup),
                ("--json", args.json),
            )
            if on
        ]
        if others:
            parser.print_usage(sys.stderr)
            print(f"❌ --watch runs by itself; it can't be combined with {', '.join(others)}", file=sys.stderr)
            return EXIT_USAGE

    async def body() -> int:
        settings = setup(args)
        if args.setup:
            return await first_time_setup(settings)
        if migration_asked(args) and (args.status or args.doc_id or args.batch_api or args.watch):
            raise UsageError(
                "--migrate-to, --migrate-cutover and --migrate-abort go without --status, --doc-id, --batch-api "
                "and --watch"
            )
        if sum(bool(x) for x in (args.migrate_to, args.migrate_cutover, args.migrate_abort)) > 1:
            raise UsageError("give one of --migrate-to, --migrate-cutover and --migrate-abort")
        if args.force and not args.migrate_cutover:
            raise UsageError("--force goes with --migrate-cutover only")
        if args.watch:
            from modules.cli.watch import watch

            return await watch(settings)
        async with BatchEmbeddingGenerator(settings) as generator:
            if args.status:
                return await show_status(generator, args)
            if migration_asked(args):
                return await run_migration_command(generator, args)
            try:
                if args.no_progress or args.json:
                    stats = await run(generator, args)
                else:
                    async with show_progress(generator):
                        stats = await run(generator, args)
            except ApiUnavailableError:
                await report(generator, args, generator.stats)  # what was done, and that nothing was charged
                await alerts_after_run(generator, settings)
                raise
            await report(generator, args, stats)
            await alerts_after_run(generator, settings)
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
    return await generator.run(
        doc_id=args.doc_id,
        limit=args.limit,
        retry_failed=args.retry_only,
        batch_api=True if args.batch_api else None,
        wait_for_batch=not args.no_wait,
    )


async def alerts_after_run(generator: BatchEmbeddingGenerator, settings: Settings) -> None:
    """With ALERT_WEBHOOK_URL, a plain run (cron's) evaluates the alert rules once at its end; it never fails
    the run (modules/ops/alerts.py)."""
    if settings.alert_webhook_url is None or generator.stats.database_lost:
        return  # (with the database gone there is nothing to read the rules from)
    from modules.ops.alerts import alert_monitor

    await alert_monitor(operations_store(generator.store), settings).evaluate_safely()


async def report(generator: BatchEmbeddingGenerator, args: argparse.Namespace, stats: RunStats) -> None:
    """The run and the status after it; with the database lost, the run alone ("status": null)."""
    try:
        status = await generator.store.status(
            args.doc_id,
            model_id=generator.embedder.model_id,
            dead_owners=await generator.dead_owners(),
            retry=generator.retry_rule,
        )
    except StoreError:
        if not stats.database_lost:
            raise
        status = None
    if args.json:
        shown = status_dict(status) if status is not None else None
        print(json.dumps({"run": stats.as_dict(), "status": shown}, ensure_ascii=False))
    elif status is not None:
        print(format_status(status))


async def show_status(generator: BatchEmbeddingGenerator, args: argparse.Namespace) -> int:
    store = generator.store
    if args.doc_id is not None and not await store.document_exists(args.doc_id):
        raise UnknownDocumentError(args.doc_id)
    status = await store.status(
        args.doc_id,
        model_id=generator.embedder.model_id,
        dead_owners=await generator.dead_owners(),
        retry=generator.retry_rule,
    )
    documents = await store.status_by_document() if args.by_document else None
    secrets = generator.settings.secrets()
    errors = (
        [ErrorGroup(scrub(e.error, secrets), e.chunks, e.last_seen) for e in await store.recent_errors()]
        if args.errors
        else None
    )  # rows stored by an older version may quote a secret: never show it
    cache = await store.cache_stats()
    cost = cost_estimate(generator, await store.text_to_embed(args.doc_id))
    jobs = await store.batch_jobs(recent=5)
    migration = await ModelMigrator(generator).progress()
    history = await operations_store(store).runs_recent(args.history) if args.history is not None else None
    if args.json:
        extra = {
            "model": generator.embedder.model_id,
            "dimensions": generator.settings.dimensions,
            "cache_entries": cache.entries,
            "cache_hits": cache.hits,
            **cost,
            "batch_jobs": batch_jobs_list(jobs),
            "migration": migration.as_dict() if migration else None,
        }
        if history is not None:
            extra["history"] = history_dicts(history)
        print(json.dumps(status_dict(status, documents=documents, errors=errors, extra=extra), ensure_ascii=False))
    else:
        print(format_status(status, documents=documents, errors=errors, cache=cache, cost=cost))
        if jobs:
            print(format_batch_jobs(jobs))
        if migration is not None and migration.migration.state == "filling":
            print(format_migration(migration))
        if history is not None:
            print()
            print(format_history(history))
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
