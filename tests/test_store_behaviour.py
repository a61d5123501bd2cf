"""One behavioural suite, run on both stores: PostgresStore on the database URL, and SupabaseStore through
supabase-py over HTTP to the PostgREST stand-in (tests/postgrest_fake.py) on the same kind of database.

For the Supabase path the database is set up as a Supabase user would: Supabase's default privileges,
then the committed migration file; the store itself runs no DDL. Settings choose the store, as in
production: DATABASE_URL for one, SUPABASE_URL + SUPABASE_KEY (and no DATABASE_URL) for the other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
import pytest

from modules.batch_embedding import BatchEmbeddingGenerator, content_hash
from modules.embedders.local import LocalEmbedder
from modules.knowledge.ingest import knowledge_store
from modules.settings import Settings, load_settings
from modules.stores import open_store
from modules.stores.base import ChunkStore, ClaimFilter, Completed, Failure
from tests.helpers import TEST_API_KEY, corpus, fetch_all, seed_chunks
from tests.postgrest_fake import SERVICE_KEY, PostgrestFake, apply_migration, ensure_supabase_roles, supabase_defaults


def _simulator_available() -> bool:
    try:
        from modules.gemini_simulator import GeminiSimulator, SimulatorConfig  # noqa: F401
    except ImportError:
        return False
    return True


HAVE_SIMULATOR = _simulator_available()


@pytest.fixture(scope="session")
def supabase_roles(pg_server: str) -> None:
    ensure_supabase_roles(pg_server)


async def insert_rows(url: str, texts_by_doc: dict[str, list[str]]) -> None:
    """Documents and chunks, inserted as the host application would (tables already migrated)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for doc_id, texts in texts_by_doc.items():
            await conn.execute(
                "INSERT INTO document_sources (id, name, type) VALUES (%s, %s, 'txt')", (doc_id, f"{doc_id}.txt")
            )
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO chunks (doc_id, chunk_index, content) VALUES (%s, %s, %s)",
                    [(doc_id, i, t) for i, t in enumerate(texts)],
                )


@dataclass
class Backend:
    kind: str
    url: str  # the database, for checks made directly in SQL
    env: dict[str, str]
    fake: PostgrestFake | None

    def settings(self, **overrides: Any) -> Settings:
        return load_settings(env={**self.env, **{k: str(v) for k, v in overrides.items()}})

    async def seed(self, texts_by_doc: dict[str, list[str]]) -> None:
        if self.kind == "postgres":
            await seed_chunks(self.url, texts_by_doc)
        else:
            await insert_rows(self.url, texts_by_doc)

    async def store(self) -> ChunkStore:
        store, _ = await open_store(self.settings())
        return store


@pytest.fixture(params=["postgres", "supabase"])
def backend(request: pytest.FixtureRequest, database_url: str, base_env: dict[str, str]) -> Iterator[Backend]:
    if request.param == "postgres":
        yield Backend("postgres", database_url, dict(base_env), None)
        return
    request.getfixturevalue("supabase_roles")
    supabase_defaults(database_url)
    apply_migration(database_url)
    with PostgrestFake(database_url) as fake:
        env = {k: v for k, v in base_env.items() if k != "DATABASE_URL"}
        env.update({"SUPABASE_URL": fake.url, "SUPABASE_KEY": SERVICE_KEY})
        yield Backend("supabase", database_url, env, fake)


async def run(settings: Settings, **kwargs: Any) -> Any:
    async with BatchEmbeddingGenerator(settings) as generator:
        stats = await generator.run(**kwargs)
        status = await generator.status()
    return stats, status


async def test_happy_path_embeds_everything_once(backend: Backend) -> None:
    await backend.seed(corpus(200, docs=5))
    settings = backend.settings(EMBEDDING_BATCH_SIZE=10)
    async with BatchEmbeddingGenerator(settings) as generator:
        assert (
            type(generator.store).__name__ == {"postgres": "PostgresStore", "supabase": "SupabaseStore"}[backend.kind]
        )
        stats = await generator.run()
        status = await generator.status()
    assert (stats.embedded, stats.failed, stats.skipped, stats.api_calls) == (200, 0, 0, 20)
    assert (status.total, status.embedded, status.pending, status.failed, status.in_progress) == (200, 200, 0, 0, 0)
    rows = await fetch_all(
        backend.url, "SELECT content, embedding, embedding_model FROM chunks ORDER BY doc_id, chunk_index"
    )
    expected = LocalEmbedder(768).embed_now([r[0] for r in rows])
    stored = np.stack([r[1].to_numpy() for r in rows])
    np.testing.assert_allclose(stored, expected, rtol=0, atol=1e-6)
    assert {r[2] for r in rows} == {LocalEmbedder(768).model_id}
    if backend.fake is not None:  # one round trip per batch for results, never one per chunk
        assert len(backend.fake.calls_to("embq_complete_v3")) == 20


