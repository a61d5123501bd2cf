"""Chaos: the soak (benchmarks/soak.py), small. 2,000 chunks through two CLI workers under a tight
quota with 5% faults (503, dropped connections, malformed JSON); full size (50,000) is a command:
`python -m benchmarks.soak`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.soak import SoakConfig, format_table, main, run_soak


def test_soak_small_everything_accounted_for_memory_flat_connections_bounded(database_url: str, tmp_path: Path) -> None:
    config = SoakConfig(
        chunks=2000,
        workers=2,
        rpm=30,
        tpm=30_000,
        window_seconds=1.0,
        error_rate_503=0.03,  # 5% of calls fail, more than the full run's share of a small sample
        drop_rate=0.01,
        malformed_rate=0.01,
        sample_interval=0.2,
        timeout=120,
    )
    result = run_soak(config, database_url, tmp_path)
    table = format_table(result)
    print(table, file=sys.stderr)
    db, sim = result["database"], result["simulator"]

    assert result["checks"]["workers_exited_0"], result["workers"]
    assert (db["total"], db["lost"], db["pending"], db["left_leased"]) == (2000, 0, 0, 0)
    assert db["embedded"] + db["failed_with_reason"] == 2000
    assert db["vectors_checked"] == db["embedded"] and db["vectors_wrong"] == 0
    assert db["done_but_inconsistent"] == 0
    assert db["embedded_more_than_once"] == 0  # two workers, faults and 429s: still each text once
    assert sum(sim["faults"].values()) > 0 and sim["rate_limited_429"] >= 0
    assert all(run["embedded"] > 0 for run in result["workers"])  # both took part
    assert result["memory"]["samples"] >= 10
    assert result["checks"]["memory_flat"], result["memory"]
    assert result["connections"]["max"] <= result["connections"]["bound"], result["connections"]
    assert result["connections"]["max"] >= 2  # the sampler really saw the workers' connections
    assert result["ok"], table


def test_soak_command_writes_json_and_a_table(database_url: str, tmp_path: Path, capsys: object) -> None:
    out = tmp_path / "soak.json"
    code = main(["--chunks", "300", "--database-url", database_url, "--json", str(out), "--sample-interval", "0.2"])
    data = json.loads(out.read_text(encoding="utf-8"))
    assert code == (0 if data["ok"] else 1)
    assert data["database"]["total"] == 300 and data["database"]["lost"] == 0
    assert {"rss_first_tenth_mb", "rss_last_tenth_mb", "rss_growth_mb"} <= data["memory"].keys()
    printed = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "RSS first tenth / last tenth" in printed and "lost (neither)" in printed
