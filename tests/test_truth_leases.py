"""Leases: renewed while a batch is in flight, written only by their owner, taken over at once from a
dead worker on this host and within the lease from one elsewhere. Real PostgreSQL, real SDK."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from modules.batch_embedding import BatchEmbeddingGenerator
from modules.gemini_simulator import GeminiSimulator, SimulatorConfig, run_simulator_in_thread
from modules.settings import Settings, TableNames
from modules.stores.base import ClaimFilter, Completed, CompleteResult
from modules.stores.postgres import PostgresStore
from modules.text import content_hash
from tests.chaos_helpers import CHAOS_API_KEY, embeds_by_content, rows, wrong_vectors
from tests.helpers import corpus, fetch_all, seed_chunks


@pytest.fixture
def sim() -> Iterator[GeminiSimulator]:
    with run_simulator_in_thread(SimulatorConfig()) as simulator:
        yield simulator


@pytest.fixture
def settings_for(make_settings: Callable[..., Settings], sim: GeminiSimulator) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "EMBEDDING_PROVIDER": "gemini",
            "GOOGLE_API_KEY": CHAOS_API_KEY,
            "GOOGLE_GEMINI_BASE_URL": sim.base_url,
            "EMBEDDING_REQUEST_TIMEOUT": "20",
        }
        values.update(overrides)
        return make_settings(**values)

    return build


async def store_for(url: str) -> PostgresStore:
    store = PostgresStore(url, TableNames(), 768)
    await store.prepare()
    return store


@pytest.mark.slow
async def test_a_slow_call_keeps_its_lease_by_the_heartbeat_and_nobody_takes_its_chunks(
    database_url: str, sim: GeminiSimulator, settings_for: Callable[..., Settings]
) -> None:
    await seed_chunks(database_url, {"d": [f"遅い応答の段落{i}。" for i in range(10)]})
    sim.config.latency_base_ms = 4000  # twice the lease
    other = await store_for(database_url)
    try:
        async with BatchEmbeddingGenerator(settings_for(EMBEDDING_LEASE_SECONDS=2, EMBEDDING_BATCH_SIZE=10)) as gen:
            run = asyncio.create_task(gen.run())
            await asyncio.sleep(3.0)  # the first lease would have expired a second ago
            stolen = await other.claim("thief", 10, 60, ClaimFilter())
            stats = await run
    finally:
        await other.aclose()
    assert stolen == []
    assert (stats.embedded, stats.skipped, stats.failed) == (10, 0, 0) and stats.ok
    assert sorted(embeds_by_content(sim, [r.content for r in rows(database_url)]).values()) == [1] * 10


@pytest.mark.slow  # over 1 s: the full tier only
async def test_a_result_is_written_only_by_the_leases_owner(database_url: str) -> None:
    await seed_chunks(database_url, {"d": ["遅れたワーカーの段落。"]})
    slow, fast = await store_for(database_url), await store_for(database_url)
    try:
        (mine,) = await slow.claim("slow-worker", 1, 1, ClaimFilter())
        await asyncio.sleep(1.2)  # its lease expires (it missed its heartbeats)
        (taken,) = await fast.claim("fast-worker", 1, 60, ClaimFilter())
        assert taken.id == mine.id
        one = np.full(768, 1 / np.sqrt(768), dtype=np.float32)
        other = np.roll(np.eye(1, 768, dtype=np.float32)[0], 3)
        assert await slow.complete("slow-worker", "m@768", [Completed(mine.id, other, content_hash(mine.content))]) == (
            CompleteResult(written=0, changed=0)
        )
        assert await fast.complete("fast-worker", "m@768", [Completed(taken.id, one, content_hash(taken.content))]) == (
            CompleteResult(written=1, changed=0)
        )
        # the lost answer of the owner's own write, retried: recognised as done, not as a lost lease
        again = await fast.complete("fast-worker", "m@768", [Completed(taken.id, one, content_hash(taken.content))])
        assert again.written == 1
    finally:
        await slow.aclose()
        await fast.aclose()
    stored = await fetch_all(database_url, "SELECT embedding, embedded_by FROM chunks")
    np.testing.assert_allclose(stored[0][0].to_numpy(), one)
    assert stored[0][1] == "fast-worker"


@pytest.mark.slow
async def test_a_run_takes_over_the_chunks_of_a_worker_that_stopped_renewing(
    database_url: str, sim: GeminiSimulator, settings_for: Callable[..., Settings]
) -> None:
    await seed_chunks(database_url, corpus(30, docs=3))
    # A worker on another host (its process can't be checked from here) died holding 10 chunks; its
    # lease runs out in 2 s, and it is not being renewed.
    await fetch_all(
        database_url,
        "UPDATE chunks SET embedding_lease_owner = 'another-host:4242:deadbeef', "
        "embedding_lease_expires_at = now() + interval '2 seconds' "
        "WHERE id IN (SELECT id FROM chunks ORDER BY doc_id, chunk_index LIMIT 10) RETURNING 1",
    )
    started = time.monotonic()
    async with BatchEmbeddingGenerator(settings_for(EMBEDDING_LEASE_SECONDS=10)) as generator:
        stats = await generator.run()
        status = await generator.status()
    took = time.monotonic() - started
    assert stats.ok and stats.embedded == 30
    assert (status.embedded, status.in_progress, status.pending) == (30, 0, 0)
    assert 1.5 < took < 15, f"took {took:.1f}s"
    assert wrong_vectors(rows(database_url)) == []


async def test_a_live_worker_elsewhere_keeps_its_chunks(
    database_url: str, sim: GeminiSimulator, settings_for: Callable[..., Settings]
) -> None:
    await seed_chunks(database_url, corpus(20, docs=2))
    await fetch_all(  # renewed a moment ago: alive
        database_url,
        "UPDATE chunks SET embedding_lease_owner = 'another-host:4242:alive', "
        "embedding_lease_expires_at = now() + interval '10 seconds' "
        "WHERE id IN (SELECT id FROM chunks ORDER BY doc_id, chunk_index LIMIT 10) RETURNING 1",
    )
    started = time.monotonic()
    async with BatchEmbeddingGenerator(settings_for(EMBEDDING_LEASE_SECONDS=10)) as generator:
        stats = await generator.run()
        status = await generator.status()
    assert time.monotonic() - started < 5  # it does not wait for a live worker
    assert stats.embedded == 10 and status.in_progress == 10
