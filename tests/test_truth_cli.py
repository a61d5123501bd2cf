"""The run tells the truth, through the CLI as a user and cron see it: exit codes, the summary, the
log file, the header of a limited run, settings that would silently embed with the wrong model, a
schema that is not guessed. Each test is a real subprocess against the real embedded PostgreSQL."""

from __future__ import annotations

import json
import re
from pathlib import Path

import psycopg
import pytest

from tests.chaos_helpers import run_cli
from tests.helpers import create_tables, fetch_all, seed_chunks

pytestmark = pytest.mark.slow


def log_text(env: dict[str, str]) -> str:
    path = Path(env["EMBEDDING_LOG_FILE"])
    return path.read_text(encoding="utf-8") if path.exists() else ""


async def fail_one_chunk(url: str, text: str = "壊れたチャンク") -> None:
    await fetch_all(
        url,
        "UPDATE chunks SET embedding_attempts = 1, embedding_error = '400 INVALID_ARGUMENT: bad', "
        "embedding_failed_at = now() - interval '1 hour' WHERE content = %s RETURNING 1",
        (text,),
    )


# --- exit codes and the summary -------------------------------------------------------------------


async def test_a_plain_run_with_earlier_failures_says_how_many_with_the_command_and_exits_1(
    database_url: str, base_env: dict[str, str]
) -> None:
    await seed_chunks(database_url, {"doc": ["正常な段落です。", "壊れたチャンク", "もう一つの段落です。"]})
    await fail_one_chunk(database_url)
    result = run_cli(base_env, "--json")
    assert result.returncode == 1, result.stderr
    data = json.loads(result.stdout)
    assert (data["run"]["embedded"], data["run"]["earlier_failures"], data["status"]["failed"]) == (2, 1, 1)
    log = log_text(base_env)
    assert "以前の実行で失敗したチャンクが 1件残っています" in log
    assert "python batch_embedding_processor.py --retry-only" in log
    assert "成功率: 100.0%" not in log and "🎉" not in log  # never while failures remain in scope
    assert "📈 成功率: 66.7%" in log

    retried = run_cli(base_env, "--retry-only")  # the failure is retried (and the local model embeds it)
    assert retried.returncode == 0, retried.stderr
    assert "🎉" in log_text(base_env).split("失敗チャンクの再処理")[-1]


async def test_failures_outside_the_documents_scope_do_not_fail_its_run(
    database_url: str, base_env: dict[str, str]
) -> None:
    await seed_chunks(database_url, {"good": ["良い段落です。"], "bad": ["壊れたチャンク"]})
    await fail_one_chunk(database_url)
    assert run_cli(base_env, "--doc-id", "good").returncode == 0
    assert run_cli(base_env, "--doc-id", "bad").returncode == 1  # its scope holds the earlier failure


async def test_a_limited_run_says_so_and_leaves_the_rest_pending_with_exit_0(
    database_url: str, base_env: dict[str, str]
) -> None:
    await seed_chunks(database_url, {"doc": [f"段落{i}です。" for i in range(30)]})
    result = run_cli(base_env, "--limit", "10", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["run"]["embedded"], data["status"]["pending"]) == (10, 20)
    assert "--limit 10 の限定実行" in log_text(base_env)


async def test_an_exit_2_error_reaches_the_log_file_too(database_url: str, base_env: dict[str, str]) -> None:
    await seed_chunks(database_url, {"doc": ["段落です。"]})
    result = run_cli(base_env, "--doc-id", "no-such-document")
    assert result.returncode == 2
    assert "no-such-document" in result.stderr
    assert "ドキュメントが見つかりません: 'no-such-document'" in log_text(base_env)

    bad = {**base_env, "EMBEDDING_BATCH_SIZE": "0"}  # before logging is even set up
    result = run_cli(bad)
    assert result.returncode == 2
    assert "EMBEDDING_BATCH_SIZE" in result.stderr and "auto" in result.stderr  # names auto among valid values
    assert "EMBEDDING_BATCH_SIZE" in log_text(base_env)


async def test_status_errors_with_no_errors_says_so(database_url: str, base_env: dict[str, str]) -> None:
    await seed_chunks(database_url, {"doc": ["段落です。"]})
    result = run_cli(base_env, "--status", "--errors")
    assert result.returncode == 0 and "記録されたエラーはありません" in result.stdout


async def test_a_misspelt_setting_in_dotenv_is_warned_about(
    database_url: str, base_env: dict[str, str], tmp_path: Path
) -> None:
    await seed_chunks(database_url, {"doc": ["段落です。"]})
    dotenv = tmp_path / ".env"
    dotenv.write_text("EMBEDING_BATCH_SIZE=20\n", encoding="utf-8")
    result = run_cli({**base_env, "BATCH_EMBEDDING_DOTENV": str(dotenv)}, "--status")
    assert result.returncode == 0
    assert "EMBEDING_BATCH_SIZE is not a setting; did you mean EMBEDDING_BATCH_SIZE?" in result.stderr


# --- no silent model mix-ups ----------------------------------------------------------------------


async def test_a_real_database_without_a_key_is_not_embedded_offline_by_default(
    database_url: str, base_env: dict[str, str]
) -> None:
    await seed_chunks(database_url, {"doc": ["本番の段落です。"]})
    env = {k: v for k, v in base_env.items() if k != "EMBEDDING_PROVIDER"}
    result = run_cli(env)
    assert result.returncode == 2
    assert "GOOGLE_API_KEY" in result.stderr and "EMBEDDING_PROVIDER" in result.stderr
    rows = await fetch_all(database_url, "SELECT count(*) FROM chunks WHERE embedding IS NOT NULL")
    assert rows[0][0] == 0
    assert run_cli({**env, "EMBEDDING_PROVIDER": "local"}).returncode == 0  # said on purpose: fine


