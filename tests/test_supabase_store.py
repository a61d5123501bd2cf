"""The Supabase REST path only: the migration file, keys and roles, a missing migration, unreachable
URLs, retries of 5xx / timeouts / dropped connections, and exact vectors. supabase-py talks real HTTP
to the PostgREST stand-in (tests/postgrest_fake.py), which calls the real SQL on the embedded PostgreSQL."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator

import httpx
import numpy as np
import psycopg
import pytest
from postgrest.exceptions import APIError
from supabase import AsyncClientOptions, acreate_client

from modules.batch_embedding import BatchEmbeddingGenerator, content_hash
from modules.errors import SchemaMismatchError, StoreError, StoreUnavailableError
from modules.settings import Secret, TableNames, load_settings
from modules.stores import open_store
from modules.stores.base import ClaimFilter, Completed
from modules.stores.migration_file import SUPABASE_DIR, expected_files, supabase_files
from modules.stores.postgres import PostgresStore
from modules.stores.supabase import SupabaseStore, key_role
from tests.helpers import corpus, fetch_all
from tests.postgrest_fake import (
    ANON_KEY,
    SERVICE_KEY,
    PostgrestFake,
    apply_migration,
    ensure_supabase_roles,
    supabase_defaults,
)
from tests.test_store_behaviour import insert_rows

MIGRATION_HINT = "supabase/migrations/"


@pytest.fixture(scope="session")
def supabase_roles(pg_server: str) -> None:
    ensure_supabase_roles(pg_server)


@pytest.fixture
def supabase_db(database_url: str, supabase_roles: None) -> str:
    """A database set up as on Supabase: its default privileges, then the committed migration."""
    supabase_defaults(database_url)
    apply_migration(database_url)
    return database_url


@pytest.fixture
def fake(supabase_db: str) -> Iterator[PostgrestFake]:
    with PostgrestFake(supabase_db) as server:
        yield server


def make_store(url: str, key: str = SERVICE_KEY, **kwargs: float) -> SupabaseStore:
    options: dict[str, float] = {"timeout": 2.0, "attempts": 4, "backoff": 0.01, "max_backoff": 0.05}
    options.update(kwargs)
    return SupabaseStore(url, Secret(key), TableNames(), 768, **options)


def fake_jwt(role: str) -> str:
    def part(value: dict[str, str]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'role': role, 'iss': 'supabase'})}.c2lnbmF0dXJl"


async def prepare_fails(store: SupabaseStore) -> str:
    try:
        with pytest.raises(StoreError) as caught:
            await store.prepare()
    finally:
        await store.aclose()
    return str(caught.value)


# --- the migration file ----------------------------------------------------------------------------


def test_committed_migrations_are_the_rendered_ones() -> None:
    for name, text in expected_files().items():
        assert (SUPABASE_DIR / name).read_text(encoding="utf-8") == text, (
            f"supabase/migrations/{name} is out of date: run python -m modules.stores.migration_file"
        )
    assert [p.name for p in supabase_files()] == sorted(p.name for p in SUPABASE_DIR.glob("*.sql"))


async def test_migrations_define_exactly_what_the_postgres_store_defines(database_url: str) -> None:
    functions = """SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid) FROM pg_proc p
                   WHERE p.proname ~ '^embq_' ORDER BY 1"""
    apply_migration(database_url)
    from_files = await fetch_all(database_url, functions)
    store = PostgresStore(database_url, TableNames(), 768)
    await store.prepare()  # already at the latest version: nothing to do
    await store.aclose()
    assert len(from_files) >= 15
    assert await fetch_all(database_url, functions) == from_files


async def test_migration_is_idempotent_types_ids_and_lets_only_service_role_call(
    database_url: str, supabase_roles: None
) -> None:
    supabase_defaults(database_url)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("CREATE EXTENSION vector")
        await conn.execute("CREATE TABLE document_sources (id uuid PRIMARY KEY, name text, type text)")
        await conn.execute(
            "CREATE TABLE chunks (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), doc_id uuid REFERENCES "
            "document_sources(id), chunk_index int, content text, embedding vector(768))"
        )
        await conn.execute("INSERT INTO document_sources VALUES ('00000000-0000-0000-0000-00000000000a', 'a', 'pdf')")
        await conn.execute(
            "INSERT INTO chunks (doc_id, chunk_index, content) "
            "SELECT '00000000-0000-0000-0000-00000000000a', i, 'text ' || i FROM generate_series(0, 4) i"
        )
    apply_migration(database_url)
    apply_migration(database_url)
    rows = await fetch_all(
        database_url,
        """SELECT p.proname, has_function_privilege('anon', p.oid, 'execute'),
                  has_function_privilege('authenticated', p.oid, 'execute'),
                  has_function_privilege('service_role', p.oid, 'execute'),
                  EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0)
           FROM pg_proc p WHERE p.proname ~ '^embq_' ORDER BY 1""",
    )
    names = [r[0] for r in rows]
    for needed in ("embq_claim", "embq_complete", "embq_status", "embq_repair_apply", "embq_server_time"):
        assert needed in names
    assert all(r[1:] == (False, False, True, False) for r in rows), rows

    with PostgrestFake(database_url) as server:
        store = make_store(server.url)
        try:
            info = await store.prepare()
            assert (info.dimensions, info.id_type, info.doc_id_type) == (768, "uuid", "uuid")
            chunks = await store.claim("w", 10, 60, ClaimFilter(doc_id="00000000-0000-0000-0000-00000000000a"))
            assert [c.chunk_index for c in chunks] == [0, 1, 2, 3, 4]
            vector = np.full(768, 1 / np.sqrt(768), dtype=np.float32)
            results = [Completed(c.id, vector, content_hash(c.content)) for c in chunks]
            assert (await store.complete("w", "m@768", results)).written == 5
            assert not await store.document_exists("not-a-uuid")
        finally:
            await store.aclose()


async def test_migration_applies_on_a_postgresql_without_supabase_roles(database_url: str) -> None:
    texts = [path.read_text(encoding="utf-8") for path in supabase_files()]
    for role in ("service_role", "authenticated", "anon"):  # names no cluster has
        texts = [t.replace(f"'{role}'", f"'no_such_{role}'").replace(f'"{role}"', f'"no_such_{role}"') for t in texts]
    apply_migration(database_url, texts)
    apply_migration(database_url, texts)
    rows = await fetch_all(
        database_url,
        "SELECT count(*), count(*) FILTER (WHERE EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0)) "
        "FROM pg_proc p WHERE p.proname ~ '^embq_'",
    )
    assert rows[0][0] >= 10 and rows[0][1] == 0  # created, and PUBLIC may not call them


# --- keys and roles --------------------------------------------------------------------------------


async def test_anon_key_can_neither_claim_nor_read(fake: PostgrestFake, supabase_db: str) -> None:
    await insert_rows(supabase_db, {"doc": ["a", "b", "c"]})
    message = await prepare_fails(make_store(fake.url, ANON_KEY))
    assert "permission denied" in message and "anon" in message and "service-role key" in message
    assert ANON_KEY not in message

    http_client = httpx.AsyncClient()
    client = await acreate_client(fake.url, ANON_KEY, options=AsyncClientOptions(httpx_client=http_client))
    calls = {
        "embq_claim": {"p_worker": "thief", "p_limit": 10, "p_lease_seconds": 600},
        "embq_status": {},
        "embq_status_by_document": {},
        "embq_complete": {"p_worker": "x", "p_model": "x", "p_ids": [], "p_vectors": [], "p_hashes": []},
        "embq_complete_v2": {"p_worker": "x", "p_model": "x", "p_ids": [], "p_vectors": [], "p_hashes": []},
        "embq_complete_v3": {"p_worker": "x", "p_model": "x", "p_ids": [], "p_vectors": [], "p_hashes": []},
        "embq_next_claim": {"p_worker": "thief", "p_limit": 10, "p_lease_seconds": 600},
        "embq_live_model": {},
        "embq_claim_v2": {"p_worker": "thief", "p_limit": 10, "p_lease_seconds": 600},
        "embq_status_v2": {},
        "embq_claim_v3": {"p_worker": "thief", "p_limit": 10, "p_lease_seconds": 600, "p_mode": "due"},
        "embq_status_v3": {},
        "embq_runs_recent": {},
        "embq_alerts_list": {},
        "embq_run_record": {
            "p_kind": "run",
            "p_worker": "x",
            "p_scope": "pending",
            "p_doc_id": None,
            "p_run_limit": None,
            "p_seconds": 1,
            "p_runs": 1,
            "p_embedded": 0,
            "p_failed": 0,
            "p_cache_hits": 0,
            "p_api_calls": 0,
            "p_rate_limited": 0,
            "p_tokens": 0,
            "p_cost_usd": None,
            "p_outcome": "ok",
            "p_exit_code": 0,
            "p_model": None,
        },
        "embq_lease_owners": {},
        "embq_repair_apply": {"p_model": "x", "p_dimensions": 768},
    }
    for function, params in calls.items():
        with pytest.raises(APIError) as caught:
            await client.rpc(function, params).execute()
        assert caught.value.code == "42501", function
    try:
        answer = await http_client.post(
            f"{fake.url}/rest/v1/rpc/embq_claim",
            json=calls["embq_claim"],
            headers={"apikey": ANON_KEY, "Authorization": f"Bearer {ANON_KEY}"},
        )
    finally:
        await http_client.aclose()
    assert answer.status_code == 401
    assert set(answer.json()) == {"code", "details", "hint", "message"}
    rows = await fetch_all(supabase_db, "SELECT count(*) FROM chunks WHERE embedding_lease_owner IS NOT NULL")
    assert rows[0][0] == 0


async def test_an_anon_jwt_is_refused_before_any_call(fake: PostgrestFake) -> None:
    assert key_role(fake_jwt("service_role")) == "service_role"
    assert key_role("sb_publishable_abc") == "anon"
    key = fake_jwt("anon")
    message = await prepare_fails(make_store(fake.url, key))
    assert "anon" in message and "service-role key" in message and key not in message
    assert fake.calls == []


async def test_a_wrong_key_says_so_without_showing_it(fake: PostgrestFake) -> None:
    key = "wrong-key-0123456789abcdef"
    message = await prepare_fails(make_store(fake.url, key))
    assert "SUPABASE_KEY" in message and "service-role key" in message and "401" in message
    assert key not in message


# --- setup errors ----------------------------------------------------------------------------------


async def test_migration_not_applied_names_the_file(database_url: str, supabase_roles: None) -> None:
    with PostgrestFake(database_url) as server:
        message = await prepare_fails(make_store(server.url))
        assert "migration is not applied" in message and MIGRATION_HINT in message and "PGRST202" in message
        env = {"SUPABASE_URL": server.url, "SUPABASE_KEY": SERVICE_KEY, "EMBEDDING_PROVIDER": "local"}
        with pytest.raises(StoreError) as caught:
            await open_store(load_settings(env=env))
        assert MIGRATION_HINT in str(caught.value)


async def test_an_unreachable_url_is_unavailable_and_a_wrong_one_is_explained(fake: PostgrestFake) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    store = make_store(f"http://127.0.0.1:{closed_port}")
    try:
        with pytest.raises(StoreUnavailableError) as caught:
            await store.prepare()
    finally:
        await store.aclose()
    assert "cannot reach Supabase" in str(caught.value) and "SUPABASE_URL" in str(caught.value)

    store = make_store("https://no-such-project.invalid")  # a name that never resolves
    try:
        with pytest.raises(StoreUnavailableError) as caught:
            await store.prepare()
    finally:
        await store.aclose()
    assert "cannot reach Supabase at https://no-such-project.invalid" in str(caught.value)

    message = await prepare_fails(make_store(f"{fake.url}/not-the-project-root"))
    assert "does not look like a Supabase project URL" in message

    fake.redirect_to("http://example.invalid")
    message = await prepare_fails(make_store(fake.url))
    assert "redirect" in message and "https://" in message


async def test_dimension_mismatch_is_found_through_the_rpc(database_url: str, supabase_roles: None) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("CREATE EXTENSION vector")
        await conn.execute("CREATE TABLE document_sources (id text PRIMARY KEY, name text, type text)")
        await conn.execute(
            "CREATE TABLE chunks (id text PRIMARY KEY, doc_id text, chunk_index int, content text, embedding vector(3))"
        )
    apply_migration(database_url)
    with PostgrestFake(database_url) as server:
        env = {"SUPABASE_URL": server.url, "SUPABASE_KEY": SERVICE_KEY, "EMBEDDING_PROVIDER": "local"}
        with pytest.raises(SchemaMismatchError) as caught:
            await open_store(load_settings(env=env))
    assert "vector(3)" in str(caught.value) and "EMBEDDING_DIMENSIONS=3" in str(caught.value)


# --- transient failures ----------------------------------------------------------------------------


@pytest.mark.slow  # over 1 s: the full tier only
async def test_a_503_burst_on_complete_is_retried_and_each_result_written_once(
    fake: PostgrestFake, supabase_db: str, base_env: dict[str, str]
) -> None:
    await insert_rows(supabase_db, corpus(50, docs=1))
    fake.fail_next(3, function="embq_complete_v3")  # a gateway refusing before the database is reached
    fake.fail_next(1, function="embq_complete_v3", after_commit=True)  # written, but the answer is lost
    store = make_store(fake.url)
    await store.prepare()
    env = {k: v for k, v in base_env.items() if k != "DATABASE_URL"}
    try:
        async with BatchEmbeddingGenerator(load_settings(env=env), store=store) as generator:
            stats = await generator.run()
            status = await generator.status()
    finally:
        await store.aclose()
    assert (stats.embedded, stats.failed, stats.skipped) == (50, 0, 0)
    assert (status.embedded, status.pending, status.in_progress) == (50, 0, 0)
    calls = fake.calls_to("embq_complete_v3")
    assert len(calls) == 5 + 4  # five batches, four of their answers lost
    assert sum(c.executed for c in calls) == 6  # the lost-answer write ran again, harmlessly
    rows = await fetch_all(supabase_db, "SELECT max(embedding_attempts), count(DISTINCT content_hash) FROM chunks")
    assert rows[0] == (0, 50)


async def test_timeouts_and_dropped_connections_are_retried_then_unavailable(fake: PostgrestFake) -> None:
    store = make_store(fake.url, timeout=0.4, attempts=3)
    try:
        await store.prepare()
        fake.hang_next(1, 1.5, function="embq_status_v3")  # past the client's timeout
        fake.hang_next(1, 0.0, function="embq_status_v3")  # the connection drops with no answer
        assert (await store.status()).total == 0
        assert len(fake.calls_to("embq_status_v3")) == 3

        fake.fail_next(5, status=503, function="embq_server_time")
        with pytest.raises(StoreUnavailableError) as caught:
            await store.server_time()
        assert "after 3 attempts" in str(caught.value) and "503" in str(caught.value)
        assert SERVICE_KEY not in str(caught.value)
    finally:
        await store.aclose()


async def test_vectors_round_trip_exactly_as_float32(fake: PostgrestFake, supabase_db: str) -> None:
    await insert_rows(supabase_db, {"doc": [f"text {i}" for i in range(8)]})
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((8, 768)).astype(np.float32)
    vectors[0] /= np.linalg.norm(vectors[0])
    vectors[1, :6] = [1e-38, -1e-38, 3.4028235e38, -0.0, 1.0000001, 123456.79]
    vectors[2] *= 1e-20
    store = make_store(fake.url)
    try:
        await store.prepare()
        chunks = await store.claim("w", 8, 60, ClaimFilter())
        results = [Completed(c.id, vectors[i], content_hash(c.content)) for i, c in enumerate(chunks)]
        assert (await store.complete("w", "m", results)).written == 8
    finally:
        await store.aclose()
    rows = await fetch_all(supabase_db, "SELECT chunk_index, embedding FROM chunks ORDER BY chunk_index")
    stored = np.stack([r[1].to_numpy() for r in rows])
    assert stored.dtype == np.float32
    assert np.array_equal(stored.view(np.uint32), vectors.view(np.uint32))  # bit for bit, -0.0 included


async def test_long_reports_are_read_in_pages_under_the_max_rows_cap(supabase_db: str) -> None:
    await insert_rows(supabase_db, {f"doc-{d:02d}": [f"text {d}"] for d in range(25)})
    with PostgrestFake(supabase_db, max_rows=10) as server:  # Supabase's "Max rows", made small
        store = make_store(server.url, page_size=10)
        try:
            await store.prepare()
            per_doc = await store.status_by_document(limit=1_000_000)
            assert [d.doc_id for d in per_doc] == [f"doc-{d:02d}" for d in range(25)]
            assert len(server.calls_to("embq_status_by_document")) == 3  # 10 + 10 + 5
            assert len(await store.status_by_document(limit=12)) == 12
            assert len(await store.repair_report("m@768", 768)) == 25
            assert len(await store.list_documents(limit=100)) == 25
            assert (await store.status()).total == 25  # counts are one row: never capped
        finally:
            await store.aclose()


async def test_a_service_role_without_the_grant_is_told_to_reapply_the_migration(
    fake: PostgrestFake, supabase_db: str
) -> None:
    with psycopg.connect(supabase_db, autocommit=True) as conn:
        conn.execute(
            "REVOKE EXECUTE ON FUNCTION embq_status_v3(text, text, text[], integer, double precision, double precision)"
            " FROM service_role"
        )
    store = make_store(fake.url)
    try:
        await store.prepare()
        with pytest.raises(StoreError) as caught:
            await store.status()
    finally:
        await store.aclose()
    assert "403" in str(caught.value) and MIGRATION_HINT in str(caught.value) and "again" in str(caught.value)
