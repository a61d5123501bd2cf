"""How a request carries its API key: the `x-goog-api-key` header (what the SDK sends), else a
`key` query parameter (what Google's REST examples and curl users send)."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import parse_qs


def api_key(headers: Sequence[tuple[bytes, bytes]], query: str) -> str | None:
    """The key the request carries, or None."""
    for name, value in headers:
        if name == b"x-goog-api-key" and value.strip():
            return value.decode("latin-1").strip()
    keys = parse_qs(query).get("key") if query else None
    return keys[0].strip() if keys and keys[0].strip() else None
