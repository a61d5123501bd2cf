"""The dashboard and /metrics of the knowledge app: who gets in (the bearer token, or a browser signed in with
it: an HttpOnly, SameSite=Strict cookie signed with a key derived from the token), that the cookie opens only
the dashboard and /metrics and never the API, and that the page shows the queue's and the history's figures.
The real standalone app through httpx's ASGI transport; a host app's own dependency through
operations_router(read=...)."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI, Header, HTTPException

from modules.knowledge.api import create_app, knowledge_lifespan, operations_router
from modules.knowledge.session import COOKIE, SessionAuth
from modules.settings import Secret, Settings
from tests.api_helpers import API_TOKEN, AUTH
from tests.dashboard_fixture import KNOWN, fill_known_state
from tests.helpers import create_tables


@pytest.fixture
async def anonymous(make_settings: Callable[..., Settings], database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    await create_tables(database_url)
    settings = make_settings(KNOWLEDGE_API_TOKEN=API_TOKEN)
    app = create_app(settings)
    async with knowledge_lifespan(app, settings):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
            yield client


async def test_a_visitor_without_the_token_sees_the_sign_in_form_not_data(anonymous: httpx.AsyncClient) -> None:
    page = await anonymous.get("/dashboard")
    assert page.status_code == 303 and page.headers["location"] == "/dashboard/login"
    assert (await anonymous.get("/dashboard/panel")).status_code == 401
    assert (await anonymous.get("/metrics")).status_code == 401
    form = await anonymous.get("/dashboard/login")
    assert form.status_code == 200 and 'type="password"' in form.text and "埋め込み済み" not in form.text
    assert "default-src 'none'" in form.headers["content-security-policy"]
    wrong = await anonymous.post("/dashboard/login", data={"token": "not-the-token-000000"})
    assert (
        wrong.status_code == 401
        and "トークンが正しくありません" in wrong.text
        and COOKIE not in wrong.headers.get("set-cookie", "")
    )
    assert "not-the-token" not in wrong.text


async def test_signing_in_sets_a_strict_http_only_cookie_that_opens_the_dashboard_only(
    anonymous: httpx.AsyncClient,
) -> None:
    signed = await anonymous.post("/dashboard/login", data={"token": API_TOKEN})
    assert signed.status_code == 303 and signed.headers["location"] == "/dashboard"
    cookie = signed.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Path=/" in cookie and "Max-Age=43200" in cookie
    assert API_TOKEN not in cookie
    value = re.match(rf"{COOKIE}=([^;]+)", cookie).group(1)  # type: ignore[union-attr]
    jar = {"Cookie": f"{COOKIE}={value}"}
    page = await anonymous.get("/dashboard", headers=jar)
    assert page.status_code == 200 and "エンベディング運用ダッシュボード" in page.text and "ログアウト" in page.text
    assert (await anonymous.get("/dashboard/panel", headers=jar)).status_code == 200
    assert (await anonymous.get("/metrics", headers=jar)).status_code == 200
    assert (await anonymous.get("/knowledge/documents", headers=jar)).status_code == 401  # the API: bearer only
    tampered = value[:-1] + ("0" if value[-1] != "0" else "1")
    assert (await anonymous.get("/dashboard", headers={"Cookie": f"{COOKIE}={tampered}"})).status_code == 303
    out = await anonymous.post("/dashboard/logout", headers=jar)
    assert out.status_code == 303 and f'{COOKIE}=""' in out.headers["set-cookie"]


def test_sessions_expire_and_die_with_the_token() -> None:
    auth = SessionAuth(Secret(API_TOKEN), hours=1)
    issued = time.time()
    cookie = auth.new_cookie(now=issued)
    assert auth.cookie_valid(cookie, now=issued + 3599)
    assert not auth.cookie_valid(cookie, now=issued + 3601)
    assert not auth.cookie_valid(cookie, now=issued - 3600)  # not from the future either
    assert not SessionAuth(Secret(API_TOKEN + "-rotated"), hours=1).cookie_valid(cookie, now=issued)
    assert not auth.cookie_valid("v1.1.2.3") and not auth.cookie_valid(None) and not auth.cookie_valid("x" * 500)


async def test_the_bearer_token_reads_metrics_as_prometheus_would(anonymous: httpx.AsyncClient) -> None:
    answer = await anonymous.get("/metrics", headers=AUTH)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    for name in (
        "batch_embedding_chunks{",
        "batch_embedding_oldest_pending_age_seconds",
        "batch_embedding_database_up 1.0",
        "process_cpu_seconds_total",
    ):
        assert name in answer.text
    wrong = await anonymous.get("/metrics", headers={"Authorization": "Bearer not-the-token-000000"})
    assert wrong.status_code == 401 and "not-the-token" not in wrong.text


async def test_the_page_shows_the_known_figures(anonymous: httpx.AsyncClient, database_url: str) -> None:
    await fill_known_state(database_url)
    page = await anonymous.get("/dashboard", headers=AUTH)
    assert page.status_code == 200
    html = page.text
    for key, value in KNOWN["cards"].items():
        assert re.search(rf'id="card-{key}".*?<div class="num">{value}</div>', html), key
    assert 'id="active-watchers">1<' in html and 'id="open-alerts">1<' in html
    assert 'data-health="bad"' in html
    assert f'id="tokens-today">{KNOWN["tokens_today"]:,}<' in html
    assert f'id="chart-429">{KNOWN["rate_limited"]}<' in html
    assert "最古の未処理: 2.0時間前" in html
    assert "&lt;script&gt;" in html and "<script>alert" not in html  # a document name is escaped
    assert "400 INVALID_ARGUMENT" in html  # the most common error
    assert "成功率が" in html  # the open alert
    jobs = re.search(r'<table id="batch-jobs">.*?</table>', html, re.S)
    assert jobs and "batches/running-1" in jobs.group() and "JOB_STATE_RUNNING" in jobs.group()
    assert "40分" in jobs.group()  # its age
    assert re.search(r'id="migration" data-state="cut_over">text-embedding-004@768 → [^<]*一致率 90.0%', html)


async def test_a_host_app_guards_the_page_with_its_own_dependency(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    await create_tables(database_url)

    def staff(x_staff: str | None = Header(None)) -> None:
        if x_staff != "yes":
            raise HTTPException(401, "staff only")

    settings = make_settings()
    app = FastAPI()
    app.include_router(operations_router(read=staff))
    async with (
        knowledge_lifespan(app, settings),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        assert (await client.get("/dashboard")).status_code == 401
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/dashboard/login")).status_code == 404  # no sign-in form: the host's own
        assert (await client.get("/dashboard", headers={"x-staff": "yes"})).status_code == 200
        assert (await client.get("/metrics", headers={"x-staff": "yes"})).status_code == 200
    with pytest.raises(ValueError):
        operations_router()
