"""The simulator's model table: gemini-embedding-001 and gemini-embedding-2, what the real SDK sends
for each, and what comes back (one vector per Content, however many parts)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest
from google.genai import errors, types

from modules.gemini_simulator import (
    MODELS,
    GeminiSimulator,
    SimulatorConfig,
    model_embedding,
    simulated_embedding,
    text_sha256,
)
from tests.test_gemini_simulator import (  # noqa: F401  (the autouse fixture is found by name)
    KEY,
    MODEL,
    _close_sdk_clients,
    client_for,
    embed,
    values,
)

MODEL_2 = "gemini-embedding-2"
TEXTS = [f"段落{i}。東京の天気は晴れ。" for i in range(10)]


@pytest.fixture
async def sim() -> AsyncIterator[GeminiSimulator]:
    async with GeminiSimulator(SimulatorConfig()) as simulator:
        yield simulator


def contents(texts: list[str]) -> list[types.Content]:
    return [types.Content(parts=[types.Part(text=t)]) for t in texts]


def test_model_embedding_keeps_001_and_gives_model_2_its_own_normalised_space() -> None:
    np.testing.assert_array_equal(model_embedding(MODEL, "abc", 768), simulated_embedding("abc", 768))
    two = model_embedding(MODEL_2, "abc", 768)
    np.testing.assert_array_equal(two, model_embedding(MODEL_2, "abc", 768))  # pure
    assert abs(float(np.dot(two, simulated_embedding("abc", 768)))) < 0.2  # another space
    assert abs(float(np.linalg.norm(two)) - 1.0) < 1e-5  # auto-normalised when truncated
    full = model_embedding(MODEL_2, "abc", 3072)
    np.testing.assert_allclose(two, full[:768] / np.linalg.norm(full[:768]), rtol=1e-5)
    assert not np.array_equal(model_embedding(MODEL_2, "abd", 768), two)
    spec = MODELS[MODEL_2]
    assert (spec.max_input_tokens, spec.min_dimensions, spec.max_dimensions, spec.quota_model) == (
        8192,
        128,
        3072,
        "gemini-embedding-2",
    )


@pytest.mark.asyncio
async def test_a_list_of_strings_is_one_vector_for_gemini_embedding_2(sim: GeminiSimulator) -> None:
    """The SDK folds the strings into one Content of ten parts: one request, one vector."""
    got = values(await embed(client_for(sim), TEXTS, model=MODEL_2))
    assert len(got) == 1
    joined = "".join(TEXTS)
    np.testing.assert_array_equal(got[0], model_embedding(MODEL_2, joined, 768))
    assert sim.stats.embeds_per_text == {text_sha256(joined): 1}
    assert sim.stats.max_batch_seen == 1
    assert sim.stats.calls_by_model == {MODEL_2: 1} and sim.stats.texts_embedded_by_model == {MODEL_2: 1}


@pytest.mark.asyncio
async def test_a_list_of_contents_is_one_vector_each_for_gemini_embedding_2(sim: GeminiSimulator) -> None:
    client = client_for(sim)
    config = types.EmbedContentConfig(output_dimensionality=768)
    response = await client.aio.models.embed_content(model=MODEL_2, contents=contents(TEXTS), config=config)
    got = values(response)
    assert len(got) == 10
    for vector, text in zip(got, TEXTS, strict=True):
        np.testing.assert_array_equal(vector, model_embedding(MODEL_2, text, 768))
    assert sim.stats.embeds_per_text == {text_sha256(t): 1 for t in TEXTS}
    assert sim.stats.texts_embedded_by_model == {MODEL_2: 10}


@pytest.mark.asyncio
async def test_gemini_embedding_001_keeps_one_vector_per_string_and_joins_parts(sim: GeminiSimulator) -> None:
    client = client_for(sim)
    got = values(await embed(client, TEXTS))
    assert len(got) == 10
    for vector, text in zip(got, TEXTS, strict=True):
        np.testing.assert_array_equal(vector, simulated_embedding(text, 768))
    three_parts = [types.Content(parts=[types.Part(text=t) for t in TEXTS[:3]])]
    (vector,) = values(await client.aio.models.embed_content(model=MODEL, contents=three_parts))
    np.testing.assert_array_equal(vector, simulated_embedding("".join(TEXTS[:3]), 3072))


@pytest.mark.asyncio
async def test_gemini_embedding_2_accepts_and_ignores_task_type_and_title(sim: GeminiSimulator) -> None:
    client = client_for(sim)
    seen = []
    for task, title in (("RETRIEVAL_DOCUMENT", "a title"), ("RETRIEVAL_QUERY", None), (None, None)):
        config = types.EmbedContentConfig(task_type=task, title=title, output_dimensionality=256)
        response = await client.aio.models.embed_content(model=MODEL_2, contents=contents(["同じ"]), config=config)
        seen.append(values(response)[0])
    for vector in seen:
        np.testing.assert_array_equal(vector, model_embedding(MODEL_2, "同じ", 256))
    (default,) = values(await client.aio.models.embed_content(model=MODEL_2, contents="同じ"))
    assert default.shape == (3072,)
    with pytest.raises(errors.ClientError) as caught:
        await embed(client, ["x"], dims=64, model=MODEL_2)
    assert caught.value.code == 400 and "between 128 and 3072 for models/gemini-embedding-2" in (
        caught.value.message or ""
    )


@pytest.mark.asyncio
async def test_a_model_that_refuses_task_type_answers_400(
    sim: GeminiSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    strict = dataclasses.replace(MODELS[MODEL_2], accepts_task_type=False, accepts_title=False)
    monkeypatch.setitem(MODELS, MODEL_2, strict)
    with pytest.raises(errors.ClientError) as caught:
        await embed(client_for(sim), ["x"], model=MODEL_2)
    assert (caught.value.code, caught.value.status) == (400, "INVALID_ARGUMENT")
    assert "task_type is not supported by models/gemini-embedding-2" in (caught.value.message or "")
    config = types.EmbedContentConfig(title="t")
    with pytest.raises(errors.ClientError) as caught:
        await client_for(sim).aio.models.embed_content(model=MODEL_2, contents="x", config=config)
    assert "title is not supported" in (caught.value.message or "")


@pytest.mark.asyncio
async def test_gemini_embedding_2_takes_8192_tokens(sim: GeminiSimulator) -> None:
    client = client_for(sim)
    long_text = "語" * 5000  # over 001's 2,048, within 2's 8,192
    (vector,) = values(await embed(client, [long_text], model=MODEL_2))
    np.testing.assert_array_equal(vector, model_embedding(MODEL_2, long_text, 768))
    (vector,) = values(await embed(client, ["語" * 9000], model=MODEL_2))
    np.testing.assert_array_equal(vector, model_embedding(MODEL_2, "語" * 8192, 768))
    sim.config.over_limit = "reject"
    with pytest.raises(errors.ClientError) as caught:
        await embed(client, ["語" * 9000], model=MODEL_2)
    assert caught.value.message == "The input token count (9000) exceeds the maximum number of tokens allowed (8192)."


@pytest.mark.asyncio
async def test_quotas_are_per_model(sim: GeminiSimulator) -> None:
    sim.config.rpm = 1
    client = client_for(sim)
    await embed(client, ["a"])
    await embed(client, ["a"], model=MODEL_2)  # its own quota
    with pytest.raises(errors.ClientError) as caught:
        await embed(client, ["b"], model=MODEL_2)
    assert "limit: 1, model: gemini-embedding-2" in (caught.value.message or "")
    with pytest.raises(errors.ClientError) as caught:
        await embed(client, ["b"])
    assert "limit: 1, model: gemini-embedding-1.0" in (caught.value.message or "")
    assert sim.quota_usage(MODEL_2) == (1, 1) and sim.quota_usage() == (1, 1)
    async with httpx.AsyncClient(base_url=sim.base_url) as http:
        stats = (await http.get("/_sim/stats")).json()
    assert stats["calls_by_model"] == {MODEL: 2, MODEL_2: 2}
    assert stats["texts_embedded_by_model"] == {MODEL: 1, MODEL_2: 1}


@pytest.mark.asyncio
async def test_non_text_parts_are_refused_for_both_models(sim: GeminiSimulator) -> None:
    body = {"requests": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]}}]}
    async with httpx.AsyncClient(headers={"x-goog-api-key": KEY}) as http:
        for model, wording in ((MODEL, "only text parts"), (MODEL_2, "the simulator embeds text parts only")):
            response = await http.post(f"{sim.base_url}/v1beta/models/{model}:batchEmbedContents", json=body)
            assert response.status_code == 400 and wording in response.json()["error"]["message"]
