"""Model migration on the real PostgreSQL: shadow columns filled while search reads the live column,
new uploads embedded by both models, the cut-over's swap (indexes built before, the agreement check),
abort leaving everything as it was, and no write or search of a retired model after a cut-over."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import psycopg
import pytest

from modules.batch_embedding import BatchEmbeddingGenerator
from modules.embedders.local import local_model_id
from modules.engine.migration import ModelMigrator
from modules.errors import LiveModelChangedError, MigrationError, MigrationNotReadyError, ModelRetiredError
from modules.settings import Settings
from modules.stores.base import ClaimFilter, Completed
from modules.text import content_hash
from tests.chaos_helpers import run_cli
from tests.helpers import corpus, fetch_all, seed_chunks

OLD, NEW = local_model_id(768), local_model_id(384)

CHUNK_SHAPE = """
    SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
    WHERE a.attrelid = 'chunks'::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"""
INDEXES = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'chunks' ORDER BY 1"


async def embedded_corpus(url: str, settings: Settings, n: int = 60) -> None:
    await seed_chunks(url, corpus(n, docs=3))
    async with BatchEmbeddingGenerator(settings) as generator:
        assert (await generator.run()).ok


async def test_migrate_fill_and_cut_over_swap_the_column_in_one_step(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    await embedded_corpus(database_url, settings)
    async with BatchEmbeddingGenerator(settings) as generator:
        migrator = ModelMigrator(generator)
        row, target = await migrator.start("local@384")
        assert (row.source_model, row.target_model, row.state) == (OLD, NEW, "filling")
        progress = await migrator.progress()
        assert progress is not None and progress.queue is not None
        assert (progress.queue.total, progress.queue.embedded, progress.queue.pending) == (60, 0, 60)

        # Search reads the live column, with the live model, while the migration fills.
        query = (await generator.embedder.embed_query("段落"))[0]
        hits = await generator.store.search(query, 3, model_id=OLD)  # type: ignore[attr-defined]
        assert len(hits) == 3 and {h.model for h in hits} == {OLD}

        with pytest.raises(MigrationNotReadyError, match="60 chunk"):
            await migrator.cutover()
        stats = await migrator.fill(target)
        assert stats.ok and stats.embedded == 60
        report = await migrator.cutover()
        assert report.agreement is not None and report.agreement_sample == 60
        assert [step for step, _ in report.timeline][-1] == "swapped"
        assert generator.embedder.model_id == NEW  # the generator embeds with the new model from now on

    shape = dict(await fetch_all(database_url, CHUNK_SHAPE))
    assert shape["embedding"] == "vector(384)"
    assert not any(name.endswith("_next") for name in shape)
    models = await fetch_all(database_url, "SELECT DISTINCT embedding_model, vector_dims(embedding) FROM chunks")
    assert models == [(NEW, 384)]
    indexes = dict(await fetch_all(database_url, INDEXES))
    assert {"chunks_embq_pending_idx", "chunks_embq_failed_idx", "chunks_embedding_hnsw_idx"} <= set(indexes)
    assert "(embedding IS NULL)" in indexes["chunks_embq_pending_idx"]
    assert "hnsw (embedding" in indexes["chunks_embedding_hnsw_idx"]
    assert await fetch_all(database_url, "SELECT to_regclass('embq_next_queue') IS NULL") == [(True,)]
    # The watchers' wake-up trigger moved to the new column: an upload is still queued (and announced).
    assert await fetch_all(
        database_url, "SELECT count(*) FROM pg_trigger WHERE tgname = 'embq_pending_notify' AND NOT tgisinternal"
    ) == [(1,)]

    # A worker whose settings still say the old model follows the column.
    async with BatchEmbeddingGenerator(make_settings()) as later:
        assert later.embedder.model_id == NEW
        await seed_chunks_more(database_url)
        # A repair clears a vector of the new column: the trigger makes the chunk pending from now.
        queued = await fetch_all(
            database_url,
            "UPDATE chunks SET embedding = NULL, embedding_queued_at = '2000-01-01' WHERE chunk_index = 0 "
            "RETURNING embedding_queued_at > now() - interval '1 hour'",
        )
        assert queued and all(fresh for (fresh,) in queued)
        assert (await later.run()).ok
    assert await fetch_all(database_url, "SELECT count(*) FROM chunks WHERE embedding_model <> %s", (NEW,)) == [(0,)]


async def seed_chunks_more(url: str) -> None:
    await fetch_all(
        url,
        "INSERT INTO chunks (doc_id, chunk_index, content) SELECT 'doc-000', 100, '切り替え後の段落です。' RETURNING 1",
    )


async def test_an_ordinary_run_embeds_new_uploads_with_both_models_while_a_migration_fills(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    await embedded_corpus(database_url, settings, 30)
    async with BatchEmbeddingGenerator(settings) as generator:
        migrator = ModelMigrator(generator)
        _, target = await migrator.start("local@384")
        await migrator.fill(target, limit=10)
        await seed_chunks_more(database_url)  # an upload: pending for both models
        stats = await generator.run()
        assert stats.ok and stats.embedded == 1
        assert generator.migration_stats is not None and generator.migration_stats.embedded == 21
    rows = await fetch_all(
        database_url,
        "SELECT embedding_model, embedding_model_next FROM chunks WHERE content = '切り替え後の段落です。'",
    )
    assert rows == [(OLD, NEW)]


async def test_abort_leaves_the_table_as_it_was(database_url: str, make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    await embedded_corpus(database_url, settings, 30)
    shape, indexes = await fetch_all(database_url, CHUNK_SHAPE), await fetch_all(database_url, INDEXES)
    vectors = await fetch_all(database_url, "SELECT id, embedding::text, embedding_model FROM chunks ORDER BY id")
    async with BatchEmbeddingGenerator(settings) as generator:
        migrator = ModelMigrator(generator)
        _, target = await migrator.start("local@384")
        await migrator.fill(target, limit=12)
        aborted = await migrator.abort()
        assert aborted.state == "aborted"
        with pytest.raises(MigrationError, match="nothing to abort"):
            await migrator.abort()
    assert await fetch_all(database_url, CHUNK_SHAPE) == shape
    assert await fetch_all(database_url, INDEXES) == indexes
    assert (
        await fetch_all(database_url, "SELECT id, embedding::text, embedding_model FROM chunks ORDER BY id") == vectors
    )


async def test_a_run_that_began_before_the_cut_over_writes_nothing_after_it(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    await embedded_corpus(database_url, settings, 20)
    await seed_chunks_more(database_url)  # pending for the old model
    async with BatchEmbeddingGenerator(settings) as generator:
        store = generator.store
        (held,) = await store.claim("old-worker", 5, 600, ClaimFilter())  # an old-model run holds it
        migrator = ModelMigrator(generator)
        _, target = await migrator.start("local@384")
        await migrator.fill(target)
        await migrator.cutover()
        old_vector = np.full(768, 1 / np.sqrt(768), dtype=np.float32)
        with pytest.raises(ModelRetiredError, match="retired"):
            await store.complete("old-worker", OLD, [Completed(held.id, old_vector, content_hash(held.content))])
        with pytest.raises(LiveModelChangedError):
            await store.search(old_vector, 3, model_id=OLD)  # type: ignore[attr-defined]
    rows = await fetch_all(database_url, "SELECT embedding_model FROM chunks WHERE id = %s", (held.id,))
    assert rows == [(NEW,)]


async def test_the_cut_over_refuses_while_a_view_uses_the_column(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    await embedded_corpus(database_url, settings, 9)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE VIEW chatbot_chunks AS SELECT id, embedding FROM chunks")
    async with BatchEmbeddingGenerator(settings) as generator:
        migrator = ModelMigrator(generator)
        _, target = await migrator.start("local@384")
        await migrator.fill(target)
        with pytest.raises(MigrationError, match="view chatbot_chunks"):
            await migrator.cutover()
    assert await fetch_all(database_url, "SELECT count(*) FROM chunks WHERE embedding_model = %s", (OLD,)) == [(9,)]


async def test_legacy_vectors_of_no_recorded_model_are_migrated_not_overwritten(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    await seed_chunks(database_url, corpus(12, docs=3))
    # The old system's vectors: no model recorded (text-embedding-004, say), searchable meanwhile.
    await fetch_all(
        database_url,
        "UPDATE chunks SET embedding = array_fill(0.036, ARRAY[768])::vector RETURNING 1",
    )
    async with BatchEmbeddingGenerator(make_settings()) as generator:
        migrator = ModelMigrator(generator)
        row, target = await migrator.start("local@768")  # the configured model: the column does not hold it
        assert (row.source_model, row.target_model) == (None, OLD)
        await migrator.fill(target)
        legacy = await fetch_all(database_url, "SELECT count(*) FROM chunks WHERE embedding_model IS NULL")
        assert legacy == [(12,)]  # untouched until the cut-over
        await migrator.cutover()
    assert await fetch_all(database_url, "SELECT DISTINCT embedding_model FROM chunks") == [(OLD,)]


def test_the_supabase_rest_path_says_a_migration_needs_a_database_connection() -> None:
    from modules.settings import Secret, TableNames
    from modules.stores.supabase import SupabaseStore

    store = SupabaseStore("https://x.supabase.co", Secret("service-key"), TableNames(), 768)
    with pytest.raises(MigrationError, match="DATABASE_URL"):
        store.shadow()


@pytest.mark.slow
async def test_the_cli_commands_exit_codes_and_status(database_url: str, base_env: dict[str, str]) -> None:
    await seed_chunks(database_url, corpus(20, docs=2))
    assert run_cli(base_env).returncode == 0
    nothing = run_cli(base_env, "--migrate-cutover")
    assert nothing.returncode == 2 and "no model migration is under way" in nothing.stderr
    assert run_cli(base_env, "--migrate-to", "local@384", "--status").returncode == 2
    bad = run_cli(base_env, "--migrate-to", "not a model!")
    assert bad.returncode == 2 and "MODEL[@DIMENSIONS]" in bad.stderr

    partial = run_cli(base_env, "--migrate-to", "local@384", "--limit", "5", "--json")
    assert partial.returncode == 0, partial.stderr  # a limited fill that did what it was asked
    assert json.loads(partial.stdout)["migration"]["embedded"] == 5
    shown = run_cli(base_env, "--status")
    assert "🔀 モデル移行" in shown.stdout and "5 / 20 チャンク" in shown.stdout
    status = json.loads(run_cli(base_env, "--status", "--json").stdout)["migration"]
    assert (status["state"], status["pending"], status["source_model"]) == ("filling", 15, OLD)
    assert status["remaining_tokens"] > 0 and status["estimated_cost_usd"] == {"batch": None, "online": None}
    early = run_cli(base_env, "--migrate-cutover")
    assert early.returncode == 1 and "15 chunk(s) have no" in early.stderr

    assert run_cli(base_env, "--migrate-to", "local@384").returncode == 0
    done = run_cli(base_env, "--migrate-cutover", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["cutover"]["target_model"] == NEW
    assert json.loads(run_cli(base_env, "--status", "--json").stdout)["model"] == NEW


async def test_a_repair_opened_before_a_cut_over_repairs_for_the_new_model(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    # Review 4: fix_missing_embeddings.py, opened before the cut-over, reset every new vector.
    from modules.engine.repair import plan_repair, repair

    settings = make_settings()
    await embedded_corpus(database_url, settings, 20)
    async with BatchEmbeddingGenerator(settings) as repairer:
        stale_plan = await plan_repair(repairer)
        async with BatchEmbeddingGenerator(settings) as operator:
            migrator = ModelMigrator(operator)
            _, target = await migrator.start("local@384")
            await migrator.fill(target)
            await migrator.cutover()
        with pytest.raises(ModelRetiredError):  # the database refuses a plan made for the old model
            await repairer.store.repair_apply(stale_plan.model_id, stale_plan.dimensions, None, None, ())
        outcome = await repair(repairer)  # a whole repair follows the column first
        assert outcome.plan.model_id == NEW and outcome.plan.totals.to_reset == 0
    assert await fetch_all(database_url, "SELECT count(embedding) FROM chunks WHERE embedding_model = %s", (NEW,)) == [
        (18,)
    ]


async def test_search_and_writes_refuse_repeatable_read(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    # Review 5: under REPEATABLE READ a search that waited for the swap saw the old live model.
    await embedded_corpus(database_url, make_settings(), 9)
    with psycopg.connect(database_url) as conn:
        conn.execute("SET default_transaction_isolation = 'repeatable read'")
        conn.commit()
        query = "[" + ",".join(["0.036"] * 768) + "]"
        with pytest.raises(psycopg.Error) as caught:
            conn.execute("SELECT * FROM embq_search_v3(%s::vector, 3, %s)", (query, OLD))
        assert caught.value.sqlstate == "25001" and "READ COMMITTED" in str(caught.value)


async def test_a_start_cut_short_is_seeded_by_the_next_and_cut_over_waits_for_it(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    await embedded_corpus(database_url, settings, 30)
    async with BatchEmbeddingGenerator(settings) as generator:
        migrator = ModelMigrator(generator)
        row, _ = await migrator.start("local@384")
        await fetch_all(  # as if killed after the first transaction, before any chunk was queued
            database_url,
            "WITH q AS (DELETE FROM embq_next_queue RETURNING 1) "
            "UPDATE embq_model_migrations SET seeded_at = NULL WHERE id = %s RETURNING 1",
            (row.id,),
        )
        with pytest.raises(MigrationNotReadyError, match="cut short"):
            await migrator.cutover()
        again, target = await migrator.start("local@384")
        assert again.id == row.id and again.seeded_at is not None
        assert (await migrator.fill(target)).embedded == 30
        await migrator.cutover()


async def test_chunks_the_new_model_fails_on_hold_the_cut_over_unless_forced(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    # Review 11: one chunk that always fails blocked the cut-over for good.
    settings = make_settings()
    await embedded_corpus(database_url, settings, 9)
    async with BatchEmbeddingGenerator(settings) as generator:
        migrator = ModelMigrator(generator)
        _, target = await migrator.start("local@384")
        (chunk,) = await generator.store.shadow().claim("w", 1, 60, ClaimFilter(model_id=NEW))
        from modules.stores.base import Failure

        assert await generator.store.shadow().fail("w", [Failure(chunk.id, "400 INVALID_ARGUMENT: bad")]) == 1
        await migrator.fill(target)
        with pytest.raises(MigrationNotReadyError, match=r"1 chunk.*failed.*INVALID_ARGUMENT.*--force"):
            await migrator.cutover()
        await migrator.cutover(force=True)
    rows = await fetch_all(
        database_url,
        "SELECT embedding IS NULL, embedding_error, embedding_attempts FROM chunks WHERE id = %s",
        (chunk.id,),
    )
    assert rows == [(True, "400 INVALID_ARGUMENT: bad", 1)]  # failed in the live queue: --retry-only


async def test_shadow_writes_after_an_abort_or_of_another_migration_are_refused_quietly(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    # Review 12 and 15: release, renew and fail after the queue is gone; a claim of another model.
    settings = make_settings()
    await embedded_corpus(database_url, settings, 9)
    async with BatchEmbeddingGenerator(settings) as generator:
        shadow = generator.store.shadow()
        migrator = ModelMigrator(generator)
        await migrator.start("local@384")
        with pytest.raises(ModelRetiredError, match="fills"):
            await shadow.claim("w", 5, 60, ClaimFilter(model_id=local_model_id(512)))
        held = await shadow.claim("w", 5, 60, ClaimFilter(model_id=NEW))
        await migrator.abort()
        ids = [c.id for c in held]
        assert await shadow.renew_leases("w", ids, 60) == set()
        await shadow.release("w", ids)
        from modules.stores.base import Failure

        assert await shadow.fail("w", [Failure(ids[0], "late")]) == 0


async def test_the_upload_api_follows_a_cut_over_made_by_another_process(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    # Review 14: uploads were refused as "another model" until some search ran.
    from tests.api_helpers import API_TOKEN, running_app, upload

    settings = make_settings(AUTO_GENERATE_EMBEDDINGS="true", KNOWLEDGE_API_TOKEN=API_TOKEN)
    await embedded_corpus(database_url, settings, 9)
    async with running_app(settings) as (client, service):
        async with BatchEmbeddingGenerator(settings) as operator:
            migrator = ModelMigrator(operator)
            _, target = await migrator.start("local@384")
            await migrator.fill(target)
            await migrator.cutover()
        service.model_check_seconds = 0.0  # as 30 s later
        response = await upload(client, "after.txt", "切り替え後にアップロードされた文書です。".encode())
        assert response.json()["embedding"] == "scheduled", response.text
        await service.wait_for_background()
        found = await client.get("/knowledge/search", params={"q": "切り替え後", "k": 3})
        assert found.status_code == 200 and found.json()["model"] == NEW
        assert {h["model"] for h in found.json()["results"]} == {NEW}
    assert await fetch_all(database_url, "SELECT DISTINCT embedding_model FROM chunks") == [(NEW,)]
