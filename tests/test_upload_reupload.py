"""Uploading a file again: the same name and text is the document already there; an edit replaces it in
one transaction, keeping the unchanged chunks' rows and vectors; ?mode=new keeps both; concurrent
uploads of one file end as one document. Search answers each chunk (and each text) once, and refuses
a degenerate query vector. Through the PostgreSQL store (the app) and the Supabase store (RPC)."""

from __future__ import annotations

import asyncio
import unicodedata
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Literal

import httpx
import numpy as np
import psycopg
import pytest

from modules.gemini_simulator import GeminiSimulator, SimulatorConfig
from modules.knowledge.service import KnowledgeService
from modules.settings import Secret, Settings, TableNames
from modules.stores.supabase import SupabaseStore
from tests.api_helpers import API_TOKEN, running_app, upload
from tests.helpers import TEST_API_KEY, create_tables, fetch_all
from tests.postgrest_fake import SERVICE_KEY, PostgrestFake, apply_migration, ensure_supabase_roles, supabase_defaults

PARAGRAPHS = [  # each over half of CHUNK_TARGET_CHARS=50, so each is one chunk
    "この規程は経費精算の手続きを定めるものであり、全社員に適用します。",
    "経費精算の締め日は毎月25日とし、翌月10日に振り込みます。",
    "領収書は原本を提出し、電子データの場合は印刷して添付します。",
    "出張旅費については別に定める旅費規程によるものとします。",
]


def document(paragraphs: list[str]) -> bytes:
    return "\n\n".join(paragraphs).encode()


@pytest.fixture
async def app(
    make_settings: Callable[..., Settings], database_url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, KnowledgeService]]:
    await create_tables(database_url)
    # One paragraph per chunk, so that edits map to chunks plainly.
    settings = make_settings(KNOWLEDGE_API_TOKEN=API_TOKEN, CHUNK_TARGET_CHARS="50", CHUNK_OVERLAP_CHARS="0")
    async with running_app(settings) as running:
        yield running


async def chunk_rows(url: str) -> list[tuple[Any, ...]]:
    return await fetch_all(
        url, "SELECT id, doc_id, chunk_index, content, embedding::text FROM chunks ORDER BY chunk_index"
    )


async def test_the_same_file_again_is_the_document_already_there(
    app: tuple[httpx.AsyncClient, KnowledgeService], database_url: str
) -> None:
    client, _ = app
    first = await upload(client, "規程.txt", document(PARAGRAPHS))
    assert first.status_code == 202 and first.json()["outcome"] == "created"
    rows = await chunk_rows(database_url)
    again = await upload(client, "規程.txt", document(PARAGRAPHS))
    assert again.status_code == 200, again.text
    body = again.json()
    assert body["outcome"] == "unchanged" and body["doc_id"] == first.json()["doc_id"]
    assert (body["kept"], body["added"], body["removed"], body["embedding"]) == (4, 0, 0, "nothing new to embed")
    assert await chunk_rows(database_url) == rows
    assert len((await client.get("/knowledge/documents")).json()) == 1


async def test_an_edit_replaces_the_document_keeping_unchanged_chunks_and_their_vectors(
    app: tuple[httpx.AsyncClient, KnowledgeService], database_url: str
) -> None:
    client, service = app
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        # A host that keeps chunk places unique: the replacement must never put two chunks at one place.
        await conn.execute("ALTER TABLE chunks ADD CONSTRAINT chunks_place UNIQUE (doc_id, chunk_index)")
    doc_id = (await upload(client, "規程.txt", document(PARAGRAPHS))).json()["doc_id"]
    await service.generator.run(doc_id=doc_id)  # embed version 1
    before = {row[3]: row for row in await chunk_rows(database_url)}
    assert all(row[4] is not None for row in before.values())

    edited = [
        "新たに目的の条文を加え、この規程の趣旨を明らかにします。",  # added in front: kept chunks move down
        PARAGRAPHS[0],
        "経費精算の締め日は毎月20日とし、翌月5日に振り込みます。",  # changed
        PARAGRAPHS[2],
        # PARAGRAPHS[3] removed
    ]
    response = await upload(client, "規程.txt", document(edited))
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["outcome"], body["doc_id"]) == ("replaced", doc_id)
    assert (body["chunks"], body["kept"], body["added"], body["removed"]) == (4, 2, 2, 2)

    after = await chunk_rows(database_url)
    assert [row[3] for row in after] == edited and [row[2] for row in after] == [0, 1, 2, 3]
    for row in after:
        if row[3] in before:  # unchanged text: the same row, the same vector
            assert (row[0], row[4]) == (before[row[3]][0], before[row[3]][4])
        else:  # new text: a new row, waiting for its embedding
            assert row[0] not in {r[0] for r in before.values()} and row[4] is None
    progress = (await client.get(f"/knowledge/documents/{doc_id}/progress")).json()
    assert (progress["total"], progress["embedded"], progress["pending"]) == (4, 2, 2)


