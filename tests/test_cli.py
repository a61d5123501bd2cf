"""The processor CLI as a user runs it: a subprocess against the embedded PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import corpus, fetch_all, seed_chunks

pytestmark = pytest.mark.slow  # real subprocesses and servers: the full tier only

ROOT = Path(__file__).resolve().parent.parent
STATUS_KEYS = {"total", "embedded", "pending", "failed", "in_progress"}


def run_cli(
    env: dict[str, str], *args: str, script: str = "batch_embedding_processor.py"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_status_json_has_the_contract_keys_and_exact_counts(database_url: str, base_env: dict[str, str]) -> None:
    await seed_chunks(database_url, corpus(30, docs=3))
    result = run_cli(base_env, "--status", "--json", "--by-document", "--errors")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data.keys() >= STATUS_KEYS
    assert (data["total"], data["pending"], data["embedded"], data["failed"], data["in_progress"]) == (30, 30, 0, 0, 0)
    assert len(data["documents"]) == 3 and data["errors"] == []
    # what is left, its estimated tokens and its price (the local model is free)
    from modules.text import estimate_tokens

    texts = [t for doc in corpus(30, docs=3).values() for t in doc]
    assert data["tokens_estimate"] == sum(estimate_tokens(t) for t in texts)
    assert (data["cost_usd"], data["cost_usd_batch"]) == (0.0, 0.0)


async def test_run_embeds_everything_and_exits_0(database_url: str, base_env: dict[str, str], tmp_path: Path) -> None:
    await seed_chunks(database_url, corpus(40, docs=2))
    result = run_cli(base_env, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["run"]["embedded"] == 40 and data["status"]["pending"] == 0
    log_text = (tmp_path / "batch_embedding.log").read_text(encoding="utf-8")
    for line in (
        "🧠 バッチエンベディング生成開始",
        "📋 40個のチャンク",
        "📦 バッチ 1/4 処理開始 (10チャンク)",
        "🎉",
        "📈 成功率: 100.0%",
    ):
        assert line in log_text


async def test_limit_and_doc_id_select_exactly(database_url: str, base_env: dict[str, str]) -> None:
    await seed_chunks(database_url, corpus(60, docs=3))
    result = run_cli(base_env, "--limit", "15", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["run"]["embedded"] == 15
    result = run_cli(base_env, "--doc-id", "doc-002", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["run"]["embedded"] == 20
    rows = await fetch_all(
        database_url, "SELECT doc_id, count(*) FROM chunks WHERE embedding IS NOT NULL GROUP BY 1 ORDER BY 1"
    )
    assert dict(rows)["doc-002"] == 20 and sum(n for _, n in rows) == 35


async def test_failures_exit_1_and_retry_only_touches_only_them(database_url: str, base_env: dict[str, str]) -> None:
    await seed_chunks(database_url, {"d": ["本文。", "", "本文その2。"]})
    first = run_cli(base_env, "--json")
    assert first.returncode == 1
    assert json.loads(first.stdout)["run"]["failed"] == 1
    await fetch_all(
        database_url, "INSERT INTO chunks (doc_id, chunk_index, content) VALUES ('d', 9, '新規。') RETURNING 1"
    )
    await fetch_all(database_url, "UPDATE chunks SET content = '直した本文。' WHERE content = '' RETURNING 1")
    retry = run_cli(base_env, "--retry-only", "--json")
    assert retry.returncode == 0, retry.stderr
    data = json.loads(retry.stdout)
    assert data["run"]["total"] == 1 and data["run"]["embedded"] == 1
    assert data["status"]["pending"] == 1  # the new chunk was not touched


@pytest.mark.parametrize(
    ("args", "env_extra", "needle"),
    [
        (["--doc-id", "no-such-doc"], {}, "no-such-doc"),
        (["--doc-id", "x' OR '1'='1"], {}, "OR"),
        (["--limit", "zero"], {}, "--limit"),
        ([], {"EMBEDDING_BATCH_SIZE": "lots"}, "EMBEDDING_BATCH_SIZE"),
        ([], {"EMBEDDING_PROVIDER": "gemini"}, "GOOGLE_API_KEY"),
        ([], {"CHUNKS_TABLE": "chunks;drop"}, "CHUNKS_TABLE"),
    ],
    ids=["unknown-doc", "injection-doc", "bad-limit", "bad-setting", "missing-key", "bad-identifier"],
)
async def test_usage_and_settings_errors_exit_2_with_one_clear_line(
    database_url: str, base_env: dict[str, str], args: list[str], env_extra: dict[str, str], needle: str
) -> None:
    await seed_chunks(database_url, {"d": ["本文。"]})
    result = run_cli({**base_env, **env_extra}, *args)
    assert result.returncode == 2
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    rows = await fetch_all(database_url, "SELECT count(*) FROM chunks WHERE embedding IS NULL")
    assert rows[0][0] == 1  # nothing was touched


def test_a_dead_database_is_one_line_and_exit_2(base_env: dict[str, str]) -> None:
    env = {**base_env, "DATABASE_URL": "postgresql://postgres:hunter2secret@127.0.0.1:1/postgres"}
    result = run_cli(env, "--status")
    assert result.returncode == 2
    assert "データベースエラー" in result.stderr and "Traceback" not in result.stderr
    assert "hunter2secret" not in result.stderr + result.stdout


@pytest.mark.slow
async def test_a_spent_per_day_quota_exits_3_with_when_to_retry_and_charges_nothing(
    database_url: str, base_env: dict[str, str]
) -> None:
    from modules.gemini_simulator import SimulatorConfig, run_simulator_in_thread

    await seed_chunks(database_url, corpus(100, docs=2))
    env = base_env | {"EMBEDDING_PROVIDER": "gemini", "GOOGLE_API_KEY": "test-key-0123456789abcdef"}
    with run_simulator_in_thread(SimulatorConfig(rpd=3, count_mode="call")) as sim:
        result = run_cli(env | {"GOOGLE_GEMINI_BASE_URL": sim.base_url}, "--no-progress")
        calls = sim.stats.total_calls
    assert result.returncode == 3, result.stderr
    assert "per-day quota is spent" in result.stderr and "midnight Pacific" in result.stderr
    assert calls == 4  # three admitted, the fourth refused for the day: no knocking all day
    rows = await fetch_all(
        database_url,
        "SELECT count(*) FILTER (WHERE embedding IS NOT NULL), count(*) FILTER (WHERE embedding_failed_at IS NOT NULL),"
        " count(*) FILTER (WHERE embedding_lease_owner IS NOT NULL), max(embedding_attempts) FROM chunks",
    )
    assert rows[0] == (30, 0, 0, 0)  # what was embedded is kept; nothing charged, nothing left leased
