"""Model migration from gemini-embedding-001 to gemini-embedding-2 through the Batch API, with the real
google-genai client over HTTP to the simulator and the real PostgreSQL: 2,000 chunks re-embedded while
the upload API answers searches in a loop (none fails, none mixes models, the model changes at the
cut-over's instant), and a migration killed with -9 while its job runs loses nothing and pays nothing
twice. The timeline and the cost comparison are printed for the closing note."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modules.batch_embedding import BatchEmbeddingGenerator
from modules.embedding_models import model_info
from modules.engine.migration import ModelMigrator
from modules.errors import MigrationNotReadyError
from modules.gemini_simulator import GeminiSimulator, SimulatorConfig, run_simulator_in_thread
from modules.settings import Settings
from tests.api_helpers import API_TOKEN, running_app
from tests.chaos_helpers import CHAOS_API_KEY, Worker, gemini_env, run_cli, status_json, wait_until
from tests.helpers import corpus, fetch_all, seed_chunks

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:batches.create_embeddings")]
OLD, NEW = "gemini-embedding-001@768", "gemini-embedding-2@768"


@pytest.fixture
def sim() -> Iterator[GeminiSimulator]:
    with run_simulator_in_thread(SimulatorConfig(batch_pending_seconds=0.3, batch_running_seconds=0.5)) as simulator:
        yield simulator


@pytest.fixture
def settings_for(make_settings: Callable[..., Settings], sim: GeminiSimulator) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "EMBEDDING_PROVIDER": "gemini",
            "GOOGLE_API_KEY": CHAOS_API_KEY,
            "GOOGLE_GEMINI_BASE_URL": sim.base_url,
            "EMBEDDING_BATCH_POLL_SECONDS": "0.2",
            "EMBEDDING_BATCH_JOB_SIZE": "500",
            "KNOWLEDGE_API_TOKEN": API_TOKEN,
        }
        values.update(overrides)
        return make_settings(**values)

    return build


async def test_2000_chunks_migrate_through_the_batch_api_while_search_keeps_answering(
    database_url: str, sim: GeminiSimulator, settings_for: Callable[..., Settings]
) -> None:
    texts = corpus(2000, docs=20)
    await seed_chunks(database_url, texts)
    settings = settings_for()
    async with BatchEmbeddingGenerator(settings) as generator:
        assert (await generator.run()).ok
    queries = [t for doc in texts.values() for t in doc[::50]]
    answers: list[tuple[float, int, str | None, set[str | None]]] = []
    stop = asyncio.Event()

    async with running_app(settings) as (client, _service):

        async def search_loop() -> None:
            n = 0
            while not stop.is_set():
                response = await client.get("/knowledge/search", params={"q": queries[n % len(queries)], "k": 5})
                body = response.json() if response.status_code == 200 else {}
                hits = {h["model"] for h in body.get("results", [])}
                answers.append((time.monotonic(), response.status_code, body.get("model"), hits))
                n += 1

        searching = asyncio.create_task(search_loop())
        timeline: list[tuple[str, float]] = []
        began = time.monotonic()
        async with BatchEmbeddingGenerator(settings) as migrating:
            migrator = ModelMigrator(migrating)
            _, target = await migrator.start("gemini-embedding-2@768")
            timeline.append(("started", time.monotonic() - began))
            filled = await migrator.fill(target)
            timeline.append(("filled", time.monotonic() - began))
            assert filled.ok and filled.embedded == 2000 and filled.batch_jobs_submitted == 4
            report = await migrator.cutover()
            cut_at = time.monotonic()
            timeline.append(("cut over", cut_at - began))
        await asyncio.sleep(1.0)  # searches after the cut-over
        stop.set()
        await searching

    # No search failed, none compared a query with another model's vectors, and the model changed once.
    assert answers and all(status == 200 for _, status, _, _ in answers), {s for _, s, _, _ in answers}
    assert all(hits == {model} for _, _, model, hits in answers)
    models = [model for _, _, model, _ in answers]
    switch = models.index(NEW)
    assert set(models[:switch]) == {OLD} and set(models[switch:]) == {NEW}
    assert len(models) - switch >= 3 and switch >= 3

    rows = await fetch_all(database_url, "SELECT embedding_model, count(*) FROM chunks GROUP BY 1")
    assert rows == [(NEW, 2000)]
    snapshot = sim.stats.to_dict()
    assert snapshot["batch_jobs_created"] == 4
    assert sorted(snapshot["batch_embeds_per_text"].values()) == [1] * 2000  # each text once, at batch price

    tokens = filled.tokens_sent
    info = model_info("gemini-embedding-2")
    # The fill's own summary prices what it sent: all of it in jobs, at the Batch price, next to online.
    assert filled.batch_tokens_sent == tokens > 0
    assert filled.cost_usd == info.cost_usd(tokens, batch=True)
    assert filled.cost_usd_if_online == info.cost_usd(tokens) == pytest.approx(2 * filled.cost_usd, abs=2e-6)
    print(
        f"\n[migration] 2000 chunks, {tokens} tokens: Batch API ${info.cost_usd(tokens, batch=True):.6f} vs "
        f"online ${info.cost_usd(tokens):.6f}; agreement {report.agreement:.3f} on {report.agreement_sample}; "
        f"{len(answers)} searches ({switch} before the cut-over); timeline "
        + ", ".join(f"{name} {at:.1f}s" for name, at in timeline)
        + "; cut-over steps "
        + ", ".join(f"{name} {at:.2f}s" for name, at in report.timeline)
    )


async def test_a_migration_killed_while_its_job_runs_is_resumed_without_paying_twice(
    database_url: str, base_env: dict[str, str], sim: GeminiSimulator, tmp_path: Path
) -> None:
    await seed_chunks(database_url, corpus(120, docs=3))
    env = gemini_env(base_env, sim, EMBEDDING_BATCH_POLL_SECONDS="0.2", EMBEDDING_BATCH_JOB_SIZE="60")
    assert run_cli(env).returncode == 0  # the live column: gemini-embedding-001
    sim.config.batch_running_seconds = 3.0
    victim = Worker(env, "--migrate-to", "gemini-embedding-2@768", out_dir=tmp_path, name="victim")
    wait_until(lambda: sim.stats.to_dict()["batch_jobs_created"] == 2, timeout=30, what="two jobs submitted")
    victim.send(signal.SIGKILL)
    assert victim.wait(timeout=10) == -signal.SIGKILL

    status = status_json(env)
    migration = status["migration"]
    assert (migration["state"], migration["target_model"], migration["in_progress"]) == ("filling", NEW, 120)
    assert [j["target"] for j in status["batch_jobs"]] == ["next", "next"]

    early = run_cli(env, "--migrate-cutover")
    assert early.returncode == 1 and "still running" in early.stderr  # nothing changed

    resumed = run_cli(env, "--migrate-to", "gemini-embedding-2@768", "--json", timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    done = json.loads(resumed.stdout)
    assert done["migration"]["embedded"] == 120 and done["migration"]["pending"] == 0
    snapshot = sim.stats.to_dict()
    assert snapshot["batch_jobs_created"] == 2  # the jobs were picked up by name, none submitted again
    assert sorted(snapshot["batch_embeds_per_text"].values()) == [1] * 120

    cut = run_cli(env, "--migrate-cutover", "--json")
    assert cut.returncode == 0, cut.stderr[-3000:]
    cutover = json.loads(cut.stdout)["cutover"]
    assert (cutover["source_model"], cutover["target_model"]) == (OLD, NEW)
    assert [step["step"] for step in cutover["timeline"]][-1] == "swapped"
    after = status_json(env)
    assert after["model"] == NEW and after["embedded"] == 120 and after["migration"]["state"] == "cut_over"


JOBS = "SELECT target, model, state, outcome FROM embq_batch_jobs ORDER BY created_at"


async def test_batch_jobs_of_the_old_model_hold_the_cut_over_and_one_retired_since_is_set_aside(
    database_url: str, sim: GeminiSimulator, settings_for: Callable[..., Settings]
) -> None:
    # Review 1: a job whose model a cut-over retired broke every later run.
    await seed_chunks(database_url, corpus(40, docs=4))
    settings = settings_for(EMBEDDING_BATCH_JOB_SIZE="80")
    async with BatchEmbeddingGenerator(settings) as generator:
        assert (await generator.run(limit=30)).embedded == 30
        sim.config.batch_running_seconds = 2.0
        await generator.run(batch_api=True, wait_for_batch=False)  # a live job of the old model: 10 chunks
        migrator = ModelMigrator(generator)
        _, target = await migrator.start("gemini-embedding-2@768")
        await migrator.fill(target, batch_api=False)
        with pytest.raises(MigrationNotReadyError, match="1 Batch API job"):
            await migrator.cutover()
        # As if the job had been missed (a release without the check): cut over, then the job comes back.
        await fetch_all(database_url, "UPDATE embq_batch_jobs SET state = 'done' WHERE target = 'live' RETURNING 1")
        await migrator.cutover()
        await fetch_all(
            database_url, "UPDATE embq_batch_jobs SET state = 'submitted' WHERE target = 'live' RETURNING 1"
        )
        await asyncio.sleep(2.5)  # it finished at the API
    async with BatchEmbeddingGenerator(settings) as later:
        stats = await later.run()  # ingesting the retired job refuses it, sets it aside, and goes on
        assert stats.ok, stats
    assert ("live", OLD, "done", "retired") in await fetch_all(database_url, JOBS)
    assert await fetch_all(database_url, "SELECT DISTINCT embedding_model FROM chunks") == [(NEW,)]


async def test_a_run_that_cannot_write_a_migrations_job_leaves_it_for_one_that_can(
    database_url: str, sim: GeminiSimulator, settings_for: Callable[..., Settings]
) -> None:
    # Review 13: an app on the Supabase REST path failed every run on a finished migration job.
    from modules.stores.supabase import SupabaseStore

    await seed_chunks(database_url, corpus(40, docs=4))
    settings = settings_for()
    async with BatchEmbeddingGenerator(settings) as generator:
        assert (await generator.run()).ok
        migrator = ModelMigrator(generator)
        _, target = await migrator.start("gemini-embedding-2@768")
        await migrator.fill(target, wait=False)  # --migrate-to --no-wait
    await asyncio.sleep(1.5)
    await fetch_all(
        database_url, "INSERT INTO chunks (doc_id, chunk_index, content) VALUES ('doc-000', 99, '新着') RETURNING 1"
    )
    async with BatchEmbeddingGenerator(settings) as app:
        app.store.shadow = lambda: SupabaseStore.shadow(None)  # type: ignore[method-assign,arg-type]
        assert (await app.run()).embedded == 1  # its own work done; the job left alone
    assert await fetch_all(database_url, "SELECT state, worker FROM embq_batch_jobs") == [("submitted", None)]
    async with BatchEmbeddingGenerator(settings) as direct:
        migrating = ModelMigrator(direct)
        _, target = await migrating.start("gemini-embedding-2@768")
        assert (await migrating.fill(target)).ok  # ingests the job, then the new upload online
    assert await fetch_all(database_url, "SELECT count(*) FROM embq_next_queue") == [(0,)]