@pytest.mark.skipif(not HAVE_SIMULATOR, reason="modules.gemini_simulator is not there yet")
async def test_a_poison_chunk_fails_alone(backend: Backend) -> None:
    from modules.gemini_simulator import GeminiSimulator, SimulatorConfig

    texts = corpus(30, docs=1)["doc-000"]
    texts[13] = "この段落は☠POISON☠を含みます。"
    await backend.seed({"doc-000": texts})
    async with GeminiSimulator(SimulatorConfig()) as simulator:
        simulator.config.poison_marker = "☠POISON☠"
        settings = backend.settings(
            EMBEDDING_PROVIDER="gemini",
            GOOGLE_API_KEY=TEST_API_KEY,
            GOOGLE_GEMINI_BASE_URL=simulator.base_url,
            EMBEDDING_REQUEST_TIMEOUT=5,
            EMBEDDING_BATCH_SIZE=10,
            EMBEDDING_CONCURRENCY=1,
        )
        stats, status = await run(settings)
    assert (stats.embedded, stats.failed) == (29, 1)
    assert (status.embedded, status.failed, status.pending, status.in_progress) == (29, 1, 0, 0)
    rows = await fetch_all(
        backend.url, "SELECT chunk_index, embedding_attempts, embedding_error FROM chunks WHERE embedding IS NULL"
    )
    assert [(r[0], r[1]) for r in rows] == [(13, 1)] and rows[0][2]


async def test_retry_only_takes_failures_and_leaves_pending_alone(backend: Backend) -> None:
    texts = corpus(20, docs=1)["doc-000"]
    texts[7] = "   "  # nothing to embed: the chunk's own failure, recorded without an API call
    await backend.seed({"doc-000": texts})
    stats, status = await run(backend.settings())
    assert (stats.embedded, stats.failed, status.failed) == (19, 1, 1)

    store = await backend.store()
    try:
        errors = await store.recent_errors()
        assert errors[0].chunks == 1 and "empty content" in errors[0].error
    finally:
        await store.aclose()
    await fetch_all(backend.url, "UPDATE chunks SET content = '直した段落です。' WHERE chunk_index = 7 RETURNING 1")
    await fetch_all(
        backend.url,
        "INSERT INTO chunks (doc_id, chunk_index, content) VALUES ('doc-000', 20, '新しい段落です。') RETURNING 1",
    )
    stats, status = await run(backend.settings(), retry_failed=True)
    assert (stats.embedded, stats.failed) == (1, 0)
    assert (status.embedded, status.failed, status.pending) == (20, 0, 1)  # the new chunk waits for a normal run
    stats, status = await run(backend.settings())
    assert (stats.embedded, status.embedded, status.pending) == (1, 21, 0)


async def test_status_counts_per_queue_and_per_document(backend: Backend) -> None:
    await backend.seed({"doc-a": ["a0", "a1", "a2", "a3"], "doc-b": ["b0", "b1", "b2"], "doc-c": ["c0", "c1"]})
    store = await backend.store()
    try:
        leased = await store.claim("w1", 2, 60, ClaimFilter(doc_id="doc-a"))
        assert [c.content for c in leased] == ["a0", "a1"] and leased[0].title == "doc-a.txt"
        (b0,) = await store.claim("w1", 1, 60, ClaimFilter(doc_id="doc-b"))
        await store.fail("w1", [Failure(b0.id, "400 INVALID_ARGUMENT: bad chunk")])
        (c0,) = await store.claim("w1", 1, 60, ClaimFilter(doc_id="doc-c"))
        vector = np.full(768, 1 / np.sqrt(768), dtype=np.float32)
        assert (await store.complete("w1", "m@768", [Completed(c0.id, vector, content_hash(c0.content))])).written == 1

        s = await store.status()
        assert (s.total, s.embedded, s.pending, s.failed, s.in_progress, s.stale_leases) == (9, 1, 5, 1, 2, 0)
        assert s.embedded + s.pending + s.failed + s.in_progress == s.total
        b = await store.status("doc-b")
        assert (b.total, b.pending, b.failed) == (3, 2, 1)
        per_doc = {d.doc_id: d for d in await store.status_by_document()}
        assert set(per_doc) == {"doc-a", "doc-b", "doc-c"}
        a = per_doc["doc-a"]
        assert (a.name, a.total, a.embedded, a.pending, a.failed, a.in_progress) == ("doc-a.txt", 4, 0, 2, 0, 2)
        assert [d.doc_id for d in await store.status_by_document(limit=1)] == ["doc-a"]  # most pending first
        (error,) = await store.recent_errors()
        assert (error.error, error.chunks) == ("400 INVALID_ARGUMENT: bad chunk", 1) and error.last_seen is not None
        assert await store.document_exists("doc-a") and not await store.document_exists("doc-z")
        now = await store.server_time()
        assert error.last_seen <= now

        await store.release("w1", [c.id for c in leased])
        assert (await store.status()).in_progress == 0
    finally:
        await store.aclose()


