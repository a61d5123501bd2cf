"""Shared machinery of the chaos suite (tests/test_chaos_*.py): CLI workers as real subprocesses,
the Gemini simulator in a thread, and exact checks of what ended up in PostgreSQL.

Everything here is synchronous (subprocesses, psycopg's blocking API), so the helpers work the same
from sync and async tests; the simulator runs on its own loop in a thread and is never blocked.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from modules.embedders.base import l2_normalize
from modules.gemini_simulator import GeminiSimulator, simulated_embedding, text_sha256

ROOT = Path(__file__).resolve().parent.parent
PROCESSOR = "batch_embedding_processor.py"
SELFTEST = "test_batch_embedding.py"
CHAOS_API_KEY = "chaos-key-7f3a9c1e5b2d4086"


def gemini_env(base_env: dict[str, str], sim: GeminiSimulator, **extra: object) -> dict[str, str]:
    """Environment for a CLI run against the simulator: real google-genai client over HTTP."""
    env = dict(base_env)
    env.update(
        {
            "EMBEDDING_PROVIDER": "gemini",
            "GOOGLE_API_KEY": CHAOS_API_KEY,
            "GOOGLE_GEMINI_BASE_URL": sim.base_url,
            "EMBEDDING_REQUEST_TIMEOUT": "5",
            "BATCH_EMBEDDING_DOTENV": str(ROOT / ".no-such-dotenv"),  # a developer's .env must not leak in
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_cli(
    env: dict[str, str], *args: str, script: str = PROCESSOR, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def status_json(env: dict[str, str], *args: str) -> dict[str, Any]:
    result = run_cli(env, "--status", "--json", *args)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


class Worker:
    """One `batch_embedding_processor.py` run as a background process; its output goes to files
    (a pipe nobody reads would fill up and stall a chatty worker)."""

    def __init__(self, env: dict[str, str], *args: str, out_dir: Path, name: str, script: str = PROCESSOR) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.stdout_path = out_dir / f"{name}.stdout"
        self.stderr_path = out_dir / f"{name}.stderr"
        self._stdout = self.stdout_path.open("w", encoding="utf-8")
        self._stderr = self.stderr_path.open("w", encoding="utf-8")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / script), *args],
            cwd=ROOT,
            env=env,
            stdout=self._stdout,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, sig: signal.Signals) -> float:
        """Send a signal; returns the monotonic time it was sent."""
        self.proc.send_signal(sig)
        return time.monotonic()

    def wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise AssertionError(
                f"{self.name} did not finish within {timeout:.0f}s (deadlock?)\n{self.stderr}"
            ) from None
        finally:
            self._stdout.close()
            self._stderr.close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._stdout.close()
        self._stderr.close()

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.stdout)
        return data


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


# --- the database, as it really is ------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    id: str
    doc_id: str
    content: str
    vector: np.ndarray | None
    model: str | None
    content_hash: str | None
    embedded_at: object
    error: str | None
    failed_at: object
    attempts: int
    lease_owner: str | None
    lease_expires_at: object

    @property
    def embedded(self) -> bool:
        return self.vector is not None

    @property
    def leased(self) -> bool:
        return self.lease_owner is not None or self.lease_expires_at is not None


def connect(url: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    register_vector(conn)
    return conn


def rows(url: str) -> list[Row]:
    with connect(url) as conn:
        cur = conn.execute(
            """
            SELECT id, doc_id, content, embedding, embedding_model, content_hash, embedded_at,
                   embedding_error, embedding_failed_at, embedding_attempts,
                   embedding_lease_owner, embedding_lease_expires_at
            FROM chunks ORDER BY doc_id, chunk_index
            """
        )
        out = []
        for r in cur.fetchall():
            vector = None if r[3] is None else np.asarray(r[3].to_numpy(), dtype=np.float32)
            out.append(Row(r[0], r[1], r[2], vector, *r[4:]))
        return out


def count_embedded(url: str) -> int:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute("SELECT count(*) FROM chunks WHERE embedding IS NOT NULL").fetchone()
        return int(row[0]) if row else 0


def expected_vector(text: str, dims: int = 768) -> np.ndarray:
    """What must be stored for `text`: the simulator's vector, L2-normalized as the adapter does."""
    return l2_normalize(simulated_embedding(text, dims).reshape(1, -1).astype(np.float32))[0]


def wrong_vectors(all_rows: Iterable[Row], sent: Callable[[Row], str] | None = None) -> list[str]:
    """Ids of embedded rows whose vector is not exactly the simulator's (normalized) vector for the
    text that was sent (the content itself unless `sent` says otherwise), or that hold NaN, or whose
    bookkeeping says done without a vector (or a vector without done)."""
    bad = []
    for row in all_rows:
        if row.vector is None:
            if row.model is not None or row.embedded_at is not None or row.content_hash is not None:
                bad.append(f"{row.id}: marked done without a vector")
            continue
        if not np.isfinite(row.vector).all():
            bad.append(f"{row.id}: NaN/inf stored")
            continue
        text = sent(row) if sent else row.content
        want = expected_vector(text, len(row.vector))
        if row.vector.shape != want.shape or not np.allclose(row.vector, want, rtol=0, atol=1e-6):
            bad.append(f"{row.id}: vector differs from the simulator's")
        if row.model is None or row.embedded_at is None or row.error is not None or row.failed_at is not None:
            bad.append(f"{row.id}: vector stored but bookkeeping not 'done'")
    return bad


def embeds_by_content(sim: GeminiSimulator, contents: Iterable[str]) -> Counter[str]:
    """How many clean embeds the simulator answered for each content."""
    per_hash = sim.stats.snapshot().embeds_per_text
    return Counter({c: per_hash.get(text_sha256(c), 0) for c in contents})


def secrets_found(texts: Iterable[str], secrets: Iterable[str]) -> list[str]:
    """Which secrets (or a distinctive 8+ character piece of one, split at control characters,
    as a library's repr would print it) occur in any of the texts."""
    found = []
    haystack = "\n".join(texts)
    for secret in secrets:
        pieces = [secret, *(p for p in _split_controls(secret) if len(p) >= 8)]
        if any(p in haystack for p in pieces):
            found.append(secret)
    return found


def _split_controls(text: str) -> list[str]:
    out, current = [], []
    for ch in text:
        if ord(ch) < 32 or ord(ch) == 127 or ord(ch) > 126:
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    out.append("".join(current))
    return out
