"""`--watch`, `--history` and /metrics as an operator runs them: real CLI processes on the embedded PostgreSQL
(or a server of this module's own that is stopped and started), the Gemini simulator over HTTP."""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

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
    status_json,
    wait_until,
    wrong_vectors,
)
from tests.helpers import corpus, fetch_all, seed_chunks

pytestmark = pytest.mark.slow  # real subprocesses and servers: the full tier only


@pytest.fixture
def sim() -> Iterator[GeminiSimulator]:
    with run_simulator_in_thread(SimulatorConfig(poison_marker="毒")) as simulator:
        yield simulator


def insert(url: str, doc_id: str, texts: list[str], start: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO chunks (doc_id, chunk_index, content) VALUES (%s, %s, %s)",
            [(doc_id, start + i, t) for i, t in enumerate(texts)],
        )


def test_watch_cannot_be_combined_with_a_one_off_selection(base_env: dict[str, str]) -> None:
    for extra in (["--status"], ["--limit", "5"], ["--retry-only"], ["--doc-id", "x"], ["--history"]):
        result = run_cli(base_env, "--watch", *extra)
        assert result.returncode == 2, (extra, result.stderr)
        assert "--watch runs by itself" in result.stderr


async def test_sigterm_mid_run_releases_the_batches_and_exits_0(
    database_url: str, base_env: dict[str, str], sim: GeminiSimulator, tmp_path: Path
) -> None:
    n = 300
    await seed_chunks(database_url, corpus(n, docs=3))
    sim.config.latency_base_ms = 150
    env = gemini_env(base_env, sim, EMBEDDING_CONCURRENCY=2, EMBEDDING_LEASE_SECONDS=300, EMBEDDING_WATCH_INTERVAL=60)
    watcher = Worker(env, "--watch", out_dir=tmp_path, name="watcher")
    wait_until(lambda: count_embedded(database_url) >= 40, timeout=60, what="the first batches")
    sent = watcher.send(signal.SIGTERM)
    assert watcher.wait(timeout=30) == 0, watcher.stderr[-3000:]
    assert time.monotonic() - sent < 15
    after = rows(database_url)
    assert [r.id for r in after if r.leased] == []  # nothing left leased: written or given back
    assert wrong_vectors(after) == []
    done = sum(r.embedded for r in after)
    assert 40 <= done < n
    history = await fetch_all(database_url, "SELECT kind, exit_code, outcome, embedded FROM embq_runs")
    assert history == [("watch", 0, "ok", done)] or history[0][:2] == ("watch", 0), history
    assert "👋 監視モードを終了しました" in watcher.stderr
    # a second watcher finishes the job, each text embedded once (only batches in flight at the stop may repeat)
    second = Worker(env, "--watch", out_dir=tmp_path, name="second")
    wait_until(lambda: count_embedded(database_url) == n, timeout=90, what="the rest")
    second.send(signal.SIGTERM)
    assert second.wait(timeout=30) == 0
    per_text = embeds_by_content(sim, [r.content for r in rows(database_url)])
    assert all(c in (1, 2) for c in per_text.values()) and sum(c == 2 for c in per_text.values()) <= 20


async def test_a_lost_database_is_ridden_out(base_env: dict[str, str], tmp_path: Path) -> None:
    from tests.test_chaos_database import OwnServer

    server = OwnServer()
    try:
        url = server.new_database()
        await seed_chunks(url, {"d": ["最初の段落です。"]})
        env = {**base_env, "DATABASE_URL": url, "EMBEDDING_WATCH_INTERVAL": "0.5", "PYTHONUNBUFFERED": "1"}
        watcher = Worker(env, "--watch", out_dir=tmp_path, name="watcher")
        wait_until(lambda: count_embedded(url) == 1, timeout=60, what="the first chunk")
        server.stop()
        time.sleep(3)
        assert watcher.proc.poll() is None  # still running
        server.start()
        time.sleep(0.5)
        insert(url, "d", ["データベース復旧後の段落です。"], 1)
        wait_until(lambda: count_embedded(url) == 2, timeout=60, what="the chunk after the outage")
        watcher.send(signal.SIGTERM)
        assert watcher.wait(timeout=30) == 0, watcher.stderr[-3000:]
        assert "データベースに接続できません" in watcher.stderr or "LISTEN の接続が切れました" in watcher.stderr
    finally:
        server.close()


