"""ChunkStore on PostgreSQL + pgvector through psycopg 3 (async, pooled).

Works on any PostgreSQL with pgvector: the embedded default, a local server, or Supabase's
connection string. Every call is one short transaction; none is held open across an API call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from pgvector.psycopg import register_vector_async
from psycopg.rows import TupleRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from modules.errors import SchemaMismatchError, StoreError, StoreUnavailableError
from modules.logs import get_logger
from modules.settings import TableNames
from modules.stores.base import (
    CacheStats,
    Chunk,
    ClaimFilter,
    ColumnInfo,
    Completed,
    CompleteResult,
    DocumentStatus,
    DocumentSummary,
    ErrorGroup,
    Failure,
    LeaseOwner,
    QueueStatus,
    RepairResult,
    RepairRow,
    SearchHit,
    TextToEmbed,
)
from modules.stores.migrations import upgrade
from modules.stores.sql_templates import HOST_TABLES_FILE, SqlContext, named_queries, read_sql_file, render

log = get_logger(__name__)
AConn = psycopg.AsyncConnection[TupleRow]
_MIGRATION_LOCK = 0x656D6271  # "embq": serializes concurrent migrations from several workers


def _needs_no_prepare(conninfo: str) -> bool:
    # Transaction-mode poolers (Supabase's Supavisor on 6543, pgbouncer) can't keep prepared statements.
    return ":6543" in conninfo or "pooler.supabase.com" in conninfo or "pgbouncer=true" in conninfo


class PostgresStore:
    def __init__(
        self,
        conninfo: str,
        tables: TableNames,
        dimensions: int,
        *,
        pool_size: int = 4,
        create_tables: bool = False,
    ) -> None:
        self._conninfo = conninfo
        self._tables = tables
        self._dimensions = dimensions
        self._pool_size = max(2, pool_size)
        self._create_tables = create_tables  # the embedded database, or --setup
        self._pool: AsyncConnectionPool[AConn] | None = None
        self._queries: dict[str, str] = {}
        self._connect_kwargs: dict[str, Any] = {"connect_timeout": 10}
        if _needs_no_prepare(conninfo):
            self._connect_kwargs["prepare_threshold"] = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def prepare(self) -> ColumnInfo:
        info = await self._migrate()
        context = SqlContext(self._tables, self._dimensions, info.id_type, info.doc_id_type)
        self._queries = named_queries(context)
        self._pool = AsyncConnectionPool(
            self._conninfo,
            kwargs=self._connect_kwargs,
            min_size=1,
            max_size=self._pool_size,
            open=False,
            configure=register_vector_async,
            check=AsyncConnectionPool.check_connection,  # a restarted server's dead sockets are replaced
            reconnect_timeout=60,
            timeout=10,  # wait this long for a connection before a write counts as failed (and is retried)
        )
        try:
            await self._pool.open(wait=True, timeout=15)
        except Exception as exc:
            raise StoreUnavailableError(f"could not open a connection pool to PostgreSQL: {_short(exc)}") from None
        return info

    async def _migrate(self) -> ColumnInfo:
        """Bring the queue's schema to the current version, in one transaction under an advisory lock
        (see migrations.py), and check that the host tables and the queue's columns fit."""
        try:
            conn = await psycopg.AsyncConnection.connect(self._conninfo, **self._connect_kwargs)
        except psycopg.OperationalError as exc:
            raise StoreUnavailableError(f"cannot connect to PostgreSQL: {_short(exc)}") from None
        except psycopg.Error as exc:  # e.g. a malformed connection string
            raise StoreUnavailableError(f"DATABASE_URL can't be used: {_short(exc)}") from None
        async with conn:
            try:
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                    base = SqlContext(self._tables, self._dimensions)
                    await self._ensure_host_tables(conn, base)
                    info = await _column_info(conn, self._tables)
                    typed = SqlContext(self._tables, self._dimensions, info.id_type, info.doc_id_type)
                    await upgrade(conn, typed)
            except psycopg.errors.UndefinedFile as exc:
                raise StoreError(f"the pgvector extension is not installed on this server: {_short(exc)}") from None
            except psycopg.errors.InsufficientPrivilege as exc:
                raise StoreError(
                    f"the database user may not create the queue's columns or functions: {_short(exc)}. "
                    "Run the migration once as the owner (see README, 'Supabase')"
                ) from None
            except psycopg.Error as exc:
                raise StoreError(f"migration failed: {_short(exc)}") from None
        return info

    async def _ensure_host_tables(self, conn: AConn, context: SqlContext) -> None:
        """The host's tables must exist; only the embedded database and --setup may create them."""
        t = self._tables
        missing = []
        for setting, table in (("DOCUMENTS_TABLE", t.documents), ("CHUNKS_TABLE", t.chunks)):
            cursor = await conn.execute(
                "SELECT to_regclass(quote_ident(%s) || '.' || quote_ident(%s)) IS NULL", (t.schema, table)
            )
            row = await cursor.fetchone()
            if row and row[0]:
                missing.append((setting, table))
        if not missing:
            return
        if self._create_tables:
            await conn.execute(render(read_sql_file(HOST_TABLES_FILE), context).encode())
            return
        setting, table = next((m for m in missing if m[0] == "CHUNKS_TABLE"), missing[0])
        raise SchemaMismatchError(
            f"{setting}: the table {t.schema}.{table} does not exist in this database. Set {setting} "
            f"(and DB_SCHEMA) to your table, or create the tables once with: "
            "python batch_embedding_processor.py --setup"
        )

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AConn]:
        if self._pool is None:
            raise StoreError("the store is not prepared; call prepare() first")
        try:
            async with self._pool.connection() as conn:
                yield conn
        except psycopg.OperationalError as exc:
            raise StoreUnavailableError(f"lost the connection to PostgreSQL: {_short(exc)}") from None
        except PoolTimeout as exc:
            raise StoreUnavailableError(f"no PostgreSQL connection available: {_short(exc)}") from None

    async def _fetch(self, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Run a named statement (queries.sql); rows are read by column name."""
        async with self._connection() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(self._queries[name].encode(), params)
            return await cursor.fetchall()

    async def _one(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        rows = await self._fetch(name, params)
        return rows[0]

    # --- queue operations --------------------------------------------------------------------

    async def claim(self, worker: str, limit: int, lease_seconds: int, where: ClaimFilter) -> list[Chunk]:
        rows = await self._fetch(
            "claim",
            {
                "worker": worker,
                "limit": limit,
                "lease_seconds": lease_seconds,
                "mode": where.mode.value,
                "doc_id": where.doc_id,
                "failed_before": where.failed_before,
                "dead_owners": list(where.dead_owners),
            },
        )
        return [
            Chunk(
                str(r["id"]), str(r["doc_id"]), int(r["chunk_index"]), str(r["content"]), r["title"], int(r["attempts"])
            )
            for r in rows
        ]

    async def complete(self, worker: str, model_id: str, results: Sequence[Completed]) -> CompleteResult:
        if not results:
            return CompleteResult(0, 0)
        row = await self._one(
            "complete",
            {
                "worker": worker,
                "model": model_id,
                "ids": [r.chunk_id for r in results],
                "vectors": [np.asarray(r.vector, dtype=np.float32) for r in results],
                "hashes": [r.content_hash for r in results],
                "cache_keys": [r.cache_key for r in results],
            },
        )
        return CompleteResult(int(row["written"]), int(row["changed"]))

    async def cached_vectors(self, keys: Sequence[str]) -> dict[str, npt.NDArray[np.float32]]:
        if not keys:
            return {}
        rows = await self._fetch("cache_lookup", {"keys": list(keys)})
        return {str(r["cache_key"]): np.asarray(r["embedding"].to_numpy(), dtype=np.float32) for r in rows}

    async def cache_stats(self) -> CacheStats:
        row = await self._one("cache_stats", {})
        return CacheStats(int(row["entries"]), int(row["hits"]))

    async def text_to_embed(self, doc_id: str | None = None) -> TextToEmbed | None:
        row = await self._one("text_to_embed", {"doc_id": doc_id})
        return TextToEmbed(int(row["chunks"]), int(row["tokens"]))

    async def fail(self, worker: str, failures: Sequence[Failure]) -> int:
        if not failures:
            return 0
        row = await self._one(
            "fail",
            {"worker": worker, "ids": [f.chunk_id for f in failures], "errors": [f.error for f in failures]},
        )
        return int(row["recorded"])

    async def renew_leases(self, worker: str, chunk_ids: Sequence[str], lease_seconds: int) -> set[str]:
        if not chunk_ids:
            return set()
        rows = await self._fetch(
            "renew_leases", {"worker": worker, "ids": list(chunk_ids), "lease_seconds": lease_seconds}
        )
        return {str(r["id"]) for r in rows}

    async def lease_owners(self) -> list[LeaseOwner]:
        rows = await self._fetch("lease_owners", {})
        return [LeaseOwner(str(r["owner"]), int(r["chunks"]), r["expires_at"]) for r in rows]

    async def release(self, worker: str, chunk_ids: Sequence[str]) -> None:
        if chunk_ids:
            await self._fetch("release", {"worker": worker, "ids": list(chunk_ids)})

    async def status(
        self, doc_id: str | None = None, *, model_id: str | None = None, dead_owners: Sequence[str] = ()
    ) -> QueueStatus:
        row = await self._one("status", {"doc_id": doc_id, "model": model_id, "dead_owners": list(dead_owners)})
        return QueueStatus(**{k: int(v) for k, v in row.items()})

    async def status_by_document(self, limit: int = 50) -> list[DocumentStatus]:
        rows = await self._fetch("status_by_document", {"limit": limit})
        return [
            DocumentStatus(
                doc_id=str(r["doc_id"]),
                name=r["name"],
                **{k: int(r[k]) for k in ("total", "embedded", "pending", "failed", "in_progress")},
            )
            for r in rows
        ]

    async def recent_errors(self, limit: int = 10) -> list[ErrorGroup]:
        rows = await self._fetch("recent_errors", {"limit": limit})
        return [ErrorGroup(str(r["error"]), int(r["chunks"]), r["last_seen"]) for r in rows]

    async def document_exists(self, doc_id: str) -> bool:
        return bool((await self._one("document_exists", {"doc_id": doc_id}))["found"])

    async def document_name(self, doc_id: str) -> str | None:
        value = (await self._one("document_name", {"doc_id": doc_id}))["name"]
        return None if value is None else str(value)

    async def server_time(self) -> datetime:
        value = (await self._one("server_time", {}))["now"]
        assert isinstance(value, datetime)
        return value

    async def queue_columns(self) -> dict[str, str]:
        return {str(r["name"]): str(r["type"]) for r in await self._fetch("queue_columns", {})}

    # --- repair ------------------------------------------------------------------------------

    async def repair_report(
        self, model_id: str, dimensions: int, doc_id: str | None = None, dead_owners: Sequence[str] = ()
    ) -> list[RepairRow]:
        rows = await self._fetch(
            "repair_report",
            {"model": model_id, "dimensions": dimensions, "doc_id": doc_id, "dead_owners": list(dead_owners)},
        )
        return [
            RepairRow(
                doc_id=str(r["doc_id"]),
                name=r["name"],
                **{k: int(v) for k, v in r.items() if k not in ("doc_id", "name")},
            )
            for r in rows
        ]

    async def repair_apply(
        self,
        model_id: str,
        dimensions: int,
        doc_id: str | None = None,
        limit: int | None = None,
        dead_owners: Sequence[str] = (),
    ) -> RepairResult:
        row = await self._one(
            "repair_apply",
            {
                "model": model_id,
                "dimensions": dimensions,
                "doc_id": doc_id,
                "limit": limit,
                "dead_owners": list(dead_owners),
            },
        )
        return RepairResult(**{k: int(v) for k, v in row.items()})

    # --- knowledge side --------------------------------------------------------------------------

    async def ingest_document(self, name: str, doc_type: str, chunks: Sequence[str], doc_id: str | None = None) -> str:
        row = await self._one(
            "ingest_document", {"name": name, "type": doc_type, "chunks": list(chunks), "doc_id": doc_id}
        )
        return str(row["doc_id"])

    async def list_documents(self, limit: int = 100) -> list[DocumentSummary]:
        rows = await self._fetch("list_documents", {"limit": limit})
        return [
            DocumentSummary(
                str(r["doc_id"]), r["name"], r["type"], int(r["chunks"]), int(r["embedded"]), int(r["failed"])
            )
            for r in rows
        ]

    async def delete_document(self, doc_id: str) -> int | None:
        value = (await self._one("delete_document", {"doc_id": doc_id}))["removed"]
        return None if value is None else int(value)

    async def search(self, query: npt.NDArray[np.float32], limit: int = 5) -> list[SearchHit]:
        rows = await self._fetch("search", {"query": np.asarray(query, dtype=np.float32), "limit": limit})
        return [
            SearchHit(
                str(r["chunk_id"]),
                str(r["doc_id"]),
                r["name"],
                int(r["chunk_index"]),
                str(r["content"]),
                float(r["distance"]),
            )
            for r in rows
        ]


async def _column_info(conn: AConn, tables: TableNames) -> ColumnInfo:
    cursor = await conn.execute(
        """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typname, a.atttypmod
        FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
        WHERE a.attrelid = (quote_ident(%s) || '.' || quote_ident(%s))::regclass
          AND a.attnum > 0 AND NOT a.attisdropped
        """,
        (tables.schema, tables.chunks),
    )
    columns = {row[0]: row for row in await cursor.fetchall()}
    missing = [
        c for c in ("id", "doc_id", "chunk_index", tables.content_column, tables.embedding_column) if c not in columns
    ]
    if missing:
        raise StoreError(f"table {tables.schema}.{tables.chunks} lacks the column(s) {', '.join(missing)}")
    vector = columns[tables.embedding_column]
    if vector[2] != "vector":
        raise StoreError(f"column {tables.chunks}.{tables.embedding_column} is {vector[1]}, not a pgvector vector")
    dims = int(vector[3]) if int(vector[3]) > 0 else None
    return ColumnInfo(dimensions=dims, id_type=str(columns["id"][1]), doc_id_type=str(columns["doc_id"][1]))


def _short(exc: BaseException) -> str:
    """The first line of a driver error, which is the useful part and never holds the password."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
