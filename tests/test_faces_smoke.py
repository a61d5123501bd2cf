"""Each command-line face once, as a user starts it, in the fast tier: the self-test, the repair, the samples
loader, the watcher with its /metrics server, and the simulator's own command. The full tier tests each of
them in depth (test_selftest.py, test_repair.py, test_watch_cli.py, test_cli.py); these keep a broken face
from hiding until then."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.chaos_helpers import ROOT, Worker, run_cli, wait_until
from tests.helpers import corpus, fetch_all, seed_chunks


async def test_the_self_test_and_the_repair_run_on_a_fresh_database(
    database_url: str, base_env: dict[str, str]
) -> None:
    await seed_chunks(database_url, corpus(6, docs=2))
    env = {**base_env, "BATCH_EMBEDDING_DOTENV": str(ROOT / ".no-such-dotenv")}
    repair = run_cli(env, "--dry-run", script="fix_missing_embeddings.py")
    assert repair.returncode == 1, repair.stderr  # six vectors missing: a dry run with work to do says so
    assert "6" in repair.stdout + repair.stderr
    selftest = run_cli(env, script="test_batch_embedding.py")
    assert "🧪 バッチエンベディング システムテスト" in selftest.stdout, selftest.stderr
    assert "✅ データベース接続" in selftest.stdout


async def test_setup_then_the_samples_loader_stores_the_sample_documents(
    database_url: str, base_env: dict[str, str]
) -> None:
    env = {**base_env, "BATCH_EMBEDDING_DOTENV": str(ROOT / ".no-such-dotenv"), "AUTO_GENERATE_EMBEDDINGS": "false"}
    refused = run_cli(env, script="load_samples.py")  # a real database's tables are never made by surprise
    assert refused.returncode == 2 and "--setup" in refused.stderr
    setup = run_cli(env, "--setup")
    assert setup.returncode == 0, setup.stderr[-2000:]
    loaded = run_cli(env, script="load_samples.py")
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    rows = await fetch_all(database_url, "SELECT count(DISTINCT doc_id), count(*) FROM chunks")
    assert rows[0][0] == 5 and rows[0][1] > 20  # the five sample documents, chunked by the upload worker


async def test_the_watcher_serves_metrics_and_stops_on_sigterm(
    database_url: str, base_env: dict[str, str], tmp_path: Path
) -> None:
    await seed_chunks(database_url, corpus(4, docs=1))
    env = {
        **base_env,
        "BATCH_EMBEDDING_DOTENV": str(ROOT / ".no-such-dotenv"),
        "EMBEDDING_METRICS_PORT": "0",
        "PYTHONUNBUFFERED": "1",
    }
    watcher = Worker(env, "--watch", out_dir=tmp_path, name="watch")
    log = Path(base_env["EMBEDDING_LOG_FILE"])

    def address() -> str | None:
        text = log.read_text(encoding="utf-8") if log.exists() else ""
        found = re.search(r"http://([\d.:]+)/metrics", text)
        return found.group(1) if found else None

    try:
        wait_until(lambda: address() is not None, timeout=30, what="the metrics server")
        wait_until(
            lambda: "埋め込み済み" in log.read_text(encoding="utf-8") or "成功: 4" in log.read_text(encoding="utf-8"),
            timeout=30,
            what="the first run",
        )
        with urllib.request.urlopen(f"http://{address()}/metrics", timeout=5) as answer:
            body = answer.read().decode()
        assert 'batch_embedding_chunks{state="embedded"} 4.0' in body, body[:2000]
    finally:
        watcher.send(signal.SIGTERM)
    assert watcher.wait(timeout=30) == 0, watcher.stderr[-2000:]


def test_the_simulators_command_says_how_to_use_it() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "modules.gemini_simulator", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0 and "--rpm" in shown.stdout