async def test_three_watchers_embed_bursts_exactly_once(
    database_url: str, base_env: dict[str, str], sim: GeminiSimulator, tmp_path: Path
) -> None:
    await seed_chunks(database_url, {"d": ["最初の段落です。"]})
    sim.config.latency_base_ms = 20
    env = gemini_env(base_env, sim, EMBEDDING_CONCURRENCY=2, EMBEDDING_WATCH_INTERVAL=30)
    watchers = [Worker(env, "--watch", out_dir=tmp_path, name=f"w{i}") for i in range(3)]
    try:
        wait_until(lambda: count_embedded(database_url) == 1, timeout=60, what="the watchers to start")
        texts = [t for doc in corpus(600, docs=6, prefix="バースト").values() for t in doc]
        for burst in range(6):
            insert(database_url, "d", texts[burst * 100 : (burst + 1) * 100], 1 + burst * 100)
            time.sleep(0.3)
        wait_until(lambda: count_embedded(database_url) == 601, timeout=120, what="every burst")
    finally:
        for w in watchers:
            w.send(signal.SIGTERM)
    assert [w.wait(timeout=30) for w in watchers] == [0, 0, 0]
    per_text = embeds_by_content(sim, [r.content for r in rows(database_url)])
    assert sorted(per_text.values()) == [1] * 601, "a chunk was embedded twice (or never)"
    took_part = await fetch_all(database_url, "SELECT count(DISTINCT embedded_by) FROM chunks")
    assert took_part[0][0] >= 2  # they shared the work
    assert wrong_vectors(rows(database_url)) == []


async def test_history_rows_carry_the_exit_code_the_cli_gave(
    database_url: str, base_env: dict[str, str], sim: GeminiSimulator
) -> None:
    await seed_chunks(database_url, {"d": ["良い段落です。", "毒の入った段落です。"]})
    env = gemini_env(base_env, sim)
    first = run_cli(env, "--json")
    assert first.returncode == 1
    second = run_cli(env, "--limit", "1")
    assert second.returncode == 1  # the failure is still in scope
    sim.config.error_rate_503 = 1.0
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO chunks (doc_id, chunk_index, content) VALUES ('d', 5, '障害中の段落です。')")
    third = run_cli({**env, "EMBEDDING_OUTAGE_SECONDS": "0.3", "EMBEDDING_MAX_RETRIES": "1"}, "--json")
    assert third.returncode == 3, third.stderr[-2000:]
    data = status_json(env, "--history", "3")
    history = data["history"]
    assert [h["exit_code"] for h in history] == [third.returncode, 1, 1]
    assert [h["scope"] for h in history] == ["pending", "pending", "pending"]
    assert history[-1]["embedded"] == 1 and history[-1]["failed"] == 1 and history[-1]["api_calls"] >= 2
    assert history[1]["limit"] == 1
    assert {"cooling_down", "quarantined", "oldest_pending_age_seconds", "failed", "pending"} <= data.keys()
    assert data["cooling_down"] + data["quarantined"] == data["failed"] == 1
    assert data["embedded"] + data["pending"] + data["failed"] + data["in_progress"] == data["total"]
    text = run_cli(env, "--status", "--history")
    assert text.returncode == 0 and "🗒️ 実行履歴" in text.stdout and "🧊 クールダウン中" in text.stdout


async def test_the_watchers_metrics(database_url: str, base_env: dict[str, str], tmp_path: Path) -> None:
    await seed_chunks(database_url, {"d": ["メトリクスの段落です。", "二つ目です。"]})
    env = {**base_env, "EMBEDDING_METRICS_PORT": "0", "EMBEDDING_WATCH_INTERVAL": "30", "PYTHONUNBUFFERED": "1"}
    watcher = Worker(env, "--watch", out_dir=tmp_path, name="watcher")
    try:
        wait_until(lambda: "metrics" in watcher.stderr and count_embedded(database_url) == 2, 60, what="metrics")
        address = re.search(r"http://(127\.0\.0\.1:\d+)/metrics", watcher.stderr)
        assert address, watcher.stderr
        with urllib.request.urlopen(f"http://{address.group(1)}/metrics", timeout=10) as answer:
            body = answer.read().decode()
            assert answer.headers["Content-Type"].startswith("text/plain")
    finally:
        watcher.send(signal.SIGTERM)
        assert watcher.wait(timeout=30) == 0
    assert 'batch_embedding_chunks{state="embedded"} 2.0' in body
    assert 'batch_embedding_chunks{state="quarantined"} 0.0' in body
    assert "batch_embedding_oldest_pending_age_seconds 0.0" in body
    assert re.search(r'batch_embedding_api_calls_total\{model="[^"]+",outcome="ok"\} [1-9]', body)
    assert 'batch_embedding_runs_total{exit_code="0"} 1.0' in body
    assert "batch_embedding_batch_duration_seconds_bucket" in body
    assert "process_cpu_seconds_total" in body
    workers = await fetch_all(database_url, "SELECT metrics FROM embq_workers")
    assert workers == [(address.group(1),)]
    assert json.loads(run_cli(env, "--status", "--json").stdout)["embedded"] == 2
