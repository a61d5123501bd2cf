"""Schema versions: a database that already has us moves to the current version by numbered migrations,
and ends exactly where a fresh install ends, with every chunk's state meaning what it meant.

Version 1 is frozen in tests/fixtures/schema_v1_released.sql: the file released on 2026-11-24 (the
Supabase migration, which also applies on a plain PostgreSQL)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from modules.errors import StoreError
from modules.settings import TableNames
from modules.stores.base import ClaimFilter, ClaimMode
from modules.stores.migration_file import MIGRATION_PATH
from modules.stores.migrations import latest_version, migrations
from modules.stores.postgres import PostgresStore
from tests.helpers import fetch_all
from tests.postgrest_fake import apply_migration

FROZEN_V1 = Path(__file__).parent / "fixtures" / "schema_v1_released.sql"
FROZEN_V1_SHA256 = "73d41e54b5871c1882f702ce6c3b018208efca82a520aefa149d4cce95e10e64"
DIMS = 768


def test_version_1_is_frozen_as_released() -> None:
    released = FROZEN_V1.read_bytes()
    assert hashlib.sha256(released).hexdigest() == FROZEN_V1_SHA256
    assert MIGRATION_PATH.read_bytes() == released  # Supabase projects applied exactly this, once
    assert [m.number for m in migrations()] == list(range(2, latest_version() + 1))


def apply_v1(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(FROZEN_V1.read_bytes())


async def prepared(url: str, *, create_tables: bool = False) -> PostgresStore:
    store = PostgresStore(url, TableNames(), DIMS, create_tables=create_tables)
    await store.prepare()
    return store


# --- the same schema by every road ------------------------------------------------------------------

CATALOG = {
    "columns": """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid)
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY 1, 2""",
    "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1",
    "functions": """
        SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid),
               has_function_privilege('anon', p.oid, 'execute'),
               has_function_privilege('authenticated', p.oid, 'execute'),
               has_function_privilege('service_role', p.oid, 'execute'),
               EXISTS (SELECT 1 FROM aclexplode(p.proacl) x WHERE x.grantee = 0)
        FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace AND p.proname ~ '^embq_' ORDER BY 1""",
    "tables": """
        SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
               has_table_privilege('anon', c.oid, 'select'), has_table_privilege('authenticated', c.oid, 'select'),
               has_table_privilege('service_role', c.oid, 'select')
        FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' ORDER BY 1""",
    "policies": "SELECT tablename, policyname, roles::text, cmd, qual FROM pg_policies ORDER BY 1, 2",
    "triggers": "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1",
    "versions": "SELECT version, name FROM embq_migrations ORDER BY 1",
}


async def catalog(url: str) -> dict[str, list[tuple[Any, ...]]]:
    return {name: await fetch_all(url, sql) for name, sql in CATALOG.items()}


