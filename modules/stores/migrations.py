"""Schema versions: how a database gets to the current version of the queue's schema.

- A database without the queue's objects gets a fresh install of the current version (schema.sql and
  the function files) and every version recorded as applied.
- A database with the queue at version 1 (the release of 2026-11-24, which had no version table) or
  later gets the migrations it lacks (`sql/migrations/NNNN_name.sql`), each once, in order.
- Everything runs in one transaction under an advisory lock, so concurrent workers starting at once
  migrate once; a failure leaves the database as it was.

Every migration is idempotent and self-recording, because Supabase users apply the same versions as
files (`supabase/migrations/`, generated from these by `modules/stores/migration_file.py`), perhaps
on a database the program already upgraded. A migration never changes an existing function's
arguments, result or meaning: it adds the next version beside it (`embq_x_v2`), so the workers of
the previous release keep running during a rolling upgrade (see 0002's header).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

import psycopg
from psycopg.rows import TupleRow, dict_row

from modules.logs import get_logger
from modules.stores.sql_templates import FUNCTION_FILES, SCHEMA_FILE, SqlContext, read_sql_file, render

log = get_logger(__name__)
AConn = psycopg.AsyncConnection[TupleRow]

RELEASED_V1 = 1  # the first release, before there was a version table
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_SUPABASE_VERSION = re.compile(r"^-- supabase: (\d{14})$", re.MULTILINE)


@dataclass(frozen=True)
class Migration:
    number: int
    name: str
    file: str  # path under sql/, e.g. "migrations/0002_schema_versions.sql"
    supabase_version: str  # the timestamp of its file under supabase/migrations/

    @property
    def supabase_file_name(self) -> str:
        return f"{self.supabase_version}_embq_{self.number:04d}_{self.name}.sql"

    def text(self) -> str:
        return read_sql_file(self.file)


@cache
def migrations() -> tuple[Migration, ...]:
    """Every migration after version 1, in order. Numbers must run 2, 3, 4... without a gap."""
    found: list[Migration] = []
    for entry in files("modules.stores").joinpath("sql", "migrations").iterdir():
        match = _FILE_NAME.match(entry.name)
        if not match:
            continue
        text = entry.read_text(encoding="utf-8")
        stamp = _SUPABASE_VERSION.search(text)
        if stamp is None:
            raise ValueError(f"{entry.name} lacks its '-- supabase: YYYYMMDDHHMMSS' line")
        found.append(Migration(int(match.group(1)), match.group(2), f"migrations/{entry.name}", stamp.group(1)))
    found.sort(key=lambda m: m.number)
    numbers = [m.number for m in found]
    if numbers != list(range(2, 2 + len(found))):
        raise ValueError(f"migrations must be numbered 0002, 0003, ... without gaps; found {numbers}")
    return tuple(found)


def latest_version() -> int:
    return migrations()[-1].number if migrations() else RELEASED_V1


async def installed_version(conn: AConn, context: SqlContext) -> int:
    """The version the database has: 0 when the queue was never installed."""
    values = context.values()
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute("SELECT to_regclass(%s) IS NOT NULL AS versioned", (values["migrations_table"],))
    row = await cursor.fetchone()
    if row and row["versioned"]:
        await cursor.execute(
            f"SELECT coalesce(max(version), {RELEASED_V1}) AS version FROM {values['migrations_table']}"
        )
        found = await cursor.fetchone()
        return int(found["version"]) if found else RELEASED_V1
    await cursor.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'embq_claim' AND pronamespace = %s::regnamespace) "
        "AS released",
        (values["schema"],),
    )
    row = await cursor.fetchone()
    return RELEASED_V1 if row and row["released"] else 0


async def upgrade(conn: AConn, context: SqlContext) -> tuple[int, int]:
    """Bring the database to the latest version inside the caller's transaction (which holds the
    advisory lock). Returns (version before, version after)."""
    before = await installed_version(conn, context)
    latest = latest_version()
    if before == 0:
        await conn.execute(render(read_sql_file(SCHEMA_FILE), context).encode())
        for name in FUNCTION_FILES:
            await conn.execute(render(read_sql_file(name), context).encode())
        await conn.execute(
            f"INSERT INTO {context.values()['migrations_table']} (version, name) "
            "SELECT * FROM unnest(%s::integer[], %s::text[]) ON CONFLICT (version) DO NOTHING",
            ([RELEASED_V1] + [m.number for m in migrations()], ["released"] + [m.name for m in migrations()]),
        )
        log.info("🗄️ キューのスキーマをインストールしました (バージョン %d)", latest)
        return before, latest
    for migration in migrations():
        if migration.number > before:
            await conn.execute(render(migration.text(), context).encode())
            log.info("🗄️ スキーマを更新しました: バージョン %d (%s)", migration.number, migration.name)
    return before, max(before, latest)
