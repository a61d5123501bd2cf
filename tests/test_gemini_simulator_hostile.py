"""Hostile upstream answers: numerically poisonous vectors, a body that drips, a request that hangs,
a redirect to another origin, an error that quotes the API key. Driven by the real google-genai
client, which shows what a product built on it is exposed to."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest
from google import genai
from google.genai import errors, types

from modules.gemini_simulator import GeminiSimulator, SimulatorConfig, simulated_embedding
from modules.gemini_simulator.wire import batch_body, encode_values
from tests.test_gemini_simulator import (  # noqa: F401  (the autouse fixture is found by name)
    _OPEN_CLIENTS,
    KEY,
    MODEL,
    TRANSPORT_TIMEOUTS,
    _close_sdk_clients,
    client_for,
    embed,
    values,
)

TEXTS = ["一つ目", "二つ目", "三つ目", "四つ目"]


@pytest.fixture
async def sim() -> AsyncIterator[GeminiSimulator]:
    async with GeminiSimulator(SimulatorConfig()) as simulator:
        yield simulator


def strict_json(body: bytes) -> object:
    def refuse(token: str) -> object:
        raise ValueError(f"not a JSON number: {token}")

    return json.loads(body, parse_constant=refuse)


def the_odd_one(got: list[np.ndarray], dims: int = 768) -> tuple[int, np.ndarray]:
    """The one vector that is not the simulated embedding of its text (all others are)."""
    odd = [
        i
        for i, (v, t) in enumerate(zip(got, TEXTS, strict=True))
        if not np.array_equal(v, simulated_embedding(t, dims))
    ]
    assert len(odd) == 1, odd
    return odd[0], got[odd[0]]


# ----------------------------------------------------------------------------- vectors


@pytest.mark.asyncio
async def test_zero_vector(sim: GeminiSimulator) -> None:
    sim.config.zero_vector_rate = 1.0
    got = values(await embed(client_for(sim), TEXTS))
    _, vector = the_odd_one(got)
    assert vector.shape == (768,) and not vector.any()
    assert sim.stats.faults["zero_vector"] == 1 and sim.stats.successful_calls == 0


@pytest.mark.asyncio
async def test_overflow_vector_is_valid_json_and_overflows_float32(sim: GeminiSimulator) -> None:
    sim.config.overflow_rate = 1.0
    got = values(await embed(client_for(sim), TEXTS))
    index, vector = the_odd_one(got)
    assert np.isfinite(vector).all() and float(np.abs(vector).max()) == pytest.approx(3e38, rel=1e-6)
    with np.errstate(over="ignore"):
        assert np.isinf(np.sum(vector * vector, dtype=np.float32))  # a float32 norm overflows
    wide = vector.astype(np.float64)
    truth = simulated_embedding(TEXTS[index], 768).astype(np.float64)
    cosine = float(wide @ truth / np.linalg.norm(wide) / np.linalg.norm(truth))
    assert cosine == pytest.approx(1.0, abs=1e-6)  # same direction: float64 recovers it
    assert sim.stats.faults["overflow"] == 1


@pytest.mark.asyncio
async def test_underflow_vector_has_a_zero_float32_norm(sim: GeminiSimulator) -> None:
    sim.config.underflow_rate = 1.0
    got = values(await embed(client_for(sim), TEXTS))
    _, vector = the_odd_one(got)
    assert float(np.abs(vector).max()) == pytest.approx(1e-30, rel=1e-6) and vector.all()
    with np.errstate(under="ignore"):
        assert float(np.sqrt(np.sum(vector * vector, dtype=np.float32))) == 0.0
    assert float(np.linalg.norm(vector.astype(np.float64))) > 0.0
    assert sim.stats.faults["underflow"] == 1


def test_extreme_float32_values_encode_as_exact_json_numbers() -> None:
    info = np.finfo(np.float32)
    extremes = np.array(
        [info.max, -info.max, 3e38, -3e38, info.tiny, info.smallest_subnormal, -info.smallest_subnormal, 1e-30, 0.0],
        dtype=np.float32,
    )
    body = batch_body([extremes, simulated_embedding("x", 128) * np.float32(3e38)])
    parsed = strict_json(body)
    assert isinstance(parsed, dict)
    decoded = np.asarray(parsed["embeddings"][0]["values"], dtype=np.float32)
    np.testing.assert_array_equal(decoded, extremes)
    (text,) = encode_values([extremes])
    assert b"inf" not in text.lower() and b"nan" not in text.lower()


# ----------------------------------------------------------------------------- delivery


@pytest.mark.slow
@pytest.mark.asyncio
async def test_drip_never_trips_a_per_read_timeout_only_a_deadline(sim: GeminiSimulator) -> None:
    sim.config.drip_rate = 1.0
    sim.config.drip_bytes_per_second = 40.0  # a 128-dim body (~2 KB) would take about a minute
    client = client_for(sim, timeout_ms=1000)  # the SDK's timeout is per read, not a deadline
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(embed(client, ["drip"], dims=128), timeout=2.5)
    assert time.monotonic() - started >= 2.4  # the 1 s read timeout never fired
    assert sim.stats.faults["drip"] == 1 and sim.stats.status_counts[200] == 1
    assert sim.stats.successful_calls == 0  # never delivered whole


@pytest.mark.asyncio
async def test_a_fast_drip_arrives_whole(sim: GeminiSimulator) -> None:
    sim.config.drip_rate = 1.0
    sim.config.drip_bytes_per_second = 40_000.0
    (vector,) = values(await embed(client_for(sim), ["drip"], dims=128))
    np.testing.assert_array_equal(vector, simulated_embedding("drip", 128))
    assert sim.stats.successful_calls == 1 and sim.stats.faults["drip"] == 1


@pytest.mark.asyncio
async def test_hang_is_charged_and_never_answered(sim: GeminiSimulator) -> None:
    sim.config.hang_rate = 1.0
    with pytest.raises(TRANSPORT_TIMEOUTS):
        await embed(client_for(sim, timeout_ms=400), ["hang"])
    assert sim.stats.faults["hang"] == 1 and sim.quota_usage() == (1, 1)  # admitted, so counted
    assert sum(sim.stats.status_counts.values()) == 0
    sim.config.hang_rate = 0.0
    (vector,) = values(await embed(client_for(sim), ["after"]))
    np.testing.assert_array_equal(vector, simulated_embedding("after", 768))


# ----------------------------------------------------------------------------- redirects and keys


@pytest.mark.asyncio
async def test_the_sdk_follows_a_redirect_to_another_origin_with_its_key(sim: GeminiSimulator) -> None:
    sim.config.redirect_rate = 1.0
    with pytest.raises(errors.ClientError) as caught:  # the other origin answers 404
        await embed(client_for(sim), ["x"])
    assert caught.value.code == 404
    assert sim.stats.status_counts[307] == 1 and sim.stats.faults["redirect"] == 1
    assert (sim.stats.redirected_calls, sim.stats.redirected_with_key) == (1, 1)
    (seen,) = sim.stats.redirected_requests
    assert seen["method"] == "POST" and seen["path"] == f"/redirected/v1/models/{MODEL}:batchEmbedContents"
    assert seen["headers"]["x-goog-api-key"] == "<redacted>" and seen["carried_key"]
    assert KEY not in json.dumps(sim.stats.to_dict())  # the stats never hold the key itself
    assert sim.quota_usage() == (0, 0) and sim.stats.successful_calls == 0

    sim.config.redirect_status = 302  # httpx turns a redirected POST into a GET, headers and all
    with pytest.raises(errors.ClientError):
        await embed(client_for(sim), ["x"])
    assert sim.stats.redirected_requests[-1]["method"] == "GET" and sim.stats.redirected_with_key == 2


@pytest.mark.asyncio
async def test_a_client_that_refuses_redirects_sends_nothing_away(sim: GeminiSimulator) -> None:
    sim.config.redirect_rate = 1.0
    options = types.HttpOptions(base_url=sim.base_url, async_client_args={"follow_redirects": False})
    client = genai.Client(api_key=KEY, http_options=options)
    _OPEN_CLIENTS.append(client)
    with pytest.raises(errors.APIError) as caught:
        await embed(client, ["x"])
    assert caught.value.code == 307
    assert sim.stats.redirected_calls == 0


@pytest.mark.asyncio
async def test_redirect_location_can_point_anywhere(sim: GeminiSimulator) -> None:
    sim.config.redirect_rate = 1.0
    sim.config.redirect_location = sim.base_url  # same origin: httpx keeps every header
    with pytest.raises(errors.ClientError):
        await embed(client_for(sim), ["x"])
    assert sim.stats.redirected_with_key == 1


@pytest.mark.asyncio
async def test_an_error_that_quotes_the_key(sim: GeminiSimulator) -> None:
    sim.config.echo_key_rate = 1.0
    with pytest.raises(errors.ClientError) as caught:
        await embed(client_for(sim), ["x"])
    assert (caught.value.code, caught.value.status) == (400, "INVALID_ARGUMENT")
    assert caught.value.message == f"Invalid API key: {KEY}"
    assert KEY in str(caught.value)  # whoever logs the exception logs the key
    assert sim.stats.faults["echo_key"] == 1 and sim.quota_usage() == (0, 0)


@pytest.mark.asyncio
async def test_an_error_that_quotes_the_request_with_the_key(sim: GeminiSimulator) -> None:
    sim.config.echo_key_rate = 1.0
    sim.config.echo_key_style = "request"
    with pytest.raises(errors.ClientError) as caught:
        await embed(client_for(sim), ["x"])
    assert (caught.value.code, caught.value.status) == (400, "INVALID_ARGUMENT")
    assert "invalid argument" in caught.value.message and f"key={KEY}" in caught.value.message
    assert "api key" not in caught.value.message.lower()  # nothing says the key is the problem


# ----------------------------------------------------------------------------- determinism


@pytest.mark.asyncio
async def test_hostile_rates_leave_the_older_fault_sequence_alone() -> None:
    async def outcomes(**extra: float) -> list[str]:
        config = SimulatorConfig(error_rate_503=0.3, error_rate_500=0.2, seed=7, **extra)  # type: ignore[arg-type]
        async with GeminiSimulator(config) as simulator:
            client = client_for(simulator)
            seen = []
            for i in range(12):
                try:
                    await embed(client, [f"s{i}"])
                    seen.append("ok")
                except errors.APIError as err:
                    seen.append(str(err.code))
            return seen

    plain = await outcomes()
    assert await outcomes(zero_vector_rate=0.5, overflow_rate=0.3, redirect_rate=0.0) == plain
