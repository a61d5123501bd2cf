"""Both Gemini embedding models through the real google-genai client, against the simulator (which
answers one vector per Content, all its parts joined, as Google does): one call per batch with one
exact vector per text, each text with its own document's title, whatever documents a batch spans."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest

from modules.batch_embedding import BatchEmbeddingGenerator
from modules.embedders.base import EmbedRequest, l2_normalize
from modules.embedders.gemini import GeminiEmbedder
from modules.embedding_models import model_info
from modules.gemini_simulator import GeminiSimulator, SimulatorConfig, model_embedding, text_sha256
from modules.settings import Settings, SettingsError, load_settings
from tests.helpers import TEST_API_KEY, corpus, fetch_all, seed_chunks

MODEL_2 = "gemini-embedding-2"


@pytest.fixture
async def simulator() -> AsyncIterator[GeminiSimulator]:
    async with GeminiSimulator(SimulatorConfig()) as sim:
        yield sim


@pytest.fixture
def gemini_settings(make_settings: Callable[..., Settings], simulator: GeminiSimulator) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "EMBEDDING_PROVIDER": "gemini",
            "GOOGLE_API_KEY": TEST_API_KEY,
            "GOOGLE_GEMINI_BASE_URL": simulator.base_url,
            "EMBEDDING_REQUEST_TIMEOUT": "5",
        }
        values.update(overrides)
        return make_settings(**values)

    return build


def expected(model: str, text: str, dims: int = 768) -> np.ndarray:
    return l2_normalize(model_embedding(model, text, dims).reshape(1, -1).astype(np.float32))[0]


async def run_all(settings: Settings) -> Any:
    async with BatchEmbeddingGenerator(settings) as generator:
        return await generator.run()


@pytest.mark.slow  # over 1 s: the full tier only
async def test_gemini_embedding_2_embeds_1000_chunks_in_100_calls_with_exact_vectors(
    database_url: str, simulator: GeminiSimulator, gemini_settings: Callable[..., Settings]
) -> None:
    texts = corpus(1000, docs=10)
    await seed_chunks(database_url, texts)
    stats = await run_all(gemini_settings(EMBEDDING_MODEL=MODEL_2, EMBEDDING_BATCH_SIZE=10))
    assert (stats.embedded, stats.failed, stats.api_calls, stats.rate_limited) == (1000, 0, 100, 0)
    assert simulator.stats.calls_by_model == {MODEL_2: 100}
    assert simulator.stats.texts_embedded_by_model == {MODEL_2: 1000}
    rows = await fetch_all(
        database_url,
        "SELECT c.content, c.embedding, c.embedding_model, d.name FROM chunks c JOIN document_sources d ON d.id = c.doc_id",
    )
    assert len(rows) == 1000
    for content, vector, model, name in rows:
        assert model == f"{MODEL_2}@768"
        # The task and the title are written into the text, as Google documents for this model.
        sent = f"title: {name} | text: {content}"
        np.testing.assert_allclose(vector.to_numpy(), expected(MODEL_2, sent), rtol=0, atol=1e-6)
        assert simulator.stats.embeds_per_text[text_sha256(sent)] == 1


async def test_gemini_embedding_001_sends_each_text_with_its_own_documents_title_in_one_call(
    database_url: str, simulator: GeminiSimulator, gemini_settings: Callable[..., Settings]
) -> None:
    # Two documents of 5 chunks: one batch of 10 spans both, and is one call.
    texts = {"a": [f"A{i}の段落。" for i in range(5)], "b": [f"B{i}の段落。" for i in range(5)]}
    await seed_chunks(database_url, texts, names={"a": "就業規則.md", "b": "経費精算.md"})
    stats = await run_all(gemini_settings(EMBEDDING_BATCH_SIZE=10, EMBEDDING_CONCURRENCY=1))
    assert (stats.embedded, stats.api_calls) == (10, 1)
    titles = simulator.stats.title_by_text
    assert {titles[text_sha256(t)] for t in texts["a"]} == {"就業規則.md"}
    assert {titles[text_sha256(t)] for t in texts["b"]} == {"経費精算.md"}
    rows = await fetch_all(database_url, "SELECT content, embedding FROM chunks")
    for content, vector in rows:
        np.testing.assert_allclose(vector.to_numpy(), expected("gemini-embedding-001", content), atol=1e-6)


@pytest.mark.slow  # over 1 s: the full tier only
async def test_143_small_documents_take_one_call_per_full_batch(
    database_url: str, simulator: GeminiSimulator, gemini_settings: Callable[..., Settings]
) -> None:
    # 1,001 chunks in 143 documents of 7: batches of 10 span documents, and each is still one call.
    await seed_chunks(database_url, corpus(1001, docs=143))
    stats = await run_all(gemini_settings(EMBEDDING_BATCH_SIZE=10))
    assert stats.embedded == 1001
    assert stats.api_calls <= 110
    assert simulator.stats.successful_calls == stats.api_calls
    assert sorted(simulator.stats.embeds_per_text.values()) == [1] * 1001


async def test_gemini_embedding_2_puts_the_query_task_into_the_text(
    simulator: GeminiSimulator, gemini_settings: Callable[..., Settings]
) -> None:
    embedder = GeminiEmbedder(gemini_settings(EMBEDDING_MODEL=MODEL_2))
    try:
        query = await embedder.embed_query("有給休暇の申請方法")
        document = await embedder.embed([EmbedRequest("有給休暇は前日までに申請します。", None)])
    finally:
        await embedder.aclose()
    np.testing.assert_allclose(
        query[0], expected(MODEL_2, "task: search result | query: 有給休暇の申請方法"), atol=1e-6
    )
    no_title = "title: none | text: 有給休暇は前日までに申請します。"
    np.testing.assert_allclose(document[0], expected(MODEL_2, no_title), atol=1e-6)
    assert simulator.stats.title_by_text[text_sha256(no_title)] == ""  # no title field for this model


def test_the_request_items_are_what_the_sdk_builds_plus_a_title_each(
    gemini_settings: Callable[..., Settings],
) -> None:
    one = GeminiEmbedder(gemini_settings())
    items = one.request_items(["a", "b"], ["T1", None], "RETRIEVAL_DOCUMENT")
    assert items == [
        {
            "content": {"parts": [{"text": "a"}]},
            "taskType": "RETRIEVAL_DOCUMENT",
            "title": "T1",
            "outputDimensionality": 768,
            "model": "models/gemini-embedding-001",
        },
        {
            "content": {"parts": [{"text": "b"}]},
            "taskType": "RETRIEVAL_DOCUMENT",
            "outputDimensionality": 768,
            "model": "models/gemini-embedding-001",
        },
    ]
    # A title goes with documents only; gemini-embedding-2 takes neither field.
    assert "title" not in one.request_items(["q"], ["T"], "RETRIEVAL_QUERY")[0]
    two = GeminiEmbedder(gemini_settings(EMBEDDING_MODEL=MODEL_2))
    assert two.request_items(["a"], ["T1"], "RETRIEVAL_DOCUMENT") == [
        {
            "content": {"parts": [{"text": "title: T1 | text: a"}]},
            "outputDimensionality": 768,
            "model": f"models/{MODEL_2}",
        }
    ]


def test_the_model_table_gives_each_model_its_limit_dimensions_and_price() -> None:
    one, two = model_info("gemini-embedding-001"), model_info("models/gemini-embedding-2")
    assert (one.max_input_tokens, two.max_input_tokens) == (2048, 8192)
    assert (one.task, two.task, one.title, two.title) == ("field", "text", "field", "text")
    assert one.cost_usd(1_000_000) == 0.15 and one.cost_usd(1_000_000, batch=True) == 0.075
    assert two.cost_usd(1_000_000) == 0.20 and two.cost_usd(1_000_000, batch=True) == 0.10
    assert (
        model_info("gemini-embedding-2-preview").input_format("RETRIEVAL_DOCUMENT") == "title: {title} | text: {text}"
    )
    unknown = model_info("text-embedding-009")
    assert not unknown.documented and unknown.cost_usd(1000) is None and unknown.allows_dimensions(16000)


def test_settings_take_the_input_limit_from_the_model_and_refuse_dimensions_it_cannot_give() -> None:
    key = {"EMBEDDING_PROVIDER": "gemini", "GOOGLE_API_KEY": TEST_API_KEY}
    assert load_settings(env=key).max_input_tokens == 2048
    assert load_settings(env={**key, "EMBEDDING_MODEL": MODEL_2}).max_input_tokens == 8192
    assert load_settings(env={**key, "EMBEDDING_MAX_INPUT_TOKENS": "1000"}).max_input_tokens == 1000
    with pytest.raises(SettingsError) as caught:
        load_settings(env={**key, "EMBEDDING_MODEL": MODEL_2, "EMBEDDING_DIMENSIONS": "4096"})
    assert str(caught.value).startswith("EMBEDDING_DIMENSIONS: gemini-embedding-2 outputs 128 to 3072 dimensions")
    assert "\n" not in str(caught.value)
    # The offline model pads to any column, so the Gemini model's range does not apply to it.
    assert load_settings(env={"EMBEDDING_PROVIDER": "local", "EMBEDDING_DIMENSIONS": "4096"}).dimensions == 4096


def test_the_cache_key_changes_with_the_models_input_format_and_stays_for_plain_text() -> None:
    import hashlib

    from modules.engine.screening import Screener
    from modules.stores.base import Chunk
    from modules.text import estimate_tokens

    chunk = Chunk("1", "d", 0, "本文です。", "規程.md", 0)

    def key(model_id: str, input_format: str) -> str | None:
        screener = Screener(model_id, "RETRIEVAL_DOCUMENT", True, True, 2048, "truncate", estimate_tokens)
        return Screener(**{**screener.__dict__, "input_format": input_format}).cache_key(chunk, chunk.content)

    plain = key("gemini-embedding-001@768", "{text}")
    # the key as it was before formats existed, so caches filled by earlier versions still hit
    parts = ("gemini-embedding-001@768", "RETRIEVAL_DOCUMENT", "規程.md", "本文です。")
    assert plain == hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    framed = key("gemini-embedding-2@768", "title: {title} | text: {text}")
    assert framed != key("gemini-embedding-2@768", "{text}") and framed != plain


async def test_cost_is_the_estimated_tokens_at_the_models_price_in_the_status_and_the_run(
    database_url: str, simulator: GeminiSimulator, gemini_settings: Callable[..., Settings]
) -> None:
    from modules.cli.processor import cost_estimate
    from modules.stores.base import TextToEmbed
    from modules.text import estimate_tokens

    texts = corpus(40, docs=2) | {
        "mixed": ["VPNに接続: 2026年4月1日 v2.3 (see https://example.com/a?b=1)", "ASCII only, here."]
    }
    await seed_chunks(database_url, texts)
    expected = sum(estimate_tokens(t) for doc in texts.values() for t in doc)
    async with BatchEmbeddingGenerator(gemini_settings(EMBEDDING_MODEL=MODEL_2)) as generator:
        before = await generator.store.text_to_embed()
        assert before == TextToEmbed(42, expected)  # SQL counts exactly as modules/text.py estimates
        assert (await generator.store.text_to_embed("mixed")) == TextToEmbed(
            2, sum(estimate_tokens(t) for t in texts["mixed"])
        )
        cost = cost_estimate(generator, before)
        assert cost["tokens_estimate"] == expected
        assert cost["cost_usd"] == round(expected * 0.20 / 1e6, 6)
        assert cost["cost_usd_batch"] == round(expected * 0.10 / 1e6, 6)
        stats = await generator.run()
        assert (await generator.store.text_to_embed()) == TextToEmbed(0, 0)
    run = stats.as_dict()
    # what was sent includes gemini-embedding-2's framing ("title: ... | text: ...") around each text
    assert run["tokens_sent"] > expected
    assert run["cost_usd"] == round(run["tokens_sent"] * 0.20 / 1e6, 6) > 0
    assert "non-ASCII" in run["tokens_estimate_method"]
