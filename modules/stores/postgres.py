"""ChunkStore on PostgreSQL + pgvector through psycopg 3 (async, pooled).

Works on any PostgreSQL with pgvector: the embedded default, a local server, or Supabase's
connection string. Every call is one short transaction; none is held open across an API call.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from pgvector.psycopg.vector import register_vector_info
from psycopg.rows import TupleRow, dict_row
from psycopg.types import TypeInfo
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from modules.errors import (
    LiveModelChangedError,
    ModelRetiredError,
    SchemaMismatchError,
    StoreError,
    StoreUnavailableError,
)
from modules.logs import get_logger
from modules.settings import TableNames
from modules.stores.base import (
    BatchJob,
    BatchJobSummary,
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
    ModelMigrationRow,
    QueueStatus,
    RepairResult,
    RepairRow,
    RetryRule,
    SavedDocument,
    SaveMode,
    SearchHit,
    TableAccess,
    TextToEmbed,
)
from modules.stores.migrations import upgrade
from modules.stores.ops_queries import OperationsQueries, queue_status
from modules.stores.rows import batch_job, batch_job_summary, model_migration
from modules.stores.sql_templates import (
    EXTENSION_FILE,
    HOST_TABLES_FILE,
    SqlContext,
    named_queries,
    quote_identifier,
    read_sql_file,
    render,
)

log = get_logger(__name__)
AConn = psycopg.AsyncConnection[TupleRow]
_MIGRATION_LOCK = 0x656D6271  # "embq": serializes concurrent migrations from several workers
_LOCK_TIMEOUT_SECONDS = 5
_UNREACHABLE_WAIT = 2.0  # seconds to wait for a connection while the server is known to be unreachable
# The statements a model migration's shadow view runs in place of the live column's (queries.sql).
_SHADOW_STATEMENTS = (
    "claim",
    "complete",
    "fail",
    "renew_leases",
    "lease_owners",
    "release",
    "status",
    "batch_claim",
)


def transaction_pooler(conninfo: str) -> bool:
    """Whether the connection goes through a transaction-mode pooler (no prepared statements, no LISTEN)."""
    return _needs_no_prepare(conninfo)


def _needs_no_prepare(conninfo: str) -> bool:
    # Transaction-mode poolers (Supabase's Supavisor on 6543, pgbouncer) can't keep prepared statements.
    return ":6543" in conninfo or "pooler.supabase.com" in conninfo or "pgbouncer=true" in conninfo


class PostgresStore(OperationsQueries):
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
        self._vector_schema = "public"  # where pgvector is: read by the migration
        self._vector_type = "public.vector"  # schema-qualified once the migration has read where pgvector is
        self._queries: dict[str, str] = {}
        self._context: SqlContext | None = None
        self._is_view = False  # a shadow view shares its parent's pool and never closes it
        self._connect_kwargs: dict[str, Any] = {"connect_timeout": 10}
        self._unreachable = False  # the last attempt to reach the server failed
        if _needs_no_prepare(conninfo):
            self._connect_kwargs["prepare_threshold"] = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def prepare(self) -> ColumnInfo:
        info = await self._migrate()
        context = SqlContext(
            self._tables, self._dimensions, info.id_type, info.doc_id_type, vector_schema=self._vector_schema
        )
        self._context = context
        self._queries = named_queries(context)
        self._pool = AsyncConnectionPool(
            self._conninfo,
            kwargs=self._connect_kwargs,
            min_size=1,
            max_size=self._pool_size,
            open=False,
            configure=self._register_vector,
            check=AsyncConnectionPool.check_connection,  # a restarted server's dead sockets are replaced
            reconnect_timeout=60,
            timeout=10,  # wait this long for a connection before a write counts as failed (and is retried)
        )
        try:
            await self._pool.open(wait=True, timeout=15)
        except Exception as exc:
            raise StoreUnavailableError(f"could not open a connection pool to PostgreSQL: {_short(exc)}") from None
        return info

    async def _register_vector(self, conn: AConn) -> None:
        """Teach a new connection pgvector's type by its schema-qualified name: pgvector's own helper
        looks up a bare 'vector', which fails when its schema is off the connection's search_path."""
        # READ COMMITTED whatever the server's default: a search or write that waited for a model
        # migration's cut-over must see it (model_migration.sql refuses to run otherwise).
        await conn.set_isolation_level(psycopg.IsolationLevel.READ_COMMITTED)
        info = await TypeInfo.fetch(conn, self._vector_type)
        if info is None:
            raise StoreError(f"the type {self._vector_type} is not in this database (is pgvector installed?)")
        register_vector_info(conn, info)

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
                    # An upgrade's ALTER TABLE waits for every open transaction on the table, and every
                    # reader (the chatbot) queues behind it: give up after a few seconds rather than stall.
                    await conn.execute(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT_SECONDS}s'")
                    await conn.execute(render(read_sql_file(EXTENSION_FILE), SqlContext(self._tables, 0)).encode())
                    vector_schema = await _vector_schema(conn)
                    self._vector_schema = vector_schema
                    self._vector_type = f"{quote_identifier(vector_schema)}.vector"
                    base = SqlContext(self._tables, self._dimensions, vector_schema=vector_schema)
                    await self._ensure_host_tables(conn, base)
                    info = await _column_info(conn, self._tables)
                    typed = SqlContext(
                        self._tables, self._dimensions, info.id_type, info.doc_id_type, vector_schema=vector_schema
                    )
                    await upgrade(conn, typed)
            except psycopg.errors.LockNotAvailable:
                raise StoreError(
                    f"the schema upgrade could not lock {self._tables.chunks} within {_LOCK_TIMEOUT_SECONDS} s: "
                    "a long transaction is using it (see pg_stat_activity). Nothing was changed; run again when "
                    "it has ended"
                ) from None
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
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(
                "SELECT to_regclass(quote_ident(%s) || '.' || quote_ident(%s)) IS NULL AS missing", (t.schema, table)
            )
            row = await cursor.fetchone()
            if row and row["missing"]:
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
        if self._pool is not None and not self._is_view:
            await self._pool.close()
            self._pool = None

    def shadow(self) -> PostgresStore:
        """This store over the filling model migration's shadow queue (see sql/model_migration.sql):
        the same methods, running the next_* statements, on the same pool."""
        view = copy.copy(self)
        view._is_view = True
        view._queries = {**self._queries, **{n: self._queries[f"next_{n}"] for n in _SHADOW_STATEMENTS}}
        return view

    @property
    def sql_context(self) -> SqlContext:
        if self._context is None:
            raise StoreError("the store is not prepared; call prepare() first")
        return self._context

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AConn]:
        if self._pool is None:
            raise StoreError("the store is not prepared; call prepare() first")
        # Once the server is known to be unreachable, callers learn it in a moment, not after the pool's
        # whole wait: the retries, the releases and the last writes of a run that is losing its database
        # then add up to DB_PATIENCE, not to minutes.
        timeout = _UNREACHABLE_WAIT if self._unreachable else None
        try:
            async with self._pool.connection(timeout=timeout) as conn:
                self._unreachable = False
                yield conn
        except psycopg.OperationalError as exc:
            self._unreachable = True
            raise StoreUnavailableError(f"lost the connection to PostgreSQL: {_short(exc)}") from None
        except PoolTimeout as exc:
            self._unreachable = self._pool.get_stats().get("pool_size", 0) == 0  # none alive: not just busy
            raise StoreUnavailableError(f"no PostgreSQL connection available: {_short(exc)}") from None

    async def _fetch(self, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Run a named statement (queries.sql); rows are read by column name."""
        async with self._connection() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            try:
                await cursor.execute(self._queries[name].encode(), params)
            except psycopg.Error as exc:
                raise _model_error(exc) or exc from None
            return await cursor.fetchall()

    async def _one(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        rows = await self._fetch(name, params)
        return rows[0]

    async def _ops_rows(self, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        return await self._fetch(name, {k: Jsonb(v) if isinstance(v, dict) else v for k, v in params.items()})

    @property
    def conninfo(self) -> str:
        """The connection string (with its password): for a connection of its own, e.g. LISTEN."""
        return self._conninfo

    @property
    def tables(self) -> TableNames:
        return self._tables

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
                **where.retry.params(),
                "model": where.model_id,
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
        self,
        doc_id: str | None = None,
        *,
        model_id: str | None = None,
        dead_owners: Sequence[str] = (),
        retry: RetryRule | None = None,
    ) -> QueueStatus:
        row = await self._one(
            "status",
            {"doc_id": doc_id, "model": model_id, "dead_owners": list(dead_owners), **(retry or RetryRule()).params()},
        )
        return queue_status(row)

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

    # --- the Batch API route ------------------------------------------------------------------

    async def batch_claim(self, job_id: str, model_id: str, worker: str, limit: int, where: ClaimFilter) -> list[Chunk]:
        rows = await self._fetch(
            "batch_claim",
            {
                "job_id": job_id,
                "model": model_id,
                "worker": worker,
                "limit": limit,
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

    async def batch_prepared(
        self,
        job_id: str,
        chunk_ids: Sequence[str],
        content_hashes: Sequence[str],
        cache_keys: Sequence[str | None],
        tokens: int,
    ) -> None:
        await self._fetch(
            "batch_prepared",
            {
                "job_id": job_id,
                "chunk_ids": list(chunk_ids),
                "hashes": list(content_hashes),
                "cache_keys": list(cache_keys),
                "tokens": tokens,
            },
        )

    async def batch_submitted(self, job_id: str, name: str, remote_state: str | None) -> bool:
        row = await self._one("batch_submitted", {"job_id": job_id, "name": name, "remote_state": remote_state})
        return bool(row["done"])

    async def batch_take(
        self, worker: str, lease_seconds: int, limit: int, dead_owners: Sequence[str] = ()
    ) -> list[BatchJob]:
        rows = await self._fetch(
            "batch_take",
            {"worker": worker, "lease_seconds": lease_seconds, "limit": limit, "dead_owners": list(dead_owners)},
        )
        return [batch_job(r) for r in rows]

    async def batch_seen(self, job_id: str, worker: str, remote_state: str | None) -> None:
        await self._fetch("batch_seen", {"job_id": job_id, "worker": worker, "remote_state": remote_state})

    async def batch_finish(
        self, job_id: str, outcome: str, embedded: int, failed: int, error: str | None = None
    ) -> int:
        row = await self._one(
            "batch_finish",
            {"job_id": job_id, "outcome": outcome, "embedded": embedded, "failed": failed, "error": error},
        )
        return int(row["released"])

    async def batch_workers(self) -> list[str]:
        return [str(r["worker"]) for r in await self._fetch("batch_workers", {})]

    async def batch_jobs(self, recent: int = 10) -> list[BatchJobSummary]:
        return [batch_job_summary(r) for r in await self._fetch("batch_jobs", {"recent": recent})]

    # --- knowledge side --------------------------------------------------------------------------

    async def ingest_document(self, name: str, doc_type: str, chunks: Sequence[str], doc_id: str | None = None) -> str:
        row = await self._one(
            "ingest_document", {"name": name, "type": doc_type, "chunks": list(chunks), "doc_id": doc_id}
        )
        return str(row["doc_id"])

    async def save_document(
        self, name: str, doc_type: str, chunks: Sequence[str], mode: SaveMode = "replace"
    ) -> SavedDocument:
        r = await self._one("save_document", {"name": name, "type": doc_type, "chunks": list(chunks), "mode": mode})
        doc_id = None if r["doc_id"] is None else str(r["doc_id"])
        return SavedDocument(doc_id, str(r["outcome"]), int(r["kept"]), int(r["added"]), int(r["removed"]))

    async def table_access(self) -> list[TableAccess]:
        rows = await self._fetch("table_access", {})
        return [
            TableAccess(
                str(r["table_name"]),
                str(r["role_name"]),
                bool(r["can_select"]),
                bool(r["row_security"]),
                int(r["policies"]),
            )
            for r in rows
        ]

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

    async def search(
        self, query: npt.NDArray[np.float32], limit: int = 5, *, model_id: str | None = None
    ) -> list[SearchHit]:
        rows = await self._fetch(
            "search", {"query": np.asarray(query, dtype=np.float32), "limit": limit, "model": model_id}
        )
        return [
            SearchHit(
                str(r["chunk_id"]),
                str(r["doc_id"]),
                r["name"],
                int(r["chunk_index"]),
                str(r["content"]),
                float(r["distance"]),
                r["model"],
            )
            for r in rows
        ]

    # --- model migration -------------------------------------------------------------------------

    async def live_model(self) -> str | None:
        value = (await self._one("live_model", {}))["model"]
        return None if value is None else str(value)

    async def migration_current(self) -> ModelMigrationRow | None:
        rows = await self._fetch("migration_current", {})
        return model_migration(rows[0]) if rows else None

    async def migration_remaining_chars(self) -> int:
        return int((await self._one("migration_remaining_chars", {}))["chars"])


async def _vector_schema(conn: AConn) -> str:
    """The schema pgvector is installed in (the functions name its objects with it)."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(
        "SELECT n.nspname AS schema FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'vector'"
    )
    row = await cursor.fetchone()
    if row is None:
        raise StoreError("the pgvector extension is not installed on this server (CREATE EXTENSION vector)")
    return str(row["schema"])


