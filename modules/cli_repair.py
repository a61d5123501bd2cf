"""`fix_missing_embeddings.py`: the guide's repair script, kept thin over `modules.repair`."""

from __future__ import annotations

import argparse
import json

from modules.batch_embedding import BatchEmbeddingGenerator
from modules.cli import EXIT_FAILED, EXIT_OK, add_logging_options, parse_args, run_main, safe_secrets, setup
from modules.cli_processor import positive_int
from modules.repair import format_outcome, outcome_dict, repair


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fix_missing_embeddings.py",
        description=(
            "Find, by document, chunks without an embedding, leases left by dead workers, and vectors of another "
            "model or dimension; reset them and embed everything missing in batches."
        ),
        epilog="Exit codes: 0 all selected chunks embedded, 1 some failed, 2 usage/settings error, 130 interrupted.",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="only report what would be done: no chunk is changed, no API call"
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
                progress=not (args.no_progress or args.json),
            )
        if args.json:
            print(json.dumps(outcome_dict(outcome), ensure_ascii=False))
        else:
            print(format_outcome(outcome))
        return EXIT_OK if outcome.ok else EXIT_FAILED

    return run_main(body, safe_secrets)