@pytest.fixture
def second_database(pg_server: str) -> Any:
    from tests.helpers import with_database

    names = []

    def make() -> str:
        import uuid

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        names.append(name)
        return with_database(pg_server, name)

    yield make
    with psycopg.connect(pg_server, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def supabase_roles_here(pg_server: str) -> None:
    from tests.postgrest_fake import ensure_supabase_roles

    ensure_supabase_roles(pg_server)


async def test_fresh_install_and_every_upgrade_road_end_in_the_same_schema(
    database_url: str, second_database: Any, supabase_roles_here: None
) -> None:
    fresh = database_url
    await (await prepared(fresh, create_tables=True)).aclose()

    upgraded = second_database()  # version 1 as released, then the program upgrades it at start
    apply_v1(upgraded)
    await (await prepared(upgraded)).aclose()

    pushed = second_database()  # version 1, then every generated Supabase file, as `supabase db push` does
    apply_migration(pushed)

    want = await catalog(fresh)
    assert want["versions"] == [(1, "released"), *((m.number, m.name) for m in migrations())]
    for road in (upgraded, pushed):
        got = await catalog(road)
        for part in CATALOG:
            assert got[part] == want[part], f"{part} differs from a fresh install"


async def test_migrations_are_idempotent(database_url: str, supabase_roles_here: None) -> None:
    apply_migration(database_url)
    before = await catalog(database_url)
    apply_migration(database_url)  # a Supabase user applying a version the program already applied
    await (await prepared(database_url)).aclose()
    assert await catalog(database_url) == before


# --- nothing lost, every state keeps its meaning --------------------------------------------------

STATES = {
    "pending": "未処理のチャンクです。",
    "leased": "いま処理中のチャンクです。",
    "stale": "止まったワーカーのチャンクです。",
    "failed": "失敗したチャンクです。",
    "embedded": "埋め込み済みのチャンクです。",
}


def fill_every_state(url: str) -> None:
    vector = np.full(DIMS, 1 / np.sqrt(DIMS), dtype=np.float32)
    literal = "[" + ",".join(str(v) for v in vector) + "]"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO document_sources (id, name, type) VALUES ('doc-1', '規程.md', 'md')")
        for index, (state, text) in enumerate(STATES.items()):
            conn.execute(
                "INSERT INTO chunks (id, doc_id, chunk_index, content) VALUES (%s, 'doc-1', %s, %s)",
                (state, index, text),
            )
        conn.execute(
            "UPDATE chunks SET embedding_lease_owner = 'host:1:live', "
            "embedding_lease_expires_at = now() + interval '1 hour' WHERE id = 'leased'"
        )
        conn.execute(
            "UPDATE chunks SET embedding_lease_owner = 'host:2:dead', "
            "embedding_lease_expires_at = now() - interval '1 hour' WHERE id = 'stale'"
        )
        conn.execute(
            "UPDATE chunks SET embedding_attempts = 2, embedding_error = '400 INVALID_ARGUMENT: bad', "
            "embedding_failed_at = now() - interval '1 day' WHERE id = 'failed'"
        )
        conn.execute(
            "UPDATE chunks SET embedding = %s::vector, embedding_model = 'gemini-embedding-001@768', "
            "content_hash = encode(sha256(convert_to(content, 'UTF8')), 'hex'), embedded_at = now() "
            "WHERE id = 'embedded'",
            (literal,),
        )
        conn.execute(
            "INSERT INTO chunks_embedding_cache (cache_key, model, embedding, hits) "
            "VALUES ('key-1', 'gemini-embedding-001@768', %s::vector, 3)",
            (literal,),
        )


V1_COLUMNS = (
    "id, doc_id, chunk_index, content, embedding::text, embedding_attempts, embedding_error, embedding_failed_at, "
    "embedding_model, content_hash, embedded_at, embedding_lease_owner, embedding_lease_expires_at"
)


async def test_an_existing_v1_database_keeps_every_chunk_and_its_meaning(database_url: str) -> None:
    apply_v1(database_url)
    fill_every_state(database_url)
    rows_before = await fetch_all(database_url, f"SELECT {V1_COLUMNS} FROM chunks ORDER BY id")
    cache_before = await fetch_all(
        database_url, "SELECT cache_key, model, embedding::text, hits FROM chunks_embedding_cache"
    )

    store = await prepared(database_url)
    try:
        assert await fetch_all(database_url, f"SELECT {V1_COLUMNS} FROM chunks ORDER BY id") == rows_before
        assert (
            await fetch_all(database_url, "SELECT cache_key, model, embedding::text, hits FROM chunks_embedding_cache")
            == cache_before
        )
        status = await store.status()
        assert (status.total, status.embedded, status.failed, status.in_progress) == (5, 1, 1, 1)
        assert status.pending == 2 and status.stale_leases == 1  # the dead worker's chunk waits to be taken
        claimed = await store.claim("new-worker", 10, 60, ClaimFilter())
        assert sorted(c.id for c in claimed) == ["pending", "stale"]
        retried = await store.claim("new-worker", 10, 60, ClaimFilter(mode=ClaimMode.FAILED))
        assert [(c.id, c.attempts) for c in retried] == [("failed", 2)]
        assert set(await store.cached_vectors(["key-1"])) == {"key-1"}
    finally:
        await store.aclose()
    versions = await fetch_all(database_url, "SELECT version FROM embq_migrations ORDER BY 1")
    assert [v[0] for v in versions] == list(range(1, latest_version() + 1))


async def test_workers_starting_at_once_upgrade_once(database_url: str) -> None:
    apply_v1(database_url)
    fill_every_state(database_url)
    stores = await asyncio.gather(*(prepared(database_url) for _ in range(4)))
    for store in stores:
        await store.aclose()
    rows = await fetch_all(database_url, "SELECT version, count(*) FROM embq_migrations GROUP BY 1 ORDER BY 1")
    assert rows == [(v, 1) for v in range(1, latest_version() + 1)]


async def test_a_database_newer_than_this_program_is_left_alone(database_url: str) -> None:
    await (await prepared(database_url, create_tables=True)).aclose()
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("INSERT INTO embq_migrations (version, name) VALUES (999, 'from_the_future')")
    store = await prepared(database_url)  # an older worker during a rolling upgrade keeps running
    try:
        assert (await store.status()).total == 0
    finally:
        await store.aclose()


@pytest.mark.slow  # over 1 s: the full tier only
async def test_an_upgrade_blocked_by_a_long_transaction_gives_up_and_changes_nothing(database_url: str) -> None:
    apply_v1(database_url)
    fill_every_state(database_url)
    async with await psycopg.AsyncConnection.connect(database_url) as reader:
        await reader.execute("SELECT count(*) FROM chunks")  # an open transaction, as a long report would hold
        started = asyncio.get_running_loop().time()
        with pytest.raises(StoreError, match="could not lock chunks") as caught:
            await prepared(database_url)
        assert asyncio.get_running_loop().time() - started < 30  # gave up; the chatbot's readers were not queued
        assert "pg_stat_activity" in str(caught.value)
        await reader.rollback()
    # Nothing half-done: version 2's table of versions was rolled back with the rest.
    assert await fetch_all(database_url, "SELECT to_regclass('embq_migrations') IS NULL") == [(True,)]
    await (await prepared(database_url)).aclose()  # and once it has ended, the upgrade goes through