@pytest.mark.parametrize("first_form", ["NFC", "NFD"])
async def test_one_name_from_macos_and_windows_is_one_document(
    app: tuple[httpx.AsyncClient, KnowledgeService], database_url: str, first_form: str
) -> None:
    # Review 1, F11: macOS sends "ガ" as "カ" + U+3099 (NFD), Windows as one character (NFC).
    name = "ガイド_テスト.txt"
    forms: list[Literal["NFC", "NFD"]] = ["NFC", "NFD"] if first_form == "NFC" else ["NFD", "NFC"]
    first, second = (unicodedata.normalize(form, name) for form in forms)
    assert first != second
    created = await upload(client := app[0], first, document(PARAGRAPHS))
    assert created.status_code == 202 and created.json()["name"] == name
    again = await upload(client, second, document(PARAGRAPHS))
    assert again.status_code == 200 and again.json()["outcome"] == "unchanged"
    edited = await upload(client, second, document(PARAGRAPHS[:2]))
    assert edited.json()["outcome"] == "replaced" and edited.json()["doc_id"] == created.json()["doc_id"]
    assert [d["name"] for d in (await client.get("/knowledge/documents")).json()] == [name]
    assert await fetch_all(database_url, "SELECT name FROM document_sources") == [(name,)]  # stored in NFC


async def test_mode_new_keeps_both(app: tuple[httpx.AsyncClient, KnowledgeService]) -> None:
    client, _ = app
    first = await upload(client, "規程.txt", document(PARAGRAPHS))
    second = await upload(client, "規程.txt", document(PARAGRAPHS), mode="new")
    assert second.status_code == 202 and second.json()["outcome"] == "created"
    assert second.json()["doc_id"] != first.json()["doc_id"]
    assert len((await client.get("/knowledge/documents")).json()) == 2
    bad = await upload(client, "規程.txt", document(PARAGRAPHS), mode="append")
    assert bad.status_code == 422


async def test_several_documents_of_one_name_are_not_guessed_between(
    app: tuple[httpx.AsyncClient, KnowledgeService], database_url: str
) -> None:
    client, _ = app
    await upload(client, "規程.txt", document(PARAGRAPHS))
    copy = await upload(client, "規程.txt", document(PARAGRAPHS[:2]), mode="new")
    same_as_copy = await upload(client, "規程.txt", document(PARAGRAPHS[:2]))
    assert same_as_copy.status_code == 200 and same_as_copy.json()["doc_id"] == copy.json()["doc_id"]
    rows = await chunk_rows(database_url)
    response = await upload(client, "規程.txt", document(PARAGRAPHS[1:]))
    assert response.status_code == 409
    assert "mode=new" in response.json()["detail"] and "several documents" in response.json()["detail"]
    assert await chunk_rows(database_url) == rows


@pytest.mark.slow  # over 1 s: the full tier only
async def test_twenty_concurrent_uploads_of_one_file_end_as_one_document(
    app: tuple[httpx.AsyncClient, KnowledgeService], database_url: str
) -> None:
    client, _ = app
    responses = await asyncio.gather(*(upload(client, "規程.txt", document(PARAGRAPHS)) for _ in range(20)))
    outcomes = sorted(r.json()["outcome"] for r in responses)
    assert outcomes == ["created"] + ["unchanged"] * 19
    assert len({r.json()["doc_id"] for r in responses}) == 1
    rows = await fetch_all(
        database_url, "SELECT (SELECT count(*) FROM document_sources), (SELECT count(*) FROM chunks)"
    )
    assert rows[0] == (1, len(PARAGRAPHS))


