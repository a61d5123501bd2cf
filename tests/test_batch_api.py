"""The Batch API route through the real google-genai client over HTTP to the simulator's Batch API, into
the real PostgreSQL: jobs tracked in the database, results through the online checks, what a job could
not embed back to the online path, and never a chunk submitted (or paid for) twice."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modules.batch_embedding import BatchEmbeddingGenerator
from modules.errors import ApiUnavailableError
from modules.gemini_simulator import GeminiSimulator, SimulatorConfig, run_simulator_in_thread
from modules.settings import Settings
from tests.chaos_helpers import CHAOS_API_KEY, Worker, gemini_env, rows, run_cli, status_json, wait_until, wrong_vectors
from tests.helpers import corpus, fetch_all, seed_chunks

pytestmark = pytest.mark.filterwarnings("ignore:batches.create_embeddings")


@pytest.fixture
def sim() -> Iterator[GeminiSimulator]:
    config = SimulatorConfig(batch_pending_seconds=0.2, batch_running_seconds=0.3)
    with run_simulator_in_thread(config) as simulator:
        yield simulator


@pytest.fixture
def settings_for(make_settings: Callable[..., Settings], sim: GeminiSimulator) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "EMBEDDING_PROVIDER": "gemini",
            "GOOGLE_API_KEY": CHAOS_API_KEY,
            "GOOGLE_GEMINI_BASE_URL": sim.base_url,
            "EMBEDDING_BATCH_POLL_SECONDS": "0.1",
            "EMBEDDING_BATCH_JOB_SIZE": "80",
        }
        values.update(overrides)
        return make_settings(**values)

    return build


async def run(settings: Settings, **kwargs: Any) -> Any:
    async with BatchEmbeddingGenerator(settings) as generator:
        return await generator.run(**kwargs)


def online_calls(sim: GeminiSimulator) -> int:
    return sum(sim.stats.calls_by_endpoint.get(e, 0) for e in ("batchEmbedContents", "embedContent"))


async def jobs(url: str) -> list[tuple[Any, ...]]:
    return await fetch_all(
        url, "SELECT state, outcome, embedded, failed, released FROM embq_batch_jobs ORDER BY created_at"
    )


@pytest.mark.slow  # over 1 s: the full tier only
async def test_a_batch_run_embeds_everything_through_jobs_with_exact_vectors_and_no_online_call(
    database_url: str, sim: GeminiSimulator, settings_for: Callable[..., Settings]
) -> None:
    await seed_chunks(database_url, corpus(200, docs=4))
    stats = await run(settings_for(), batch_api=True)
    assert stats.ok and (stats.embedded, stats.failed, stats.batch_jobs_submitted) == (200, 0, 3)
    after = rows(database_url)
    assert all(r.embedded for r in after) and wrong_vectors(after) == []
    assert online_calls(sim) == 0
    summary = stats.as_dict()  # priced at the Batch API's half price, next to what online would cost
    assert stats.batch_tokens_sent == stats.tokens_sent > 0
    assert isinstance(summary["cost_usd"], float) and summary["cost_usd"] > 0
    assert summary["cost_usd"] == pytest.approx(summary["cost_usd_if_online"] / 2, abs=2e-6)
    snapshot = sim.stats.to_dict()
    assert snapshot["batch_jobs_created"] == 3
    assert sorted(snapshot["batch_embeds_per_text"].values()) == [1] * 200  # each text once
    assert await jobs(database_url) == [("done", "ingested", 80, 0, 0), ("done", "ingested", 80, 0, 0),
                                        ("done", "ingested", 40, 0, 0)]  # fmt: skip


@pytest.mark.slow  # over 1 s: the full tier only
async def test_a_job_over_the_inline_limit_goes_as_a_jsonl_file_and_is_ingested_the_same(
    database_url: str, sim: GeminiSimulator, settings_for: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    import functools

    from modules.embedders import gemini_batch
    from modules.embedders.gemini_batch import GeminiBatchEmbedder

    # Google takes inline requests up to 20 MB; jobs of Japanese text that big would make a slow test, so the
    # limit is lowered here: a job of 80 texts (~15 KB) is then over it and goes through the Files API.
    monkeypatch.setattr(
        gemini_batch, "GeminiBatchEmbedder", functools.partial(GeminiBatchEmbedder, inline_limit_bytes=4_000)
    )
    await seed_chunks(database_url, corpus(200, docs=4))
    stats = await run(settings_for(), batch_api=True)
    assert stats.ok and (stats.embedded, stats.batch_jobs_submitted) == (200, 3)
    snapshot = sim.stats.to_dict()
    assert snapshot["files_uploaded"] == 3 and snapshot["files_downloaded"] == 3  # requests and results as files
    assert sorted(snapshot["batch_embeds_per_text"].values()) == [1] * 200
    after = rows(database_url)
    assert all(r.embedded for r in after) and wrong_vectors(after) == []
    assert online_calls(sim) == 0


@pytest.mark.slow  # over 1 s: the full tier only
async def test_an_items_own_error_is_recorded_on_its_chunk(
    database_url: str, sim: GeminiSimulator, settings_for: Callable[..., Settings]
) -> None:
    await seed_chunks(database_url, corpus(100, docs=2))
    sim.config.batch_item_error_rate = 0.1
    stats = await run(settings_for(), batch_api=True)
    failed = [r for r in rows(database_url) if not r.embedded]
    assert stats.failed == len(failed) > 0 and stats.embedded == 100 - len(failed)
    assert all(r.error and "batch item error" in r.error and r.attempts == 1 for r in failed)
    assert stats.outcome == "failed"


@pytest.mark.parametrize("fault", ["batch_fail_rate", "batch_expire_rate"])
@pytest.mark.slow  # over 1 s: the full tier only
async def test_what_a_failed_or_expired_job_could_not_embed_goes_back_to_the_online_path(
    database_url: str, sim: GeminiSimulator, settings_for: Callable[..., Settings], fault: str
) -> None:
    await seed_chunks(database_url, corpus(60, docs=2))
    setattr(sim.config, fault, 1.0)
    sim.config.batch_expire_seconds = 1.0
    stats = await run(settings_for(), batch_api=True)
    assert stats.ok and stats.embedded == 60
    assert online_calls(sim) > 0  # embedded online, after the job ended
    assert wrong_vectors(rows(database_url)) == []
    (job,) = await jobs(database_url)
    assert job[0] == "done" and job[1] in ("failed", "expired") and job[4] == 60


@pytest.mark.slow  # over 1 s: the full tier only
async def test_submitted_jobs_are_ingested_by_a_later_run_and_shown_in_status(
    database_url: str, base_env: dict[str, str], sim: GeminiSimulator, settings_for: Callable[..., Settings]
) -> None:
    await seed_chunks(database_url, corpus(50, docs=2))
    sim.config.batch_running_seconds = 2.0
    stats = await run(settings_for(), batch_api=True, wait_for_batch=False)
    assert (stats.batch_jobs_submitted, stats.embedded) == (1, 0) and stats.ok  # in a job: not pending

    status = status_json(gemini_env(base_env, sim))
    assert status["in_progress"] == 50 and status["pending"] == 0
    (job,) = status["batch_jobs"]
    assert job["state"] == "submitted" and job["chunks"] == 50 and job["name"].startswith("batches/")

    time.sleep(2.8)
    later = await run(settings_for())  # a plain run: ingests the finished job first
    assert later.ok and later.embedded == 50 and online_calls(sim) == 0
    assert sim.stats.to_dict()["batch_jobs_created"] == 1


async def test_a_lost_answer_to_the_create_never_submits_the_chunks_twice(
    database_url: str, sim: GeminiSimulator, settings_for: Callable[..., Settings]
) -> None:
    await seed_chunks(database_url, corpus(40, docs=2))
    sim.config.batch_lost_create_rate = 1.0  # the job is created, the connection closes unanswered
    stats = await run(settings_for(EMBEDDING_BATCH_JOB_SIZE="100"), batch_api=True)
    assert stats.ok and stats.embedded == 40
    snapshot = sim.stats.to_dict()
    assert snapshot["batch_jobs_created"] == 1 and online_calls(sim) == 0
    assert sorted(snapshot["batch_embeds_per_text"].values()) == [1] * 40


async def test_an_unreachable_batch_api_releases_everything_and_says_so(
    database_url: str, settings_for: Callable[..., Settings]
) -> None:
    await seed_chunks(database_url, corpus(20, docs=2))
    with pytest.raises(ApiUnavailableError):
        await run(
            settings_for(GOOGLE_GEMINI_BASE_URL="http://127.0.0.1:9", EMBEDDING_REQUEST_TIMEOUT="2"), batch_api=True
        )
    assert [r.id for r in rows(database_url) if r.embedded or r.leased or r.attempts] == []


@pytest.mark.slow
async def test_kill_9_while_a_job_runs_loses_nothing_and_pays_nothing_twice(
    database_url: str, base_env: dict[str, str], sim: GeminiSimulator, tmp_path: Path
) -> None:
    await seed_chunks(database_url, corpus(120, docs=3))
    sim.config.batch_running_seconds = 3.0
    env = gemini_env(base_env, sim, EMBEDDING_BATCH_POLL_SECONDS="0.2", EMBEDDING_BATCH_JOB_SIZE="60")
    victim = Worker(env, "--batch-api", out_dir=tmp_path, name="victim")
    wait_until(lambda: sim.stats.to_dict()["batch_jobs_created"] == 2, timeout=30, what="two jobs submitted")
    victim.send(signal.SIGKILL)
    assert victim.wait(timeout=10) == -signal.SIGKILL

    status = status_json(env)
    assert status["in_progress"] == 120 and len(status["batch_jobs"]) == 2  # held by the jobs, not lost

    rerun = run_cli(env, "--batch-api", "--json")  # picks the jobs up by name, submits nothing new
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["run"]["embedded"] == 120, rerun.stderr[-3000:]
    snapshot = sim.stats.to_dict()
    assert snapshot["batch_jobs_created"] == 2 and online_calls(sim) == 0
    assert sorted(snapshot["batch_embeds_per_text"].values()) == [1] * 120
    assert all(r.embedded for r in rows(database_url)) and wrong_vectors(rows(database_url)) == []
