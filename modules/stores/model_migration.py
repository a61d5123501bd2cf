"""The DDL of a model migration on PostgreSQL (sql/model_migration_ddl.sql), which only a database
connection can run: the REST API can neither add columns nor build an index concurrently.

- start: one short transaction adds the shadow columns (nullable, no default: no row is rewritten),
  the shadow queue, the triggers that queue chunks inserted or edited meanwhile, and the migration's
  row ('filling'); then the chunks there were are queued in batches of short transactions (readers
  and writers never wait for a table's worth), and the row says when that is done (seeded_at).
- cut-over: every index on a replaced column gets a twin on the shadow columns, built CONCURRENTLY;
  if none of them is a vector index, an HNSW index (cosine) is built too. Then one transaction, under
  the cut-over lock and a short lock_timeout (retried): the replaced columns' privileges, storage,
  statistics, options and comments are copied to the shadow columns, the old columns are dropped
  (their indexes with them), the shadow ones renamed into their place, the twins renamed to the old
  indexes' names, the live queue's state cleared, and the migration row says 'cut_over'.
- abort: one transaction drops everything start made; the vector column was never touched.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from modules.errors import MigrationError, MigrationNotReadyError, StoreError, StoreUnavailableError
from modules.logs import get_logger
from modules.stores.postgres import PostgresStore
from modules.stores.sql_templates import SqlContext, named_queries, quote_identifier

log = get_logger(__name__)
DDL_FILE = "model_migration_ddl.sql"
PGVECTOR_INDEX_LIMIT = 2000  # pgvector indexes (hnsw, ivfflat) take vectors of at most 2,000 dimensions
SEED_BATCH = 5000
_SWAP_ATTEMPTS = 6
_LOCK_TIMEOUT = "5s"
# The columns the swap replaces, each with its shadow ({embedding} is the vector column's name).
_REPLACED = (
    ("{embedding}", "{embedding}_next"),
    ("embedding_model", "embedding_model_next"),
    ("content_hash", "content_hash_next"),
    ("embedded_at", "embedded_at_next"),
    ("embedded_by", "embedded_by_next"),
)
_STORAGE = {"p": "PLAIN", "e": "EXTERNAL", "m": "MAIN", "x": "EXTENDED"}


@dataclass(frozen=True)
class IndexTwin:
    """An index to build on the shadow columns before the cut-over, and the name it takes after."""

    final_name: str  # the old index's name (or a new one for the HNSW index we add)
    twin_name: str
    definition: str  # CREATE INDEX CONCURRENTLY ... on the shadow columns
    vector_index: bool  # an hnsw or ivfflat index on the vector column


@dataclass(frozen=True)
class FillingMigration:
    id: str
    source_model: str | None
    target_model: str
    seeded_at: datetime | None


@dataclass(frozen=True)
class Unfilled:
    pending: int  # to embed, or being embedded
    failed: int  # the new model failed on them (recorded)
    common_error: str | None


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
        column = self._context.tables.embedding_column
        self._replaced = [(old.format(embedding=column), new.format(embedding=column)) for old, new in _REPLACED]

    # --- start and abort ---------------------------------------------------------------------

    async def start(self, migration_id: str, source_model: str | None, target_model: str) -> None:
        """Create the shadow columns, queue and triggers and record the migration, in one transaction;
        raises MigrationError if another one fills (started meanwhile by another process)."""
        try:
            async with await self._connect() as conn, conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT}'")
                await conn.execute(self._ddl["swap_lock"].encode())  # one start, cut-over or abort at a time
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
                ):
                    await conn.execute(self._ddl[name].encode())
                await conn.execute(
                    self._ddl["start_record"].encode(),
                    {"id": migration_id, "source": source_model, "target": target_model},
                )
        except psycopg.errors.LockNotAvailable:
            raise MigrationError(
                f"could not lock {self._context.tables.chunks} within {_LOCK_TIMEOUT}: a long transaction is using "
                "it (see pg_stat_activity). Nothing changed; run the command again"
            ) from None

    async def seed(self, migration_id: str) -> int:
        """Queue every chunk not yet embedded with the new model, a batch per transaction; then record
        the migration as seeded. Returns how many chunks were looked at."""
        after: str | None = None
        seen = 0
        async with await self._connect(autocommit=True) as conn:
            cursor = conn.cursor(row_factory=dict_row)
            while True:
                await cursor.execute(self._ddl["seed_batch"].encode(), {"after": after, "size": SEED_BATCH})
                row = await cursor.fetchone()
                if row is None or not row["seen"]:
                    break
                seen += int(row["seen"])
                after = str(row["last"])
            await cursor.execute(self._ddl["seeded"].encode(), {"id": migration_id})
        return seen

    async def abort(self) -> FillingMigration:
        try:
            async with await self._connect() as conn, conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT}'")
                await conn.execute(self._ddl["swap_lock"].encode())
                filling = await self._filling(conn)
                if filling is None:
                    raise MigrationError("no model migration is filling: there is nothing to abort")
                await conn.execute(self._ddl["abort_jobs"].encode())
                await conn.execute(self._ddl["drop_shadow"].encode())
                await conn.execute(self._ddl["record_abort"].encode(), {"id": filling.id})
        except psycopg.errors.LockNotAvailable:
            raise MigrationError(
                f"could not lock {self._context.tables.chunks} within {_LOCK_TIMEOUT}: a long transaction is using "
                "it (see pg_stat_activity). Nothing changed; run --migrate-abort again"
            ) from None
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

    async def unfilled(self) -> Unfilled:
        row = await self._one("unfilled")
        return Unfilled(int(row["pending"]), int(row["failed"]), row["common_error"])

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
        """A twin on the shadow columns for each index on a replaced column, plus HNSW if none is a
        vector index."""
        async with await self._connect() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(self._ddl["column_indexes"].encode())
            rows = await cursor.fetchall()
        twins = [
            self._twin(str(r["name"]), str(r["definition"]), r["on_vector"] and r["method"] in ("hnsw", "ivfflat"))
            for r in rows
        ]
        if not any(t.vector_index for t in twins) and self._context.dimensions <= PGVECTOR_INDEX_LIMIT:
            v = self._values
            final = f"{self._context.tables.chunks[:40]}_{self._context.tables.embedding_column[:12]}_hnsw_idx"
            twin = _twin_name(final)
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

    def _twin(self, name: str, definition: str, vector_index: bool) -> IndexTwin:
        twin = _twin_name(name)
        head, using, tail = definition.partition(" USING ")
        if not using:
            raise MigrationError(f"can't read the definition of the index {name}: {definition}")
        tail = _rename_columns(tail, dict(self._replaced))
        head = re.sub(
            r"^CREATE (UNIQUE )?INDEX \S+ ON ",
            lambda m: f"CREATE {m.group(1) or ''}INDEX CONCURRENTLY {quote_identifier(twin)} ON ",
            head,
        )
        return IndexTwin(name, twin, f"{head} USING {tail}", vector_index)

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

    async def swap(
        self, migration_id: str, twins: list[IndexTwin], agreement: float | None, sample: int, *, force: bool
    ) -> None:
        """The one transaction of the cut-over, retried while a long transaction holds the table."""
        for attempt in range(1, _SWAP_ATTEMPTS + 1):
            try:
                await self._swap_once(migration_id, twins, agreement, sample, force=force)
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

    async def _swap_once(
        self, migration_id: str, twins: list[IndexTwin], agreement: float | None, sample: int, *, force: bool
    ) -> None:
        schema = self._values["schema"]
        async with await self._connect() as conn, conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT}'")
            await conn.execute(self._ddl["swap_lock"].encode())
            filling = await self._filling(conn)
            if filling is None or filling.id != migration_id:
                raise MigrationError("the migration is no longer filling (aborted or cut over meanwhile)")
            # Checked again under the lock: a job submitted, or a chunk failed, since the first look.
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(self._ddl["jobs_in_flight"].encode())
            jobs = await cursor.fetchone()
            if jobs is not None and jobs["jobs"]:
                raise MigrationNotReadyError(f"{jobs['jobs']} Batch API job(s) are running: nothing changed")
            await cursor.execute(self._ddl["unfilled"].encode())
            left = await cursor.fetchone()
            if left is not None and left["failed"] and not force:
                raise MigrationNotReadyError(f"{left['failed']} chunk(s) failed with the new model: nothing changed")
            await self._copy_column_settings(conn)
            await conn.execute(self._ddl["swap_columns"].encode())
            for twin in twins:
                await conn.execute(
                    f"ALTER INDEX {schema}.{quote_identifier(twin.twin_name)} "
                    f"RENAME TO {quote_identifier(twin.final_name)}"
                )
            await conn.execute(self._ddl["swap_queue_state"].encode())
            await conn.execute(self._ddl["swap_failures"].encode())
            await conn.execute(self._ddl["swap_drop_queue"].encode())
            await conn.execute(
                self._ddl["swap_record"].encode(), {"id": migration_id, "agreement": agreement, "sample": sample}
            )

    async def _copy_column_settings(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Each replaced column's privileges, storage, statistics target, options and comment, onto its
        shadow (which takes its place): the chatbot's role keeps reading, pgvector's storage advice holds."""
        cursor = conn.cursor(row_factory=dict_row)
        await cursor.execute(self._ddl["column_settings"].encode())
        shadows = dict(self._replaced)
        table = sql.SQL(self._values["chunks"])
        for row in await cursor.fetchall():
            new = sql.Identifier(shadows[str(row["name"])])
            statements: list[sql.Composed] = []
            if row["storage"] in _STORAGE:
                statements.append(
                    sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET STORAGE {}").format(
                        table, new, sql.SQL(_STORAGE[row["storage"]])
                    )
                )
            if row["statistics"] is not None and int(row["statistics"]) >= 0:
                statements.append(
                    sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET STATISTICS {}").format(
                        table, new, sql.Literal(int(row["statistics"]))
                    )
                )
            if row["options"]:
                statements.append(
                    sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET ({})").format(table, new, sql.SQL(row["options"]))
                )
            if row["comment"] is not None:
                statements.append(
                    sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(table, new, sql.Literal(row["comment"]))
                )
            for grant in row["grants"] or []:
                privilege, grantee, grantable = str(grant).split("|")
                statements.append(
                    sql.SQL("GRANT {} ({}) ON {} TO {}{}").format(
                        sql.SQL(privilege),
                        new,
                        table,
                        sql.SQL(grantee),
                        sql.SQL(" WITH GRANT OPTION" if grantable == "true" else ""),
                    )
                )
            for statement in statements:
                await conn.execute(statement)

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
        return FillingMigration(str(row["id"]), row["source_model"], str(row["target_model"]), row["seeded_at"])


def _twin_name(name: str) -> str:
    """A twin's name: unique for each index name (a hash of it), within PostgreSQL's 63 bytes."""
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    return f"{name[:40]}_{digest}_embq_next"


def _rename_columns(text: str, renames: dict[str, str]) -> str:
    """An index definition's tail with the replaced columns' names changed to their shadows', outside
    string literals ('text-embedding-004' stays as it is) and as whole identifiers only."""
    out: list[str] = []
    for part in re.split(r"('(?:[^']|'')*')", text):
        if part.startswith("'"):
            out.append(part)
            continue
        for old, new in renames.items():
            part = re.sub(rf'"{re.escape(old)}"|(?<![\w."$]){re.escape(old)}(?![\w"$])', f'"{new}"', part)
        out.append(part)
    return "".join(out)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
