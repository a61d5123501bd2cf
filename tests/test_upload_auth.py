"""Who may use the upload API: the standalone app's bearer token (KNOWLEDGE_API_TOKEN) on every route
but /health, docs included; a host's own dependency per action through knowledge_router(); and the
refusals, which say what is missing and never repeat the token. The body of a refused upload is
never read."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Header, HTTPException

from modules.knowledge.api import create_app, knowledge_lifespan, knowledge_router
from modules.knowledge.service import KnowledgeService
from modules.settings import Settings, SettingsError, load_settings
from tests.api_helpers import API_TOKEN, running_app, upload
from tests.helpers import create_tables, fetch_all

ROOT = Path(__file__).resolve().parent.parent
WRONG_TOKEN = "wrong-token-a1b2c3d4e5f6a7b8"

ROUTES = [
    ("GET", "/knowledge/documents"),
    ("GET", "/knowledge/documents/some-id/progress"),
    ("GET", "/knowledge/search?q=test"),
    ("DELETE", "/knowledge/documents/some-id"),
    ("POST", "/knowledge/upload"),
    ("GET", "/docs"),
    ("GET", "/openapi.json"),
]


@pytest.fixture
async def app(make_settings: Callable[..., Settings], database_url: str) -> AsyncIterator[tuple[FastAPI, Settings]]:
    await create_tables(database_url)
    settings = make_settings(KNOWLEDGE_API_TOKEN=API_TOKEN)
    app = create_app(settings)
    async with knowledge_lifespan(app, settings):
        yield app, settings


def client_for(app: FastAPI, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", headers=headers or {})


@pytest.mark.parametrize(
    ("headers", "said"),
    [
        ({}, "needs an 'Authorization: Bearer <token>' header"),
        ({"Authorization": f"Basic {API_TOKEN}"}, "must be 'Bearer <token>'"),
        ({"Authorization": f"Bearer {WRONG_TOKEN}"}, "was not accepted"),
        ({"Authorization": f"Bearer {API_TOKEN[:-1]}"}, "was not accepted"),
    ],
)
async def test_every_route_but_health_needs_the_token(
    app: tuple[FastAPI, Settings], headers: dict[str, str], said: str
) -> None:
    for method, path in ROUTES:  # one app for all routes: the refusal comes before any database work
        async with client_for(app[0], headers) as client:
            files = {"file": ("a.txt", b"x")} if method == "POST" else None
            response = await client.request(method, path, files=files)
        assert response.status_code == 401, (method, path, response.text)
        assert said in response.json()["detail"] and "KNOWLEDGE_API_TOKEN" in response.json()["detail"], path
        assert response.headers["www-authenticate"].startswith("Bearer"), path
        assert API_TOKEN not in response.text and WRONG_TOKEN not in response.text, path
        assert API_TOKEN[:-1] not in response.text, path


async def test_with_the_token_every_route_answers_and_health_needs_none(app: tuple[FastAPI, Settings]) -> None:
    async with client_for(app[0]) as anonymous:
        health = await anonymous.get("/health")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    async with client_for(app[0], {"Authorization": f"Bearer {API_TOKEN}"}) as client:
        posted = await upload(client, "a.txt", "認証付きの文書です。".encode())
        assert posted.status_code == 202, posted.text
        doc_id = posted.json()["doc_id"]
        assert (await client.get("/knowledge/documents")).status_code == 200
        assert (await client.get(f"/knowledge/documents/{doc_id}/progress")).status_code == 200
        assert (await client.get("/knowledge/search", params={"q": "認証"})).status_code == 200
        assert (await client.get("/openapi.json")).json()["paths"]["/knowledge/upload"]
        assert "swagger" in (await client.get("/docs")).text.lower()
        assert (await client.delete(f"/knowledge/documents/{doc_id}")).status_code == 200


async def test_no_answer_is_a_redirect_built_from_a_hostile_host_header(app: tuple[FastAPI, Settings]) -> None:
    # Review 1, F17: "/knowledge/documents/" was a 307 to http://evil.example/knowledge/documents, unauthenticated.
    for token in (None, API_TOKEN):
        headers = {"Host": "evil.example"} | ({"Authorization": f"Bearer {token}"} if token else {})
        async with client_for(app[0], headers) as client:
            for method, path in [*ROUTES, ("GET", "/health")]:
                route, _, query = path.partition("?")
                for target in (f"{route}/" + (f"?{query}" if query else ""), f"/{path}", path):
                    files = {"file": ("a.txt", "本文です。".encode())} if method == "POST" else None
                    response = await client.request(method, target, files=files)
                    assert not response.is_redirect and "location" not in response.headers, (token, method, target)
                    assert "evil.example" not in response.text
                    if target != path:  # paths are exact: a trailing slash or a doubled one names nothing
                        assert response.status_code == 404, (token, method, target, response.status_code)
                    elif token is None and path != "/health":
                        assert response.status_code == 401
                    else:
                        assert response.status_code in (200, 202, 404), (method, target, response.text)


async def test_an_unauthenticated_upload_is_refused_before_its_body_is_read(
    app: tuple[FastAPI, Settings], database_url: str
) -> None:
    body_reads = 0

    async def receive() -> dict[str, Any]:
        nonlocal body_reads
        body_reads += 1
        return {"type": "http.request", "body": b"x" * 65536, "more_body": True}  # an endless upload

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/knowledge/upload",
        "raw_path": b"/knowledge/upload",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), (b"content-type", b"multipart/form-data; boundary=xyz")],
        "client": ("127.0.0.1", 1234),
        "server": ("test", 80),
        "app": app[0],
    }
    await app[0](scope, receive, send)
    assert sent[0]["status"] == 401
    assert body_reads == 0
    assert (await fetch_all(database_url, "SELECT count(*) FROM document_sources"))[0] == (0,)


async def test_an_upload_declaring_too_many_bytes_is_refused_before_its_body_is_read(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    await create_tables(database_url)
    settings = make_settings(KNOWLEDGE_API_TOKEN=API_TOKEN, UPLOAD_MAX_BYTES="1000000")
    app = create_app(settings)
    async with knowledge_lifespan(app, settings):
        reads = 0
        part_head = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n\r\n'

        async def receive() -> dict[str, Any]:  # one file part that never ends
            nonlocal reads
            reads += 1
            return {"type": "http.request", "body": part_head if reads == 1 else b"x" * 65536, "more_body": True}

        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        headers = [
            (b"host", b"test"),
            (b"authorization", f"Bearer {API_TOKEN}".encode()),
            (b"content-type", b"multipart/form-data; boundary=xyz"),
            (b"content-length", b"10000000000"),
        ]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/knowledge/upload",
            "raw_path": b"/knowledge/upload",
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 1234),
            "server": ("test", 80),
            "app": app,
        }
        await app(scope, receive, send)
        assert sent[0]["status"] == 413 and reads == 0
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        assert b"UPLOAD_MAX_BYTES" in body

        # Without a Content-Length, the body is counted as it comes and refused once past the limit.
        reads = 0
        sent.clear()
        scope["headers"] = headers[:3]
        await app(scope, receive, send)
        assert sent[0]["status"] == 413 and 0 < reads <= 1_100_000 // 65536 + 2


def test_the_standalone_app_refuses_to_start_without_a_token(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(SettingsError) as caught:
        create_app(make_settings())
    assert caught.value.setting == "KNOWLEDGE_API_TOKEN"


@pytest.mark.parametrize("token", ["short", "has a space in it 123456", "ｔｏｋｅｎ全角のトークンです１２３４５６"])
def test_a_weak_or_unsendable_token_is_refused_without_being_shown(token: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(env={"KNOWLEDGE_API_TOKEN": token})
    assert caught.value.setting == "KNOWLEDGE_API_TOKEN" and token not in str(caught.value)


def test_the_token_is_scrubbed_from_every_log_line(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(KNOWLEDGE_API_TOKEN=API_TOKEN)
    assert API_TOKEN in settings.secrets()
    assert settings.describe()["knowledge_api_token"] == "set"


@pytest.mark.slow
def test_uvicorn_without_a_token_stops_with_one_line_naming_it(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "BATCH_EMBEDDING_DOTENV": str(tmp_path / "absent.env"), "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "modules.knowledge.api:app", "--port", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    ours = [line for line in result.stderr.splitlines() if "KNOWLEDGE_API_TOKEN" in line]
    assert len(ours) == 1 and ours[0].startswith("❌ 設定エラー: KNOWLEDGE_API_TOKEN:"), result.stderr


# --- a host app with its own authentication --------------------------------------------------------


def host_user(x_role: str | None = Header(None)) -> str:
    """Stands in for the host's own dependency (e.g. one that verifies the Supabase JWT)."""
    if x_role is None:
        raise HTTPException(401, "sign in first: this host needs its session token")
    return x_role


