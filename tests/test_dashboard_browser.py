"""The dashboard in a real browser: Debian's chromium driven by Playwright (its Python package only; the browser
is the system's, never `playwright install`), against the standalone app served by uvicorn on a local port.

An unauthenticated visit sees the sign-in form and no data; a wrong token is refused; the right one shows the
page with the known figures; the page refreshes by itself (a chunk inserted meanwhile shows up); on a
phone-sized screen nothing overflows sideways; signing out ends the session. Screenshots go under the test's
tmp dir (and, with DASHBOARD_SCREENSHOT_DIR set, are copied there: docs/screenshots/ holds the committed ones).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from modules.settings import Settings
from tests.api_helpers import API_TOKEN
from tests.dashboard_fixture import KNOWN, fill_known_state
from tests.helpers import create_tables

pytestmark = pytest.mark.slow  # a browser and a server: the full tier only

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(make_settings: Callable[..., Settings], database_url: str) -> Iterator[str]:
    import uvicorn

    from modules.knowledge.api import create_app

    asyncio.run(create_tables(database_url))
    asyncio.run(fill_known_state(database_url))
    settings = make_settings(KNOWLEDGE_API_TOKEN=API_TOKEN, DASHBOARD_REFRESH=1)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the app did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def text_of(page: object, selector: str) -> str:
    return str(page.locator(selector).inner_text()).strip()  # type: ignore[attr-defined]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt-get install chromium)")
def test_the_dashboard_in_a_real_browser(served: str, database_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    shots: list[Path] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="ja-JP")
            page.goto(f"{served}/dashboard")
            assert page.url.endswith("/dashboard/login")  # sent to the sign-in form
            assert page.locator("#card-embedded").count() == 0 and "就業規則" not in page.content()
            page.fill("#token", "not-the-token-000000")
            page.click("button[type=submit]")
            assert "トークンが正しくありません" in text_of(page, "form")
            page.fill("#token", API_TOKEN)
            page.click("button[type=submit]")
            page.wait_for_url(f"{served}/dashboard")
            for key, value in KNOWN["cards"].items():
                assert text_of(page, f"#card-{key} .num") == f"{value:,}", key
            assert text_of(page, "#active-watchers") == "1" and text_of(page, "#open-alerts") == "1"
            assert text_of(page, "#tokens-today") == f"{KNOWN['tokens_today']:,}"
            assert text_of(page, "#chart-429") == str(KNOWN["rate_limited"])
            assert "2.0時間前" in text_of(page, "#oldest-pending")
            assert page.locator("svg.chart rect.ok").count() >= 1
            assert page.locator("#documents tbody tr").count() == 2
            assert "<script>alert(1)</script>.txt" in text_of(page, "#documents")  # shown as text, not run
            cookie = next(c for c in page.context.cookies() if c["name"] == "embq_dashboard")
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            shots.append(tmp_path / "dashboard.png")
            page.screenshot(path=str(shots[-1]), full_page=True)

            with psycopg.connect(database_url, autocommit=True) as conn:  # the page refreshes by itself
                conn.execute("INSERT INTO chunks (doc_id, chunk_index, content) VALUES ('rules', 50, '新しい段落')")
            expect(page.locator("#card-pending .num")).to_have_text("4", timeout=15_000)

            phone = browser.new_context(
                viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, locale="ja-JP"
            )
            small = phone.new_page()
            small.goto(f"{served}/dashboard/login")
            small.fill("#token", API_TOKEN)
            small.click("button[type=submit]")
            small.wait_for_url(f"{served}/dashboard")
            overflow = small.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"the page is {overflow}px wider than a phone's screen"
            assert text_of(small, "#card-quarantined .num") == "1"
            shots.append(tmp_path / "dashboard-phone.png")
            small.screenshot(path=str(shots[-1]), full_page=True)

            page.click("header button")  # ログアウト
            page.wait_for_url(f"{served}/dashboard/login")
            page.goto(f"{served}/dashboard")
            assert page.url.endswith("/dashboard/login")
        finally:
            browser.close()
    assert all(s.stat().st_size > 10_000 for s in shots)
    target = os.environ.get("DASHBOARD_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        for shot in shots:
            shutil.copy(shot, Path(target) / shot.name)
