"""The PostgreSQL queue on a real server: migration, leases, SKIP LOCKED, stale writes, counts."""

from __future__ import annotations

import asyncio

import numpy as np
import psycopg
import pytest

from modules.errors import SchemaMismatchError
from modules.settings import SettingsError, TableNames, load_settings
from modules.stores import check_dimensions, open_store
from modules.stores.base import ClaimFilter, ClaimMode, Completed, CompleteResult, Failure
from modules.stores.postgres import PostgresStore
from tests.helpers import corpus, fetch_all, seed_chunks


def _hash(text: str) -> str:
    from modules.batch_embedding import content_hash

    return content_hash(text)


async def _store(url: str, dims: int = 768) -> PostgresStore:
    store = PostgresStore(url, TableNames(), dims, create_tables=True)
    await store.prepare()
    return store


async def test_migration_is_idempotent_and_keeps_host_uuid_schema(database_url: str) -> None:
    # A host schema as it already exists, with uuid ids and rows, before we ever ran.
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("CREATE EXTENSION vector")
        await conn.execute("CREATE TABLE document_sources (id uuid PRIMARY KEY, name text, type text)")
        await conn.execute(
            "CREATE TABLE chunks (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), doc_id uuid REFERENCES "
            "document_sources(id), chunk_index int, content text, embedding vector(768))"
        )
        await conn.execute("INSERT INTO document_sources VALUES ('00000000-0000-0000-0000-000000000001', 'a', 'pdf')")
        await conn.execute(
            "INSERT INTO chunks (doc_id, chunk_index, content) "
            "SELECT '00000000-0000-0000-0000-000000000001', i, 'text ' || i FROM generate_series(1, 5) i"
        )
    for _ in range(2):
        store = await _store(database_url)
        info = await store.prepare()
        assert (info.dimensions, info.id_type, info.doc_id_type) == (768, "uuid", "uuid")
        await store.aclose()
    store = await _store(database_url)
    try:
        claimed = await store.claim("w1", 10, 60, ClaimFilter(doc_id="00000000-0000-0000-0000-000000000001"))
        assert [c.chunk_index for c in claimed] == [1, 2, 3, 4, 5]
        vec = np.ones(768, dtype=np.float32) / np.sqrt(768)
        written = await store.complete("w1", "m@768", [Completed(c.id, vec, _hash(c.content)) for c in claimed])
        assert written.written == 5
        assert (await store.status()).embedded == 5
        assert not await store.document_exists("not-a-uuid")
    finally:
        await store.aclose()
    rows = await fetch_all(database_url, "SELECT count(*) FROM chunks WHERE embedding_model = 'm@768'")
    assert rows[0][0] == 5


async def test_two_claimers_never_get_the_same_chunk(database_url: str) -> None:
    await seed_chunks(database_url, corpus(400, docs=4))
    stores = [await _store(database_url) for _ in range(4)]
    try:
        seen: list[str] = []

        async def drain(store: PostgresStore, name: str) -> None:
            while batch := await store.claim(name, 7, 60, ClaimFilter()):
                seen.extend(c.id for c in batch)
                await asyncio.sleep(0)

        await asyncio.gather(*(drain(s, f"w{i}") for i, s in enumerate(stores)))
        assert len(seen) == 400
        assert len(set(seen)) == 400
        status = await stores[0].status()
        assert (status.in_progress, status.pending) == (400, 0)
    finally:
        for s in stores:
            await s.aclose()


@pytest.mark.slow  # over 1 s: the full tier only
async def test_expired_lease_comes_back_and_is_reported_stale(database_url: str) -> None:
    await seed_chunks(database_url, {"d": ["a", "b", "c"]})
    store = await _store(database_url)
    try:
        first = await store.claim("dead-worker", 10, 1, ClaimFilter())
        assert len(first) == 3
        assert await store.claim("w2", 10, 60, ClaimFilter()) == []
        await asyncio.sleep(1.2)
        status = await store.status()
        assert (status.stale_leases, status.pending, status.in_progress) == (3, 3, 0)
        again = await store.claim("w2", 10, 60, ClaimFilter())
        assert sorted(c.id for c in again) == sorted(c.id for c in first)
    finally:
        await store.aclose()


