"""Schema version 6 on a real PostgreSQL and through the PostgREST stand-in: the watcher's claim mode 'due'
(cooldowns that grow, quarantine after EMBEDDING_MAX_ATTEMPTS), the status's cooling-down and quarantined
counts (inside `failed`), the oldest pending chunk's age, the trigger that wakes watchers, the run history,
the watchers' heartbeats and the alerts' once-per-incident state."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from modules.settings import TableNames
from modules.stores.base import ChunkStore, ClaimFilter, ClaimMode, Failure, RetryRule
from modules.stores.ops_base import OperationsStore, RunRecord, WorkerInfo, operations_store
from modules.stores.postgres import PostgresStore
from modules.stores.supabase import SupabaseStore
from tests.helpers import fetch_all, seed_chunks
from tests.postgrest_fake import SERVICE_KEY, PostgrestFake, ensure_supabase_roles

RULE = RetryRule(max_attempts=3, cooldown_base=60.0, cooldown_max=150.0)


@pytest.fixture(params=["postgres", "supabase"])
async def store(request: pytest.FixtureRequest, database_url: str, pg_server: str) -> AsyncIterator[Any]:
    await seed_chunks(database_url, {"doc-a": [f"段落{i}です。" for i in range(6)]})
    if request.param == "postgres":
        own: Any = PostgresStore(database_url, TableNames(), 768)
        await own.prepare()
        yield own
        await own.aclose()
        return
    ensure_supabase_roles(pg_server)
    from tests.postgrest_fake import apply_migration

    apply_migration(database_url)  # grants to service_role now that the role exists
    with PostgrestFake(database_url) as fake:
        from modules.settings import Secret

        remote = SupabaseStore(fake.url, Secret(SERVICE_KEY), TableNames(), 768)
        await remote.prepare()
        yield remote
        await remote.aclose()


async def fail_all(store: ChunkStore, n: int) -> list[str]:
    chunks = await store.claim("w", n, 60, ClaimFilter())
    await store.fail("w", [Failure(c.id, "400 INVALID_ARGUMENT: bad") for c in chunks])
    return [c.id for c in chunks]


async def age_failures(url: str, seconds: float) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            "UPDATE chunks SET embedding_failed_at = embedding_failed_at - make_interval(secs => %s) "
            "WHERE embedding_failed_at IS NOT NULL",
            (seconds,),
        )


async def test_due_mode_retries_after_a_growing_cooldown_then_quarantines(store: Any, database_url: str) -> None:
    failed = await fail_all(store, 2)  # attempts = 1
    due = ClaimFilter(mode=ClaimMode.DUE, retry=RULE)
    taken = await store.claim("w", 10, 60, due)
    assert sorted(c.id for c in taken) == sorted(await ids(database_url, "embedding_failed_at IS NULL"))  # pending only
    await store.release("w", [c.id for c in taken])

    status = await store.status(retry=RULE)
    assert (status.failed, status.cooling_down, status.quarantined, status.retry_due) == (2, 2, 0, 0)
    assert status.next_retry_at is not None

    await age_failures(database_url, 61)  # the first cooldown (60 s) has passed
    assert (await store.status(retry=RULE)).retry_due == 2
    again = await store.claim("w", 10, 60, ClaimFilter(mode=ClaimMode.DUE, retry=RULE))
    assert set(failed) <= {c.id for c in again}
    assert await store.fail("w", [Failure(i, "400 INVALID_ARGUMENT: bad") for i in failed]) == 2  # attempts = 2
    await store.release("w", [c.id for c in again])

    await age_failures(database_url, 61)  # not enough: the second cooldown is 120 s
    assert not set(failed) & {c.id for c in await claim_due(store)}
    await age_failures(database_url, 60)
    third = await store.claim("w", 10, 60, ClaimFilter(mode=ClaimMode.DUE, retry=RULE))
    assert set(failed) <= {c.id for c in third}
    assert await store.fail("w", [Failure(i, "400 INVALID_ARGUMENT: bad") for i in failed]) == 2  # attempts = 3
    await store.release("w", [c.id for c in third])

    await age_failures(database_url, 10_000)
    assert not set(failed) & {c.id for c in await claim_due(store)}  # quarantined: never by a watcher
    status = await store.status(retry=RULE)
    assert (status.failed, status.cooling_down, status.quarantined) == (2, 0, 2)
    assert status.cooling_down + status.quarantined == status.failed
    retried = await store.claim("w", 10, 60, ClaimFilter(mode=ClaimMode.FAILED))  # --retry-only still takes them
    assert set(failed) <= {c.id for c in retried}


async def claim_due(store: Any) -> list[Any]:
    taken = await store.claim("w", 10, 60, ClaimFilter(mode=ClaimMode.DUE, retry=RULE))
    await store.release("w", [c.id for c in taken])
    return list(taken)


async def ids(url: str, where: str) -> list[str]:
    return sorted(r[0] for r in await fetch_all(url, f"SELECT id FROM chunks WHERE {where}"))


def test_the_cooldown_rule_in_python_says_what_sql_does() -> None:
    assert [RULE.cooldown(a) for a in (1, 2, 3, 4)] == [60.0, 120.0, 150.0, 150.0]


async def test_oldest_pending_age_and_the_trigger_that_queues(store: Any, database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("UPDATE chunks SET embedding_queued_at = now() - interval '90 seconds'")
    status = await store.status()
    assert status.oldest_pending_age_seconds is not None and 89 < status.oldest_pending_age_seconds < 200
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("LISTEN chunks_embq_pending")
        await conn.execute("UPDATE chunks SET content = content || '改訂' WHERE chunk_index = 0")  # text changed
        got = [n async for n in conn.notifies(timeout=5, stop_after=1)]
    assert [n.channel for n in got] == ["chunks_embq_pending"]
    fresh = await fetch_all(
        database_url, "SELECT chunk_index FROM chunks WHERE embedding_queued_at > now() - interval '30 seconds'"
    )
    assert fresh == [(0,)]


async def test_the_run_history_and_its_sums(store: Any) -> None:
    ops: OperationsStore = operations_store(store)
    first = await ops.record_run(
        RunRecord(
            kind="run",
            worker="h:1:a",
            scope="pending",
            seconds=2.5,
            outcome="ok",
            exit_code=0,
            embedded=10,
            api_calls=1,
            tokens=300,
            cost_usd=0.0001,
            model="m@768",
        )
    )
    second = await ops.record_run(
        RunRecord(
            kind="watch",
            worker="h:2:b",
            scope="watch",
            seconds=300,
            outcome="failed",
            exit_code=None,
            runs=4,
            embedded=5,
            failed=5,
            api_calls=3,
            rate_limited=2,
            tokens=100,
        )
    )
    assert second > first
    recent = await ops.runs_recent(10)
    assert [r.id for r in recent] == [second, first]
    assert recent[1].ended_at - recent[1].started_at == timedelta(seconds=2.5)
    assert (recent[0].exit_code, recent[0].runs, recent[0].cost_usd) == (None, 4, None)
    now = (await ops.health(60, 5, 300)).server_now
    totals = await ops.runs_totals(now - timedelta(hours=1))
    assert (totals.runs, totals.embedded, totals.failed, totals.rate_limited, totals.tokens) == (5, 15, 5, 2, 400)
    assert totals.cost_usd == pytest.approx(0.0001) and totals.cost_rows == 1
    series = await ops.runs_series(now - timedelta(hours=1), 3600)
    assert sum(p.embedded for p in series) == 15
    health = await ops.health(60, 5, 300)
    assert (health.sample_runs, health.sample_embedded, health.sample_failed) == (2, 15, 5)
    assert health.success_rate == pytest.approx(75.0)
    assert health.last_outcome == "ok"  # a watcher's period does not count: its worker row says


async def test_heartbeats_silence_and_a_watchers_stop(store: Any, database_url: str) -> None:
    ops = operations_store(store)
    await ops.worker_report(WorkerInfo("h:1:a", wake="listen"))
    await ops.worker_report(WorkerInfo("h:2:b", wake="poll"), outcome="api_unavailable")
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(
            "UPDATE embq_workers SET heartbeat_at = now() - interval '10 minutes' WHERE worker = 'h:1:a'"
        )
    health = await ops.health(60, 5, 300)
    assert [w.worker for w in health.silent_watchers] == ["h:1:a"] and health.active_watchers == 1
    assert health.last_outcome == "api_unavailable" and health.last_outcome_worker == "h:2:b"
    assert await ops.worker_stop(["h:1:a"], 0, "stopped") == 1
    assert await ops.worker_stop(["h:1:a"], 0, "stopped") == 0
    health = await ops.health(60, 5, 300)
    assert health.silent_watchers == ()
    listed = {w.worker: w for w in await ops.workers_list()}
    assert listed["h:1:a"].stopped_at is not None and listed["h:1:a"].exit_code == 0
    assert listed["h:2:b"].stopped_at is None and listed["h:2:b"].wake == "poll"


async def test_an_alert_opens_once_and_resolves_once_however_many_processes_ask(store: Any) -> None:
    ops = operations_store(store)
    opened = await asyncio.gather(
        *(ops.alert_raise("backlog_age", "backlog_age", "古い未処理チャンク", {"age": 1}) for _ in range(8))
    )
    assert opened.count(True) == 1
    claimed = await asyncio.gather(*(ops.alert_claim(60) for _ in range(4)))
    assert sum(len(c) for c in claimed) == 1  # one process sends it
    sent = next(c for c in claimed if c)[0]
    assert sent.state == "firing" and sent.alert_key == "backlog_age"
    assert await ops.alert_delivered(sent.id, "firing")
    assert await ops.alert_claim(60) == []

    assert await ops.alert_settle([], 3600) == 0  # clear, but not for the cooldown yet
    assert await ops.alert_raise("backlog_age", "backlog_age", "まだ古い", {"age": 2}) is False  # flaps back
    assert await ops.alert_settle([], 0) == 1
    resolved = await ops.alert_claim(60)
    assert [(a.alert_key, a.state) for a in resolved] == [("backlog_age", "resolved")]
    await ops.alert_delivered(resolved[0].id, "resolved")
    assert await ops.alert_claim(60) == []
    listed = await ops.alerts_list()
    assert len(listed) == 1 and listed[0].resolved_at is not None and listed[0].resolved_sent_at is not None
    assert await ops.alert_raise("backlog_age", "backlog_age", "また古い", {}) is True  # a new incident


async def test_probe_says_whether_a_watcher_has_work(store: Any, database_url: str) -> None:
    ops = operations_store(store)
    probe = await ops.watch_probe((), RULE)
    assert probe.has_pending and probe.next_retry_at is None
    taken = await store.claim("w", 100, 60, ClaimFilter())
    await store.fail("w", [Failure(c.id, "x") for c in taken[:1]])
    await store.release("w", [c.id for c in taken[1:]])
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(
            "UPDATE chunks SET embedding = array_fill(0.036, ARRAY[768])::vector WHERE embedding_failed_at IS NULL"
        )
    probe = await ops.watch_probe((), RULE)
    assert not probe.has_pending
    assert probe.next_retry_at is not None
    assert timedelta(seconds=55) < probe.next_retry_at - probe.server_now <= timedelta(seconds=60)