def host_admin(x_role: str | None = Header(None)) -> None:
    if host_user(x_role) != "admin":
        raise HTTPException(403, "deleting documents needs the admin role")


@pytest.fixture
async def host(make_settings: Callable[..., Settings], database_url: str) -> AsyncIterator[FastAPI]:
    await create_tables(database_url)
    settings = make_settings()  # no KNOWLEDGE_API_TOKEN: the host authenticates
    app = FastAPI()
    app.include_router(knowledge_router(read=host_user, upload=host_user, delete=host_admin))
    async with knowledge_lifespan(app, settings):
        yield app


async def test_a_host_plugs_in_its_own_dependency_and_deleting_is_a_separate_permission(host: FastAPI) -> None:
    async with client_for(host) as stranger:
        assert (await stranger.get("/knowledge/documents")).status_code == 401
        refused = await upload(stranger, "a.txt", "文書です。".encode())
        assert refused.status_code == 401 and "session token" in refused.json()["detail"]
    async with client_for(host, {"X-Role": "staff"}) as staff:
        doc_id = (await upload(staff, "a.txt", "社員が読める文書です。".encode())).json()["doc_id"]
        assert (await staff.get("/knowledge/documents")).status_code == 200
        denied = await staff.delete(f"/knowledge/documents/{doc_id}")
        assert denied.status_code == 403 and "admin role" in denied.json()["detail"]
    async with client_for(host, {"X-Role": "admin"}) as admin:
        assert (await admin.delete(f"/knowledge/documents/{doc_id}")).status_code == 200


def test_a_router_without_authentication_cannot_be_built() -> None:
    with pytest.raises(TypeError):
        knowledge_router()  # type: ignore[call-arg]


async def test_library_faces_do_not_configure_logging(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    import logging

    await create_tables(database_url)
    before = list(logging.getLogger("batch_embedding").handlers)
    app = FastAPI()
    app.include_router(knowledge_router(read=host_user, upload=host_user, delete=host_admin))
    async with knowledge_lifespan(app, make_settings()):
        assert isinstance(app.state.knowledge, KnowledgeService)
    assert logging.getLogger("batch_embedding").handlers == before


async def test_the_api_client_helper_sends_the_token(make_settings: Callable[..., Settings], database_url: str) -> None:
    await create_tables(database_url)
    async with running_app(make_settings(KNOWLEDGE_API_TOKEN=API_TOKEN)) as (client, _):
        assert (await client.get("/knowledge/documents")).status_code == 200
