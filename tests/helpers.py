"""Helpers the tests share: fill a database as an upload would, read it back, and make corpora."""

from __future__ import annotations

from typing import Any

import psycopg

TEST_API_KEY = "test-key-0123456789abcdef"


def with_database(uri: str, name: str) -> str:
    base, _, query = uri.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


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
    from pgvector.psycopg.vector import register_vector_info
    from psycopg.types import TypeInfo

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        found = await conn.execute(
            "SELECT quote_ident(n.nspname) || '.vector' FROM pg_extension e "
            "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'"
        )
        vector_type = await found.fetchone()
        if vector_type is not None:  # by its schema: pgvector's own helper wants it on the search_path
            register_vector_info(conn, await TypeInfo.fetch(conn, vector_type[0]))
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
