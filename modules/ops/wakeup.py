"""How an idle watcher learns that there is work: PostgreSQL's LISTEN/NOTIFY, or a timer.

`ListenWakeup` keeps one connection of its own, outside the pool, listening on the chunks table's channel
(the trigger of schema version 6 notifies it when a chunk becomes pending). When the connection drops it
reconnects with backoff, and wakes the watcher once it is back, since notifications sent meanwhile are lost.
A connection that stays silent is pinged every `ping_seconds`, so a half-open one is noticed. `PollWakeup`
(the Supabase REST path, which has no LISTEN, or a transaction pooler) never wakes early: the watcher's
sweep interval is its polling interval.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

import psycopg
from psycopg import sql

from modules.logs import get_logger
from modules.settings import Settings
from modules.stores.base import ChunkStore

log = get_logger(__name__)


class Wakeup(Protocol):
    mode: str  # listen or poll

    async def start(self) -> None: ...

    def clear(self) -> None:
        """Forget the wake-ups so far (called just before the watcher looks for work)."""
        ...

    async def wait(self, seconds: float) -> bool:
        """Wait at most `seconds`; True if woken by a notification."""
        ...

    async def aclose(self) -> None: ...


class PollWakeup:
    mode = "poll"

    def __init__(self) -> None:
        self._event = asyncio.Event()

    async def start(self) -> None:
        return None

    def clear(self) -> None:
        self._event.clear()

    async def wait(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), seconds)
        return self._event.is_set()

    async def aclose(self) -> None:
        return None


class ListenWakeup:
    mode = "listen"

    def __init__(self, conninfo: str, channel: str, *, ping_seconds: float = 30.0, max_backoff: float = 30.0) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._ping = max(0.5, ping_seconds)
        self._max_backoff = max_backoff
        self._event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.notifications = 0
        self.reconnects = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen_forever(), name="embq-listen")
        with contextlib.suppress(TimeoutError):  # the watcher starts anyway; its sweep covers the gap
            await asyncio.wait_for(self.connected.wait(), 10)

    def clear(self) -> None:
        self._event.clear()

    async def wait(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), seconds)
        return self._event.is_set()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _listen_forever(self) -> None:
        backoff = 0.5
        while True:
            try:
                await self._listen_once()
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as exc:
                if self.connected.is_set():
                    log.warning(
                        "🔌 LISTEN の接続が切れました。再接続します (その間は定期確認で動きます): %s", _short(exc)
                    )
                self.connected.clear()
                self.reconnects += 1
                await asyncio.sleep(backoff)
                backoff = min(self._max_backoff, backoff * 2)
                continue
            backoff = 0.5

    async def _listen_once(self) -> None:
        async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True, connect_timeout=10) as conn:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
            if not self.connected.is_set():
                if self.reconnects:
                    log.info("🔌 LISTEN に再接続しました")
                self.connected.set()
            self._event.set()  # whatever was announced while nobody listened
            # Wait on the socket itself: psycopg's notifies() wakes every 0.1 s to look for interrupts, which
            # would cost an idle watcher a steady trickle of CPU. Here an idle watcher sleeps in epoll until a
            # notification (or the ping's timer) arrives.
            loop = asyncio.get_running_loop()
            pgconn, fd = conn.pgconn, conn.pgconn.socket
            readable = asyncio.Event()
            while True:
                loop.add_reader(fd, readable.set)
                try:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(readable.wait(), self._ping)
                finally:
                    loop.remove_reader(fd)
                if readable.is_set():
                    readable.clear()
                    pgconn.consume_input()  # a closed connection raises here, and is replaced
                    while pgconn.notifies() is not None:
                        self.notifications += 1
                        self._event.set()
                else:
                    await conn.execute("SELECT 1")  # a half-open connection fails here, and is replaced
                    self._event.set()  # a notification that came with the ping's answer is not lost


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def wakeup_for(store: ChunkStore, settings: Settings) -> Wakeup:
    """LISTEN on a direct PostgreSQL connection; polling on the Supabase REST path and through a transaction
    pooler (Supabase's port 6543, pgbouncer), where a LISTEN would not be kept."""
    from modules.stores.postgres import PostgresStore, transaction_pooler
    from modules.stores.sql_templates import notify_channel

    if not isinstance(store, PostgresStore):
        return PollWakeup()
    if transaction_pooler(store.conninfo):
        log.warning(
            "🔌 トランザクションプーラー経由の接続では LISTEN が使えないため、%.0f秒ごとのポーリングで動きます "
            "(即時に起きるには直接接続 (5432) かセッションプーラーの DATABASE_URL を使ってください)",
            settings.watch_interval,
        )
        return PollWakeup()
    return ListenWakeup(store.conninfo, notify_channel(store.tables), ping_seconds=max(5.0, settings.watch_interval))
