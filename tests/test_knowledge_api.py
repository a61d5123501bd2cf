"""The upload API through the real ASGI app (httpx), on the embedded PostgreSQL, local provider."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from docx import Document

from modules.gemini_simulator import GeminiSimulator, SimulatorConfig
from modules.knowledge.api import KnowledgeService
from modules.settings import Settings
from tests.api_helpers import API_TOKEN, running_app, upload
from tests.helpers import TEST_API_KEY, create_tables, fetch_all

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def tiny_pdf(text: str) -> bytes:
    """A valid one-page PDF with an ASCII text line (offsets computed, so pypdf reads it cleanly)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def tiny_docx(paragraphs: list[str]) -> bytes:
    document = Document()
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


@pytest.fixture
async def api(
    make_settings: Callable[..., Settings], database_url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, KnowledgeService]]:
    await create_tables(database_url)
    settings = make_settings(AUTO_GENERATE_EMBEDDINGS="true", UPLOAD_MAX_BYTES="200000", KNOWLEDGE_API_TOKEN=API_TOKEN)
    async with running_app(settings) as running:
        yield running


async def test_each_file_type_is_stored_and_embedded_in_the_background(
    api: tuple[httpx.AsyncClient, KnowledgeService], database_url: str
) -> None:
    client, service = api
    files = {
        "faq.txt": "経費精算の締め日は毎月25日です。領収書は原本を提出してください。".encode(),
        "guide.md": "# 見出し\n\n新入社員は初日にIDカードを受け取ります。".encode(),
        "spec.pdf": tiny_pdf("Smart speaker battery lasts 12 hours."),
        "rules.docx": tiny_docx(["就業時間は9時から18時までです。", "休憩は12時から13時です。"]),
    }
    ids = {}
    for name, data in files.items():
        response = await upload(client, name, data)
        assert response.status_code == 202, response.text
        assert response.json()["embedding"] == "scheduled"
        ids[name] = response.json()["doc_id"]
    await service.wait_for_background()
    for name, doc_id in ids.items():
        progress = (await client.get(f"/knowledge/documents/{doc_id}/progress")).json()
        assert progress["total"] >= 1 and progress["embedded"] == progress["total"], (name, progress)
    rows = await fetch_all(
        database_url,
        "SELECT content FROM chunks c JOIN document_sources d ON d.id = c.doc_id WHERE d.name = 'spec.pdf'",
    )
    assert "battery lasts 12 hours" in rows[0][0]
    listing = (await client.get("/knowledge/documents")).json()
    assert {d["name"] for d in listing} == set(files)


async def test_japanese_text_is_cut_at_sentence_ends(
    api: tuple[httpx.AsyncClient, KnowledgeService], database_url: str
) -> None:
    client, _ = api
    text = "".join(f"これは{i}番目の文で、説明のために少し長めに書いてあります。" for i in range(40))
    response = await upload(client, "long.txt", text.encode())
    assert response.status_code == 202
    rows = await fetch_all(database_url, "SELECT content FROM chunks ORDER BY chunk_index")
    assert len(rows) > 1
    assert all(content.endswith("。") for (content,) in rows)
    assert all(len(content) <= 500 for (content,) in rows)


@pytest.mark.parametrize(
    ("name", "data", "status"),
    [
        ("broken.pdf", b"%PDF-1.4\nthis is not really a pdf", 422),
        ("broken.docx", b"PK\x03\x04 not a zip", 422),
        ("empty.txt", b"   \n  ", 422),
        ("latin1.txt", "caf\xe9".encode("latin-1"), 422),
        ("image.png", b"\x89PNG", 415),
        ("huge.txt", b"a" * 200_001, 413),
    ],
)
async def test_bad_uploads_are_refused_and_store_nothing(
    api: tuple[httpx.AsyncClient, KnowledgeService], database_url: str, name: str, data: bytes, status: int
) -> None:
    client, _ = api
    response = await upload(client, name, data)
    assert response.status_code == status, response.text
    assert name in response.json()["detail"] or "UPLOAD_MAX_BYTES" in response.json()["detail"]
    rows = await fetch_all(
        database_url, "SELECT (SELECT count(*) FROM document_sources), (SELECT count(*) FROM chunks)"
    )
    assert rows[0] == (0, 0)


async def test_delete_removes_the_document_and_its_chunks(api: tuple[httpx.AsyncClient, KnowledgeService]) -> None:
    client, service = api
    doc_id = (await upload(client, "a.txt", "削除される文書です。".encode())).json()["doc_id"]
    await service.wait_for_background()
    response = await client.delete(f"/knowledge/documents/{doc_id}")
    assert response.json() == {"doc_id": doc_id, "deleted_chunks": 1}
    assert (await client.delete(f"/knowledge/documents/{doc_id}")).status_code == 404
    assert (await client.get(f"/knowledge/documents/{doc_id}/progress")).status_code == 404


async def test_search_finds_the_chunk_that_holds_the_query_words(
    api: tuple[httpx.AsyncClient, KnowledgeService],
) -> None:
    client, service = api
    for path in sorted(SAMPLES.iterdir()):
        if path.name != "README.md":
            assert (await upload(client, path.name, path.read_bytes())).status_code == 202
    await service.wait_for_background()
    response = await client.get("/knowledge/search", params={"q": "経費精算の締め日はいつですか", "k": 3})
    results = response.json()["results"]
    assert len(results) == 3
    assert results[0]["name"] == "社内FAQ_経費精算.md"
    assert "締め日" in results[0]["content"]
    assert results[0]["similarity"] >= results[1]["similarity"] >= results[2]["similarity"]


