"""Chaos: the soak (benchmarks/soak.py), small, run as the command a user runs: 2,000 chunks through two
CLI workers under a tight quota with 5% faults (503, dropped connections, malformed JSON). Full size
(50,000) is `python -m benchmarks.soak`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # real subprocesses and servers: the full tier only
ROOT = Path(__file__).resolve().parents[1]


def test_soak_small_everything_accounted_for_memory_flat_connections_bounded(database_url: str, tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    command = [
        sys.executable, "-m", "benchmarks.soak", "--chunks", "2000", "--workers", "2", "--rpm", "30",
        "--tpm", "30000", "--window", "1", "--fault-rate", "0.06", "--sample-interval", "0.2",
        "--timeout", "120", "--database-url", database_url, "--json", str(out),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    print(result.stdout, file=sys.stderr)
    data = json.loads(out.read_text(encoding="utf-8"))
    db, sim = data["database"], data["simulator"]

    assert data["checks"]["workers_exited_0"], data["workers"]
    assert (db["total"], db["lost"], db["pending"], db["left_leased"]) == (2000, 0, 0, 0)
    assert db["embedded"] + db["failed_with_reason"] == 2000
    assert db["vectors_checked"] == db["embedded"] and db["vectors_wrong"] == 0
    assert db["done_but_inconsistent"] == 0
    assert db["embedded_more_than_once"] == 0  # two workers, faults and 429s: still each text once
    assert sum(sim["faults"].values()) > 0 and sim["rate_limited_429"] >= 0
    assert all(run["embedded"] > 0 for run in data["workers"])  # both took part
    assert data["memory"]["samples"] >= 10
    assert data["checks"]["memory_flat"], data["memory"]
    assert data["connections"]["max"] <= data["connections"]["bound"], data["connections"]
    assert data["connections"]["max"] >= 2  # the sampler really saw the workers' connections
    assert {"rss_first_tenth_mb", "rss_last_tenth_mb", "rss_growth_mb"} <= data["memory"].keys()
    assert "RSS first tenth / last tenth" in result.stdout and "lost (neither)" in result.stdout
    assert result.returncode == (0 if data["ok"] else 1)
    assert data["ok"], result.stdout
