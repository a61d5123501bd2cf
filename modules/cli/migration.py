"""The model migration commands of `batch_embedding_processor.py`: --migrate-to, --migrate-cutover,
--migrate-abort (see modules/engine/migration.py for what each does)."""

from __future__ import annotations

import argparse
import json

from modules.batch_embedding import BatchEmbeddingGenerator
from modules.cli.common import EXIT_FAILED, EXIT_OK
from modules.cli.status_view import format_migration
from modules.engine.migration import ModelMigrator
from modules.errors import ApiUnavailableError
from modules.logs import get_logger

log = get_logger(__name__)


def add_migration_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model migration (search keeps working throughout)")
    group.add_argument(
        "--migrate-to",
        metavar="MODEL[@DIMS]",
        help="re-embed every chunk with another model into shadow columns (through the Batch API with a Gemini "
        "model; --no-wait submits and exits), e.g. gemini-embedding-2@768; run it again to resume",
    )
    group.add_argument(
        "--migrate-cutover",
        action="store_true",
        help="once every chunk has the new model's vector: build its indexes, compare search results, and swap "
        "the columns in one transaction",
    )
    group.add_argument(
        "--force",
        action="store_true",
        help="with --migrate-cutover: cut over although some chunks failed with the new model (they are then "
        "recorded as failed, without a vector, for --retry-only)",
    )
    group.add_argument(
        "--migrate-abort", action="store_true", help="drop the migration's columns and jobs; nothing else changes"
    )


def migration_asked(args: argparse.Namespace) -> bool:
    return bool(args.migrate_to or args.migrate_cutover or args.migrate_abort)


async def run_migration_command(generator: BatchEmbeddingGenerator, args: argparse.Namespace) -> int:
    migrator = ModelMigrator(generator)
    if args.migrate_abort:
        aborted = await migrator.abort()
        if args.json:
            print(json.dumps({"migration": {"id": aborted.id, "state": aborted.state}}, ensure_ascii=False))
        return EXIT_OK
    if args.migrate_cutover:
        report = await migrator.cutover(force=args.force)
        cutover = {
            "id": report.migration_id,
            "source_model": report.source_model,
            "target_model": report.target_model,
            "agreement": report.agreement,
            "agreement_sample": report.agreement_sample,
            "indexes": report.indexes,
            "timeline": [{"step": name, "seconds": at} for name, at in report.timeline],
        }
        try:  # chunks that arrived in the last instants: embedded with the new model
            stats = await generator.run()
        except ApiUnavailableError:
            if args.json:  # the swap is done whatever the run met: say so
                print(json.dumps({"cutover": cutover, "run": generator.stats.as_dict()}, ensure_ascii=False))
            raise
        if args.json:
            print(json.dumps({"cutover": cutover, "run": stats.as_dict()}, ensure_ascii=False))
        return EXIT_OK if stats.ok else EXIT_FAILED
    _, target = await migrator.start(args.migrate_to)
    stats = await migrator.fill(
        target,
        batch_api=None,
        wait=not args.no_wait,
        limit=args.limit,
        retry_failed=args.retry_only,
    )
    progress = await migrator.progress()
    if args.json:
        print(
            json.dumps(
                {"run": stats.as_dict(), "migration": progress.as_dict() if progress else None}, ensure_ascii=False
            )
        )
    elif progress is not None:
        print(format_migration(progress))
    if args.no_wait:
        return EXIT_OK
    return EXIT_OK if stats.ok else EXIT_FAILED