async def _column_info(conn: AConn, tables: TableNames) -> ColumnInfo:
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(
        """
        SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, t.typname, a.atttypmod AS typmod
        FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
        WHERE a.attrelid = (quote_ident(%s) || '.' || quote_ident(%s))::regclass
          AND a.attnum > 0 AND NOT a.attisdropped
        """,
        (tables.schema, tables.chunks),
    )
    columns = {row["name"]: row for row in await cursor.fetchall()}
    missing = [
        c for c in ("id", "doc_id", "chunk_index", tables.content_column, tables.embedding_column) if c not in columns
    ]
    if missing:
        raise StoreError(f"table {tables.schema}.{tables.chunks} lacks the column(s) {', '.join(missing)}")
    vector = columns[tables.embedding_column]
    if vector["typname"] != "vector":
        raise StoreError(f"column {tables.chunks}.{tables.embedding_column} is {vector['type']}, not a pgvector vector")
    dims = int(vector["typmod"]) if int(vector["typmod"]) > 0 else None
    return ColumnInfo(dimensions=dims, id_type=str(columns["id"]["type"]), doc_id_type=str(columns["doc_id"]["type"]))


def _model_error(exc: psycopg.Error) -> Exception | None:
    """The port's error for the model checks of model_migration.sql (SQLSTATE EQ001-EQ003)."""
    if exc.sqlstate in ("EQ001", "EQ003"):
        return ModelRetiredError(_short(exc))
    if exc.sqlstate == "EQ002":
        return LiveModelChangedError(_short(exc))
    return None


def _short(exc: BaseException) -> str:
    """The first line of a driver error, which is the useful part and never holds the password."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
