"""A browser's way into the standalone app's dashboard, without weakening the API.

A browser can't send `Authorization: Bearer <KNOWLEDGE_API_TOKEN>` by itself, so the dashboard has a small
sign-in form: the token is posted once (never put in a URL), compared in constant time, and answered with a
session cookie: `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's page sends it), `Secure`
when the request came over HTTPS, `Path=/`, valid DASHBOARD_SESSION_HOURS. The cookie is
`v1.<issued>.<nonce>.<signature>`, signed with HMAC-SHA256 under a key derived from the token, so changing
the token signs every session out, and nothing about the token can be read from it. Only the dashboard's
pages and /metrics accept the cookie; the /knowledge API routes still take only the bearer token.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time

from fastapi import Request

from modules.settings import Secret

COOKIE = "embq_dashboard"
_VERSION = "v1"
_KEY_LABEL = b"batch-embedding dashboard session v1"
FAILED_SIGN_IN_DELAY = 0.5  # seconds: a wrong token costs the guesser time


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


class SessionAuth:
    def __init__(self, token: Secret, hours: float) -> None:
        self._expected = _digest(token.reveal())
        self._key = hmac.new(token.reveal().encode("utf-8", "surrogatepass"), _KEY_LABEL, hashlib.sha256).digest()
        self.lifetime = int(hours * 3600)

    def token_matches(self, candidate: str) -> bool:
        return hmac.compare_digest(_digest(candidate), self._expected)

    def new_cookie(self, now: float | None = None) -> str:
        payload = f"{_VERSION}.{int(now if now is not None else time.time())}.{secrets.token_hex(16)}"
        return f"{payload}.{self._sign(payload)}"

    def cookie_valid(self, value: str | None, now: float | None = None) -> bool:
        if not value or len(value) > 200:
            return False
        payload, _, signature = value.rpartition(".")
        if not hmac.compare_digest(self._sign(payload), signature):
            return False
        parts = payload.split(".")
        if len(parts) != 3 or parts[0] != _VERSION or not parts[1].isdigit():
            return False
        issued, current = int(parts[1]), now if now is not None else time.time()
        return issued - 60 <= current < issued + self.lifetime

    def authorized(self, request: Request) -> bool:
        """A valid bearer token (curl, Prometheus) or a valid session cookie (a signed-in browser)."""
        header = request.headers.get("authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "bearer" and credentials and self.token_matches(credentials.strip()):
            return True
        return self.cookie_valid(request.cookies.get(COOKIE))

    def _sign(self, payload: str) -> str:
        return hmac.new(self._key, payload.encode("ascii", "replace"), hashlib.sha256).hexdigest()


async def slow_down() -> None:
    await asyncio.sleep(FAILED_SIGN_IN_DELAY)
