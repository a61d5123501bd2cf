"""Hostile and heavy uploads through the real app (httpx ASGI transport, embedded PostgreSQL, a real
worker process per upload): zip bombs with honest and lying headers, a 5,000-page PDF, text past the
character and chunk limits, a file that reads too slowly, malformed .docx and .pdf. Each is refused
with the status and the setting it broke, quickly, in bounded memory, storing nothing; and a big
upload never stalls anyone else's search."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import psutil
import pytest

from modules.settings import Settings
from tests.api_helpers import API_TOKEN, running_app, upload
from tests.helpers import create_tables, fetch_all
from tests.hostile_files import (
    DOCUMENT_HEAD,
    DOCUMENT_TAIL,
    deflated_entry,
    docx_package,
    many_entry_docx,
    many_page_pdf,
    write_zip,
    zip_bomb_docx,
)

WORKER_MEMORY_CEILING = 100_000_000  # bytes: a refused bomb costs its worker process no more than this


@pytest.fixture
def app_settings(make_settings: Callable[..., Settings], database_url: str) -> Callable[..., Settings]:
    def build(**overrides: str) -> Settings:
        return make_settings(KNOWLEDGE_API_TOKEN=API_TOKEN, **overrides)

    return build


async def stored(database_url: str) -> tuple[int, int]:
    rows = await fetch_all(
        database_url, "SELECT (SELECT count(*) FROM document_sources), (SELECT count(*) FROM chunks)"
    )
    return rows[0]


async def refused(
    settings: Settings, name: str, data: bytes, status: int, setting: str | None, database_url: str
) -> tuple[str, float, int | None]:
    """Upload, check the refusal, return (detail, seconds, the worker's peak memory)."""
    await create_tables(database_url)
    async with running_app(settings) as (client, service):
        started = time.monotonic()
        response = await upload(client, name, data)
        seconds = time.monotonic() - started
        assert response.status_code == status, response.text
        detail = response.json()["detail"]
        assert name in detail
        if setting is not None:
            assert setting in detail
        assert API_TOKEN not in response.text
        report = service.extractor.last_report
        peak = report.peak_rss_bytes if report is not None else None
    assert await stored(database_url) == (0, 0)
    return detail, seconds, peak


@pytest.mark.timeout(60)
async def test_a_zip_bomb_is_refused_by_its_declared_size_without_being_inflated(
    app_settings: Callable[..., Settings], database_url: str
) -> None:
    bomb = zip_bomb_docx(1_000_000_000)  # 4.5 MB that inflates to 1 GB
    assert len(bomb) < 5_000_000
    _, seconds, peak = await refused(app_settings(), "bomb.docx", bomb, 413, "UPLOAD_MAX_DOCX_BYTES", database_url)
    assert seconds < 10
    assert peak is not None and peak < WORKER_MEMORY_CEILING


@pytest.mark.timeout(60)
async def test_a_zip_bomb_whose_headers_lie_is_read_only_as_far_as_they_say(
    app_settings: Callable[..., Settings], database_url: str
) -> None:
    liar = zip_bomb_docx(1_000_000_000, lie=4096)  # declares 4 KB (with that prefix's CRC), holds 1 GB
    detail, seconds, peak = await refused(app_settings(), "liar.docx", liar, 422, None, database_url)
    assert "malformed XML" in detail  # the reader stopped at the declared size: the XML is cut short
    assert seconds < 10
    assert peak is not None and peak < WORKER_MEMORY_CEILING


@pytest.mark.timeout(60)
async def test_a_small_docx_of_huge_text_stops_at_the_character_limit(
    app_settings: Callable[..., Settings], database_url: str
) -> None:
    # The case: a few hundred KB of .docx that python-docx turned into 270,000 chunks.
    heavy = zip_bomb_docx(60_000_000)
    assert len(heavy) < 700_000
    _, seconds, peak = await refused(app_settings(), "heavy.docx", heavy, 413, "UPLOAD_MAX_CHARS", database_url)
    assert seconds < 10
    assert peak is not None and peak < WORKER_MEMORY_CEILING


@pytest.mark.parametrize("zip64", [False, True])
@pytest.mark.parametrize("declared", [None, 1])
async def test_a_docx_whose_directory_holds_thousands_of_entries_is_refused_whatever_its_end_record_says(
    app_settings: Callable[..., Settings], database_url: str, zip64: bool, declared: int | None
) -> None:
    # Review 1, F14: the end record's count was trusted; zipfile reads the whole directory regardless.
    many = many_entry_docx(20_000, declared_entries=declared, zip64=zip64)
    detail, seconds, peak = await refused(app_settings(), "many.docx", many, 422, None, database_url)
    assert "more than 5,000 entries" in detail
    assert seconds < 10
    assert peak is not None and peak < WORKER_MEMORY_CEILING


async def test_a_pdf_over_the_page_limit_is_refused(app_settings: Callable[..., Settings], database_url: str) -> None:
    detail, _, _ = await refused(
        app_settings(), "manual.pdf", many_page_pdf(5_000), 413, "UPLOAD_MAX_PDF_PAGES", database_url
    )
    assert "5,000 pages" in detail


@pytest.mark.parametrize(
    ("overrides", "text", "setting"),
    [
        ({"UPLOAD_MAX_CHARS": "1000"}, "長い文です。" * 200, "UPLOAD_MAX_CHARS"),
        (
            {"UPLOAD_MAX_CHUNKS": "2", "CHUNK_TARGET_CHARS": "60", "CHUNK_OVERLAP_CHARS": "0"},
            "文です。" * 100,
            "UPLOAD_MAX_CHUNKS",
        ),
        ({"UPLOAD_MAX_DOCX_BYTES": "2000"}, None, "UPLOAD_MAX_DOCX_BYTES"),
    ],
)
async def test_each_limit_is_a_setting_named_in_its_413(
    app_settings: Callable[..., Settings], database_url: str, overrides: dict[str, str], text: str | None, setting: str
) -> None:
    if text is None:
        name, data = (
            "rules.docx",
            docx_package(
                DOCUMENT_HEAD + b"<w:p><w:r><w:t>" + "規程".encode() * 1000 + b"</w:t></w:r></w:p>" + DOCUMENT_TAIL
            ),
        )
    else:
        name, data = "notes.txt", text.encode()
    await refused(app_settings(**overrides), name, data, 413, setting, database_url)


@pytest.mark.slow
async def test_a_file_that_reads_too_slowly_is_stopped_at_the_time_limit(
    app_settings: Callable[..., Settings], database_url: str
) -> None:
    settings = app_settings(UPLOAD_MAX_PDF_PAGES="5000", UPLOAD_EXTRACT_TIMEOUT="1")
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    _, seconds, _ = await refused(
        settings, "slow.pdf", many_page_pdf(5_000), 422, "UPLOAD_EXTRACT_TIMEOUT", database_url
    )
    assert seconds < 5
    left = [p.pid for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert left == []  # the worker was killed, not left reading in the background


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        (
            "broken.docx",
            docx_package(DOCUMENT_HEAD + b"<w:p><w:r><w:t>unclosed</w:r></w:p>" + DOCUMENT_TAIL),
            "malformed XML",
        ),
        ("empty-zip.docx", write_zip([deflated_entry("[Content_Types].xml", b"<Types/>")]), "has no word/document.xml"),
        (
            "sheet.docx",
            docx_package(b'<?xml version="1.0"?><workbook xmlns="urn:x"><sheets/></workbook>'),
            "not a Word document",
        ),
        ("not-a-zip.docx", b"PK\x03\x04 this is no zip", "not a zip archive"),
        (
            "cyclic.pdf",
            b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
            b"2 0 obj\n<< /Type /Pages /Kids [2 0 R] /Count 1 >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n",
            "cyclic",
        ),
        ("garbage.pdf", b"%PDF-1.4\nthis is not really a pdf", "not a readable PDF ("),
    ],
)
async def test_a_malformed_docx_or_pdf_is_a_422_that_says_why(
    app_settings: Callable[..., Settings], database_url: str, name: str, data: bytes, reason: str
) -> None:
    detail, _, _ = await refused(app_settings(), name, data, 422, None, database_url)
    assert reason in detail