@pytest.fixture
async def gemini_api(
    make_settings: Callable[..., Settings], database_url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, KnowledgeService, GeminiSimulator]]:
    await create_tables(database_url)
    async with GeminiSimulator(SimulatorConfig()) as simulator:
        settings = make_settings(
            AUTO_GENERATE_EMBEDDINGS="true",
            EMBEDDING_PROVIDER="gemini",
            GOOGLE_API_KEY=TEST_API_KEY,
            GOOGLE_GEMINI_BASE_URL=simulator.base_url,
            KNOWLEDGE_API_TOKEN=API_TOKEN,
        )
        async with running_app(settings) as (client, service):
            yield client, service, simulator


@pytest.mark.slow  # over 1 s: the full tier only
async def test_the_same_files_again_are_free_and_an_edit_re_embeds_only_what_changed(
    gemini_api: tuple[httpx.AsyncClient, KnowledgeService, GeminiSimulator], database_url: str
) -> None:
    client, service, simulator = gemini_api
    paths = [p for p in sorted(SAMPLES.iterdir()) if p.name != "README.md"]
    ids = {}
    for path in paths:
        response = await upload(client, path.name, path.read_bytes())
        assert response.status_code == 202 and response.json()["outcome"] == "created"
        ids[path.name] = response.json()["doc_id"]
    await service.wait_for_background()
    first_calls = simulator.stats.successful_calls
    assert first_calls >= len(paths)
    chunks_before = await fetch_all(database_url, "SELECT count(*) FROM chunks")

    # The same documents again: the documents already there, nothing written, no API call at all.
    for path in paths:
        response = await upload(client, path.name, path.read_bytes())
        assert response.status_code == 200, response.text
        assert response.json()["outcome"] == "unchanged" and response.json()["doc_id"] == ids[path.name]
    await service.wait_for_background()
    assert simulator.stats.successful_calls == first_calls
    assert await fetch_all(database_url, "SELECT count(*) FROM chunks") == chunks_before
    listing = (await client.get("/knowledge/documents")).json()
    assert len(listing) == len(paths) and all(d["embedded"] == d["chunks"] for d in listing)

    # ?mode=new keeps both; every chunk of the copy comes from the cache.
    faq = next(p for p in paths if "経費精算" in p.name)
    copy = await upload(client, faq.name, faq.read_bytes(), mode="new")
    assert copy.status_code == 202 and copy.json()["outcome"] == "created" and copy.json()["doc_id"] != ids[faq.name]
    await service.wait_for_background()
    assert simulator.stats.successful_calls == first_calls
    assert service.generator.stats.cache_hits == copy.json()["chunks"]
    await client.delete(f"/knowledge/documents/{copy.json()['doc_id']}")

    # One paragraph edited: the document is replaced in place, and only the chunk holding it is sent.
    text = faq.read_text(encoding="utf-8")
    edited = text.replace("締め日", "締切日", 1)
    assert edited != text
    texts_before = simulator.stats.texts_embedded
    response = await upload(client, faq.name, edited.encode())
    body = response.json()
    assert response.status_code == 202 and body["outcome"] == "replaced" and body["doc_id"] == ids[faq.name]
    assert (body["kept"], body["added"], body["removed"]) == (body["chunks"] - 1, 1, 1)
    await service.wait_for_background()
    assert simulator.stats.texts_embedded - texts_before == 1


async def test_a_path_in_the_file_name_is_dropped(api: tuple[httpx.AsyncClient, KnowledgeService]) -> None:
    client, _ = api
    response = await upload(client, "C:\\Users\\taro\\経費規程.txt", "経費の規程です。".encode())
    assert response.status_code == 202, response.text
    assert response.json()["name"] == "経費規程.txt"
    assert [d["name"] for d in (await client.get("/knowledge/documents")).json()] == ["経費規程.txt"]


async def test_an_id_the_database_cannot_hold_is_a_404_and_a_nul_in_a_query_is_searched(
    gemini_api: tuple[httpx.AsyncClient, KnowledgeService, GeminiSimulator],
) -> None:
    # Review 1, F16: psycopg refuses NUL in a text parameter, and the progress and delete routes were a 500.
    client, service, _ = gemini_api
    doc_id = (await upload(client, "faq.txt", "経費精算の締め日は毎月25日です。".encode())).json()["doc_id"]
    await service.wait_for_background()
    for bad in ("a%00b", f"{doc_id}%00", "%00"):  # as curl sends them
        progress = await client.get(f"/knowledge/documents/{bad}/progress")
        assert progress.status_code == 404 and "was not found" in progress.json()["detail"], progress.text
        deleted = await client.delete(f"/knowledge/documents/{bad}")
        assert deleted.status_code == 404 and "was not found" in deleted.json()["detail"], deleted.text
    found = await client.get("/knowledge/search", params={"q": "締め日\x00はいつ", "k": 1})
    assert found.status_code == 200 and found.json()["results"][0]["doc_id"] == doc_id
    assert (await client.get(f"/knowledge/documents/{doc_id}/progress")).json()["embedded"] == 1
