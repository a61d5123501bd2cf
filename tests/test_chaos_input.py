"""Chaos: bad input. Empty and blank chunks, text over the model's 2,048-token limit (truncate or
fail), NUL bytes and lone surrogates from an upload, emoji and mixed scripts, unknown and
injection-shaped --doc-id values, table/column settings that are not identifiers, and a vector
column of another dimension."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import psycopg
import pytest

from modules.gemini_simulator import GeminiSimulator, SimulatorConfig, count_tokens, run_simulator_in_thread
from modules.knowledge.ingest import ingest_text
from modules.settings import TableNames
from modules.stores.postgres import PostgresStore
from tests.chaos_helpers import gemini_env, rows, run_cli, wrong_vectors
from tests.helpers import corpus, fetch_all, seed_chunks

pytestmark = pytest.mark.slow  # real subprocesses and servers: the full tier only

LIMIT = 2048


@pytest.fixture
def sim() -> Iterator[GeminiSimulator]:
    # 'reject' answers 400 to any text over 2,048 tokens, so the simulator tells us if one was sent
    with run_simulator_in_thread(SimulatorConfig(over_limit="reject")) as simulator:
        yield simulator


def _untouched(url: str, n: int) -> None:
    all_rows = rows(url)
    assert len(all_rows) == n
    assert [r.id for r in all_rows if r.embedded or r.leased or r.attempts or r.failed_at] == []


async def test_empty_blank_emoji_and_mixed_scripts(
    database_url: str, base_env: dict[str, str], sim: GeminiSimulator
) -> None:
    blank = ["", "   ", "\n\t \r\n", "\u3000\u3000"]  # the last: ideographic spaces only
    texts = [
        "いいね👍🏽 ありがとう🙏",
        "家族👨‍👩‍👧‍👦の写真",  # ZWJ sequence
        "Ελληνικά: γειά σου κόσμε",
        "العربية: مرحبا بالعالم",
        "한국어: 안녕하세요 세계",
        "𠮷野家の𩸽と😀",  # outside the BMP: 4-byte UTF-8, surrogate pairs in UTF-16
        "mixed: 日本語 English Ελληνικά العربية 한국어 עברית हिन्दी ไทย",
        "e\u0301 combining accent, \u200dzero-width joiner, RTL \u202emark",
    ]
    await seed_chunks(database_url, {"d": blank + texts})
    result = run_cli(gemini_env(base_env, sim), "--json")
    assert result.returncode == 1, result.stderr  # some chunks failed: the blank ones
    run = json.loads(result.stdout)["run"]
    assert (run["embedded"], run["failed"]) == (len(texts), len(blank))
    assert sim.stats.texts_embedded == len(texts)  # a blank chunk is never sent
    after = rows(database_url)
    assert wrong_vectors(after) == []  # exact vectors for every script and emoji
    for row in after:
        if row.content in blank:
            assert not row.embedded and row.error and "empty content" in row.error and row.attempts == 1
        else:
            assert row.embedded
            assert row.content_hash == hashlib.sha256(row.content.encode("utf-8")).hexdigest()


def _sent_prefix(sim: GeminiSimulator, content: str) -> str:
    """The prefix of `content` that the simulator embedded (matched by its sha256 log)."""
    seen = set(sim.stats.snapshot().embeds_per_text)
    for end in range(len(content), 0, -1):
        if hashlib.sha256(content[:end].encode("utf-8")).hexdigest() in seen:
            return content[:end]
    raise AssertionError("the simulator never embedded any prefix of the text")


async def test_overlong_english_text_is_truncated_to_the_limit(
    database_url: str, base_env: dict[str, str], sim: GeminiSimulator
) -> None:
    long_text = " ".join(f"word{i}" for i in range(3000))  # ~5,000 tokens
    await seed_chunks(database_url, {"d": [long_text, "short."]})
    result = run_cli(gemini_env(base_env, sim, EMBEDDING_OVERLONG="truncate"), "--json")
    assert result.returncode == 0, result.stderr
    assert sim.stats.bad_requests == 0
    sent = _sent_prefix(sim, long_text)
    assert len(sent) < len(long_text) and count_tokens(sent) <= LIMIT
    assert count_tokens(sent) > LIMIT * 0.9  # truncated, not gutted
    after = {r.content: r for r in rows(database_url)}
    assert wrong_vectors(after.values(), sent=lambda r: sent if r.content == long_text else r.content) == []
    assert after[long_text].content_hash == hashlib.sha256(long_text.encode()).hexdigest()  # the stored text's hash


async def test_overlong_japanese_text_is_truncated_to_the_limit(
    database_url: str, base_env: dict[str, str], sim: GeminiSimulator
) -> None:
    # ordinary Japanese prose: every third character is 、 or 。 (2,400 tokens for the simulator)
    japanese = "東京、大阪。" * 400
    await seed_chunks(database_url, {"d": [japanese]})
    result = run_cli(gemini_env(base_env, sim, EMBEDDING_OVERLONG="truncate"), "--json")
    assert sim.stats.bad_requests == 0, "a text over the model's limit was sent"
    assert result.returncode == 0, result.stderr
    sent = _sent_prefix(sim, japanese)
    assert count_tokens(sent) <= LIMIT
    assert wrong_vectors(rows(database_url), sent=lambda r: sent) == []


async def test_overlong_text_with_fail_policy_is_recorded_failed_and_never_sent(
    database_url: str, base_env: dict[str, str], sim: GeminiSimulator
) -> None:
    long_text = " ".join(f"word{i}" for i in range(3000))
    await seed_chunks(database_url, {"d": [long_text, "short."]})
    result = run_cli(gemini_env(base_env, sim, EMBEDDING_OVERLONG="fail"), "--json")
    assert result.returncode == 1
    assert sim.stats.texts_embedded == 1 and sim.stats.total_calls == 1  # only "short." went out
    failed = [r for r in rows(database_url) if not r.embedded]
    assert [r.content for r in failed] == [long_text]
    assert failed[0].error and "too long" in failed[0].error and str(LIMIT) in failed[0].error


async def test_nul_bytes_and_lone_surrogates_from_an_upload_are_repaired_and_embed(
    database_url: str, base_env: dict[str, str], sim: GeminiSimulator
) -> None:
    await seed_chunks(database_url, {})
    # PostgreSQL text cannot hold either: this is why the upload path must repair them
    with psycopg.connect(database_url, autocommit=True) as conn, pytest.raises(psycopg.DataError):
        conn.execute("SELECT %s::text", ("a\x00b",))
    store = PostgresStore(database_url, TableNames(), 768)
    await store.prepare()
    try:
        raw = "前書き\x00です。壊れた文字\ud800があり、\udfffもあり、NUL\x00\x00も混じる。\r\n次の行。"
        result = await ingest_text(store, "broken.txt", "txt", raw)
    finally:
        await store.aclose()
    assert result.chunks >= 1
    stored = rows(database_url)
    assert all("\x00" not in r.content for r in stored)
    assert all(not any(0xD800 <= ord(c) <= 0xDFFF for c in r.content) for r in stored)
    assert any("\ufffd" in r.content for r in stored)  # a lone surrogate became U+FFFD, visibly

    cli = run_cli(gemini_env(base_env, sim), "--json")
    assert cli.returncode == 0, cli.stderr
    after = rows(database_url)
    assert all(r.embedded for r in after) and wrong_vectors(after) == []


INJECTION_DOC_IDS = [
    "no-such-doc",
    "x' OR '1'='1",
    "doc-000'; DROP TABLE chunks; --",
]


async def test_unknown_and_injection_shaped_doc_ids_exit_2_and_touch_nothing(
    database_url: str, base_env: dict[str, str], sim: GeminiSimulator
) -> None:
    await seed_chunks(database_url, corpus(20, docs=2))
    env = gemini_env(base_env, sim)
    for doc_id in INJECTION_DOC_IDS:
        result = run_cli(env, "--doc-id", doc_id)
        assert result.returncode == 2, (doc_id, result.stderr)
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert sim.stats.total_calls == 0
    _untouched(database_url, 20)
    tables = await fetch_all(database_url, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'chunks'")
    assert tables[0][0] == 1


BAD_IDENTIFIERS = [
    ("CHUNKS_TABLE", "chunks;drop"),
    ("CHUNKS_TABLE", "1chunks"),
    ("DB_SCHEMA", "public.chunks"),
    ("DOCUMENTS_TABLE", "document sources"),
    ("CHUNKS_CONTENT_COLUMN", "content)"),
    ("CHUNKS_EMBEDDING_COLUMN", 'embedding"--'),
    ("CHUNKS_EMBEDDING_COLUMN", "ｅｍｂｅｄｄｉｎｇ"),  # full-width letters look like an identifier
]


def test_table_and_column_settings_that_are_not_identifiers_are_refused_at_start(
    database_url: str, base_env: dict[str, str], sim: GeminiSimulator
) -> None:
    env = gemini_env(base_env, sim)
    for name, value in BAD_IDENTIFIERS:
        result = run_cli({**env, name: value})
        assert result.returncode == 2, (name, value, result.stderr)
        assert name in result.stderr and "Traceback" not in result.stderr
    # refused before connecting: the fresh database was not even migrated
    with psycopg.connect(database_url, autocommit=True) as conn:
        found = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
    assert found == (0,)
    assert sim.stats.total_calls == 0


async def test_a_vector_column_of_another_dimension_exits_2_naming_the_setting(
    database_url: str, base_env: dict[str, str], sim: GeminiSimulator
) -> None:
    await seed_chunks(database_url, corpus(10, docs=1), dimensions=384)
    result = run_cli(gemini_env(base_env, sim), "--json")  # EMBEDDING_DIMENSIONS defaults to 768
    assert result.returncode == 2
    assert "EMBEDDING_DIMENSIONS" in result.stderr and "384" in result.stderr
    assert "Traceback" not in result.stderr
    assert sim.stats.total_calls == 0
    _untouched(database_url, 10)
    # and with the matching setting the same database embeds, exactly, at 384 dimensions
    ok = run_cli(gemini_env(base_env, sim, EMBEDDING_DIMENSIONS=384), "--json")
    assert ok.returncode == 0, ok.stderr
    after = rows(database_url)
    assert all(r.vector is not None and r.vector.shape == (384,) for r in after)
    assert wrong_vectors(after) == []
