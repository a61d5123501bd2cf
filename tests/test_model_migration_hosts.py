"""Model migration on hosts' own tables: id types and column names, a host trigger that assigns ids,
roles without rights on the queue, column privileges and storage kept across the swap, indexes on
the replaced columns (with predicates, literals and long names) rebuilt, deleted chunks, a crashed
cut-over, a second migration and back. Real PostgreSQL, the offline model (local@768 -> local@384)."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from modules.batch_embedding import BatchEmbeddingGenerator
from modules.engine.migration import ModelMigrator
from modules.settings import Settings
from modules.stores.postgres import PostgresStore
from tests.helpers import corpus, create_tables, fetch_all

INDEXES = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'chunks' ORDER BY 1"
NEW = "wordllama-l2_supercat-256@384"


def sql(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def host_tables(url: str, id_sql: str, column: str = "embedding", extra: tuple[str, ...] = ()) -> None:
    sql(
        url,
        "CREATE EXTENSION IF NOT EXISTS vector",
        "CREATE TABLE document_sources (id text PRIMARY KEY, name text, type text, created_at timestamptz DEFAULT now())",
        f"CREATE TABLE chunks (id {id_sql}, doc_id text NOT NULL REFERENCES document_sources (id) ON DELETE CASCADE, "
        f"chunk_index integer NOT NULL, content text NOT NULL, {column} vector(768))",
        *extra,
    )


def seed(url: str, n: int = 30) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for doc_id, texts in corpus(n, docs=3).items():
            conn.execute("INSERT INTO document_sources (id, name, type) VALUES (%s, %s, 'txt')", (doc_id, doc_id))
            for i, text in enumerate(texts):
                conn.execute("INSERT INTO chunks (doc_id, chunk_index, content) VALUES (%s, %s, %s)", (doc_id, i, text))


async def migrate(settings: Settings, url: str, spec: str = "local@384", column: str = "embedding") -> None:
    """Embed, start, upload one chunk meanwhile, fill, cut over, embed: every chunk has the new vector."""
    async with BatchEmbeddingGenerator(settings) as generator:
        assert (await generator.run()).ok
        migrator = ModelMigrator(generator)
        _, target = await migrator.start(spec)
        sql(url, "INSERT INTO chunks (doc_id, chunk_index, content) VALUES ('doc-000', 50, '移行中の新しい段落です。')")
        assert (await migrator.fill(target)).ok
        await migrator.cutover()
        assert (await generator.run()).ok
    dims = int(spec.rpartition("@")[2])
    rows = await fetch_all(url, f"SELECT DISTINCT embedding_model, vector_dims({column}) FROM chunks")
    assert rows == [(NEW if dims == 384 else "wordllama-l2_supercat-256@768", dims)]


@pytest.mark.parametrize("id_sql", ["bigserial PRIMARY KEY", "uuid PRIMARY KEY DEFAULT gen_random_uuid()"])
async def test_ids_of_other_types(database_url: str, make_settings: Callable[..., Settings], id_sql: str) -> None:
    host_tables(database_url, id_sql)
    await create_tables(database_url)
    seed(database_url)
    await migrate(make_settings(), database_url)


async def test_a_vector_column_of_another_name(database_url: str, make_settings: Callable[..., Settings]) -> None:
    host_tables(database_url, "text PRIMARY KEY DEFAULT gen_random_uuid()::text", column="vec")
    settings = make_settings(CHUNKS_EMBEDDING_COLUMN="vec")
    store = PostgresStore(database_url, settings.tables, 768, create_tables=True)
    await store.prepare()
    await store.aclose()
    seed(database_url)
    await migrate(settings, database_url, column="vec")
    assert "chunks_vec_hnsw_idx" in dict(await fetch_all(database_url, INDEXES))


async def test_a_host_trigger_that_assigns_ids_and_a_role_without_rights_on_the_queue(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    # Review 2: our BEFORE INSERT trigger ran before the host's (alphabetical) and saw no id.
    host_tables(
        database_url,
        "text PRIMARY KEY",
        extra=(
            "CREATE FUNCTION set_chunk_id() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "NEW.id := coalesce(NEW.id, NEW.doc_id || ':' || NEW.chunk_index); RETURN NEW; END $$",
            "CREATE TRIGGER set_chunk_id BEFORE INSERT ON chunks FOR EACH ROW EXECUTE FUNCTION set_chunk_id()",
        ),
    )
    await create_tables(database_url)
    seed(database_url)
    sql(
        database_url,
        "CREATE ROLE uploader LOGIN PASSWORD 'pw'",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON chunks, document_sources TO uploader",
    )
    async with BatchEmbeddingGenerator(make_settings()) as generator:
        assert (await generator.run()).ok
        await ModelMigrator(generator).start("local@384")
    with psycopg.connect(psycopg.conninfo.make_conninfo(database_url, user="uploader", password="pw")) as conn:
        conn.execute("INSERT INTO chunks (doc_id, chunk_index, content) VALUES ('doc-001', 70, 'ロールが入れた段落')")
        conn.commit()
    with (
        psycopg.connect(database_url, autocommit=True) as conn,
        conn.cursor().copy("COPY chunks (doc_id, chunk_index, content) FROM STDIN") as copy,
    ):
        copy.write_row(("doc-001", 71, "COPY で入った段落"))
    queued = await fetch_all(
        database_url, "SELECT chunk_id FROM embq_next_queue WHERE chunk_id IN ('doc-001:70', 'doc-001:71') ORDER BY 1"
    )
    assert queued == [("doc-001:70",), ("doc-001:71",)]


async def test_the_columns_privileges_storage_statistics_and_comment_survive_the_swap(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    # Review 3: the chatbot's column grant went with the dropped column: permission denied at the cut-over.
    await create_tables(database_url)
    seed(database_url)
    sql(
        database_url,
        "CREATE ROLE chatbot LOGIN PASSWORD 'pw'",
        "GRANT SELECT (id, doc_id, content, embedding, embedding_model) ON chunks TO chatbot",
        "CREATE POLICY chatbot_reads ON chunks FOR SELECT TO chatbot USING (true)",
        "ALTER TABLE chunks ALTER COLUMN embedding SET STORAGE PLAIN",
        "ALTER TABLE chunks ALTER COLUMN embedding SET STATISTICS 1000",
        "COMMENT ON COLUMN chunks.embedding IS 'chatbot vectors'",
    )
    shape = (
        "SELECT a.attstorage, a.attstattarget::integer, col_description(a.attrelid, a.attnum), a.attacl::text "
        "FROM pg_attribute a WHERE a.attrelid = 'chunks'::regclass AND a.attname = 'embedding'"
    )
    before = await fetch_all(database_url, shape)
    await migrate(make_settings(), database_url)
    assert await fetch_all(database_url, shape) == before
    with psycopg.connect(psycopg.conninfo.make_conninfo(database_url, user="chatbot", password="pw")) as conn:
        assert conn.execute("SELECT count(embedding) FROM chunks").fetchone() == (31,)


async def test_indexes_on_the_replaced_columns_are_rebuilt_as_they_were(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    # Review 8-10: an index on another replaced column, a predicate naming two of them and a literal,
    # and two long names that share 50 characters.
    await create_tables(database_url)
    seed(database_url)
    long = "chunks_embedding_index_with_a_long_name_for_the_chatbot_"
    sql(
        database_url,
        "CREATE INDEX host_hnsw ON chunks USING hnsw (embedding vector_cosine_ops) WITH (m = 20) "
        "WHERE embedding_model <> 'text-embedding-004' AND doc_id <> 'embedding'",
        "CREATE INDEX host_embedded_at_idx ON chunks (embedded_at)",
        f"CREATE INDEX {long}a ON chunks (doc_id) WHERE embedding IS NOT NULL",
        f"CREATE INDEX {long}b ON chunks (chunk_index) WHERE embedding IS NOT NULL",
    )
    before = dict(await fetch_all(database_url, INDEXES))
    await migrate(make_settings(), database_url)
    after = dict(await fetch_all(database_url, INDEXES))
    assert set(after) == set(before)  # the same names (no HNSW added: the host has one)
    assert after == before  # and the same definitions, on the new columns, literals untouched


async def test_deleted_chunks_never_stop_the_fill(database_url: str, make_settings: Callable[..., Settings]) -> None:
    # Review 7: the queue's rows of deleted chunks were leased, found empty, and ended the fill.
    await create_tables(database_url)
    seed(database_url)
    async with BatchEmbeddingGenerator(make_settings()) as generator:
        assert (await generator.run()).ok
        migrator = ModelMigrator(generator)
        _, target = await migrator.start("local@384")
        sql(database_url, "DELETE FROM document_sources WHERE id = 'doc-000'")  # cascades to its chunks
        assert await fetch_all(database_url, "SELECT count(*) FROM embq_next_queue") == [(20,)]
        stats = await migrator.fill(target)
        assert stats.ok and stats.embedded == 20


async def test_a_cut_over_that_crashed_after_an_index_build_runs_again(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    await create_tables(database_url)
    seed(database_url)
    async with BatchEmbeddingGenerator(make_settings()) as generator:
        assert (await generator.run()).ok
        migrator = ModelMigrator(generator)
        _, target = await migrator.start("local@384")
        await migrator.fill(target)
        (twin,) = [t for t in await migrator.schema_for(384).index_plan() if t.vector_index]
        sql(
            database_url,
            twin.definition,
            f"UPDATE pg_index SET indisvalid = false WHERE indexrelid = '\"{twin.twin_name}\"'::regclass",
        )
        report = await migrator.cutover()
        assert "chunks_embedding_hnsw_idx" in report.indexes
    assert "chunks_embedding_hnsw_idx" in dict(await fetch_all(database_url, INDEXES))


async def test_a_second_migration_and_back(database_url: str, make_settings: Callable[..., Settings]) -> None:
    await create_tables(database_url)
    seed(database_url)
    sql(database_url, "CREATE INDEX host_hnsw ON chunks USING hnsw (embedding vector_cosine_ops) WITH (m = 20)")
    await migrate(make_settings(), database_url, "local@384")
    await migrate(make_settings(), database_url, "local@768")
    states = await fetch_all(database_url, "SELECT state FROM embq_model_migrations ORDER BY started_at")
    assert states == [("cut_over",), ("cut_over",)]
    assert "WITH (m='20')" in dict(await fetch_all(database_url, INDEXES))["host_hnsw"]
