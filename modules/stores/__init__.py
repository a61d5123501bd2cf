"""Chunk stores behind one interface (`ChunkStore`), chosen from the settings."""

from __future__ import annotations

from modules.errors import SchemaMismatchError, StoreError
from modules.settings import Settings
from modules.stores.base import ChunkStore, ColumnInfo


def store_kind(settings: Settings) -> str:
    if settings.database_url:
        return "postgres"
    if settings.supabase_url:
        return "supabase"
    return "embedded"


async def open_store(
    settings: Settings, *, pool_size: int = 4, create_tables: bool = False
) -> tuple[ChunkStore, ColumnInfo]:
    """Connect, migrate where allowed, and check the vector column against EMBEDDING_DIMENSIONS. The
    host's tables are created only on the embedded database, or when `create_tables` (--setup) asks."""
    kind = store_kind(settings)
    store: ChunkStore
    if kind == "supabase":
        from modules.stores.supabase import SupabaseStore

        if not settings.supabase_url or not settings.supabase_key:
            raise StoreError("SUPABASE_URL and SUPABASE_KEY (the service-role key) must both be set")
        store = SupabaseStore(
            settings.supabase_url, settings.supabase_key, settings.tables, settings.dimensions, pool_size=pool_size
        )
    else:
        from modules.stores.postgres import PostgresStore

        if settings.database_url:
            url = settings.database_url.reveal()
        else:
            from modules.stores.embedded import start_embedded_postgres

            url = await start_embedded_postgres(settings.embedded_pg_dir)
            create_tables = True  # the embedded database is ours
        store = PostgresStore(
            url, settings.tables, settings.dimensions, pool_size=pool_size, create_tables=create_tables
        )
    try:
        info = await store.prepare()
        check_dimensions(settings, info, await _live_model(store))
        check_queue_columns(settings, await store.queue_columns())
    except BaseException:
        await store.aclose()
        raise
    return store, info


async def _live_model(store: ChunkStore) -> str | None:
    """The model a cut-over put in the vector column (None: none did, or the schema predates them)."""
    try:
        return await store.live_model()
    except StoreError:
        return None


def check_dimensions(settings: Settings, info: ColumnInfo, live_model: str | None = None) -> None:
    """The column's vector length must be the settings' (or, after a cut-over, the live model's: the
    generator then embeds with that model)."""
    from modules.model_ids import dimensions_of

    if live_model is not None and info.dimensions == dimensions_of(live_model):
        return
    if info.dimensions is not None and info.dimensions != settings.dimensions:
        raise SchemaMismatchError(
            f"EMBEDDING_DIMENSIONS is {settings.dimensions} but the column "
            f"{settings.tables.chunks}.{settings.tables.embedding_column} is vector({info.dimensions}); "
            f"set EMBEDDING_DIMENSIONS={info.dimensions}, or change the column"
        )


# The queue's own columns and the types its functions need. A column that exists with another type (say
# varchar(10) for the error) would make every write fail mid-batch: refuse it at start, with the fix.
QUEUE_COLUMNS = {
    "embedding_attempts": "integer",
    "embedding_error": "text",
    "embedding_failed_at": "timestamp with time zone",
    "embedding_model": "text",
    "content_hash": "text",
    "embedded_at": "timestamp with time zone",
    "embedded_by": "text",
    "embedding_lease_owner": "text",
    "embedding_lease_expires_at": "timestamp with time zone",
}


def check_queue_columns(settings: Settings, columns: dict[str, str]) -> None:
    t = settings.tables
    for name, wanted in QUEUE_COLUMNS.items():
        actual = columns.get(name)
        if actual is None:
            raise SchemaMismatchError(
                f"the column {t.chunks}.{name} is missing: the queue's migration is not applied to this table"
            )
        if actual != wanted:
            raise SchemaMismatchError(
                f"the column {t.chunks}.{name} is {actual}, but the embedding queue needs {wanted}. "
                f"Fix it once with: ALTER TABLE {t.schema}.{t.chunks} ALTER COLUMN {name} TYPE {wanted}"
            )


__all__ = [
    "QUEUE_COLUMNS",
    "ChunkStore",
    "ColumnInfo",
    "check_dimensions",
    "check_queue_columns",
    "open_store",
    "store_kind",
]