async def test_complete_skips_a_chunk_edited_while_in_flight(database_url: str) -> None:
    await seed_chunks(database_url, {"d": ["original text"]})
    store = await _store(database_url)
    try:
        (chunk,) = await store.claim("w", 1, 60, ClaimFilter())
        await fetch_all(database_url, "UPDATE chunks SET content = 'edited text' RETURNING 1")
        vec = np.ones(768, dtype=np.float32)
        result = await store.complete("w", "m", [Completed(chunk.id, vec, _hash("original text"))])
        assert result == CompleteResult(written=0, changed=1)
        status = await store.status()  # released at once, pending with its new text: not left leased
        assert (status.embedded, status.pending, status.in_progress) == (0, 1, 0)
    finally:
        await store.aclose()


async def test_failures_are_recorded_and_only_claimed_in_failed_mode(database_url: str) -> None:
    await seed_chunks(database_url, {"d": ["a", "b", "c", "d"]})
    store = await _store(database_url)
    try:
        chunks = await store.claim("w", 10, 60, ClaimFilter())
        await store.fail("w", [Failure(chunks[1].id, "400 INVALID_ARGUMENT: bad")])
        await store.release("w", [c.id for c in chunks])
        status = await store.status()
        assert (status.pending, status.failed, status.in_progress) == (3, 1, 0)
        pending = await store.claim("w", 10, 60, ClaimFilter())
        assert chunks[1].id not in {c.id for c in pending}
        started = await store.server_time()
        failed = await store.claim("w", 10, 60, ClaimFilter(mode=ClaimMode.FAILED, failed_before=started))
        assert [c.id for c in failed] == [chunks[1].id]
        assert failed[0].attempts == 1
        errors = await store.recent_errors()
        assert errors[0].error == "400 INVALID_ARGUMENT: bad" and errors[0].chunks == 1
    finally:
        await store.aclose()


async def test_dimension_mismatch_is_a_clear_error_at_start(database_url: str) -> None:
    await seed_chunks(database_url, {"d": ["a"]}, dimensions=3)
    settings = load_settings(env={"DATABASE_URL": database_url, "EMBEDDING_PROVIDER": "local"})
    with pytest.raises(SchemaMismatchError) as caught:
        await open_store(settings)
    message = str(caught.value)
    assert "EMBEDDING_DIMENSIONS is 768" in message and "vector(3)" in message and "EMBEDDING_DIMENSIONS=3" in message


def test_check_dimensions_accepts_an_undeclared_column() -> None:
    from modules.stores.base import ColumnInfo

    settings = load_settings(env={"EMBEDDING_PROVIDER": "local"})
    check_dimensions(settings, ColumnInfo(None, "text", "text"))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CHUNKS_TABLE", "chunks; DROP TABLE x"),
        ("DOCUMENTS_TABLE", 'docs"'),
        ("CHUNKS_EMBEDDING_COLUMN", "embedding vector"),
        ("DB_SCHEMA", "1abc"),
    ],
)
def test_identifier_settings_must_be_plain_identifiers(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(env={name: value})
    assert str(caught.value).startswith(f"{name}: ")


async def test_direct_migration_revokes_the_queue_from_supabase_public_roles(database_url: str) -> None:
    # On a Supabase database reached by DATABASE_URL, default privileges would let the anon key call
    # the queue functions over REST; the migration must take EXECUTE away from anon/authenticated.
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        for role in ("anon", "authenticated", "service_role"):
            exists = await (await conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))).fetchone()
            if not exists:
                await conn.execute(f"CREATE ROLE {role} NOLOGIN")
        await conn.execute("ALTER DEFAULT PRIVILEGES GRANT EXECUTE ON FUNCTIONS TO anon, authenticated")
    store = await _store(database_url)
    await store.aclose()
    rows = await fetch_all(
        database_url,
        "SELECT bool_or(has_function_privilege('anon', oid, 'execute')), "
        "bool_or(has_function_privilege('authenticated', oid, 'execute')), "
        "bool_and(has_function_privilege('service_role', oid, 'execute')), count(*) "
        "FROM pg_proc WHERE proname LIKE 'embq\\_%%'",
    )
    anon, authenticated, service, count = rows[0]
    assert (anon, authenticated, service) == (False, False, True) and count >= 10