@pytest.mark.slow  # over 1 s: the full tier only
async def test_two_concurrent_workers_never_take_the_same_chunk(backend: Backend) -> None:
    await backend.seed(corpus(300, docs=3))
    stores = [await backend.store(), await backend.store()]
    try:
        seen: list[list[str]] = [[], []]

        async def drain(n: int) -> None:
            while batch := await stores[n].claim(f"w{n}", 7, 60, ClaimFilter()):
                seen[n].extend(c.id for c in batch)
                await asyncio.sleep(0)

        await asyncio.gather(drain(0), drain(1))
        assert seen[0] and seen[1]
        assert len(seen[0]) + len(seen[1]) == 300
        assert not set(seen[0]) & set(seen[1])
        await stores[0].release("w0", seen[0])
        await stores[1].release("w1", seen[1])
    finally:
        for store in stores:
            await store.aclose()

    # Two whole runs at once: every chunk embedded by exactly one of them.
    results = await asyncio.gather(run(backend.settings()), run(backend.settings()))
    embedded = [stats.embedded for stats, _ in results]
    assert sum(embedded) == 300 and all(stats.skipped == 0 and stats.failed == 0 for stats, _ in results)
    rows = await fetch_all(backend.url, "SELECT count(*) FILTER (WHERE embedding IS NOT NULL), count(*) FROM chunks")
    assert rows[0] == (300, 300)


async def test_repair_resets_vectors_of_another_model(backend: Backend) -> None:
    await backend.seed({"doc-a": ["a0", "a1"], "doc-b": ["b0"]})
    store = await backend.store()
    try:
        chunks = await store.claim("w", 10, 60, ClaimFilter())
        vector = np.full(768, 1 / np.sqrt(768), dtype=np.float32)
        await store.complete("w", "old-model@768", [Completed(c.id, vector, content_hash(c.content)) for c in chunks])
        report = await store.repair_report("new-model@768", 768)
        assert [(r.doc_id, r.wrong_model, r.to_reset) for r in report] == [("doc-a", 2, 2), ("doc-b", 1, 1)]
        result = await store.repair_apply("new-model@768", 768, doc_id="doc-a")
        assert (result.reset, result.wrong_model, result.wrong_dimension) == (2, 2, 0)
        status = await store.status()
        assert (status.embedded, status.pending) == (1, 2)
    finally:
        await store.aclose()


async def test_uploads_list_search_and_delete(backend: Backend) -> None:
    await backend.seed({})
    store = await backend.store()
    try:
        knowledge = knowledge_store(store)
        doc_id = await knowledge.ingest_document("guide.md", "md", ["東京の天気は晴れです。", "大阪は雨でした。"])
        other = await knowledge.ingest_document("notes.txt", "txt", ["会議は月曜日です。"], doc_id="doc-notes")
        assert other == "doc-notes"
        listed = {d.doc_id: d for d in await knowledge.list_documents()}
        assert (listed[doc_id].name, listed[doc_id].type, listed[doc_id].chunks) == ("guide.md", "md", 2)
    finally:
        await store.aclose()
    stats, _ = await run(backend.settings())
    assert stats.embedded == 3
    store = await backend.store()
    try:
        knowledge = knowledge_store(store)
        query = LocalEmbedder(768).embed_now(["東京の天気は晴れです。"])[0]
        hits = await knowledge.search(query, limit=2)
        assert hits[0].content == "東京の天気は晴れです。" and hits[0].name == "guide.md"
        assert abs(hits[0].distance) < 1e-5 and len(hits) == 2
        assert await knowledge.delete_document(doc_id) == 2
        assert await knowledge.delete_document("no-such-doc") is None
        assert (await store.status()).total == 1
    finally:
        await store.aclose()


@pytest.fixture
def simulator_or_local() -> Iterator[str]:
    yield "simulator" if HAVE_SIMULATOR else "local"


async def _timed_run(backend: Backend, provider: str) -> tuple[float, int]:
    overrides: dict[str, Any] = {"EMBEDDING_BATCH_SIZE": 10}
    if provider == "simulator":
        from modules.gemini_simulator import GeminiSimulator, SimulatorConfig

        async with GeminiSimulator(SimulatorConfig()) as simulator:
            overrides.update(
                EMBEDDING_PROVIDER="gemini", GOOGLE_API_KEY=TEST_API_KEY, GOOGLE_GEMINI_BASE_URL=simulator.base_url
            )
            stats, _ = await run(backend.settings(**overrides))
    else:
        stats, _ = await run(backend.settings(**overrides))
    return stats.elapsed, stats.embedded


@pytest.mark.slow
async def test_wall_time_for_1000_chunks(backend: Backend, simulator_or_local: str, capsys: Any) -> None:
    """Prints the wall time of 1,000 chunks through this store (run with -s to see it)."""
    await backend.seed(corpus(1000, docs=10))
    elapsed, embedded = await _timed_run(backend, simulator_or_local)
    assert embedded == 1000
    with capsys.disabled():
        print(f"\n[1000 chunks] store={backend.kind} provider={simulator_or_local} wall={elapsed:.2f}s")
