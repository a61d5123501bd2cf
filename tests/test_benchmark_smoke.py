"""Smoke runs of the benchmark commands: tiny, as subprocesses, checking the JSON they write.

The full runs (README in benchmarks/) take minutes; these only prove the harness still works against
the product on disk: every row runs, the JSON has the rows and columns, and no chunk is lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # real subprocesses and servers: the full tier only

REPO = Path(__file__).resolve().parent.parent
THROUGHPUT_COLUMNS = {
    "row",
    "status",
    "chunks",
    "chunks_per_second",
    "share_of_ceiling",
    "vs_original",
    "api_calls",
    "rate_limited",
    "rate_limited_share",
    "lost",
    "peak_rss_mb",
}


def run_module(args: list[str], timeout: float) -> str:
    """Run `python -m args`; past `timeout` it gets SIGTERM (it then stops its PostgreSQL), then SIGKILL."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("BATCH_EMBEDDING_DOTENV", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        pytest.fail(f"{' '.join(args)} took over {timeout:.0f}s:\n{output[-3000:]}")
    assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}:\n{output[-3000:]}"
    return output


@pytest.mark.timeout(120)
def test_throughput_quick_run_writes_every_row_and_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "throughput.json"
    output = run_module(
        [
            "benchmarks.throughput",
            "--quick",
            "--chunks",
            "200",
            "--count-mode",
            "text",
            "--cells",
            "bare,small-texts",  # two cells of the matrix: the whole matrix is the full run's
            "--out",
            str(out),
        ],
        timeout=60,
    )
    assert "ceiling" in output and "chunks/s" in output  # the table was printed
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["corpus"]["chunks"] == 200
    assert set(report["modes"]) == {"text"}
    section = report["modes"]["text"]
    assert section["ceiling"]["api_calls"] == 2
    rows = {r["row"]: r for r in section["rows"]}
    assert list(rows) == ["original", "langchain", "ours-10", "ours-auto", "ours-given"]
    assert rows["langchain"]["status"] in ("ok", "skipped")  # skipped where its own venv is absent (CI)
    for name, row in rows.items():
        if row["status"] == "skipped":
            continue
        assert row["status"] == "ok", (name, row.get("error_tail"))
        assert set(row) >= THROUGHPUT_COLUMNS, (name, THROUGHPUT_COLUMNS - set(row))
        assert row["chunks_per_second"] > 0 and row["api_calls"] > 0 and row["peak_rss_mb"] > 0
    for name in ("original", "ours-10", "ours-auto", "ours-given"):
        assert rows[name]["lost"] == 0, (name, rows[name]["db"])
        assert rows[name]["db"]["wrong"] == 0
    assert rows["ours-auto"]["db"]["embedded"] == rows["ours-given"]["db"]["embedded"] == 200
    assert rows["ours-given"]["client"]["settings"]["EMBEDDING_QUOTA_WINDOW"]  # the quota was told up front
    assert section["targets"]["evaluated"] is True
    cells = {c["cell"]["key"]: c for c in report["matrix"]["cells"]}
    assert list(cells) == ["bare", "small-texts"]  # (the per-day cell needs more calls than 200 chunks make)
    for key, cell in cells.items():
        assert cell["status"] == "ok" and cell["lost"] == 0 and cell["api_calls"] > 0, (key, cell.get("error_tail"))


@pytest.mark.timeout(120)
def test_memory_and_writes_quick_run_reports_memory_and_write_rates(tmp_path: Path) -> None:
    out = tmp_path / "memory_and_writes.json"
    run_module(
        [
            "benchmarks.memory_and_writes",
            "--quick",
            "--chunks",
            "300",
            "--write-chunks",
            "300",
            "--hnsw-chunks",
            "200",
            "--out",
            str(out),
        ],
        timeout=60,
    )
    report = json.loads(out.read_text(encoding="utf-8"))
    memory = report["memory"]
    assert memory["status"] == "ok", memory.get("error_tail")
    assert memory["chunks"] == 300 and memory["embedded"] == 300 and memory["lost"] == 0
    assert memory["wrong_vectors"] == 0 and memory["vectors_checked"] > 0
    assert 0 < memory["peak_rss_mb"] < 1000
    writes = report["writes"]
    assert {w["index"] for w in writes} == {"none", "hnsw (vector_cosine_ops)"}
    assert len(writes) == 6
    for w in writes:
        assert w["unwritten"] == 0 and w["written"] == w["chunks"], w
        assert w["chunks_per_second"] > 0
    assert set(report["targets"]) >= {"peak_rss<300MB", "lost==0"}


def test_watcher_benchmark_runs_tiny(tmp_path: Path) -> None:
    out = tmp_path / "watcher.json"
    output = run_module(
        [
            "benchmarks.watcher",
            "--inserts",
            "3",
            "--quiet-seconds",
            "2",
            "--baseline-interval",
            "2",
            "--baseline-samples",
            "1",
            "--chunks",
            "200",
            "--out",
            str(out),
        ],
        timeout=240,
    )
    data = json.loads(out.read_text(encoding="utf-8"))
    assert "| --watch ×3 |" in output
    assert data["watcher"]["latency"]["n"] == 3 and data["watcher"]["exit_code"] == 0
    assert data["baseline"]["latency"]["n"] == 1 and data["baseline"]["runs"] >= 1
    three = data["three_watchers"]
    assert three["embedded_exactly_once"] == three["chunks"] == 200
    assert three["left_leased"] == 0 and three["exit_codes"] == [0, 0, 0]
