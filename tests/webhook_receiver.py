"""TEST-ONLY: a local HTTP receiver for alert webhooks (what Slack's incoming webhook would get). It records
every JSON body it is sent; `fail_next(n)` answers the next n posts 500, `down()` stops answering at all."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookReceiver:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.failures_left = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    failing = receiver.failures_left > 0
                    if failing:
                        receiver.failures_left -= 1
                    else:
                        receiver.raw.append(body)
                        receiver.received.append(json.loads(body))
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/T0SECRET/B0SECRET/xoxSECRETTOKEN"

    def fail_next(self, n: int) -> None:
        with self.lock:
            self.failures_left = n

    def alerts(self, status: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [m for m in self.received if status is None or m["alert"]["status"] == status]

    def wait_for(self, count: int, status: str | None = None, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.alerts(status)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"the receiver got {self.alerts(status)} (wanted {count} {status or ''})")

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
