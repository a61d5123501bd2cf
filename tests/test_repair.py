"""The repair: per-document report, one-transaction reset, re-embedding through the normal batch run.

The vector column here is an undeclared `vector`, the only kind that can hold vectors of another
length than EMBEDDING_DIMENSIONS, so that wrong-dimension vectors can exist at all.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from modules.settings import TableNames
from modules.stores.base import RepairResult
from modules.stores.postgres import PostgresStore
from tests.helpers import fetch_all

pytestmark = pytest.mark.slow  # real subprocesses and servers: the full tier only

ROOT = Path(__file__).resolve().parent.parent
MODEL = "wordllama-l2_supercat-256@768"  # LocalEmbedder(768).model_id, what EMBEDDING_PROVIDER=local writes
DIMS = 768


def vec(n: int, value: float = 0.1) -> str:
    return "[" + ",".join([str(value)] * n) + "]"


# (doc, index, content, vector, model, state): one chunk of every kind the repair must tell apart.
ROWS: list[tuple[str, int, str, str | None, str | None, str]] = [
    ("doc-a", 0, "正しいベクトルの段落です。", vec(DIMS), MODEL, "ok"),
    ("doc-a", 1, "古いモデルの段落です。", vec(DIMS, 0.2), "text-embedding-004@768", "ok"),
    ("doc-a", 2, "次元が違う段落です。", vec(3), "wordllama-l2_supercat-256@3", "ok"),
    ("doc-a", 3, "まだ埋め込まれていない段落です。", None, None, "ok"),
    ("doc-a", 4, "失敗として記録された段落です。", None, None, "failed"),
    ("doc-b", 0, "旧システムが書いたモデル不明の段落です。", vec(DIMS, 0.3), None, "ok"),
    ("doc-b", 1, "停止したワーカーのリースが残る段落です。", None, None, "expired"),
    ("doc-b", 2, "別のワーカーが処理中の段落です。", None, None, "leased"),
    ("doc-c", 0, "何も問題のない段落です。", vec(DIMS), MODEL, "ok"),
]


async def seed_repair_case(url: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        await conn.execute("CREATE TABLE document_sources (id text PRIMARY KEY, name text, type text)")
        await conn.execute(
            "CREATE TABLE chunks (id text PRIMARY KEY DEFAULT gen_random_uuid()::text, doc_id text NOT NULL "
            "REFERENCES document_sources(id), chunk_index int NOT NULL, content text NOT NULL, embedding vector)"
        )
    store = PostgresStore(url, TableNames(), DIMS)  # the migration adds the queue's columns and functions
    await store.prepare()
    await store.aclose()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for doc in ("doc-a", "doc-b", "doc-c"):
            await conn.execute("INSERT INTO document_sources VALUES (%s, %s, 'txt')", (doc, f"{doc}.pdf"))
        for doc, index, content, vector, model, state in ROWS:
            await conn.execute(
                """
                INSERT INTO chunks (id, doc_id, chunk_index, content, embedding, embedding_model, embedded_at,
                                    embedding_attempts, embedding_error, embedding_failed_at,
                                    embedding_lease_owner, embedding_lease_expires_at)
                VALUES (%(id)s, %(doc)s, %(index)s, %(content)s, %(vector)s::vector, %(model)s,
                        CASE WHEN %(vector)s IS NULL THEN NULL ELSE now() - interval '1 day' END,
                        CASE WHEN %(state)s = 'failed' THEN 3 ELSE 0 END,
                        CASE WHEN %(state)s = 'failed' THEN '400 INVALID_ARGUMENT: bad' END,
                        CASE WHEN %(state)s = 'failed' THEN now() - interval '1 hour' END,
                        CASE WHEN %(state)s IN ('expired', 'leased') THEN 'other-worker' END,
                        CASE %(state)s WHEN 'expired' THEN now() - interval '10 minutes'
                                       WHEN 'leased' THEN now() + interval '1 hour' END)
                """,
                {"id": f"{doc}/{index}", "doc": doc, "index": index, "content": content, "vector": vector,
                 "model": model, "state": state},
            )  # fmt: skip


async def snapshot(url: str) -> list[tuple[Any, ...]]:
    return await fetch_all(
        url,
        "SELECT id, embedding::text, embedding_model, content_hash, embedded_at, embedding_attempts, "
        "embedding_error, embedding_failed_at, embedding_lease_owner, embedding_lease_expires_at "
        "FROM chunks ORDER BY id",
    )


def run_repair(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "fix_missing_embeddings.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def env(base_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {**base_env, "BATCH_EMBEDDING_DOTENV": str(tmp_path / "absent.env")}


async def test_report_and_apply_in_sql(database_url: str) -> None:
    await seed_repair_case(database_url)
    store = PostgresStore(database_url, TableNames(), DIMS)
    await store.prepare()
    try:
        rows = {r.doc_id: r for r in await store.repair_report(MODEL, DIMS)}
        assert set(rows) == {"doc-a", "doc-b"}  # doc-c has nothing to repair
        a, b = rows["doc-a"], rows["doc-b"]
        assert (a.name, a.missing, a.failed, a.expired_leases, a.wrong_model, a.wrong_dimension, a.to_reset) == (
            "doc-a.pdf", 2, 1, 0, 2, 1, 2
        )  # fmt: skip
        # The live lease is neither missing nor released; the unrecorded model counts as wrong.
        assert (b.missing, b.failed, b.expired_leases, b.wrong_model, b.wrong_dimension, b.to_reset) == (
            1,
            0,
            1,
            1,
            0,
            1,
        )
        assert [r.doc_id for r in await store.repair_report(MODEL, DIMS, "doc-b")] == ["doc-b"]

        limited = await store.repair_apply(MODEL, DIMS, "doc-a", limit=1)
        assert (limited.released_leases, limited.reset, limited.wrong_model, limited.wrong_dimension) == (0, 1, 1, 0)
        result = await store.repair_apply(MODEL, DIMS)
        assert (result.released_leases, result.reset, result.wrong_model, result.wrong_dimension) == (1, 2, 2, 1)
        assert await store.repair_apply(MODEL, DIMS) == RepairResult(0, 0, 0, 0, 0, 0)
        after = {r.doc_id: r for r in await store.repair_report(MODEL, DIMS)}
        assert (after["doc-a"].missing, after["doc-a"].to_reset, after["doc-b"].missing) == (4, 0, 2)
    finally:
        await store.aclose()
    state = {
        r[0]: r[1:]
        for r in await fetch_all(
            database_url,
            "SELECT id, embedding IS NULL, embedding_model, embedded_at IS NULL, embedding_attempts, "
            "embedding_lease_owner FROM chunks",
        )
    }
    assert state["doc-a/0"] == (False, MODEL, False, 0, None)  # the right vector is untouched
    for reset in ("doc-a/1", "doc-a/2", "doc-b/0"):
        assert state[reset] == (True, None, True, 0, None)
    assert state["doc-a/4"][3] == 3  # a recorded failure is left for --retry-only
    assert state["doc-b/1"][4] is None  # expired lease cleared
    assert state["doc-b/2"][4] == "other-worker"  # a live lease is left alone


async def test_a_vector_whose_text_changed_since_is_stale_and_re_embedded(database_url: str) -> None:
    await seed_repair_case(database_url)
    # doc-c/0 was embedded from its text (the hash matches); then someone edits the text in place.
    await fetch_all(
        database_url,
        "UPDATE chunks SET content_hash = encode(sha256(convert_to(content, 'UTF8')), 'hex') "
        "WHERE embedding IS NOT NULL RETURNING 1",
    )
    store = PostgresStore(database_url, TableNames(), DIMS)
    await store.prepare()
    try:
        assert "doc-c" not in {r.doc_id for r in await store.repair_report(MODEL, DIMS)}
        await fetch_all(
            database_url, "UPDATE chunks SET content = '書き換えた段落です。' WHERE id = 'doc-c/0' RETURNING 1"
        )
        (report,) = await store.repair_report(MODEL, DIMS, "doc-c")
        assert (report.stale, report.to_reset, report.wrong_model) == (1, 1, 0)
        applied = await store.repair_apply(MODEL, DIMS, "doc-c")
        assert (applied.stale, applied.reset) == (1, 1)
    finally:
        await store.aclose()
    (row,) = await fetch_all(database_url, "SELECT embedding IS NULL, content_hash FROM chunks WHERE id = 'doc-c/0'")
    assert row == (True, None)  # pending again: the next run embeds the new text


async def test_dry_run_reports_by_document_and_changes_nothing(database_url: str, env: dict[str, str]) -> None:
    await seed_repair_case(database_url)
    before = await snapshot(database_url)
    result = run_repair(env, "--dry-run", "--json")
    assert result.returncode == 1, result.stderr  # a dry run that finds something to repair says so
    data = json.loads(result.stdout)
    assert data["dry_run"] is True and data["model"] == MODEL and data["applied"] is None and data["run"] is None
    assert [d["doc_id"] for d in data["documents"]] == ["doc-a", "doc-b"]
    assert data["totals"] == {
        "missing": 3,
        "expired_leases": 1,
        "wrong_model": 3,
        "wrong_dimension": 1,
        "degenerate": 0,
        "stale": 0,
        "failed": 1,
        "to_reset": 3,
    }
    assert data["plan"] == {"release_leases": 1, "reset": 3, "embed": 5}  # 2 pending + 3 reset

    human = run_repair(env, "--dry-run", "--doc-id", "doc-a")
    assert human.returncode == 1, human.stderr
    assert "doc-a.pdf [doc-a]: 未埋め込み 2 (うち失敗 1)" in human.stdout
    assert "モデル違い 2 | 次元違い 1" in human.stdout
    assert "ドライラン" in human.stdout and "doc-b" not in human.stdout
    assert "--retry-only" in human.stdout
    assert await snapshot(database_url) == before


async def test_repair_resets_wrong_vectors_and_re_embeds_them(database_url: str, env: dict[str, str]) -> None:
    await seed_repair_case(database_url)
    kept_before = await fetch_all(database_url, "SELECT embedding::text, embedded_at FROM chunks WHERE id = 'doc-a/0'")
    result = run_repair(env, "--json")
    assert result.returncode == 1, result.stderr  # one chunk is recorded failed (an earlier run's): the truth
    data = json.loads(result.stdout)
    assert data["applied"] == {
        "released_leases": 1,
        "wrong_model": 3,
        "wrong_dimension": 1,
        "degenerate": 0,
        "stale": 0,
        "reset": 3,
    }
    assert (data["run"]["embedded"], data["run"]["failed"]) == (5, 0)
    status = data["status"]
    assert (status["embedded"], status["failed"], status["in_progress"], status["pending"]) == (7, 1, 1, 0)

    rows = await fetch_all(
        database_url,
        "SELECT id, vector_dims(embedding), embedding_model, content_hash IS NOT NULL, embedding_lease_owner "
        "FROM chunks WHERE embedding IS NOT NULL ORDER BY id",
    )
    assert [r[0] for r in rows] == ["doc-a/0", "doc-a/1", "doc-a/2", "doc-a/3", "doc-b/0", "doc-b/1", "doc-c/0"]
    assert {(r[1], r[2]) for r in rows} == {(DIMS, MODEL)}
    assert all(r[4] is None for r in rows)
    assert all(r[3] for r in rows if r[0] not in ("doc-a/0", "doc-c/0"))
    kept_after = await fetch_all(database_url, "SELECT embedding::text, embedded_at FROM chunks WHERE id = 'doc-a/0'")
    assert kept_after == kept_before  # a right vector is never re-embedded
    log_text = Path(env["EMBEDDING_LOG_FILE"]).read_text(encoding="utf-8")
    assert "♻️ 再埋め込みのためにベクトルをリセットしました: 3件" in log_text
    assert "🧠 バッチエンベディング生成開始" in log_text and "📈 成功率: 83.3%" in log_text
    assert "以前の実行で失敗したチャンクが 1件残っています" in log_text and "--retry-only" in log_text
    assert "🎉" not in log_text and "成功率: 100.0%" not in log_text

    again = run_repair(env, "--json")
    assert again.returncode == 1, again.stderr
    assert json.loads(again.stdout)["applied"]["reset"] == 0


async def test_expired_leases_are_released_and_their_chunks_embedded(database_url: str, env: dict[str, str]) -> None:
    await seed_repair_case(database_url)
    await fetch_all(
        database_url,
        "UPDATE chunks SET embedding = NULL, embedding_model = NULL, embedding_lease_owner = 'dead-worker', "
        "embedding_lease_expires_at = now() - interval '1 minute' WHERE doc_id = 'doc-c' RETURNING 1",
    )
    untouched = await fetch_all(database_url, "SELECT * FROM chunks WHERE doc_id <> 'doc-c' ORDER BY id")
    result = run_repair(env, "--doc-id", "doc-c", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["applied"]["released_leases"] == 1 and data["run"]["embedded"] == 1
    rows = await fetch_all(
        database_url,
        "SELECT embedding IS NOT NULL, embedding_lease_owner, embedding_lease_expires_at FROM chunks "
        "WHERE doc_id = 'doc-c'",
    )
    assert rows == [(True, None, None)]
    assert await fetch_all(database_url, "SELECT * FROM chunks WHERE doc_id <> 'doc-c' ORDER BY id") == untouched

    unknown = run_repair(env, "--doc-id", "no-such-doc", "--dry-run")
    assert unknown.returncode == 2
    assert "no-such-doc" in unknown.stderr and "Traceback" not in unknown.stderr