async def test_vectors_of_another_model_are_counted_shown_and_never_mixed_silently(
    database_url: str, base_env: dict[str, str]
) -> None:
    await seed_chunks(database_url, {"doc": ["古いモデルの段落です。", "新しい段落です。", "もう一つ。"]})
    await fetch_all(
        database_url,
        "UPDATE chunks SET embedding = array_fill(0.036, ARRAY[768])::vector, embedding_model = 'text-embedding-004' "
        "WHERE content = '古いモデルの段落です。' RETURNING 1",
    )
    await fetch_all(  # a legacy vector: no model recorded at all (the old system's) counts as another model's
        database_url,
        "UPDATE chunks SET embedding = array_fill(0.036, ARRAY[768])::vector, embedding_model = NULL "
        "WHERE content = 'もう一つ。' RETURNING 1",
    )
    status = run_cli(base_env, "--status", "--json")
    assert json.loads(status.stdout)["other_model"] == 2
    assert "別モデルのベクトル: 2" in run_cli(base_env, "--status").stdout

    refused = run_cli(base_env)
    assert refused.returncode == 2
    assert "another model" in refused.stderr and "fix_missing_embeddings.py" in refused.stderr
    assert "EMBEDDING_ALLOW_MODEL_MIX" in refused.stderr
    assert "--migrate-to wordllama-l2_supercat-256@768" in refused.stderr  # search keeps working meanwhile
    rows = await fetch_all(database_url, "SELECT count(*) FROM chunks WHERE embedding IS NOT NULL")
    assert rows[0][0] == 2  # nothing was added

    selftest = run_cli(base_env, script="test_batch_embedding.py")
    assert selftest.returncode == 1
    assert re.search(r"❌ ベクトルのモデル: 2件", selftest.stdout) and "fix_missing_embeddings.py" in selftest.stdout

    allowed = run_cli({**base_env, "EMBEDDING_ALLOW_MODEL_MIX": "true"})
    assert allowed.returncode == 0, allowed.stderr
    repaired = run_cli(base_env, script="fix_missing_embeddings.py")
    assert repaired.returncode == 0, repaired.stderr
    assert json.loads(run_cli(base_env, "--status", "--json").stdout)["other_model"] == 0


# --- the schema is not guessed ---------------------------------------------------------------------


async def test_a_table_named_in_the_settings_that_does_not_exist_is_an_error_naming_it(
    database_url: str, base_env: dict[str, str]
) -> None:
    await seed_chunks(database_url, {"doc": ["段落です。"]})
    result = run_cli({**base_env, "CHUNKS_TABLE": "Chunks"})
    assert result.returncode == 2
    assert "CHUNKS_TABLE" in result.stderr and "--setup" in result.stderr
    rows = await fetch_all(database_url, "SELECT to_regclass('public.\"Chunks\"') IS NULL")
    assert rows[0][0] is True  # no new empty table


async def test_setup_creates_the_tables_on_a_new_database_once_asked(
    database_url: str, base_env: dict[str, str]
) -> None:
    assert run_cli(base_env, "--status").returncode == 2  # a new database: not guessed
    result = run_cli(base_env, "--setup")
    assert result.returncode == 0, result.stderr
    assert "セットアップ完了" in result.stderr
    status = run_cli(base_env, "--status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["total"] == 0


async def test_a_queue_column_of_an_incompatible_type_is_refused_at_start_with_the_fix(
    database_url: str, base_env: dict[str, str]
) -> None:
    await create_tables(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE chunks ALTER COLUMN embedding_error TYPE varchar(10)")
    result = run_cli(base_env)
    assert result.returncode == 2
    assert "embedding_error is character varying(10)" in result.stderr
    assert "ALTER TABLE public.chunks ALTER COLUMN embedding_error TYPE text" in result.stderr


# --- the log file and usage errors ------------------------------------------------------------------


async def test_a_log_file_that_cannot_be_written_is_a_settings_error_naming_it(
    database_url: str, base_env: dict[str, str], tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be", encoding="utf-8")
    result = run_cli({**base_env, "EMBEDDING_LOG_FILE": str(blocker / "run.log")}, "--status")
    assert result.returncode == 2
    assert "EMBEDDING_LOG_FILE" in result.stderr and "Traceback" not in result.stderr


async def test_a_usage_error_goes_to_the_log_file_named_in_dotenv(
    database_url: str, base_env: dict[str, str], tmp_path: Path
) -> None:
    log_file = tmp_path / "from-dotenv.log"
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"EMBEDDING_LOG_FILE={log_file}\n", encoding="utf-8")
    env = {k: v for k, v in base_env.items() if k != "EMBEDDING_LOG_FILE"}
    result = run_cli({**env, "BATCH_EMBEDDING_DOTENV": str(dotenv)}, "--limit", "many")
    assert result.returncode == 2
    assert "--limit" in result.stderr
    assert "使い方のエラー" in log_file.read_text(encoding="utf-8")


async def test_loading_samples_from_a_missing_folder_is_a_usage_error(
    database_url: str, base_env: dict[str, str], tmp_path: Path
) -> None:
    result = run_cli(base_env, str(tmp_path / "nowhere"), script="load_samples.py")
    assert result.returncode == 2, result.stderr
    assert "is not a folder" in result.stderr and "Traceback" not in result.stderr
