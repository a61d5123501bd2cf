"""Memory on a large backlog, and the database write rate with the API out of the way.

    python -m benchmarks.memory_and_writes [--chunks 200000] [--write-chunks 20000] [--quick]
                                           [--out benchmarks/results/memory_and_writes.json]

(a) memory: `--chunks` pending chunks, embedded by the product (BatchEmbeddingGenerator, through
    google-genai) against the Gemini simulator with no quota, no latency and no faults. The run has its
    own process: its peak RSS (wait4) and its RSS sampled as it goes, read at 10% and 90% of progress.
(b) writes: chunks per second written to the embedded PostgreSQL (768 dimensions), measured three ways
    on a fresh database each: PostgresStore.complete() in batches of 100 from one task, the same from
    4 concurrent tasks, and a whole run of BatchEmbeddingGenerator with a no-op embedder (claim,
    screen, write: everything but the API). Then the same three with an HNSW index on the column.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.corpus import generate
from benchmarks.harness import (
    DIMENSIONS,
    REPO,
    RESULTS,
    PgServer,
    check_vectors,
    format_table,
    run_child,
    seed,
    tail,
    write_json,
)
from benchmarks.procinfo import rss_mb

API_KEY = "bench-key-0123456789"
MEMORY_TARGET_MB = 300.0
WRITE_TARGET = 3000.0


# --- a no-op embedder: the Embedder port with the API taken out ----------------------------------------


class NoopEmbedder:
    """Returns ready-made unit vectors at once, so a run measures claim + screen + write only."""

    def __init__(self, dimensions: int = DIMENSIONS) -> None:
        rng = np.random.default_rng(0)
        pool = rng.standard_normal((100, dimensions)).astype(np.float32)
        self._pool = pool / np.linalg.norm(pool, axis=1, keepdims=True)
        self._dimensions = dimensions
        self._calls = 0

    @property
    def model_id(self) -> str:
        return f"noop@{self._dimensions}"

    @property
    def dimensions(self) -> int:
        return self._dimensions

    @property
    def max_batch(self) -> int:
        return 100

    async def embed(self, requests: Any, on_sent: Any = None) -> Any:
        self._calls += 1
        return self._pool[: len(requests)].copy()

    async def embed_query(self, text: str) -> Any:
        return self._pool[:1].copy()

    @property
    def input_format(self) -> str:
        return "{text}"

    def framing_tokens(self, title: str | None) -> int:
        return 0

    def estimate_tokens(self, text: str) -> int:
        from modules.text import estimate_tokens

        return estimate_tokens(text)

    def calls_made(self) -> int:
        return self._calls

    def batch_client(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


def product_env(url: str, sim_url: str | None, batch_size: str, log_file: Path) -> dict[str, str]:
    return {
        "DATABASE_URL": url,
        "EMBEDDING_PROVIDER": "gemini",
        "GOOGLE_API_KEY": API_KEY,
        "GOOGLE_GEMINI_BASE_URL": sim_url or "http://127.0.0.1:9",
        "EMBEDDING_DIMENSIONS": str(DIMENSIONS),
        "EMBEDDING_BATCH_SIZE": batch_size,
        "EMBEDDING_LOG_FILE": str(log_file),
    }


# --- (a) memory: the child process ------------------------------------------------------------------


def child_memory(args: argparse.Namespace) -> dict[str, Any]:
    from modules.batch_embedding import BatchEmbeddingGenerator
    from modules.cli.logging_setup import configure_logging
    from modules.settings import load_settings

    settings = load_settings(env=product_env(args.db, args.sim, args.batch_size, Path(args.log_file)))
    configure_logging(settings.log_file, settings.secrets())
    samples: list[tuple[float, int, float]] = []

    async def main() -> dict[str, Any]:
        async with BatchEmbeddingGenerator(settings) as generator:
            started = time.monotonic()
            samples.append((0.0, 0, rss_mb()))

            async def sample() -> None:
                while True:
                    await asyncio.sleep(0.25)
                    samples.append((time.monotonic() - started, generator.stats.embedded, rss_mb()))

            sampler = asyncio.create_task(sample())
            try:
                stats = await generator.run()
            finally:
                sampler.cancel()
            samples.append((time.monotonic() - started, stats.embedded, rss_mb()))
            status = await generator.status()
        return {
            "embedded": stats.embedded,
            "failed": stats.failed,
            "elapsed_seconds": stats.elapsed,
            "api_calls": stats.api_calls,
            "pending_after": status.pending,
            "samples": samples,
        }

    return asyncio.run(main())


def rss_at(samples: list[list[float]], fraction: float, total: int) -> float | None:
    """RSS at the first sample whose progress reached `fraction` of the total."""
    for _, done, rss in samples:
        if done >= fraction * total:
            return float(rss)
    return None


def measure_memory(pg: PgServer, args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    from modules.gemini_simulator import SimulatorConfig, run_simulator_in_thread

    with pg.fresh_database("memory") as url:
        began = time.monotonic()
        seeded = seed(url, generate(args.chunks, args.seed))
        seed_seconds = time.monotonic() - began
        print(f"(a) seeded {seeded:,} pending chunks in {seed_seconds:.0f} s; embedding ...", flush=True)
        with run_simulator_in_thread(SimulatorConfig(seed=args.seed)) as sim:
            out = run_dir / "memory.json"
            child = run_child(
                [
                    "-m",
                    "benchmarks.memory_and_writes",
                    "--child",
                    "memory",
                    "--db",
                    url,
                    "--sim",
                    sim.base_url,
                    "--batch-size",
                    args.batch_size,
                    "--log-file",
                    str(run_dir / "memory.product.log"),
                    "--child-out",
                    str(out),
                ],
                log=run_dir / "memory.log",
                result_file=out,
                timeout=args.timeout,
            )
            server = sim.stats.snapshot()
        check = check_vectors(url, sample=2000)
    result = child.result
    samples = result.get("samples", [])
    at10 = rss_at(samples, 0.10, seeded)
    at90 = rss_at(samples, 0.90, seeded)
    return {
        "status": "ok" if child.returncode == 0 and not child.timed_out else f"exit {child.returncode}",
        "chunks": seeded,
        "batch_size": args.batch_size,
        "embedded": check.embedded,
        "lost": check.missing + check.wrong,
        "vectors_checked": check.checked,
        "wrong_vectors": check.wrong,
        "elapsed_seconds": round(float(result.get("elapsed_seconds", child.wall_seconds)), 1),
        "chunks_per_second": round(check.embedded / float(result["elapsed_seconds"]), 1)
        if result.get("elapsed_seconds")
        else None,
        "api_calls": server.total_calls,
        "peak_rss_mb": round(child.peak_rss_mb, 1),
        "rss_at_10pct_mb": None if at10 is None else round(at10, 1),
        "rss_at_90pct_mb": None if at90 is None else round(at90, 1),
        "rss_growth_10_to_90_mb": None if at10 is None or at90 is None else round(at90 - at10, 1),
        "rss_samples": len(samples),
        "seed_seconds": round(seed_seconds, 1),
        "log": str(child.log.relative_to(REPO)) if child.log.is_relative_to(REPO) else str(child.log),
        **({"error_tail": tail(child.log, 8)} if child.returncode != 0 else {}),
    }


# --- (b) writes ----------------------------------------------------------------------------------------


async def write_direct(url: str, lanes: int) -> dict[str, Any]:
    """PostgresStore.complete() in batches of 100, from `lanes` concurrent tasks."""
    import psycopg

    from modules.settings import TableNames
    from modules.stores.postgres import PostgresStore

    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT id, content FROM chunks ORDER BY doc_id, chunk_index").fetchall()
        # Leased to the writer first, as a claim would: complete() writes only what its worker holds.
        conn.execute(
            "UPDATE chunks SET embedding_lease_owner = 'bench-writer', "
            "embedding_lease_expires_at = now() + interval '1 hour'"
        )
    batches = _batches(rows)
    store = PostgresStore(url, TableNames(), DIMENSIONS, pool_size=lanes + 1, create_tables=True)
    await store.prepare()
    queue: asyncio.Queue[list[Any]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)
    written = 0

    async def lane() -> None:
        nonlocal written
        while not queue.empty():
            batch = queue.get_nowait()
            done = await store.complete("bench-writer", "noop@768", batch)
            written += done.written

    started = time.monotonic()
    await asyncio.gather(*(lane() for _ in range(lanes)))
    elapsed = time.monotonic() - started
    await store.aclose()
    return {"written": written, "elapsed_seconds": elapsed}


def _batches(rows: list[tuple[Any, str]]) -> list[list[Any]]:
    """Ready results in batches of 100: ids, a unit vector each, the content hash, and a cache key (as the
    product passes one when EMBEDDING_CACHE is on, so the write also fills the cache)."""
    from modules.stores.base import Completed

    vectors = NoopEmbedder()._pool
    out = []
    for start in range(0, len(rows), 100):
        batch = []
        for n, (chunk_id, content) in enumerate(rows[start : start + 100]):
            digest = hashlib.sha256(content.encode("utf-8")).hexdigest()
            batch.append(Completed(str(chunk_id), vectors[n], digest, f"bench:{digest}"))
        out.append(batch)
    return out


async def write_through_generator(url: str, log_file: Path) -> dict[str, Any]:
    """A whole product run with the API replaced by a no-op embedder (batch size 100)."""
    from modules.batch_embedding import BatchEmbeddingGenerator
    from modules.settings import load_settings

    settings = load_settings(env=product_env(url, None, "100", log_file))
    async with BatchEmbeddingGenerator(settings, embedder=NoopEmbedder()) as generator:
        stats = await generator.run()
    return {"written": stats.embedded, "elapsed_seconds": stats.elapsed, "failed": stats.failed}


def measure_writes(pg: PgServer, args: argparse.Namespace, run_dir: Path) -> list[dict[str, Any]]:
    import logging

    # The product's log lines go to a file, as the CLI's do (not to this console).
    log_file = run_dir / "writes.product.log"
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s - %(message)s"))
    product_log = logging.getLogger("batch_embedding")
    product_log.addHandler(handler)
    product_log.setLevel(logging.INFO)
    product_log.propagate = False
    rows: list[dict[str, Any]] = []
    ways = [
        ("PostgresStore.complete(), batches of 100, 1 task", lambda url: write_direct(url, 1)),
        ("PostgresStore.complete(), batches of 100, 4 tasks", lambda url: write_direct(url, 4)),
        ("BatchEmbeddingGenerator + no-op embedder (batch 100)", lambda url: write_through_generator(url, log_file)),
    ]
    for hnsw in (False, True):
        count = args.hnsw_chunks if hnsw else args.write_chunks
        for label, way in ways:
            with pg.fresh_database("writes") as url:
                seed(url, generate(count, args.seed + 1), hnsw=hnsw)
                result = asyncio.run(way(url))
                check = check_vectors(url, sample=0)
            rate = result["written"] / result["elapsed_seconds"] if result["elapsed_seconds"] else None
            row = {
                "index": "hnsw (vector_cosine_ops)" if hnsw else "none",
                "way": label,
                "chunks": count,
                "written": result["written"],
                "unwritten": check.missing,
                "elapsed_seconds": round(result["elapsed_seconds"], 3),
                "chunks_per_second": None if rate is None else round(rate, 1),
            }
            rows.append(row)
            print(f"(b) {row['index']:>24} | {label}: {row['chunks_per_second']} chunks/s", flush=True)
    return rows


# --- the command ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.memory_and_writes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--chunks", type=int, default=None, help="pending chunks for (a) (default 200,000)")
    parser.add_argument("--write-chunks", type=int, default=None, help="chunks per write test (default 20,000)")
    parser.add_argument("--hnsw-chunks", type=int, default=None, help="chunks per HNSW write test (default 10,000)")
    parser.add_argument("--batch-size", default="auto", help="EMBEDDING_BATCH_SIZE for (a)")
    parser.add_argument("--quick", action="store_true", help="a tiny run for smoke tests")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-writes", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds before the memory run is stopped")
    parser.add_argument("--out", type=Path, default=RESULTS / "memory_and_writes.json")
    child = parser.add_argument_group("internal: the memory run's own process")
    child.add_argument("--child", choices=("memory",), help=argparse.SUPPRESS)
    child.add_argument("--db", help=argparse.SUPPRESS)
    child.add_argument("--sim", help=argparse.SUPPRESS)
    child.add_argument("--log-file", help=argparse.SUPPRESS)
    child.add_argument("--child-out", help=argparse.SUPPRESS)
    return parser


def render(report: dict[str, Any]) -> str:
    out: list[str] = []
    memory = report.get("memory")
    if memory:
        out += [
            "### (a) memory",
            "",
            format_table(
                ["pending chunks", "batch", "chunks/s", "peak RSS", "RSS at 10%", "RSS at 90%", "lost", "status"],
                [
                    [
                        f"{memory['chunks']:,}",
                        memory["batch_size"],
                        memory["chunks_per_second"] or "—",
                        f"{memory['peak_rss_mb']:.0f} MB",
                        "—" if memory["rss_at_10pct_mb"] is None else f"{memory['rss_at_10pct_mb']:.0f} MB",
                        "—" if memory["rss_at_90pct_mb"] is None else f"{memory['rss_at_90pct_mb']:.0f} MB",
                        f"{memory['lost']:,}",
                        memory["status"],
                    ]
                ],
            ),
            "",
            "Simulator without quota, latency or faults; the run's own process (wait4 peak; /proc VmRSS samples "
            f"read at 10% and 90% of the chunks embedded). Target: peak < {MEMORY_TARGET_MB:.0f} MB and flat.",
            "",
        ]
    writes = report.get("writes")
    if writes:
        out += [
            "### (b) writes to the embedded PostgreSQL (768 dimensions)",
            "",
            format_table(
                ["vector index", "how", "chunks", "chunks/s", "unwritten"],
                [
                    [w["index"], w["way"], f"{w['chunks']:,}", w["chunks_per_second"] or "—", w["unwritten"]]
                    for w in writes
                ],
            ),
            "",
            "Each on a fresh database of pending chunks; the server's default settings (fsync and synchronous_commit "
            f"on). Target without an index: >= {WRITE_TARGET:,.0f} chunks/s.",
        ]
    targets = report.get("targets", {})
    if targets:
        out += [
            "",
            "Targets: "
            + "; ".join(f"{k} {'met' if v['met'] else 'MISSED'} ({v['value']})" for k, v in targets.items()),
        ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child == "memory":
        result = child_memory(args)
        Path(args.child_out).write_text(json.dumps(result), encoding="utf-8")
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: stop the embedded PostgreSQL
    args.chunks = args.chunks or (2000 if args.quick else 200_000)
    args.write_chunks = args.write_chunks or (1000 if args.quick else 20_000)
    args.hnsw_chunks = args.hnsw_chunks or (500 if args.quick else 10_000)
    run_dir = args.out.parent / (args.out.stem + "_logs")
    run_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "benchmark": "memory_and_writes",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": args.quick,
    }
    with PgServer() as pg:
        if not args.skip_memory:
            report["memory"] = measure_memory(pg, args, run_dir)
        if not args.skip_writes:
            report["writes"] = measure_writes(pg, args, run_dir)
    targets: dict[str, dict[str, Any]] = {}
    memory = report.get("memory")
    if memory:
        targets["peak_rss<300MB"] = {"value": memory["peak_rss_mb"], "met": memory["peak_rss_mb"] < MEMORY_TARGET_MB}
        targets["lost==0"] = {"value": memory["lost"], "met": memory["lost"] == 0 and memory["status"] == "ok"}
    plain = [w for w in report.get("writes", []) if w["index"] == "none"]
    if plain:
        best = max(w["chunks_per_second"] or 0 for w in plain)
        via_product = next(w for w in plain if w["way"].startswith("BatchEmbeddingGenerator"))
        targets["writes>=3000/s (product, best way)"] = {"value": best, "met": best >= WRITE_TARGET}
        targets["writes>=3000/s (through the product)"] = {
            "value": via_product["chunks_per_second"],
            "met": (via_product["chunks_per_second"] or 0) >= WRITE_TARGET,
        }
    report["targets"] = targets
    report["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json(args.out, report)
    print()
    print(render(report))
    print(f"\nJSON: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
