"""Bearer-token authentication for the standalone app (and for any host that wants a shared token).

`bearer_token(secret)` is a FastAPI dependency: the request must carry `Authorization: Bearer <token>`
with exactly `secret`, compared in constant time (both sides hashed first, so not even the length
leaks). A missing or malformed header, or a wrong token, is a 401 whose detail says what is missing
and never repeats what was sent.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from modules.settings import Secret

_SCHEME = HTTPBearer(auto_error=False, description="KNOWLEDGE_API_TOKEN, as `Authorization: Bearer <token>`")
Dependency = Callable[..., Any]


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


def unauthorized(detail: str, error: str | None = None) -> HTTPException:
    challenge = f'Bearer error="{error}"' if error else "Bearer"
    return HTTPException(401, detail, headers={"WWW-Authenticate": challenge})


def bearer_token(secret: Secret, setting: str = "KNOWLEDGE_API_TOKEN") -> Callable[..., Coroutine[Any, Any, None]]:
    """A dependency that admits only requests bearing `secret` (the value of the setting `setting`)."""
    expected = _digest(secret.reveal())

    async def require_token(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_SCHEME)]
    ) -> None:
        if credentials is None:
            if "authorization" in request.headers:
                raise unauthorized(
                    f"the Authorization header must be 'Bearer <token>' (the Bearer scheme, then the {setting} token)",
                    "invalid_request",
                )
            raise unauthorized(f"this API needs an 'Authorization: Bearer <token>' header with the {setting} token")
        if not hmac.compare_digest(_digest(credentials.credentials), expected):
            raise unauthorized(f"the bearer token was not accepted (it must be the {setting} token)", "invalid_token")

    return require_token
