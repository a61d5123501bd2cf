"""The system test (`test_batch_embedding.py`) as a user runs it, against good and broken environments."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import TEST_API_KEY, seed_chunks
from tests.postgrest_fake import ensure_supabase_roles

pytestmark = pytest.mark.slow  # real subprocesses and servers: the full tier only

ROOT = Path(__file__).resolve().parent.parent
DEAD_DATABASE = "postgresql://postgres:s3cret-pw@127.0.0.1:1/postgres"  # port 1: refused at once


def run_selftest(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "test_batch_embedding.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def lines_starting(text: str, mark: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(mark)]


@pytest.fixture
def env(base_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    # A key that must never be printed (the local provider does not use it).
    return {**base_env, "BATCH_EMBEDDING_DOTENV": str(tmp_path / "absent.env"), "GOOGLE_API_KEY": TEST_API_KEY}


def assert_clean(result: subprocess.CompletedProcess[str], *secrets: str) -> None:
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    for secret in (TEST_API_KEY, *secrets):
        assert secret not in output


async def test_passes_on_a_good_environment(database_url: str, env: dict[str, str]) -> None:
    await seed_chunks(database_url, {"doc": ["一つ目の段落です。", "二つ目の段落です。"]})
    result = run_selftest(env)
    assert result.returncode == 0, result.stdout + result.stderr
    passed = lines_starting(result.stdout, "✅")
    assert len(passed) == 7 and not lines_starting(result.stdout, "❌")
    assert any("APIキー=設定済み" in line for line in passed)
    assert any("総チャンク 2" in line for line in passed)
    assert any("768 次元で埋め込めました" in line for line in passed)
    assert "🎉" in result.stdout
    assert_clean(result)


async def test_catches_a_wrong_vector_dimension(database_url: str, env: dict[str, str]) -> None:
    await seed_chunks(database_url, {"doc": ["段落です。"]}, dimensions=3)
    result = run_selftest(env)
    assert result.returncode == 1, result.stdout + result.stderr
    (failed,) = lines_starting(result.stdout, "❌ スキーマ")
    assert "EMBEDDING_DIMENSIONS is 768" in failed and "vector(3)" in failed
    fix = result.stdout.splitlines()[result.stdout.splitlines().index(failed) + 1]
    assert fix.strip().startswith("💡 対処:") and "EMBEDDING_DIMENSIONS=3" in fix
    assert lines_starting(result.stdout, "✅ データベース接続")
    assert lines_starting(result.stdout, "✅ 埋め込みAPI")  # later checks still ran
    assert_clean(result)


async def test_dead_database_fails_cleanly_and_the_api_is_still_tested(env: dict[str, str]) -> None:
    result = run_selftest({**env, "DATABASE_URL": DEAD_DATABASE})
    assert result.returncode == 1, result.stdout + result.stderr
    (failed,) = lines_starting(result.stdout, "❌ データベース接続")
    assert "127.0.0.1" in failed or "connect" in failed
    assert "💡 対処: DATABASE_URL" in result.stdout
    assert lines_starting(result.stdout, "✅ 埋め込みAPI")
    assert len(lines_starting(result.stdout, "⏭️")) == 3  # schema, status and public access could not be checked
    assert "postgresql://postgres@127.0.0.1:1/postgres" in result.stdout  # the address, without its password
    assert_clean(result, "s3cret-pw")


def test_unloadable_settings_exit_2_naming_the_setting(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "BATCH_EMBEDDING_DOTENV": str(tmp_path / "absent.env"),
        "EMBEDDING_DIMENSIONS": "many",
    }
    result = run_selftest(env)
    assert result.returncode == 2, result.stdout + result.stderr
    (failed,) = lines_starting(result.stdout, "❌ 設定")
    assert "EMBEDDING_DIMENSIONS" in failed
    assert "💡 対処: EMBEDDING_DIMENSIONS" in result.stdout
    assert_clean(result)


async def test_warns_when_the_public_anon_role_can_read_the_chunks(
    database_url: str, pg_server: str, env: dict[str, str]
) -> None:
    import psycopg

    ensure_supabase_roles(pg_server)
    await seed_chunks(database_url, {"doc": ["社外秘の段落です。"]})
    with psycopg.connect(database_url, autocommit=True) as conn:  # a host table as Supabase serves it
        conn.execute("ALTER TABLE chunks DISABLE ROW LEVEL SECURITY")
        conn.execute("GRANT SELECT ON chunks TO anon")
    result = run_selftest(env)
    assert result.returncode == 1, result.stdout + result.stderr
    (failed,) = lines_starting(result.stdout, "❌ 公開ロール (anon)")
    assert "public.chunks を読めます" in failed and "RLS" in failed
    fix = result.stdout.splitlines()[result.stdout.splitlines().index(failed) + 1]
    assert "ENABLE ROW LEVEL SECURITY" in fix and "REVOKE ALL ON public.chunks FROM anon" in fix

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE chunks ENABLE ROW LEVEL SECURITY")
    result = run_selftest(env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines_starting(result.stdout, "✅ 公開ロール (anon)")
    assert_clean(result)
