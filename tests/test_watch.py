"""The watcher in-process, on the real embedded PostgreSQL (LISTEN/NOTIFY through the migration's trigger) or
through the PostgREST stand-in (polling), with the local model or the Gemini simulator over HTTP: it wakes on
an insert without waiting for its sweep, retries failed chunks after their cooldown up to
EMBEDDING_MAX_ATTEMPTS and then leaves them quarantined, rides out an API outage, and the alerts go out once
and are resolved once, to a local receiver, carrying no chunk text and no secret."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from modules.batch_embedding import BatchEmbeddingGenerator
from modules.gemini_simulator import GeminiSimulator, SimulatorConfig, run_simulator_in_thread
from modules.ops.alerts import alert_monitor
from modules.ops.wakeup import ListenWakeup, PollWakeup, wakeup_for
from modules.ops.watcher import Watcher
from modules.settings import Settings
from modules.stores.ops_base import operations_store
from tests.chaos_helpers import CHAOS_API_KEY
from tests.helpers import create_tables, fetch_all, seed_chunks
from tests.webhook_receiver import WebhookReceiver

POISON = "毒入りの段落"


@dataclass
class Running:
    watcher: Watcher
    generator: BatchEmbeddingGenerator
    stop: asyncio.Event
    task: asyncio.Task[int]


@asynccontextmanager
async def watching(settings: Settings, *, alerts: bool = False) -> AsyncIterator[Running]:
    generator = BatchEmbeddingGenerator(settings)
    await generator.open()
    background = []
    if alerts:
        monitor = alert_monitor(operations_store(generator.store), settings)

        async def evaluate() -> None:
            await monitor.run_forever(0.2)

        background.append(evaluate)
    watcher = Watcher(generator, settings, wakeup_for(generator.store, settings), background=background)
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.serve(stop))
    try:
        yield Running(watcher, generator, stop, task)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.shield(task), 30)
        await generator.close()


async def until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


async def count(url: str, where: str) -> int:
    return int((await fetch_all(url, f"SELECT count(*) FROM chunks WHERE {where}"))[0][0])


async def insert_chunk(url: str, doc_id: str, text: str, index: int = 100) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO chunks (doc_id, chunk_index, content) VALUES (%s, %s, %s)", (doc_id, index, text)
        )


@pytest.fixture
def sim() -> Any:
    with run_simulator_in_thread(SimulatorConfig(poison_marker=POISON)) as simulator:
        yield simulator


def gemini(make_settings: Callable[..., Settings], sim: GeminiSimulator, **extra: object) -> Settings:
    return make_settings(
        EMBEDDING_PROVIDER="gemini",
        GOOGLE_API_KEY=CHAOS_API_KEY,
        GOOGLE_GEMINI_BASE_URL=sim.base_url,
        EMBEDDING_REQUEST_TIMEOUT=5,
        **extra,
    )


async def test_an_insert_wakes_an_idle_watcher_long_before_its_sweep(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    await seed_chunks(database_url, {"d": ["最初の段落です。", "二つ目の段落です。"]})
    settings = make_settings(EMBEDDING_WATCH_INTERVAL=120)
    async with watching(settings) as running:
        assert isinstance(running.watcher.wakeup, ListenWakeup)
        await until(lambda: _none_pending(database_url), what="the backlog at start")
        started = time.monotonic()
        await insert_chunk(database_url, "d", "監視中に届いた段落です。")
        await until(lambda: _none_pending(database_url), timeout=60, what="the new chunk")
        assert time.monotonic() - started < 60  # the sweep would come after 120 s: the NOTIFY woke it
        assert running.watcher.wakeup.notifications >= 1
    assert running.task.result() == 0
    rows = await fetch_all(database_url, "SELECT kind, exit_code, embedded, outcome FROM embq_runs ORDER BY id")
    assert rows == [("watch", 0, 3, "ok")]  # one row for the whole (short) period, with the exit code
    workers = await fetch_all(database_url, "SELECT wake, stopped_at IS NOT NULL, exit_code FROM embq_workers")
    assert workers == [("listen", True, 0)]


@pytest.mark.slow  # over 1 s: the full tier only
async def test_an_idle_watcher_sleeps(database_url: str, make_settings: Callable[..., Settings]) -> None:
    """Nothing to do from the start (the wake-up the LISTEN connection gives when it connects included): the
    watcher looks once and sleeps until its sweep, it does not spin."""
    await create_tables(database_url)
    async with watching(make_settings(EMBEDDING_WATCH_INTERVAL=30)) as running:
        await asyncio.sleep(1.5)
        assert running.watcher.probes <= 2, running.watcher.probes
        assert running.watcher.runs == 0
        await insert_chunk_with_document(database_url)
        await until(lambda: _none_pending(database_url), what="the chunk")
        await asyncio.sleep(1.0)
        assert running.watcher.probes <= 5, running.watcher.probes


async def insert_chunk_with_document(url: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("INSERT INTO document_sources (id, name, type) VALUES ('d', 'd.txt', 'txt')")
        await conn.execute("INSERT INTO chunks (doc_id, chunk_index, content) VALUES ('d', 0, '一つだけの段落です。')")


async def _none_pending(url: str) -> bool:
    return await count(url, "embedding IS NULL") == 0


@pytest.mark.slow
async def test_failed_chunks_are_retried_after_a_cooldown_then_quarantined(
    database_url: str, make_settings: Callable[..., Settings], sim: GeminiSimulator
) -> None:
    await seed_chunks(database_url, {"d": ["良い段落その一。", f"{POISON}です。", "良い段落その二。"]})
    settings = gemini(
        make_settings,
        sim,
        EMBEDDING_WATCH_INTERVAL=30,
        EMBEDDING_MAX_ATTEMPTS=3,
        EMBEDDING_RETRY_COOLDOWN=0.3,
        EMBEDDING_RETRY_COOLDOWN_MAX=0.6,
    )
    async with watching(settings) as running:

        async def quarantined() -> bool:
            return await count(database_url, "embedding_attempts >= 3") == 1

        await until(quarantined, what="three attempts of the poisoned chunk")
        await asyncio.sleep(1.5)  # well past the longest cooldown: a quarantined chunk is left alone
        status = await running.generator.store.status(retry=running.generator.retry_rule)
    attempts = await fetch_all(database_url, "SELECT content, embedding_attempts FROM chunks ORDER BY chunk_index")
    assert attempts == [("良い段落その一。", 0), (f"{POISON}です。", 3), ("良い段落その二。", 0)]
    assert (status.embedded, status.failed, status.cooling_down, status.quarantined) == (2, 1, 0, 1)
    assert running.watcher.runs >= 3  # the retries came from the cooldowns ending, not from a sweep (30 s)

    plain = BatchEmbeddingGenerator(settings)  # a plain run keeps today's contract: failures wait for --retry-only
    async with plain:
        stats = await plain.run()
    assert stats.failed == 0 and stats.scope_failed == 1
    assert await count(database_url, "embedding_attempts = 3") == 1


async def test_the_rest_path_polls(
    database_url: str, make_settings: Callable[..., Settings], pg_server: str, tmp_path: Any
) -> None:
    from tests.postgrest_fake import SERVICE_KEY, PostgrestFake, apply_migration, ensure_supabase_roles

    await seed_chunks(database_url, {"d": ["一つ目の段落です。"]})
    ensure_supabase_roles(pg_server)
    apply_migration(database_url)
    with PostgrestFake(database_url) as fake:
        settings = make_settings(
            DATABASE_URL="", SUPABASE_URL=fake.url, SUPABASE_KEY=SERVICE_KEY, EMBEDDING_WATCH_INTERVAL=0.3
        )
        async with watching(settings) as running:
            assert isinstance(running.watcher.wakeup, PollWakeup)
            await until(lambda: _none_pending(database_url), what="the first chunk")
            await insert_chunk(database_url, "d", "ポーリングで拾われる段落です。")
            await until(lambda: _none_pending(database_url), what="the polled chunk")
    rows = await fetch_all(database_url, "SELECT wake, exit_code FROM embq_workers")
    assert rows == [("poll", 0)]


@pytest.mark.slow
async def test_an_outage_is_ridden_out_and_its_alert_sent_once_then_resolved(
    database_url: str, make_settings: Callable[..., Settings], sim: GeminiSimulator, tmp_path: Any
) -> None:
    texts = [f"障害中に待っている段落{i}です。" for i in range(4)]
    await seed_chunks(database_url, {"d": texts})
    sim.config.error_rate_503 = 1.0
    with WebhookReceiver() as receiver:
        settings = gemini(
            make_settings,
            sim,
            EMBEDDING_WATCH_INTERVAL=0.5,
            EMBEDDING_OUTAGE_SECONDS=0.3,
            EMBEDDING_MAX_RETRIES=1,
            ALERT_WEBHOOK_URL=receiver.url,
            ALERT_COOLDOWN=0.02,  # 1.2 s clear before "resolved"
            ALERT_BACKLOG_AGE=600,
        )
        async with watching(settings, alerts=True) as running:
            firing = await asyncio.to_thread(receiver.wait_for, 1, "firing")
            assert [m["alert"]["key"] for m in firing] == ["api_unavailable"]
            assert await count(database_url, "embedding_failed_at IS NOT NULL") == 0  # nobody's chunk was charged
            assert not running.task.done()  # still watching
            sim.config.error_rate_503 = 0.0
            await until(lambda: _none_pending(database_url), timeout=60, what="the backlog after the outage")
            resolved = await asyncio.to_thread(receiver.wait_for, 1, "resolved")
        await asyncio.sleep(0.5)
        every = receiver.alerts()
    assert [(m["alert"]["key"], m["alert"]["status"]) for m in every] == [
        ("api_unavailable", "firing"),
        ("api_unavailable", "resolved"),
    ], every
    assert resolved[0]["text"].startswith("✅ 解決 [バッチエンベディング]")
    assert firing[0]["text"].startswith("🚨 発生 [バッチエンベディング]")
    raw = "\n".join(r.decode() for r in receiver.raw)
    for secret in (CHAOS_API_KEY, "SECRETTOKEN", *texts, "障害中"):
        assert secret not in raw
    log_text = (
        (tmp_path / "batch_embedding.log").read_text(encoding="utf-8")
        if (tmp_path / "batch_embedding.log").exists()
        else ""
    )
    assert "SECRETTOKEN" not in log_text
    (tmp_path / "alerts_received.json").write_text(json.dumps(every, ensure_ascii=False, indent=2), encoding="utf-8")


async def test_a_failing_webhook_never_breaks_a_run_and_is_retried(
    database_url: str, make_settings: Callable[..., Settings], sim: GeminiSimulator
) -> None:
    await seed_chunks(database_url, {"d": ["良い段落。", f"{POISON}。"]})
    with WebhookReceiver() as receiver:
        receiver.fail_next(1)
        settings = gemini(make_settings, sim, ALERT_WEBHOOK_URL=receiver.url, ALERT_BACKLOG_AGE=600)
        async with BatchEmbeddingGenerator(settings) as generator:
            stats = await generator.run()
            monitor = alert_monitor(operations_store(generator.store), settings)
            await monitor.evaluate_safely()  # 500 from the receiver: logged, not raised
            assert receiver.alerts() == []
            await monitor.evaluate_safely()  # taken again only after the retry interval
            assert receiver.alerts() == []
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
                await conn.execute("UPDATE embq_alerts SET send_claimed_at = now() - interval '2 minutes'")
            await monitor.evaluate_safely()
    assert stats.embedded == 1 and stats.failed == 1
    got = receiver.alerts()
    assert [(m["alert"]["key"], m["alert"]["status"]) for m in got] == [("success_rate", "firing")]
    assert got[0]["alert"]["details"]["success_rate"] == 50.0
    assert POISON not in json.dumps(got, ensure_ascii=False)
