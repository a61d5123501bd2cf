"""Whole runs through the real google-genai client, over HTTP, against the Gemini simulator, into a
real PostgreSQL: batching, 429 storms, 5xx bursts, poison chunks, run-level errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest

from modules.batch_embedding import BatchEmbeddingGenerator
from modules.embedders.base import l2_normalize
from modules.errors import ProviderConfigError
from modules.gemini_simulator import GeminiSimulator, SimulatorConfig, simulated_embedding
from modules.settings import Settings
from tests.helpers import TEST_API_KEY, corpus, fetch_all, seed_chunks


@pytest.fixture
async def simulator() -> AsyncIterator[GeminiSimulator]:
    async with GeminiSimulator(SimulatorConfig()) as sim:
        yield sim


@pytest.fixture
def gemini_settings(make_settings: Callable[..., Settings], simulator: GeminiSimulator) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "EMBEDDING_PROVIDER": "gemini",
            "GOOGLE_API_KEY": TEST_API_KEY,
            "GOOGLE_GEMINI_BASE_URL": simulator.base_url,
            "EMBEDDING_REQUEST_TIMEOUT": "5",
        }
        values.update(overrides)
        return make_settings(**values)

    return build


def expected_vector(text: str, dims: int = 768) -> np.ndarray:
    return l2_normalize(simulated_embedding(text, dims).reshape(1, -1).astype(np.float32))[0]


async def run_all(settings: Settings, **kwargs: Any) -> Any:
    async with BatchEmbeddingGenerator(settings) as generator:
        stats = await generator.run(**kwargs)
        status = await generator.status()
    return stats, status


@pytest.mark.slow  # over 1 s: the full tier only
async def test_happy_path_1000_chunks_take_exactly_100_calls(
    database_url: str, simulator: GeminiSimulator, gemini_settings: Callable[..., Settings]
) -> None:
    await seed_chunks(database_url, corpus(1000, docs=10))
    # With titles (the default) as without: a batch is one call, whatever documents it spans.
    stats, status = await run_all(gemini_settings(EMBEDDING_BATCH_SIZE=10))
    assert (stats.embedded, stats.failed, stats.api_calls) == (1000, 0, 100)
    assert simulator.stats.successful_calls == 100
    assert simulator.stats.max_batch_seen == 10
    assert (status.embedded, status.pending, status.failed, status.in_progress) == (1000, 0, 0, 0)
    rows = await fetch_all(database_url, "SELECT content, embedding, embedding_model FROM chunks")
    for content, vector, model in rows:
        assert model == "gemini-embedding-001@768"
        np.testing.assert_allclose(vector.to_numpy(), expected_vector(content), rtol=0, atol=1e-6)
    # every text was embedded exactly once
    assert sorted(simulator.stats.embeds_per_text.values()) == [1] * 1000


@pytest.mark.slow  # over 1 s: the full tier only
async def test_batch_100_takes_ten_calls(
    database_url: str, simulator: GeminiSimulator, gemini_settings: Callable[..., Settings]
) -> None:
    await seed_chunks(database_url, corpus(1000, docs=10))
    stats, _ = await run_all(gemini_settings(EMBEDDING_BATCH_SIZE=100, EMBEDDING_USE_TITLE="false"))
    assert (stats.embedded, stats.api_calls) == (1000, 10)


@pytest.mark.parametrize("retry_info_rate", [1.0, 0.0], ids=["with-RetryInfo", "without-RetryInfo"])
@pytest.mark.parametrize(("count_mode", "rpm"), [("call", 10), ("text", 100)], ids=["per-call", "per-text"])
@pytest.mark.slow  # over 1 s: the full tier only
async def test_429_storm_ends_with_everything_embedded(
    database_url: str,
    simulator: GeminiSimulator,
    gemini_settings: Callable[..., Settings],
    retry_info_rate: float,
    count_mode: str,
    rpm: int,
) -> None:
    # Either way the quota allows 100 texts per 1 s window: 300 chunks need about 3 s. The product is
    # told the window (as it assumes Google's per-minute windows by default).
    simulator.config.rpm = rpm
    simulator.config.count_mode = count_mode
    simulator.config.window_seconds = 1.0
    simulator.config.retry_info_rate = retry_info_rate
    await seed_chunks(database_url, corpus(300, docs=3))
    settings = gemini_settings(EMBEDDING_BATCH_SIZE=10, EMBEDDING_RETRY_DELAY="0.2", EMBEDDING_QUOTA_WINDOW="1")
    stats, status = await run_all(settings)
    assert (stats.embedded, stats.failed, status.pending) == (300, 0, 0)
    assert stats.rate_limited > 0
    assert simulator.stats.status_counts.get(429, 0) == stats.rate_limited
    assert sorted(simulator.stats.embeds_per_text.values()) == [1] * 300
    # The 429 names its limit: one 429 teaches it (which unit, how many), with or without RetryInfo,
    # and the pacer keeps under it from then on; one more at most, if this machine's timing needs
    # wider margins (each such 429 widens them).
    assert stats.rate_limited <= 2
    assert 1.5 <= stats.elapsed <= 12  # the quota was waited out, not skipped, and then used


@pytest.mark.slow  # over 1 s: the full tier only
async def test_503_burst_is_retried_and_charges_no_chunk(
    database_url: str, simulator: GeminiSimulator, gemini_settings: Callable[..., Settings]
) -> None:
    simulator.config.burst_503 = 6
    await seed_chunks(database_url, corpus(50, docs=1))
    stats, _ = await run_all(gemini_settings(EMBEDDING_CONCURRENCY=1, EMBEDDING_MAX_RETRIES=8))
    assert (stats.embedded, stats.failed) == (50, 0)
    assert stats.retries >= 6
    rows = await fetch_all(database_url, "SELECT max(embedding_attempts) FROM chunks")
    assert rows[0][0] == 0


async def test_a_poison_chunk_fails_alone_and_its_neighbours_are_embedded(
    database_url: str, simulator: GeminiSimulator, gemini_settings: Callable[..., Settings]
) -> None:
    simulator.config.poison_marker = "☠POISON☠"
    texts = corpus(30, docs=1)["doc-000"]
    texts[13] = "この段落は☠POISON☠を含みます。"
    await seed_chunks(database_url, {"doc-000": texts})
    stats, status = await run_all(gemini_settings(EMBEDDING_BATCH_SIZE=10, EMBEDDING_CONCURRENCY=1))
    assert (stats.embedded, stats.failed) == (29, 1)
    assert (status.embedded, status.failed, status.pending) == (29, 1, 0)
    rows = await fetch_all(
        database_url, "SELECT content, embedding_attempts, embedding_error FROM chunks WHERE embedding IS NULL"
    )
    assert len(rows) == 1
    content, attempts, error = rows[0]
    assert "POISON" in content and attempts == 1 and "400" in error
    # 3 batches + the bad batch re-run as 2 x 5 + the bad half re-run one by one (5)
    assert stats.api_calls == 3 + 2 + 5


async def test_empty_content_is_recorded_failed_and_never_sent(
    database_url: str, simulator: GeminiSimulator, gemini_settings: Callable[..., Settings]
) -> None:
    await seed_chunks(database_url, {"d": ["本文があります。", "", "   \n\t", "これも本文です。"]})
    stats, _ = await run_all(gemini_settings())
    assert (stats.embedded, stats.failed) == (2, 2)
    assert simulator.stats.texts_embedded == 2
    rows = await fetch_all(database_url, "SELECT embedding_error FROM chunks WHERE embedding IS NULL")
    assert all("empty content" in r[0] for r in rows)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"GOOGLE_API_KEY": "wrong-key"}, "API key not valid"),
        ({"EMBEDDING_MODEL": "text-embedding-004"}, "404"),
    ],
    ids=["wrong-key", "retired-model"],
)
async def test_a_bad_provider_setting_stops_the_run_without_failing_chunks(
    database_url: str,
    simulator: GeminiSimulator,
    gemini_settings: Callable[..., Settings],
    overrides: dict[str, str],
    expected: str,
) -> None:
    simulator.config.api_key = TEST_API_KEY
    await seed_chunks(database_url, corpus(100, docs=2))
    with pytest.raises(ProviderConfigError) as caught:  # a settings error (exit 2): no call ever succeeded
        await run_all(gemini_settings(**overrides))
    assert expected in str(caught.value)
    assert "wrong-key" not in str(caught.value)
    rows = await fetch_all(
        database_url,
        "SELECT count(*) FILTER (WHERE embedding_failed_at IS NOT NULL), count(*) FILTER (WHERE embedding_lease_owner "
        "IS NOT NULL), count(*) FILTER (WHERE embedding IS NULL) FROM chunks",
    )
    assert rows[0] == (0, 0, 100)  # nothing charged, nothing left leased, all still pending


async def test_retry_only_touches_only_failed_chunks(
    database_url: str, simulator: GeminiSimulator, gemini_settings: Callable[..., Settings]
) -> None:
    simulator.config.poison_marker = "☠"
    texts = [f"段落{i}。" for i in range(10)]
    texts[4] = "☠ 一時的に失敗する段落。"
    await seed_chunks(database_url, {"d": texts})
    stats, _ = await run_all(gemini_settings(EMBEDDING_CONCURRENCY=1))
    assert stats.failed == 1
    # new pending work arrives; --retry-only must not touch it
    await fetch_all(
        database_url, "INSERT INTO chunks (doc_id, chunk_index, content) VALUES ('d', 99, '新しい段落。') RETURNING 1"
    )
    simulator.config.poison_marker = None
    calls_before = simulator.stats.successful_calls
    stats, status = await run_all(gemini_settings(EMBEDDING_CONCURRENCY=1), retry_failed=True)
    assert (stats.total, stats.embedded, stats.failed) == (1, 1, 0)
    assert simulator.stats.successful_calls == calls_before + 1
    assert (status.pending, status.failed, status.embedded) == (1, 0, 10)


async def test_a_poison_chunk_in_a_batch_spanning_two_documents_fails_alone(
    database_url: str, simulator: GeminiSimulator, gemini_settings: Callable[..., Settings]
) -> None:
    # One batch of 10 holds doc A (5 chunks) and doc B (5 chunks): one call, which fails (a poison chunk
    # in B). Re-run in 5s, A's half is embedded once and only B's half is re-run one by one.
    simulator.config.poison_marker = "☠"
    await seed_chunks(
        database_url,
        {"a": [f"A{i}の段落。" for i in range(5)], "b": ["☠ 壊れた段落。"] + [f"B{i}の段落。" for i in range(4)]},
    )
    stats, _ = await run_all(gemini_settings(EMBEDDING_BATCH_SIZE=10, EMBEDDING_CONCURRENCY=1))
    assert (stats.embedded, stats.failed) == (9, 1)
    assert sorted(simulator.stats.embeds_per_text.values()) == [1] * 9
    rows = await fetch_all(database_url, "SELECT count(*) FROM chunks WHERE doc_id = 'a' AND embedding IS NOT NULL")
    assert rows[0][0] == 5


@pytest.mark.slow  # over 1 s: the full tier only
async def test_a_quota_given_up_front_is_kept(
    database_url: str, simulator: GeminiSimulator, gemini_settings: Callable[..., Settings]
) -> None:
    simulator.config.rpm = 10
    simulator.config.window_seconds = 1.0
    await seed_chunks(database_url, corpus(200, docs=2))
    settings = gemini_settings(EMBEDDING_BATCH_SIZE=10, EMBEDDING_RPM="10", EMBEDDING_QUOTA_WINDOW="1")
    stats, status = await run_all(settings)
    assert (stats.embedded, status.pending) == (200, 0)
    # Paced from the first call: at most the cold start's first calls, which reach the server late, may
    # overrun a window this short (a 429 then turns the given quota into a learned one).
    assert simulator.stats.status_counts.get(429, 0) <= 2
    assert stats.elapsed >= 1.0  # 20 calls at 10 per second: the quota was kept, not ignored
