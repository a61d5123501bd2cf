"""The watcher's /metrics: a small HTTP/1.1 server on asyncio (no thread, no framework, no signal handlers of
its own), bound to EMBEDDING_METRICS_HOST (127.0.0.1 by default: it has no authentication) on
EMBEDDING_METRICS_PORT. Each scrape first reads the queue's counts into the gauges."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from modules.logs import get_logger
from modules.ops.metrics import CONTENT_TYPE, Metrics

log = get_logger(__name__)
_MAX_REQUEST = 8192


class MetricsServer:
    def __init__(self, metrics: Metrics, host: str, port: int, refresh: Callable[[], Awaitable[None]]) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self.refresh = refresh
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])
        log.info("📈 メトリクスを公開しています: http://%s/metrics", self.address)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            if len(head) > _MAX_REQUEST:
                raise ValueError("request too large")
            method, path, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            if method not in ("GET", "HEAD"):
                await _send(writer, 405, b"method not allowed\n", "text/plain; charset=utf-8", method == "HEAD")
            elif path.split("?", 1)[0] == "/metrics":
                await asyncio.wait_for(self.refresh(), 10)
                await _send(writer, 200, self.metrics.exposition(), CONTENT_TYPE, method == "HEAD")
            else:
                await _send(writer, 404, b"see /metrics\n", "text/plain; charset=utf-8", method == "HEAD")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _send(writer: asyncio.StreamWriter, status: int, body: bytes, content_type: str, head_only: bool) -> None:
    reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}[status]
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode("latin-1")
    )
    if not head_only:
        writer.write(body)
    await writer.drain()