async def test_search_never_answers_a_chunk_or_a_text_twice(
    app: tuple[httpx.AsyncClient, KnowledgeService],
) -> None:
    client, service = app
    for name in ("規程.txt", "規程のコピー.txt"):  # the same text under two names
        await upload(client, name, document(PARAGRAPHS))
    await upload(client, "規程.txt", document(PARAGRAPHS), mode="new")  # and a third copy
    await service.generator.run()
    results = (await client.get("/knowledge/search", params={"q": "締め日はいつですか", "k": 10})).json()["results"]
    assert len(results) == len(PARAGRAPHS)  # four texts, each once, though each is stored three times
    assert len({r["chunk_id"] for r in results}) == len(results)
    assert sorted(r["content"] for r in results) == sorted(PARAGRAPHS)
    assert all(isinstance(r["similarity"], float) for r in results)


async def test_a_zero_query_vector_is_a_502_with_the_reason(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    await create_tables(database_url)
    async with GeminiSimulator(SimulatorConfig(zero_vector_rate=1.0)) as simulator:
        settings = make_settings(
            KNOWLEDGE_API_TOKEN=API_TOKEN,
            EMBEDDING_PROVIDER="gemini",
            GOOGLE_API_KEY=TEST_API_KEY,
            GOOGLE_GEMINI_BASE_URL=simulator.base_url,
        )
        async with running_app(settings) as (client, _):
            response = await client.get("/knowledge/search", params={"q": "締め日"})
    assert response.status_code == 502
    assert "zero" in response.json()["detail"]


# --- the same through the Supabase store -------------------------------------------------------------


@pytest.fixture
def supabase(database_url: str, pg_server: str) -> Iterator[SupabaseStore]:
    ensure_supabase_roles(pg_server)
    supabase_defaults(database_url)
    apply_migration(database_url)
    with PostgrestFake(database_url) as fake:
        yield SupabaseStore(fake.url, Secret(SERVICE_KEY), TableNames(), 768, timeout=5.0)


async def test_the_supabase_store_saves_by_name_and_searches_each_text_once(
    supabase: SupabaseStore, database_url: str
) -> None:
    store = supabase
    await store.prepare()
    try:
        created = await store.save_document("規程.txt", "txt", PARAGRAPHS)
        unchanged = await store.save_document("規程.txt", "txt", PARAGRAPHS)
        replaced = await store.save_document(
            "規程.txt", "txt", [*PARAGRAPHS[:3], "新たに設けた条文で、電子帳簿保存法への対応を定めます。"]
        )
        copy = await store.save_document("規程.txt", "txt", PARAGRAPHS, "new")
        ambiguous = await store.save_document("規程.txt", "txt", ["別の本文。"])
        assert (created.outcome, unchanged.outcome, replaced.outcome, copy.outcome) == (
            "created",
            "unchanged",
            "replaced",
            "created",
        )
        assert unchanged.doc_id == created.doc_id == replaced.doc_id != copy.doc_id
        assert (replaced.kept, replaced.added, replaced.removed) == (3, 1, 1)
        assert (ambiguous.outcome, ambiguous.doc_id) == ("ambiguous", None)

        vector = np.zeros(768, dtype=np.float32)
        vector[0] = 1.0
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await conn.execute("UPDATE chunks SET embedding = %s::vector", ("[" + ",".join(map(str, vector)) + "]",))
        hits = await store.search(vector, 10)
        assert len({h.chunk_id for h in hits}) == len(hits)
        assert sorted(h.content for h in hits) == sorted(
            {*PARAGRAPHS, "新たに設けた条文で、電子帳簿保存法への対応を定めます。"}
        )
    finally:
        await store.aclose()


async def test_a_search_whose_upstream_error_quotes_the_key_answers_without_it(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    await create_tables(database_url)
    config = SimulatorConfig(echo_key_rate=1.0, echo_key_style="request")
    async with GeminiSimulator(config) as simulator:
        settings = make_settings(
            KNOWLEDGE_API_TOKEN=API_TOKEN,
            EMBEDDING_PROVIDER="gemini",
            GOOGLE_API_KEY=TEST_API_KEY,
            GOOGLE_GEMINI_BASE_URL=simulator.base_url,
        )
        async with running_app(settings) as (client, _):
            response = await client.get("/knowledge/search", params={"q": "締め日"})
    assert response.status_code == 502
    assert "invalid argument" in response.text and TEST_API_KEY not in response.text and "***" in response.text
