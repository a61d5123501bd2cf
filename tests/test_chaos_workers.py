"""Chaos: several workers at once, and workers that die or are told to stop.

Real CLI processes (`batch_embedding_processor.py`) on one PostgreSQL database, talking HTTP through
the real google-genai client to one Gemini simulator running in a thread.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from modules.gemini_simulator import GeminiSimulator, SimulatorConfig, run_simulator_in_thread
from tests.chaos_helpers import (
    Row,
    Worker,
    count_embedded,
    embeds_by_content,
    gemini_env,
    rows,
    run_cli,
    status_json,
    wait_until,
    wrong_vectors,
)
from tests.helpers import corpus, seed_chunks

pytestmark = pytest.mark.slow  # real subprocesses and servers: the full tier only


@pytest.fixture
def sim() -> Iterator[GeminiSimulator]:
    with run_simulator_in_thread(SimulatorConfig()) as simulator:
        yield simulator


async def test_four_workers_at_once_embed_every_chunk_exactly_once(
    database_url: str, base_env: dict[str, str], sim: GeminiSimulator, tmp_path: Path
) -> None:
    n = 1200
    await seed_chunks(database_url, corpus(n, docs=12))
    sim.config.latency_base_ms = 20  # each call takes a while, so the four workers' claims interleave
    env = gemini_env(base_env, sim, EMBEDDING_CONCURRENCY=2)
    workers = [Worker(env, "--json", out_dir=tmp_path, name=f"w{i}") for i in range(4)]
    codes = [w.wait(timeout=90) for w in workers]

    assert codes == [0, 0, 0, 0], [w.stderr[-2000:] for w in workers]
    runs = [w.json()["run"] for w in workers]
    # every worker took part (they really ran at the same time), and their counts add up exactly
    assert all(r["embedded"] > 0 for r in runs), runs
    assert sum(r["embedded"] for r in runs) == n
    assert sum(r["failed"] for r in runs) == 0
    all_rows = rows(database_url)
    per_text = embeds_by_content(sim, [r.content for r in all_rows])
    assert len(per_text) == n
    assert sorted(per_text.values()) == [1] * n, "a chunk was embedded twice (or never)"
    assert sim.stats.texts_embedded == n
    assert wrong_vectors(all_rows) == []
    assert [r.id for r in all_rows if r.leased or not r.embedded] == []  # nothing left in progress


async def test_kill_9_mid_run_then_stale_leases_show_and_a_second_run_finishes(
    database_url: str, base_env: dict[str, str], sim: GeminiSimulator, tmp_path: Path
) -> None:
    n, lanes, batch = 400, 2, 10
    await seed_chunks(database_url, corpus(n, docs=4))
    sim.config.latency_base_ms = 150  # ~3 s for the whole run: long enough to die in the middle
    # A long lease: nothing here waits for it to expire. The dead worker ran on this host, and its
    # process is gone: that is known at once.
    env = gemini_env(
        base_env, sim, EMBEDDING_LEASE_SECONDS=300, EMBEDDING_CONCURRENCY=lanes, EMBEDDING_BATCH_SIZE=batch
    )
    victim = Worker(env, "--json", out_dir=tmp_path, name="victim")
    wait_until(lambda: count_embedded(database_url) >= 60, timeout=30, what="the first batches")
    victim.send(signal.SIGKILL)
    assert victim.wait(timeout=10) == -signal.SIGKILL

    at_kill = rows(database_url)
    in_flight = {r.content for r in at_kill if r.leased and not r.embedded}
    done_before = sum(r.embedded for r in at_kill)
    assert 0 < len(in_flight) <= lanes * batch, "the dead worker should hold at most its batches in flight"
    assert done_before < n

    # --status says what the README documents: the dead worker's chunks are stale, inside pending
    status = status_json(env)
    assert status["stale_leases"] == len(in_flight)
    assert status["in_progress"] == 0
    assert status["embedded"] == done_before
    assert status["pending"] == n - done_before
    # and the repair script sees them too
    plan = json.loads(run_cli(env, "--dry-run", "--json", script="fix_missing_embeddings.py").stdout)
    assert plan["totals"]["expired_leases"] == len(in_flight)

    sim.config.latency_base_ms = 0
    started = time.monotonic()
    second = run_cli(env, "--json")  # right after the crash: it finishes the job
    assert second.returncode == 0, second.stderr
    assert time.monotonic() - started < 30
    assert json.loads(second.stdout)["run"]["embedded"] == n - done_before
    final = rows(database_url)
    assert [r.id for r in final if not r.embedded or r.leased] == []
    assert wrong_vectors(final) == []
    per_text = embeds_by_content(sim, [r.content for r in final])
    twice = {text for text, count in per_text.items() if count > 1}
    assert twice <= in_flight, "only the batches in flight at the kill may have been embedded twice"
    assert all(count in (1, 2) for count in per_text.values())
    assert status_json(env)["stale_leases"] == 0


def _start_and_signal(
    database_url: str, env: dict[str, str], tmp_path: Path, sig: signal.Signals, *, slow_release: bool = False
) -> tuple[Worker, int, float]:
    """Start a worker, let its first batches land, then signal it while its next calls are in
    flight (the simulator answers after 300 ms); returns the worker, its exit code and how long
    it took to exit. With `slow_release`, the rows in flight are row-locked by another session for
    the first second after the signal, as a busy database would: a release must wait for them."""
    worker = Worker(env, "--json", out_dir=tmp_path, name=sig.name)
    wait_until(lambda: count_embedded(database_url) >= 40, timeout=30, what="the first batches")
    time.sleep(0.12)  # the lanes have claimed their next batches and wait on the API
    with contextlib.ExitStack() as stack:
        if slow_release:
            conn = stack.enter_context(psycopg.connect(database_url))
            locked = conn.execute(
                "SELECT id FROM chunks WHERE embedding_lease_owner IS NOT NULL AND embedding IS NULL FOR UPDATE"
            ).fetchall()
            assert locked, "no batch was in flight"
        sent = worker.send(sig)
        if slow_release:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.proc.wait(timeout=1.0)
            conn.commit()
    code = worker.wait(timeout=15)
    return worker, code, time.monotonic() - sent


def _never_half_written(after: list[Row]) -> None:
    assert wrong_vectors(after) == []  # every vector is the exact one, and 'done' only with a vector
    # each chunk is either embedded or untouched pending: not charged, not recorded failed
    assert [r.id for r in after if not r.embedded and (r.error or r.failed_at or r.attempts)] == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_sigint_and_sigterm_stop_promptly_and_never_half_write(
    database_url: str, base_env: dict[str, str], sim: GeminiSimulator, tmp_path: Path, sig: signal.Signals
) -> None:
    n = 400
    await seed_chunks(database_url, corpus(n, docs=4))
    sim.config.latency_base_ms = 300
    env = gemini_env(base_env, sim, EMBEDDING_CONCURRENCY=4, EMBEDDING_LEASE_SECONDS=2)
    worker, code, took = _start_and_signal(database_url, env, tmp_path, sig)

    # modules/cli.py maps both signals to EXIT_INTERRUPTED (130), as the CLI's --help documents
    assert code == 130, worker.stderr[-2000:]
    assert took < 5.0, f"took {took:.1f}s to stop"
    assert "中断しました" in worker.stderr and "Traceback" not in worker.stderr
    after = rows(database_url)
    _never_half_written(after)
    embedded = sum(r.embedded for r in after)
    assert 40 <= embedded < n

    # the next run (after any lease has expired) takes exactly what is left
    time.sleep(2.1)
    sim.config.latency_base_ms = 0
    rerun = run_cli(env, "--json")
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["run"]["embedded"] == n - embedded
    final = rows(database_url)
    assert all(r.embedded for r in final) and wrong_vectors(final) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_sigint_and_sigterm_release_the_batches_in_flight(
    database_url: str, base_env: dict[str, str], sim: GeminiSimulator, tmp_path: Path, sig: signal.Signals
) -> None:
    """Default (adaptive) concurrency: some lanes wait on the limiter while others call the API. A
    waiting lane ends at once on cancel, which completes the run's gather() early; execute() then
    cancels the other lanes again while they await asyncio.shield(release), and asyncio.run cancels
    the shielded release itself at shutdown."""
    n = 400
    await seed_chunks(database_url, corpus(n, docs=4))
    sim.config.latency_base_ms = 300
    env = gemini_env(base_env, sim, EMBEDDING_LEASE_SECONDS=600)
    worker, code, _ = _start_and_signal(database_url, env, tmp_path, sig, slow_release=True)
    assert code == 130, worker.stderr[-2000:]
    after = rows(database_url)
    _never_half_written(after)
    leased = [r.id for r in after if r.leased]
    assert leased == [], f"{len(leased)} chunks left leased for 600 s after {sig.name}"
    status = status_json(env)
    assert status["in_progress"] == 0 and status["pending"] == n - status["embedded"]
