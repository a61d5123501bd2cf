"""Loads the `.sql` files and fills their `{{placeholders}}` with validated, quoted identifiers.

Only identifiers and type names are templated, each checked against a strict pattern first;
values always travel as bound parameters.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

from modules.settings import TableNames

# A fresh install of the current version: schema.sql (columns, indexes, tables of the queue's own) first,
# then these function files, rendered with the id types read from the live table. Older databases are
# upgraded by sql/migrations/ instead (modules/stores/migrations.py). host_tables.sql creates the host's
# own tables, only where that is allowed (the embedded database, or the explicit --setup).
EXTENSION_FILE = "extension.sql"
HOST_TABLES_FILE = "host_tables.sql"
SCHEMA_FILE = "schema.sql"
FUNCTION_FILES = (  # grants.sql covers all
    "queue.sql",
    "repair.sql",
    "knowledge.sql",
    "operations.sql",
    "batch.sql",
    "model_migration.sql",
    "security.sql",
    "grants.sql",
)

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_TYPE_NAME = re.compile(r"^[a-z][a-z0-9_ ]*(\(\d+(,\d+)?\))?(\[\])?$")
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_QUERY_HEADER = re.compile(r"^-- name: (\w+) --$", re.MULTILINE)


def quote_identifier(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return f'"{name}"'


def checked_type(type_name: str) -> str:
    if not _TYPE_NAME.match(type_name):
        raise ValueError(f"unexpected column type: {type_name!r}")
    return type_name


@dataclass(frozen=True)
class SqlContext:
    """Everything the templates may refer to."""

    tables: TableNames
    dimensions: int
    id_type: str = "text"
    doc_id_type: str = "text"
    vector_schema: str = "public"  # where pgvector is installed (read from the database before rendering)

    def values(self) -> dict[str, str]:
        t = self.tables
        schema = quote_identifier(t.schema)
        index_base = t.chunks[:40]
        return {
            "schema": schema,
            "search_path": SEARCH_PATH,
            # Versions 1 to 3 ran their functions with this one; migrations 0002 and 0003 keep it so that their
            # released Supabase files render unchanged.
            "search_path_v1": f"{schema}, extensions, public" if t.schema != "public" else "public, extensions",
            # Version 4 set this one on every function; migration 0004 keeps it (a migration is frozen).
            "search_path_v4": "pg_catalog, extensions, "
            + ("public" if t.schema == "public" else f"{schema}, public")
            + ", pg_temp",
            "vector_schema": quote_identifier(self.vector_schema),
            "vector": f"{quote_identifier(self.vector_schema)}.vector",
            "chunks": f"{schema}.{quote_identifier(t.chunks)}",
            "chunks_regclass": f"{schema}.{quote_identifier(t.chunks)}",
            "documents": f"{schema}.{quote_identifier(t.documents)}",
            "cache": f"{schema}.{quote_identifier(t.chunks[:40] + '_embedding_cache')}",
            "migrations_table": f"{schema}.{quote_identifier('embq_migrations')}",
            "batch_jobs": f"{schema}.{quote_identifier('embq_batch_jobs')}",
            "model_migrations": f"{schema}.{quote_identifier('embq_model_migrations')}",
            "next_queue": f"{schema}.{quote_identifier('embq_next_queue')}",
            "next_queue_regclass": f"{schema}.{quote_identifier('embq_next_queue')}",
            "embedding_next": quote_identifier(t.embedding_column + "_next"),
            "embedding_next_name": t.embedding_column + "_next",
            "cutover_lock": str(CUTOVER_LOCK),
            "runs_table": f"{schema}.{quote_identifier('embq_runs')}",
            "workers_table": f"{schema}.{quote_identifier('embq_workers')}",
            "alerts_table": f"{schema}.{quote_identifier('embq_alerts')}",
            "notify_channel": notify_channel(t),
            "content": quote_identifier(t.content_column),
            "content_name": t.content_column,
            "embedding": quote_identifier(t.embedding_column),
            "embedding_name": t.embedding_column,
            "dimensions": str(int(self.dimensions)),
            "index_pending": quote_identifier(f"{index_base}_embq_pending_idx"),
            "index_failed": quote_identifier(f"{index_base}_embq_failed_idx"),
            "index_doc": quote_identifier(f"{index_base}_embq_doc_idx"),
            "index_queued": quote_identifier(f"{index_base}_embq_queued_idx"),
            "id_type": checked_type(self.id_type),
            "doc_id_type": checked_type(self.doc_id_type),
        }


def notify_channel(tables: TableNames) -> str:
    """The LISTEN/NOTIFY channel the chunks table's trigger announces new pending chunks on (schema version 6):
    one per chunks table, a plain identifier, so a watcher of another table is not woken."""
    channel = f"{tables.chunks[:40]}_embq_pending"
    quote_identifier(channel)  # validated like every templated name
    return channel


# The search_path every queue function runs with: pg_catalog (which no ordinary role can create objects in)
# and pg_temp, last, where PostgreSQL never looks for functions or operators. Nothing writable by others
# is on it: PostgreSQL picks a better-matching overload from anywhere on the path (a planted
# public.make_interval(integer) beats pg_catalog's make_interval(double precision) for an integer), so
# no schema a role might create objects in may be there. Tables are always named with their schema, and
# pgvector's type, functions and operators with the schema it is installed in ({{vector}},
# {{vector_schema}}.vector_dims, OPERATOR({{vector_schema}}.<=>)).
SEARCH_PATH = "pg_catalog, pg_temp"

# The advisory lock a model migration's cut-over holds exclusively and search and writes hold shared
# (model_migration.sql).
CUTOVER_LOCK = 0x656D62715F637574  # "embq_cut"


def render(template: str, context: SqlContext) -> str:
    values = context.values()

    def fill(match: re.Match[str]) -> str:
        return values[match.group(1)]

    return _PLACEHOLDER.sub(fill, template)


def render_deferring(template: str, context: SqlContext, deferred: Collection[str]) -> str:
    """Like `render`, but leaves the `deferred` placeholders as they are (`{{id_type}}`), for SQL
    that fills them in itself when it is applied (the Supabase migration reads the id types then)."""
    values = context.values()

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        return match.group(0) if name in deferred else values[name]

    return _PLACEHOLDER.sub(fill, template)


@cache
def read_sql_file(name: str) -> str:
    """A file under modules/stores/sql/ ("queue.sql", "migrations/0002_schema_versions.sql")."""
    return files("modules.stores").joinpath("sql", *name.split("/")).read_text(encoding="utf-8")


def named_queries(context: SqlContext, file: str = "queries.sql") -> dict[str, str]:
    """Parse a file of named statements (queries.sql by default) into {name: rendered statement}."""
    text = read_sql_file(file)
    parts = _QUERY_HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [line for line in body.strip().splitlines() if not line.startswith("--")]
        queries[name] = render("\n".join(lines).strip().rstrip(";"), context)
    return queries
