"""The DDL of a model migration on PostgreSQL (sql/model_migration_ddl.sql), which only a database
connection can run: the REST API can neither add columns nor build an index concurrently.

- start: in one transaction, the shadow columns (nullable, no default: no row is rewritten), the
  shadow queue with every chunk in it, the trigger that queues chunks inserted or edited meanwhile,
  and the migration's row ('filling').
- cut-over: every index that uses the vector column gets a twin on the shadow column, built
  CONCURRENTLY (readers and writers carry on); if none of them is a vector index, an HNSW index
  (cosine) is built too. Then one transaction, under the cut-over lock and a short lock_timeout
  (retried): the old columns are dropped (their indexes with them), the shadow ones renamed into
  their place, the twins renamed to the old indexes' names, the migration row says 'cut_over'.
- abort: in one transaction, everything start made is dropped; the vector column was never touched.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from modules.errors import MigrationError, StoreError, StoreUnavailableError
from modules.logs import get_logger
from modules.stores.postgres import PostgresStore
from modules.stores.sql_templates import SqlContext, named_queries, quote_identifier

log = get_logger(__name__)
DDL_FILE = "model_migration_ddl.sql"
PGVECTOR_INDEX_LIMIT = 2000  # pgvector indexes (hnsw, ivfflat) take vectors of at most 2,000 dimensions
_SWAP_ATTEMPTS = 6
_LOCK_TIMEOUT = "5s"


@dataclass(frozen=True)
class IndexTwin:
    """An index to build on the shadow column before the cut-over, and the name it takes after."""

    final_name: str  # the old index's name (or a new one for the HNSW index we add)
    twin_name: str
    definition: str  # CREATE INDEX CONCURRENTLY ... on the shadow column
    vector_index: bool  # hnsw or ivfflat


@dataclass(frozen=True)
class FillingMigration:
    id: str
    source_model: str | None
    target_model: str


class MigrationSchema:
    """A model migration's DDL against one PostgresStore's tables."""

    def __init__(self, store: PostgresStore, dimensions: int | None = None) -> None:
        base = store.sql_context
        self._context = SqlContext(
            base.tables, dimensions or base.dimensions, base.id_type, base.doc_id_type, base.vector_schema
        )
        self._ddl = named_queries(self._context, DDL_FILE)
        self._conninfo = store.conninfo
        self._values = self._context.values()

    # --- start and abort ---------------------------------------------------------------------

    async def start(self, migration_id: str, source_model: str | None, target_model: str) -> None:
        async with await self._connect() as conn, conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT}'")
            if await self._filling(conn) is not None:
                raise MigrationError("a model migration is already filling")
            for name in (
                "start_columns",
                "start_queue",
                "start_queue_index",
                "start_queue_security",
                "start_trigger_function",
                "start_trigger_grants",
                "start_trigger",
                "start_enqueue_all",
            ):
                await conn.execute(self._ddl[name].encode())
            await conn.execute(
                self._ddl["start_record"].encode(),
                {"id": migration_id, "source": source_model, "target": target_model},
            )

    async def abort(self) -> FillingMigration:
        async with await self._connect() as conn, conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT}'")
            await conn.execute(self._ddl["swap_lock"].encode())
            filling = await self._filling(conn)
            if filling is None:
                raise MigrationError("no model migration is filling: there is nothing to abort")
            await conn.execute(self._ddl["abort_jobs"].encode())
            await conn.execute(self._ddl["drop_shadow"].encode())
            await conn.execute(self._ddl["record_abort"].encode(), {"id": filling.id})
        return filling

    # --- before the cut-over -----------------------------------------------------------------

    async def filling(self) -> FillingMigration | None:
        async with await self._connect() as conn:
            return await self._filling(conn)

    async def jobs_in_flight(self) -> int:
        return int((await self._one("jobs_in_flight"))["jobs"])

    async def requeue_stale(self) -> int:
        """Shadow vectors whose text changed since they were made go back to the shadow queue."""
        async with await self._connect() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(self._ddl["stale_shadow"].encode())
            return len(await cursor.fetchall())

    async def unfilled(self) -> int:
        return int((await self._one("unfilled"))["chunks"])

    async def dependents(self) -> list[str]:
        """Views, triggers, constraints or policies on the columns the cut-over drops."""
        async with await self._connect() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(self._ddl["column_dependents"].encode())
            return [str(r["object"]) for r in await cursor.fetchall()]

    async def vector_indexes(self) -> list[str]:
        """The hnsw / ivfflat indexes on the vector column (their names)."""
        return [t.final_name for t in await self.index_plan() if t.vector_index]

    async def index_plan(self) -> list[IndexTwin]:
        """A twin on the shadow column for each index on the vector column, plus HNSW if none is one."""
        async with await self._connect() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(self._ddl["column_indexes"].encode())
            rows = await cursor.fetchall()
        twins = [self._twin(str(r["name"]), str(r["definition"]), str(r["method"])) for r in rows]
        if not any(t.vector_index for t in twins) and self._context.dimensions <= PGVECTOR_INDEX_LIMIT:
            v = self._values
            final = f"{self._context.tables.chunks[:40]}_{self._context.tables.embedding_column[:12]}_hnsw_idx"
            twin = f"{final[:50]}_embq_next"
            twins.append(
                IndexTwin(
                    final_name=final,
                    twin_name=twin,
                    definition=(
                        f"CREATE INDEX CONCURRENTLY {quote_identifier(twin)} ON {v['chunks']} USING hnsw "
                        f"({v['embedding_next']} {v['vector_schema']}.vector_cosine_ops)"
                    ),
                    vector_index=True,
                )
            )
        return twins

    def _twin(self, name: str, definition: str, method: str) -> IndexTwin:
        twin = f"{name[:50]}_embq_next"
        head, using, tail = definition.partition(" USING ")
        if not using:
            raise MigrationError(f"can't read the definition of the index {name}: {definition}")
        column = re.escape(self._context.tables.embedding_column)
        tail = re.sub(rf'(?<![\w."]){column}(?![\w"])|"{column}"', self._values["embedding_next"], tail)
        head = re.sub(
            r"^CREATE (UNIQUE )?INDEX \S+ ON ",
            lambda m: f"CREATE {m.group(1) or ''}INDEX CONCURRENTLY {quote_identifier(twin)} ON ",
            head,
        )
        return IndexTwin(name, twin, f"{head} USING {tail}", method in ("hnsw", "ivfflat"))

    async def build_index(self, twin: IndexTwin) -> None:
        """Build one twin concurrently (a failed earlier build leaves an invalid index: dropped first)."""
        async with await self._connect(autocommit=True) as conn:
            await conn.execute("SET statement_timeout = 0")
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(self._ddl["index_state"].encode(), {"name": twin.twin_name})
            state = await cursor.fetchone()
            if state is not None and state["valid"]:
                return
            if state is not None:
                await conn.execute(
                    f"DROP INDEX CONCURRENTLY IF EXISTS {self._values['schema']}.{quote_identifier(twin.twin_name)}"
                )
            try:
                await conn.execute(twin.definition.encode())
            except psycopg.Error as exc:
                raise MigrationError(f"building the index {twin.twin_name} failed: {_first_line(exc)}") from None

    async def agreement(self, sample: int) -> tuple[int, int]:
        """(queries, kept): sampled chunks, and those whose nearest neighbour by the live model's
        vectors is among the five nearest by the new model's."""
        async with await self._connect() as conn:
            await conn.execute("SET statement_timeout = 0")
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(self._ddl["agreement"].encode(), {"sample": sample})
            row = await cursor.fetchone()
        return (int(row["queries"]), int(row["kept"])) if row else (0, 0)

    # --- the cut-over ------------------------------------------------------------------------

    async def swap(self, migration_id: str, twins: list[IndexTwin], agreement: float | None, sample: int) -> None:
        """The one transaction of the cut-over, retried while a long transaction holds the table."""
        for attempt in range(1, _SWAP_ATTEMPTS + 1):
            try:
                await self._swap_once(migration_id, twins, agreement, sample)
                return
            except psycopg.errors.LockNotAvailable:
                if attempt == _SWAP_ATTEMPTS:
                    raise MigrationError(
                        f"the cut-over could not lock {self._context.tables.chunks} in {_SWAP_ATTEMPTS} tries: "
                        "a long transaction is using it (see pg_stat_activity). Nothing changed; run "
                        "--migrate-cutover again"
                    ) from None
                log.warning("🔒 テーブルのロックを取得できませんでした。%d秒後に再試行します", attempt * 2)
                await asyncio.sleep(attempt * 2)

    async def _swap_once(self, migration_id: str, twins: list[IndexTwin], agreement: float | None, sample: int) -> None:
        schema = self._values["schema"]
        async with await self._connect() as conn, conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT}'")
            await conn.execute(self._ddl["swap_lock"].encode())
            filling = await self._filling(conn)
            if filling is None or filling.id != migration_id:
                raise MigrationError("the migration is no longer filling (aborted or cut over meanwhile)")
            await conn.execute(self._ddl["swap_columns"].encode())
            for twin in twins:
                await conn.execute(
                    f"ALTER INDEX {schema}.{quote_identifier(twin.twin_name)} "
                    f"RENAME TO {quote_identifier(twin.final_name)}"
                )
            await conn.execute(self._ddl["swap_queue_state"].encode())
            await conn.execute(self._ddl["swap_drop_queue"].encode())
            await conn.execute(
                self._ddl["swap_record"].encode(), {"id": migration_id, "agreement": agreement, "sample": sample}
            )

    # --- plumbing ----------------------------------------------------------------------------

    async def _connect(self, *, autocommit: bool = False) -> psycopg.AsyncConnection[Any]:
        try:
            return await psycopg.AsyncConnection.connect(self._conninfo, autocommit=autocommit, connect_timeout=10)
        except psycopg.OperationalError as exc:
            raise StoreUnavailableError(f"cannot connect to PostgreSQL: {_first_line(exc)}") from None

    async def _one(self, name: str) -> dict[str, Any]:
        async with await self._connect() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(self._ddl[name].encode())
            row = await cursor.fetchone()
            if row is None:
                raise StoreError(f"{name} gave no row")
            return row

    async def _filling(self, conn: psycopg.AsyncConnection[Any]) -> FillingMigration | None:
        cursor = conn.cursor(row_factory=dict_row)
        await cursor.execute(self._ddl["filling"].encode())
        row = await cursor.fetchone()
        if row is None:
            return None
        return FillingMigration(str(row["id"]), row["source_model"], str(row["target_model"]))


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
