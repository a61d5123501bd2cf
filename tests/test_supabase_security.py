"""Supabase privileges, on the real embedded PostgreSQL with Supabase's roles (anon, authenticated,
service_role) and default privileges, the committed migration files applied in order as
`supabase db push` applies them:

- the tables the migration creates get row-level security with no policy for anon or authenticated,
  and their grants revoked; the service role (through the PostgREST stand-in) still does its work;
- a host's own tables are left exactly as they were, and embq_table_access() says anon can read them;
- with pgvector in `extensions`, as on Supabase, a `public.vector_dims` or `public.<=>` planted by a
  role that may create objects in public never runs when the service role calls the queue."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import psycopg
import pytest
from psycopg import sql

from modules.settings import Secret, TableNames
from modules.stores.base import ClaimFilter, ClaimMode, Completed
from modules.stores.postgres import PostgresStore
from modules.stores.supabase import SupabaseStore
from modules.text import content_hash
from tests.helpers import fetch_all
from tests.postgrest_fake import SERVICE_KEY, PostgrestFake, apply_migration, ensure_supabase_roles, supabase_defaults

API_ROLES = ("anon", "authenticated")
OUR_TABLES = (
    "chunks",
    "chunks_embedding_cache",
    "document_sources",
    "embq_alerts",
    "embq_batch_jobs",
    "embq_migrations",
    "embq_model_migrations",
    "embq_runs",
    "embq_workers",
)


@pytest.fixture
def roles(pg_server: str) -> None:
    ensure_supabase_roles(pg_server)


def supabase_store(url: str) -> SupabaseStore:
    return SupabaseStore(url, Secret(SERVICE_KEY), TableNames(), 768, timeout=5.0, attempts=1)


def unit_vector(dimensions: int = 768) -> str:
    vector = np.zeros(dimensions, dtype=np.float32)
    vector[0] = 1.0
    return "[" + ",".join(map(str, vector)) + "]"


def as_role(url: str, role: str, statement: str) -> str:
    """What happens when `role` runs `statement`: 'ok' or the SQLSTATE of the refusal."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        try:
            conn.execute(statement)
        except psycopg.Error as exc:
            return str(exc.sqlstate)
    return "ok"


async def test_a_fresh_push_leaves_no_table_open_to_the_public_roles(database_url: str, roles: None) -> None:
    supabase_defaults(database_url)  # Supabase grants every new table to anon and authenticated
    apply_migration(database_url)
    rows = await fetch_all(
        database_url,
        """SELECT c.relname, c.relrowsecurity,
                  has_table_privilege('anon', c.oid, 'select, insert, update, delete'),
                  has_table_privilege('authenticated', c.oid, 'select, insert, update, delete'),
                  (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid)
           FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' ORDER BY 1""",
    )
    assert [r[0] for r in rows] == list(OUR_TABLES)
    assert all(r[1:] == (True, False, False, 0) for r in rows), rows
    for role in API_ROLES:
        assert as_role(database_url, role, "SELECT count(*) FROM public.chunks") == "42501"
        assert as_role(database_url, role, "INSERT INTO public.document_sources (name) VALUES ('x')") == "42501"

    with PostgrestFake(database_url) as fake:  # the service role works as before (it bypasses RLS)
        store = supabase_store(fake.url)
        try:
            await store.prepare()
            saved = await store.save_document("規程.txt", "txt", ["一つ目の段落です。", "二つ目の段落です。"])
            assert saved.outcome == "created"
            assert (await store.status()).pending == 2
        finally:
            await store.aclose()


async def test_a_hosts_own_tables_are_left_as_they_were_and_reported_readable(database_url: str, roles: None) -> None:
    supabase_defaults(database_url)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("CREATE EXTENSION vector")
        await conn.execute(
            "CREATE TABLE document_sources (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text, type text)"
        )
        await conn.execute(
            "CREATE TABLE chunks (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), doc_id uuid REFERENCES "
            "document_sources(id), chunk_index int, content text, embedding vector(768))"
        )
    apply_migration(database_url)
    rows = await fetch_all(
        database_url,
        """SELECT c.relname, c.relrowsecurity, has_table_privilege('anon', c.oid, 'select')
           FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' ORDER BY 1""",
    )
    assert rows == [
        ("chunks", False, True),  # the host's: untouched
        ("chunks_embedding_cache", True, False),  # ours
        ("document_sources", False, True),
        ("embq_alerts", True, False),
        ("embq_batch_jobs", True, False),
        ("embq_migrations", True, False),
        ("embq_model_migrations", True, False),
        ("embq_runs", True, False),
        ("embq_workers", True, False),
    ]
    with PostgrestFake(database_url) as fake:
        store = supabase_store(fake.url)
        try:
            await store.prepare()
            access = {(a.table, a.role): a for a in await store.table_access()}
        finally:
            await store.aclose()
    assert access[("chunks", "anon")].readable and access[("chunks", "authenticated")].readable
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("ALTER TABLE chunks ENABLE ROW LEVEL SECURITY")
        await conn.execute("CREATE POLICY public_faq ON chunks FOR SELECT TO anon USING (chunk_index = 0)")
    store_pg = PostgresStore(database_url, TableNames(), 768)
    await store_pg.prepare()
    try:
        access = {(a.table, a.role): a for a in await store_pg.table_access()}
    finally:
        await store_pg.aclose()
    assert access[("chunks", "anon")].readable and access[("chunks", "anon")].policies == 1
    assert not access[("chunks", "authenticated")].readable


