"""`load_samples.py`: put the sample documents into the database as uploads would."""

from __future__ import annotations

import argparse
from pathlib import Path

from modules.cli.common import EXIT_OK, UsageError, add_logging_options, parse_args, run_main, safe_secrets, setup
from modules.knowledge.ingest import TEXT_TYPES, ingest_file, knowledge_store
from modules.logs import get_logger
from modules.stores import open_store

log = get_logger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="load_samples.py", description="Load sample documents as uploads.")
    parser.add_argument(
        "folder", nargs="?", type=Path, default=Path("samples"), help="folder of .txt/.md files (default: ./samples)"
    )
    add_logging_options(parser)
    args = parse_args(parser, argv)
    if isinstance(args, int):
        return args

    async def body() -> int:
        settings = setup(args)
        if not args.folder.is_dir():
            raise UsageError(f"{args.folder} is not a folder (give a folder of .txt / .md files)")
        store, _ = await open_store(settings)
        try:
            knowledge = knowledge_store(store)
            known = {d.name for d in await knowledge.list_documents(limit=100_000)}
            for path in sorted(args.folder.iterdir()):
                if path.suffix.lower() not in TEXT_TYPES or path.name == "README.md":
                    continue
                if path.name in known:
                    log.info("⏭️ 読み込み済みのためスキップ: %s", path.name)
                    continue
                result = await ingest_file(knowledge, path)
                log.info("📄 %s を保存しました (%dチャンク, id=%s)", result.name, result.chunks, result.doc_id)
        finally:
            await store.aclose()
        return EXIT_OK

    return run_main(body, safe_secrets)
