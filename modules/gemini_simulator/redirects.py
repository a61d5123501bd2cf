"""Redirects to another origin, and the record of what followed them.

httpx (under the SDK, which sets `follow_redirects=True` on every client it builds) strips only
`Authorization` when a redirect leaves the origin; `x-goog-api-key` goes along. A redirect answer
points at `<origin>/redirected<original target>`; whatever arrives on such a path is recorded with
its headers (key-bearing values redacted, so the stats never hold a key) and answered 404.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .auth import api_key
from .http11 import Reply

PREFIX = "/redirected"
_KEY_HEADERS = frozenset({b"x-goog-api-key", b"authorization", b"cookie"})


def is_redirected(path: str) -> bool:
    return path.startswith(f"{PREFIX}/")


def redirect_reply(status: int, origin: str, target: str) -> Reply:
    """A 301/302/303/307/308 to `origin`, keeping the path and query (and so a `?key=`)."""
    location = f"{origin.rstrip('/')}{PREFIX}{target}"
    body = f'<a href="{location}">moved</a>.\n'.encode()
    return Reply(status, body, content_type="text/html; charset=UTF-8", headers=[("location", location)])


def redirected_request(
    headers: Sequence[tuple[bytes, bytes]], method: str, raw_path: str, query: str
) -> tuple[dict[str, Any], bool]:
    """What to record of a request that followed a redirect, and whether it carried an API key
    (header, `?key=` or an Authorization header)."""
    carried_key = api_key(headers, query) is not None or any(name == b"authorization" for name, _ in headers)
    shown = {
        name.decode("latin-1"): "<redacted>" if name in _KEY_HEADERS else value.decode("latin-1")
        for name, value in headers
    }
    return {"method": method, "path": raw_path, "headers": shown}, carried_key