@pytest.fixture
def vector_in_extensions(database_url: str, pg_server: str, roles: None) -> Iterator[str]:
    """A database laid out as Supabase's: pgvector in the `extensions` schema, on the search_path, and a
    role that may create objects in public."""
    name = database_url.split("?")[0].rsplit("/", 1)[1]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA extensions")
        conn.execute("CREATE EXTENSION vector WITH SCHEMA extensions")
        conn.execute(
            sql.SQL('ALTER DATABASE {} SET search_path = "$user", public, extensions').format(sql.Identifier(name))
        )
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'intruder'").fetchone()
        if not exists:
            conn.execute("CREATE ROLE intruder NOLOGIN")
        conn.execute("GRANT USAGE, CREATE ON SCHEMA public TO intruder")
        conn.execute("GRANT USAGE ON SCHEMA extensions TO intruder")
        conn.execute("GRANT USAGE ON SCHEMA extensions TO service_role")
    supabase_defaults(database_url)
    apply_migration(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO document_sources (id, name, type) VALUES ('doc', '規程.md', 'md')")
        conn.execute(
            "INSERT INTO chunks (id, doc_id, chunk_index, content, embedding, embedding_model) "
            "VALUES ('c1', 'doc', 0, '締め日は毎月25日です。', %s::extensions.vector, 'other-model@768')",
            (unit_vector(),),
        )
        conn.execute("SET ROLE intruder")
        # Planted where the service role's calls would find them first, if public came before extensions.
        conn.execute(
            """CREATE FUNCTION public.vector_dims(extensions.vector) RETURNS integer LANGUAGE plpgsql AS $$
               BEGIN RAISE EXCEPTION 'planted public.vector_dims ran as %', current_user; END $$"""
        )
        conn.execute(
            """CREATE FUNCTION public.planted_distance(extensions.vector, extensions.vector)
               RETURNS double precision LANGUAGE plpgsql AS $$
               BEGIN RAISE EXCEPTION 'planted public.<=> ran as %', current_user; END $$"""
        )
        conn.execute(
            "CREATE OPERATOR public.<=> (LEFTARG = extensions.vector, RIGHTARG = extensions.vector, "
            "FUNCTION = public.planted_distance)"
        )
        # Better-matching overloads of built-ins: PostgreSQL prefers them wherever they sit on the path
        # (an integer argument fits make_interval(integer) better than pg_catalog's double precision).
        for planted in (
            "public.make_interval(secs integer) RETURNS interval",
            "public.convert_to(text, text) RETURNS bytea",
            "public.cardinality(text[]) RETURNS integer",
        ):
            conn.execute(
                f"CREATE FUNCTION {planted} LANGUAGE plpgsql AS $$ BEGIN BEGIN ALTER ROLE intruder SUPERUSER; "
                "EXCEPTION WHEN others THEN NULL; END; "
                f"RAISE EXCEPTION 'planted {planted.split(' RETURNS')[0]} ran as %', current_user; END $$"
            )
    yield database_url
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP OWNED BY intruder")


async def test_a_function_planted_in_public_never_runs_for_the_service_role(vector_in_extensions: str) -> None:
    url = vector_in_extensions
    with PostgrestFake(url) as fake:
        store = supabase_store(fake.url)
        try:
            await store.prepare()
            # Each would fail with "planted ... ran as service_role" if the planted code were found first.
            report = await store.repair_report("gemini-embedding-001@768", 768)  # calls vector_dims
            assert [(r.doc_id, r.wrong_model, r.wrong_dimension) for r in report] == [("doc", 1, 0)]
            query = np.zeros(768, dtype=np.float32)
            query[0] = 1.0
            hits = await store.search(query, 3)  # orders by <=>
            assert [h.chunk_id for h in hits] == ["c1"] and hits[0].distance == pytest.approx(0.0)
            claimed = await store.claim("w", 5, 60, ClaimFilter(mode=ClaimMode.PENDING))  # make_interval
            assert claimed == []  # c1 has a vector: nothing pending, but the claim ran
            await store.repair_apply("gemini-embedding-001@768", 768)  # c1 (another model) back to pending
            (chunk,) = await store.claim("w", 5, 60, ClaimFilter())
            written = await store.complete(
                "w", "gemini-embedding-001@768", [Completed(chunk.id, query, content_hash(chunk.content))]
            )
            assert written.written == 1  # convert_to (the content hash)
            saved = await store.save_document("新しい規程.md", "md", ["第一条。"], "replace")  # cardinality
            assert saved.outcome == "created"
        finally:
            await store.aclose()
    search_paths = await fetch_all(
        url, "SELECT DISTINCT array_to_string(proconfig, ',') FROM pg_proc WHERE proname ~ '^embq_'"
    )
    assert search_paths == [("search_path=pg_catalog, pg_temp",)]
    superuser = await fetch_all(url, "SELECT rolsuper FROM pg_roles WHERE rolname = 'intruder'")
    assert superuser == [(False,)]


async def test_an_upgrade_never_cuts_a_readers_access_to_production_tables(database_url: str, roles: None) -> None:
    """Tables version 1 created long ago hold the chatbot's data: an upgrade (any command starts one)
    must not switch row-level security on under its readers. Only tables still empty (a fresh install)
    are locked down."""
    from pathlib import Path

    frozen = Path(__file__).parent / "fixtures" / "schema_v1_released.sql"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(frozen.read_bytes())
        conn.execute("INSERT INTO document_sources (id, name, type) VALUES ('d', 'a.md', 'md')")
        conn.execute("INSERT INTO chunks (id, doc_id, chunk_index, content) VALUES ('c', 'd', 0, '本文')")
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'chatbot_reader'").fetchone():
            conn.execute("CREATE ROLE chatbot_reader NOLOGIN")
        conn.execute("GRANT USAGE ON SCHEMA public TO chatbot_reader")
        conn.execute("GRANT SELECT ON chunks, document_sources TO chatbot_reader")
    store = PostgresStore(database_url, TableNames(), 768)
    await store.prepare()  # the upgrade to the current version
    await store.aclose()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET ROLE chatbot_reader")
        assert conn.execute("SELECT count(*) FROM chunks").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM document_sources").fetchone() == (1,)
        conn.execute("RESET ROLE")
        flags = conn.execute(
            "SELECT relname, relrowsecurity FROM pg_class WHERE relname IN ('chunks', 'document_sources') ORDER BY 1"
        ).fetchall()
    assert flags == [("chunks", False), ("document_sources", False)]


async def test_setup_finds_pgvector_in_a_schema_off_the_search_path(database_url: str) -> None:
    """pgvector installed WITH SCHEMA extensions and a search_path without it (a hardened role, a pooler
    that resets it): the tables, the queue and search all name the type and operators by schema."""
    name = database_url.split("?")[0].rsplit("/", 1)[1]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA extensions")
        conn.execute("CREATE EXTENSION vector WITH SCHEMA extensions")
        conn.execute(sql.SQL("ALTER DATABASE {} SET search_path = public").format(sql.Identifier(name)))
    store = PostgresStore(database_url, TableNames(), 768, create_tables=True)
    await store.prepare()
    try:
        await store.save_document("規程.md", "md", ["締め日は毎月25日です。"], "replace")
        (chunk,) = await store.claim("w", 5, 60, ClaimFilter())
        vector = np.zeros(768, dtype=np.float32)
        vector[1] = 1.0
        written = await store.complete("w", "m@768", [Completed(chunk.id, vector, content_hash(chunk.content))])
        assert written.written == 1
        (hit,) = await store.search(vector, 3)
        assert hit.chunk_id == chunk.id and hit.distance == pytest.approx(0.0)
    finally:
        await store.aclose()
    column = await fetch_all(
        database_url,
        "SELECT format_type(atttypid, atttypmod), atttypid::regtype::text FROM pg_attribute "
        "WHERE attrelid = 'public.chunks'::regclass AND attname = 'embedding'",
    )
    assert column == [("extensions.vector(768)", "extensions.vector")]


async def test_the_pending_trigger_fires_for_a_host_role_that_may_not_call_the_queue(
    database_url: str, roles: None
) -> None:
    """A host whose signed-in users insert chunks themselves (their own grants on their own table) keeps
    working with the migration's trigger: PostgreSQL checks EXECUTE on a trigger function when the trigger is
    created, not when it fires, so revoking the queue's functions from `authenticated` does not stop the
    insert, and the watcher is notified."""
    supabase_defaults(database_url)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("CREATE EXTENSION vector")
        await conn.execute(
            "CREATE TABLE document_sources (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text, type text)"
        )
        await conn.execute(
            "CREATE TABLE chunks (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), doc_id uuid REFERENCES "
            "document_sources(id), chunk_index int, content text, embedding vector(768))"
        )
    apply_migration(database_url)
    assert as_role(database_url, "authenticated", "SELECT embq_status_v3()") == "42501"  # the queue: refused
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as listener:
        await listener.execute("LISTEN chunks_embq_pending")
        statement = (
            "WITH d AS (INSERT INTO document_sources (name, type) VALUES ('利用者の文書', 'txt') RETURNING id) "
            "INSERT INTO chunks (doc_id, chunk_index, content) SELECT d.id, 0, '利用者が書いた段落です。' FROM d"
        )
        assert as_role(database_url, "authenticated", statement) == "ok"
        got = [n async for n in listener.notifies(timeout=5, stop_after=1)]
    assert [n.channel for n in got] == ["chunks_embq_pending"]
    rows = await fetch_all(database_url, "SELECT embedding_queued_at IS NOT NULL FROM chunks")
    assert rows == [(True,)]
