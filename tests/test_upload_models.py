"""The knowledge app never ranks a query of one model against vectors of another: while the vector column
holds another model's vectors, search answers 409 naming the fix (before the query is embedded), and an
upload's answer says its chunks will not be embedded rather than "scheduled". What the column holds is
counted at start, then at most every MODEL_CHECK_SECONDS, and again at once when a background run met
another model's vectors. The real app, the real google-genai client over HTTP to the simulator, and the
embedded PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from modules.gemini_simulator import GeminiSimulator, SimulatorConfig
from modules.knowledge.service import MODEL_CHECK_SECONDS, KnowledgeService
from modules.settings import Settings
from tests.api_helpers import API_TOKEN, running_app, upload
from tests.helpers import TEST_API_KEY, fetch_all, seed_chunks

OLD_MODEL = "wordllama-l2_supercat-256@768"  # what the quick start's local provider writes


async def another_models_vectors(url: str) -> None:
    """Give every pending chunk a vector, recorded as made by another model."""
    await fetch_all(
        url,
        "UPDATE chunks SET embedding = array_fill(0.036, ARRAY[768])::vector, embedding_model = %s "
        "WHERE embedding IS NULL RETURNING 1",
        (OLD_MODEL,),
    )


@pytest.fixture
async def simulator() -> AsyncIterator[GeminiSimulator]:
    async with GeminiSimulator(SimulatorConfig()) as running:
        yield running


@pytest.fixture
def gemini_settings(make_settings: Callable[..., Settings], simulator: GeminiSimulator) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values = {
            "AUTO_GENERATE_EMBEDDINGS": "true",
            "EMBEDDING_PROVIDER": "gemini",
            "GOOGLE_API_KEY": TEST_API_KEY,
            "GOOGLE_GEMINI_BASE_URL": simulator.base_url,
            "KNOWLEDGE_API_TOKEN": API_TOKEN,
        }
        values.update(overrides)
        return make_settings(**values)

    return build


def count_status_calls(service: KnowledgeService) -> list[Any]:
    """Record the store's status calls that count other models' vectors (the store itself still answers)."""
    store = service.generator.store
    calls: list[Any] = []
    real = store.status

    async def counted(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("model_id") is not None:
            calls.append(kwargs)
        return await real(*args, **kwargs)

    store.status = counted  # type: ignore[method-assign]
    return calls


async def test_search_is_a_409_naming_the_fix_while_the_column_holds_another_models_vectors(
    gemini_settings: Callable[..., Settings], database_url: str, simulator: GeminiSimulator
) -> None:
    # Review 1, F5: search answered 200, ranking a Gemini query against WordLlama vectors (similarity 0.02).
    await seed_chunks(database_url, {"doc-old": ["経費精算の締め日は毎月25日です。"]})
    await another_models_vectors(database_url)
    async with running_app(gemini_settings()) as (client, service):
        service.model_check_seconds = 0.0  # count on every request here: the fix below is seen at once
        refused = await client.get("/knowledge/search", params={"q": "経費精算の締め日", "k": 2})
        assert refused.status_code == 409, refused.text
        detail = refused.json()["detail"]
        for said in (
            "EMBEDDING_MODEL",
            "python fix_missing_embeddings.py",
            "another model",
            "1 vectors",
            "検索できません",
        ):
            assert said in detail, said
        assert "gemini-embedding-001@768" in detail
        assert simulator.stats.successful_calls == 0  # the query was not even embedded

        # The operator's fix (what fix_missing_embeddings.py does): the other model's vectors are cleared,
        # the chunks re-embedded with the configured model; search then answers.
        await fetch_all(database_url, "UPDATE chunks SET embedding = NULL, embedding_model = NULL RETURNING 1")
        await service.generator.run()
        found = await client.get("/knowledge/search", params={"q": "経費精算の締め日", "k": 2})
        assert found.status_code == 200, found.text
        assert found.json()["results"][0]["doc_id"] == "doc-old"


async def test_an_upload_does_not_promise_an_embedding_the_run_would_refuse(
    gemini_settings: Callable[..., Settings], database_url: str, simulator: GeminiSimulator
) -> None:
    await seed_chunks(database_url, {"doc-old": ["古いモデルで埋め込んだ段落です。"]})
    await another_models_vectors(database_url)
    async with running_app(gemini_settings()) as (client, service):
        response = await upload(client, "新規程.txt", "新しい規程の本文です。".encode())
        assert response.status_code == 202, response.text
        embedding = response.json()["embedding"]
        assert embedding.startswith("refused:") and "python fix_missing_embeddings.py" in embedding
        assert "EMBEDDING_MODEL" in embedding
        assert not service.background
        await service.wait_for_background()
    assert simulator.stats.successful_calls == 0
    rows = await fetch_all(
        database_url,
        "SELECT count(*) FROM chunks c JOIN document_sources d ON d.id = c.doc_id "
        "WHERE d.name = '新規程.txt' AND c.embedding IS NULL AND c.embedding_failed_at IS NULL",
    )
    assert rows == [(1,)]  # stored, pending: embedded once the column holds one model


async def test_with_the_mix_allowed_an_upload_is_embedded_but_search_still_refuses_to_mix(
    gemini_settings: Callable[..., Settings], database_url: str
) -> None:
    await seed_chunks(database_url, {"doc-old": ["古いモデルで埋め込んだ段落です。"]})
    await another_models_vectors(database_url)
    async with running_app(gemini_settings(EMBEDDING_ALLOW_MODEL_MIX="true")) as (client, service):
        response = await upload(client, "新規程.txt", "新しい規程の本文です。".encode())
        assert response.status_code == 202 and response.json()["embedding"] == "scheduled"
        await service.wait_for_background()
        assert (await client.get("/knowledge/search", params={"q": "規程"})).status_code == 409


async def test_the_column_is_counted_at_start_then_cached_and_recounted_when_a_run_meets_another_model(
    gemini_settings: Callable[..., Settings], database_url: str
) -> None:
    await seed_chunks(database_url, {"doc-a": ["経費精算の締め日は毎月25日です。"]})
    async with running_app(gemini_settings()) as (client, service):
        assert service.model_check_seconds == MODEL_CHECK_SECONDS >= 10
        await service.generator.run()
        calls = count_status_calls(service)
        for _ in range(5):
            assert (await client.get("/knowledge/search", params={"q": "締め日"})).status_code == 200
        assert calls == []  # counted at start, not once per search

        # Another process writes another model's vectors; the next background run meets them and refuses:
        # the app counts again at once, without waiting for MODEL_CHECK_SECONDS.
        await seed_chunks(database_url, {"doc-b": ["別のモデルの段落です。"]})
        await another_models_vectors(database_url)
        response = await upload(client, "追加.txt", "追加の文書です。".encode())
        assert response.json()["embedding"] == "scheduled"  # the count is still the cached one
        await service.wait_for_background()
        refused = await client.get("/knowledge/search", params={"q": "締め日"})
        assert refused.status_code == 409 and "fix_missing_embeddings.py" in refused.json()["detail"]


async def test_a_mismatch_found_at_start_is_said_in_the_log(
    gemini_settings: Callable[..., Settings], database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    await seed_chunks(database_url, {"doc-old": ["古いモデルで埋め込んだ段落です。"]})
    await another_models_vectors(database_url)
    with caplog.at_level("WARNING", logger="batch_embedding"):
        async with running_app(gemini_settings()):
            pass
    said = [r.getMessage() for r in caplog.records if "fix_missing_embeddings.py" in r.getMessage()]
    assert said and "409" in said[0] and "1件" in said[0]
