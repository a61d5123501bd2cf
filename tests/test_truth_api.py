"""Outages are outages, and the API cannot hold a run hostage; nothing degenerate is stored; the key
never leaves. The real google-genai client over HTTP to the simulator, into the real PostgreSQL."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modules.batch_embedding import BatchEmbeddingGenerator
from modules.errors import ApiUnavailableError, ProviderConfigError
from modules.gemini_simulator import GeminiSimulator, SimulatorConfig, run_simulator_in_thread
from modules.settings import Settings
from tests.chaos_helpers import CHAOS_API_KEY, gemini_env, rows, run_cli, wrong_vectors
from tests.helpers import corpus, fetch_all, seed_chunks


@pytest.fixture
def sim() -> Iterator[GeminiSimulator]:
    with run_simulator_in_thread(SimulatorConfig(seed=3)) as simulator:
        yield simulator


@pytest.fixture
def settings_for(make_settings: Callable[..., Settings], sim: GeminiSimulator) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "EMBEDDING_PROVIDER": "gemini",
            "GOOGLE_API_KEY": CHAOS_API_KEY,
            "GOOGLE_GEMINI_BASE_URL": sim.base_url,
            "EMBEDDING_REQUEST_TIMEOUT": "2",
            "EMBEDDING_RETRY_DELAY": "0.01",
            "EMBEDDING_MAX_RETRY_DELAY": "0.05",
            "EMBEDDING_OUTAGE_SECONDS": "0.5",
            "EMBEDDING_BATCH_SIZE": "5",
        }
        values.update(overrides)
        return make_settings(**values)

    return build


async def run(settings: Settings, **kwargs: Any) -> Any:
    async with BatchEmbeddingGenerator(settings) as generator:
        return await generator.run(**kwargs)


def untouched(url: str) -> list[str]:
    """Ids of chunks that are not plain pending: embedded, leased, charged or recorded failed."""
    return [r.id for r in rows(url) if r.embedded or r.leased or r.attempts or r.failed_at or r.error]


# --- outages -----------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_an_unreachable_api_ends_with_exit_3_within_bounded_time_and_the_next_run_finishes(
    database_url: str, base_env: dict[str, str], sim: GeminiSimulator
) -> None:
    await seed_chunks(database_url, corpus(36, docs=4))
    env = gemini_env(base_env, sim, GOOGLE_GEMINI_BASE_URL="http://127.0.0.1:9", EMBEDDING_OUTAGE_SECONDS="3")
    started = time.monotonic()
    result = run_cli(env, "--json")
    took = time.monotonic() - started
    assert result.returncode == 3, result.stderr
    assert took < 30, f"took {took:.0f}s"
    assert "埋め込みAPIを利用できないため中断しました" in result.stderr and "再実行の目安" in result.stderr
    assert json.loads(result.stdout)["run"]["outcome"] == "api_unavailable"
    assert untouched(database_url) == []  # nothing charged, every chunk back to pending
    log = Path(env["EMBEDDING_LOG_FILE"]).read_text(encoding="utf-8")
    assert "再実行の目安" in log  # the exit-3 line reaches the log file too

    again = run_cli(gemini_env(base_env, sim))  # the API is back
    assert again.returncode == 0, again.stderr
    assert all(r.embedded for r in rows(database_url)) and wrong_vectors(rows(database_url)) == []


@pytest.mark.slow
async def test_a_dripping_answer_is_cut_at_the_total_deadline(
    database_url: str, sim: GeminiSimulator, settings_for: Callable[..., Settings]
) -> None:
    await seed_chunks(database_url, {"d": [f"段落{i}。" for i in range(5)]})
    sim.config.drip_rate = 1.0
    sim.config.drip_bytes_per_second = 200.0  # a few bytes a second: never a read timeout
    started = time.monotonic()
    with pytest.raises(ApiUnavailableError) as caught:
        await run(settings_for(EMBEDDING_REQUEST_TIMEOUT="1", EMBEDDING_MAX_RETRIES=0, EMBEDDING_OUTAGE_SECONDS="1"))
    took = time.monotonic() - started
    assert "no complete answer within 1s" in str(caught.value)
    assert took < 15, f"took {took:.1f}s: the deadline did not cut the answer"
    assert untouched(database_url) == []


async def test_a_429_asking_for_a_day_ends_the_run_at_once_with_nothing_charged(
    database_url: str, sim: GeminiSimulator, settings_for: Callable[..., Settings]
) -> None:
    await seed_chunks(database_url, corpus(40, docs=2))
    sim.config.rpm = 1
    sim.config.retry_delay_override = "86400s"
    started = time.monotonic()
    with pytest.raises(ApiUnavailableError) as caught:
        await run(settings_for(EMBEDDING_CONCURRENCY=4))
    assert time.monotonic() - started < 10
    assert "86400s" in str(caught.value) and "EMBEDDING_MAX_WAIT" in str(caught.value)
    assert re.search(r"after \d{4}-\d\d-\d\d", caught.value.retry_hint)
    embedded = [r for r in rows(database_url) if r.embedded]
    assert len(embedded) <= 5 and wrong_vectors(rows(database_url)) == []  # the one call the quota allowed
    assert [r.id for r in rows(database_url) if r.leased or r.attempts or r.failed_at] == []


@pytest.mark.parametrize("delay", ["0s", "-5s", "soon"])
@pytest.mark.slow  # over 1 s: the full tier only
async def test_a_429_with_a_useless_retry_delay_still_backs_off(
    database_url: str, sim: GeminiSimulator, settings_for: Callable[..., Settings], delay: str
) -> None:
    await seed_chunks(database_url, corpus(20, docs=2))
    sim.config.rpm = 2
    sim.config.window_seconds = 1.0
    sim.config.retry_delay_override = delay
    # The quota's window is the simulator's second (Google's minute, compressed), as the user would say
    stats = await run(settings_for(EMBEDDING_CONCURRENCY=2, EMBEDDING_QUOTA_WINDOW="1"))
    assert (stats.embedded, stats.failed) == (20, 0)
    calls = sim.stats.snapshot().status_counts
    # 4 batches in 2 calls per second: a sender that took 0s at its word would make hundreds of calls
    assert calls.get(429, 0) <= 12, calls


async def test_a_spent_per_day_quota_ends_the_run_and_says_when_it_comes_back(
    database_url: str, sim: GeminiSimulator, settings_for: Callable[..., Settings]
) -> None:
    await seed_chunks(database_url, corpus(40, docs=2))
    sim.config.rpd = 2
    with pytest.raises(ApiUnavailableError) as caught:
        await run(settings_for(EMBEDDING_CONCURRENCY=1))
    assert "per-day quota" in str(caught.value) and "midnight Pacific" in caught.value.retry_hint
    assert len([r for r in rows(database_url) if r.embedded]) == 10  # the two calls the day allowed
    assert [r.id for r in rows(database_url) if r.leased or r.attempts or r.failed_at] == []


async def test_a_key_that_stops_working_mid_run_is_an_outage_not_a_settings_error(
    database_url: str, sim: GeminiSimulator, settings_for: Callable[..., Settings]
) -> None:
    await seed_chunks(database_url, corpus(100, docs=2))
    sim.config.latency_base_ms = 50

    async with BatchEmbeddingGenerator(settings_for(EMBEDDING_CONCURRENCY=1)) as generator:
        import asyncio

        async def revoke() -> None:
            while generator.stats.embedded < 10:
                await asyncio.sleep(0.01)
            sim.config.api_key = "a-different-key"  # the project's key was rotated

        revoker = asyncio.create_task(revoke())
        with pytest.raises(ApiUnavailableError) as caught:
            await generator.run()
        await revoker
    assert "stopped accepting the key" in str(caught.value) and "GOOGLE_API_KEY" in caught.value.retry_hint
    assert CHAOS_API_KEY not in str(caught.value)
    assert [r.id for r in rows(database_url) if r.leased or r.attempts or r.failed_at] == []

    sim.config.api_key = "another-key"
    with pytest.raises(ProviderConfigError):  # wrong from the first call: a settings error (exit 2)
        await run(settings_for())


async def test_a_redirect_is_never_followed_with_the_key(
    database_url: str, sim: GeminiSimulator, settings_for: Callable[..., Settings]
) -> None:
    await seed_chunks(database_url, {"d": ["段落です。"]})
    sim.config.redirect_rate = 1.0
    with pytest.raises(ProviderConfigError) as caught:
        await run(settings_for())
    assert "redirect" in str(caught.value) and "GOOGLE_GEMINI_BASE_URL" in str(caught.value)
    snapshot = sim.stats.to_dict()
    assert snapshot["redirected_with_key"] == 0
    assert untouched(database_url) == []


@pytest.mark.slow
async def test_the_key_quoted_by_an_upstream_error_never_reaches_the_database_or_the_screen(
    database_url: str, base_env: dict[str, str], sim: GeminiSimulator
) -> None:
    await seed_chunks(database_url, {"d": ["鍵を返す段落。"]})
    sim.config.echo_key_rate = 1.0
    sim.config.echo_key_style = "request"  # about the request's content: stored as the chunk's failure
    env = gemini_env(base_env, sim, EMBEDDING_MAX_RETRIES=0)
    result = run_cli(env)
    assert result.returncode == 1  # a 400 on this text: recorded failed, with the reason
    errors = [r.error or "" for r in rows(database_url)]
    assert errors and all("INVALID_ARGUMENT" in e for e in errors)
    assert all(CHAOS_API_KEY not in e for e in errors) and any("***" in e for e in errors)
    status = run_cli(env, "--status", "--errors", "--json")
    shown = result.stdout + result.stderr + status.stdout + status.stderr
    shown += Path(env["EMBEDDING_LOG_FILE"]).read_text(encoding="utf-8")
    assert CHAOS_API_KEY not in shown

    sim.config.echo_key_style = "invalid_key"  # Google's own wording: a run-level settings error
    await fetch_all(database_url, "UPDATE chunks SET embedding_failed_at = NULL, embedding_error = NULL RETURNING 1")
    result = run_cli(env)
    assert result.returncode == 2 and "Invalid API key: ***" in result.stderr
    assert CHAOS_API_KEY not in result.stderr + result.stdout


# --- nothing degenerate is stored ------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["zero_vector_rate", "overflow_rate", "underflow_rate"])
async def test_a_degenerate_vector_is_refused_never_stored_nor_cached(
    database_url: str, sim: GeminiSimulator, settings_for: Callable[..., Settings], fault: str
) -> None:
    await seed_chunks(database_url, {"d": ["縮退したベクトルが返る段落。"]})
    setattr(sim.config, fault, 1.0)
    stats = await run(settings_for(EMBEDDING_MAX_RETRIES=0, EMBEDDING_BATCH_SIZE=1))
    assert (stats.embedded, stats.failed) == (0, 1)
    (row,) = rows(database_url)
    assert row.vector is None and row.error and "degenerate vector" in row.error
    cached = await fetch_all(database_url, "SELECT count(*) FROM chunks_embedding_cache")
    assert cached[0][0] == 0


@pytest.mark.slow
async def test_repair_finds_degenerate_vectors_already_stored_and_drops_them_from_the_cache(
    database_url: str, base_env: dict[str, str]
) -> None:
    await seed_chunks(database_url, {"d": ["ゼロベクトルの段落。", "正常な段落。"]})
    assert run_cli(base_env).returncode == 0  # embedded (local model)
    await fetch_all(
        database_url,
        "UPDATE chunks SET embedding = array_fill(0, ARRAY[768])::vector WHERE content = 'ゼロベクトルの段落。' "
        "RETURNING 1",
    )
    await fetch_all(
        database_url,
        "UPDATE chunks_embedding_cache SET embedding = array_fill(0, ARRAY[768])::vector "
        "WHERE cache_key IN (SELECT cache_key FROM chunks_embedding_cache LIMIT 1) RETURNING 1",
    )
    dry = json.loads(run_cli(base_env, "--dry-run", "--json", script="fix_missing_embeddings.py").stdout)
    assert dry["totals"]["degenerate"] == 1
    result = run_cli(base_env, "--json", script="fix_missing_embeddings.py")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["applied"]["degenerate"] == 1
    norms = await fetch_all(database_url, "SELECT vector_norm(embedding) FROM chunks")
    assert all(abs(n[0] - 1.0) < 1e-3 for n in norms)
    bad_cache = await fetch_all(
        database_url, "SELECT count(*) FROM chunks_embedding_cache WHERE vector_norm(embedding) < 1e-6"
    )
    assert bad_cache[0][0] == 0


@pytest.mark.slow  # over 1 s: the full tier only
async def test_a_chunk_edited_while_in_flight_is_embedded_with_its_new_text_in_the_same_run(
    database_url: str, sim: GeminiSimulator, settings_for: Callable[..., Settings]
) -> None:
    await seed_chunks(database_url, {"d": ["編集前の本文です。", "そのままの段落です。"]})
    sim.config.latency_base_ms = 400

    async with BatchEmbeddingGenerator(settings_for(EMBEDDING_BATCH_SIZE=10)) as generator:
        import asyncio

        async def edit() -> None:
            await asyncio.sleep(0.15)  # the batch is in flight
            await fetch_all(
                database_url, "UPDATE chunks SET content = '編集後の本文です。' WHERE chunk_index = 0 RETURNING 1"
            )

        editor = asyncio.create_task(edit())
        stats = await generator.run()
        await editor
    assert stats.ok and stats.embedded == 2
    after = rows(database_url)
    assert [r.content for r in after] == ["編集後の本文です。", "そのままの段落です。"]
    assert all(r.embedded and not r.leased for r in after) and wrong_vectors(after) == []


# --- smaller truths ---------------------------------------------------------------------------------


async def test_retries_are_counted_honestly_and_each_failure_is_logged_once(
    database_url: str, sim: GeminiSimulator, settings_for: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    await seed_chunks(database_url, {"d": ["毒の段落 ☠", "普通の段落。"]})
    sim.config.poison_marker = "☠"
    sim.config.error_rate_503 = 0.5
    with caplog.at_level("INFO", logger="batch_embedding"):
        stats = await run(settings_for(EMBEDDING_MAX_RETRIES=3, EMBEDDING_OUTAGE_SECONDS="60"))
    assert stats.failed == 1
    counts = re.findall(r"リトライ (\d+)/(\d+)", caplog.text)
    assert bool(counts) == (stats.retries > 0), caplog.text  # the retries there were are logged, and only they
    for done, of in counts:
        assert int(done) <= int(of), caplog.text
    (poisoned,) = [r for r in rows(database_url) if not r.embedded]
    assert caplog.text.count(f"❌ チャンク {poisoned.id}") == 1


async def test_stats_count_each_chunk_once(
    database_url: str, sim: GeminiSimulator, settings_for: Callable[..., Settings]
) -> None:
    await seed_chunks(database_url, corpus(60, docs=3))
    sim.config.error_rate_503 = 0.3
    stats = await run(settings_for(EMBEDDING_MAX_RETRIES=8, EMBEDDING_OUTAGE_SECONDS="60"))
    assert stats.embedded + stats.failed + stats.skipped == 60 == stats.total
    assert np.isclose(stats.success_rate, 100.0)
