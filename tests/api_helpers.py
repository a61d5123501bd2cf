"""TEST-ONLY: the upload API as a client sees it: the real standalone app (create_app) driven through
httpx's ASGI transport, its service started by knowledge_lifespan, every request bearing the token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from modules.knowledge.api import create_app, knowledge_lifespan
from modules.knowledge.service import KnowledgeService
from modules.settings import Settings

API_TOKEN = "test-api-token-5e2b7c9d1f3a"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@asynccontextmanager
async def running_app(
    settings: Settings, *, headers: dict[str, str] | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, KnowledgeService]]:
    app = create_app(settings)
    async with knowledge_lifespan(app, settings):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=AUTH if headers is None else headers, timeout=120
        ) as client:
            yield client, app.state.knowledge


async def upload(client: httpx.AsyncClient, name: str, data: bytes, **params: Any) -> httpx.Response:
    return await client.post("/knowledge/upload", files={"file": (name, data)}, params=params)