async def search_while(client: httpx.AsyncClient, until: asyncio.Task[httpx.Response]) -> tuple[list[float], float]:
    """Search again and again until the upload is done: each search's time, and the longest stretch with
    no search answered (client and app share one event loop here, so a stalled loop shows as a gap)."""
    times = []
    last = time.monotonic()
    longest_gap = 0.0
    while not until.done():
        started = time.monotonic()
        response = await client.get("/knowledge/search", params={"q": "経費精算の締め日", "k": 3})
        finished = time.monotonic()
        assert response.status_code == 200 and response.json()["results"]
        times.append(finished - started)
        longest_gap = max(longest_gap, finished - last)
        last = finished
        await asyncio.sleep(0.05)
    return times, max(longest_gap, time.monotonic() - last)


@pytest.mark.slow
async def test_a_5000_page_pdf_upload_never_stalls_a_concurrent_search(
    app_settings: Callable[..., Settings], database_url: str
) -> None:
    await create_tables(database_url)
    settings = app_settings(UPLOAD_MAX_PDF_PAGES="5000", AUTO_GENERATE_EMBEDDINGS="true")
    async with running_app(settings) as (client, service):
        seeded = await upload(
            client, "faq.txt", "経費精算の締め日は毎月25日です。領収書は原本を提出してください。".encode()
        )
        assert seeded.status_code == 202
        await service.wait_for_background()
        pdf = many_page_pdf(5_000)
        started = time.monotonic()
        task = asyncio.create_task(upload(client, "manual.pdf", pdf))
        times, longest_gap = await search_while(client, task)
        upload_seconds = time.monotonic() - started
        response = await task
    assert response.status_code == 202, response.text
    print(
        f"\n5,000-page PDF upload: {upload_seconds:.1f} s; {len(times)} searches meanwhile, slowest "
        f"{max(times) * 1000:.0f} ms, median {sorted(times)[len(times) // 2] * 1000:.0f} ms; "
        f"longest stretch without an answer {longest_gap * 1000:.0f} ms"
    )
    assert upload_seconds > 1.5  # the upload really was heavy...
    assert max(times) < 1.0 and longest_gap < 1.0  # ...and no search waited for it
