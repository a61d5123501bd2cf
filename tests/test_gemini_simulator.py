"""The Gemini simulator, driven over HTTP by the real google-genai async client (and httpx where
the SDK cannot send what is tested): wire format, Google's error bodies, quotas and faults."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from google import genai
from google.genai import errors, types

from modules.gemini_simulator import (
    GeminiSimulator,
    SimulatorConfig,
    count_tokens,
    format_retry_delay,
    run_simulator_in_thread,
    simulated_embedding,
    text_sha256,
    truncate_to_tokens,
)
from modules.gemini_simulator.quota import SlidingWindowQuota

try:  # google-genai uses httpx2 when it is installed, else httpx
    import httpx2

    TRANSPORT_PROTOCOL_ERRORS: tuple[type[BaseException], ...] = (
        httpx.RemoteProtocolError,
        httpx2.RemoteProtocolError,
    )
    TRANSPORT_TIMEOUTS: tuple[type[BaseException], ...] = (httpx.TimeoutException, httpx2.TimeoutException)
except ImportError:  # pragma: no cover
    TRANSPORT_PROTOCOL_ERRORS = (httpx.RemoteProtocolError,)
    TRANSPORT_TIMEOUTS = (httpx.TimeoutException,)

ROOT = Path(__file__).resolve().parents[1]
MODEL = "gemini-embedding-001"
KEY = "sim-test-key"
TEXTS = ["東京の天気は晴れです。", "The quick brown fox.", "서울은 맑음", "混合 text ミックス 123"]


_OPEN_CLIENTS: list[genai.Client] = []


@pytest.fixture(autouse=True)
async def _close_sdk_clients() -> AsyncIterator[None]:
    yield
    while _OPEN_CLIENTS:
        client = _OPEN_CLIENTS.pop()
        await client.aio.aclose()
        client.close()


@pytest.fixture
async def sim() -> AsyncIterator[GeminiSimulator]:
    async with GeminiSimulator(SimulatorConfig()) as simulator:
        yield simulator


def client_for(sim: GeminiSimulator, *, key: str = KEY, timeout_ms: int | None = None) -> genai.Client:
    client = genai.Client(api_key=key, http_options=types.HttpOptions(base_url=sim.base_url, timeout=timeout_ms))
    _OPEN_CLIENTS.append(client)
    return client


async def embed(
    client: genai.Client, texts: list[str], dims: int = 768, model: str = MODEL
) -> types.EmbedContentResponse:
    config = types.EmbedContentConfig(task_type="RETRIEVAL_DOCUMENT", title="t", output_dimensionality=dims)
    return await client.aio.models.embed_content(model=model, contents=texts, config=config)


def values(response: types.EmbedContentResponse) -> list[np.ndarray]:
    assert response.embeddings is not None
    return [np.asarray(e.values, dtype=np.float32) for e in response.embeddings]


def error_details(err: errors.APIError) -> list[dict[str, Any]]:
    details: list[dict[str, Any]] = err.details["error"].get("details", [])
    return details


def retry_delay(err: errors.APIError) -> str | None:
    for detail in error_details(err):
        if detail["@type"] == "type.googleapis.com/google.rpc.RetryInfo":
            return str(detail["retryDelay"])
    return None


# ----------------------------------------------------------------------------- pure functions


def test_simulated_embedding_is_pure_and_matryoshka_truncated() -> None:
    full = simulated_embedding("abc", 3072)
    assert full.dtype == np.float32 and full.shape == (3072,)
    assert abs(float(np.linalg.norm(full)) - 1.0) < 1e-5
    short = simulated_embedding("abc", 768)
    np.testing.assert_array_equal(short, full[:768])  # truncated, not renormalised
    assert float(np.linalg.norm(short)) < 0.9
    np.testing.assert_array_equal(simulated_embedding("abc", 768), short)
    assert not np.array_equal(simulated_embedding("abd", 768), short)
    with pytest.raises(ValueError):
        simulated_embedding("abc", 3073)


def test_token_counting_and_truncation() -> None:
    assert count_tokens("") == 0
    assert count_tokens("a") == 1
    assert count_tokens("abcd") == 1 and count_tokens("abcde") == 2
    assert count_tokens("東京") == 2
    assert count_tokens("東京 is big") == 2 + 2  # " is big": 7 characters -> 2 tokens
    assert count_tokens("東京abcdefgh한국") == 2 + 2 + 2
    text = "東京" * 1500 + "x" * 9000
    assert count_tokens(text) == 3000 + 2250
    for limit in (1, 2047, 2048, 4000):
        cut = truncate_to_tokens(text, limit)
        assert text.startswith(cut) and count_tokens(cut) == limit
    assert truncate_to_tokens("short", 2048) == "short"


def test_retry_delay_format() -> None:
    assert format_retry_delay(34.0) == "34s"
    assert format_retry_delay(0.5) == "0.5s"
    assert format_retry_delay(1.2345671) == "1.234568s"  # rounded up to the microsecond
    assert format_retry_delay(0.0) == "0s"


def test_sliding_window_reports_the_wait_until_there_is_room() -> None:
    now = [100.0]
    quota = SlidingWindowQuota(clock=lambda: now[0])
    for step in range(3):
        now[0] = 100.0 + step
        assert quota.check(1, 10, rpm=3, tpm=None, window=10.0) == []
        quota.charge(1, 10)
    now[0] = 105.0
    (violation,) = quota.check(1, 10, rpm=3, tpm=None, window=10.0)
    assert violation.metric == "requests" and violation.limit == 3
    assert violation.retry_after == pytest.approx(5.0)  # the first call leaves the window at 110
    (violation,) = quota.check(2, 10, rpm=None, tpm=25, window=10.0)  # 30 used + 10 > 25: free two calls
    assert violation.metric == "tokens" and violation.retry_after == pytest.approx(6.0)
    now[0] = 110.0
    assert quota.check(1, 10, rpm=3, tpm=None, window=10.0) == []


def test_config_patch_is_validated_all_or_nothing() -> None:
    config = SimulatorConfig()
    config.update({"rpm": "100", "count_mode": "text", "retry_info_rate": 0.5, "tpm": "none"})
    assert (config.rpm, config.count_mode, config.retry_info_rate, config.tpm) == (100, "text", 0.5, None)
    for bad in ({"rpm": 0}, {"drop_rate": 1.5}, {"count_mode": "batch"}, {"nope": 1}, {"rpm": 5, "seed": "x"}):
        with pytest.raises(ValueError):
            config.update(bad)
    assert config.rpm == 100


# ----------------------------------------------------------------------------- the SDK over HTTP


@pytest.mark.asyncio
async def test_sdk_happy_path_returns_the_simulated_vectors_in_order(sim: GeminiSimulator) -> None:
    response = await embed(client_for(sim), TEXTS)
    got = values(response)
    assert len(got) == len(TEXTS)
    for vector, text in zip(got, TEXTS, strict=True):
        np.testing.assert_array_equal(vector, simulated_embedding(text, 768))  # exact float32 round trip
    assert sim.stats.successful_calls == 1
    assert sim.stats.calls_by_endpoint["batchEmbedContents"] == 1
    assert sim.stats.embeds_per_text == {text_sha256(t): 1 for t in TEXTS}
    assert sim.stats.texts_embedded == 4 and sim.stats.max_batch_seen == 4
    assert sim.stats.tokens_counted == sum(count_tokens(t) for t in TEXTS)
    # default dims are the native 3072
    (full,) = values(await client_for(sim).aio.models.embed_content(model=MODEL, contents="x"))
    np.testing.assert_array_equal(full, simulated_embedding("x", 3072))


@pytest.mark.asyncio
async def test_base_url_from_environment(sim: GeminiSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", sim.base_url)
    client = genai.Client(api_key=KEY)
    _OPEN_CLIENTS.append(client)
    (vector,) = values(await embed(client, ["env"]))
    np.testing.assert_array_equal(vector, simulated_embedding("env", 768))


@pytest.mark.asyncio
async def test_more_than_100_texts_is_a_400(sim: GeminiSimulator) -> None:
    with pytest.raises(errors.ClientError) as caught:
        await embed(client_for(sim), [f"t{i}" for i in range(101)])
    assert caught.value.code == 400 and caught.value.status == "INVALID_ARGUMENT"
    assert caught.value.message == "* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch\n"
    assert sim.stats.max_batch_seen == 101 and sim.stats.bad_requests == 1
    assert len(values(await embed(client_for(sim), [f"t{i}" for i in range(100)]))) == 100


@pytest.mark.asyncio
async def test_429_carries_google_retry_info_or_not(sim: GeminiSimulator) -> None:
    sim.config.rpm = 1
    client = client_for(sim)
    await embed(client, ["a"])
    with pytest.raises(errors.ClientError) as caught:
        await embed(client, ["b"])
    err = caught.value
    assert (err.code, err.status) == (429, "RESOURCE_EXHAUSTED")
    assert err.message is not None
    assert (
        "* Quota exceeded for metric: generativelanguage.googleapis.com/embed_content_free_tier_requests" in err.message
    )
    assert "limit: 1, model: gemini-embedding-1.0" in err.message and "Please retry in " in err.message
    delay = retry_delay(err)
    assert delay is not None and delay.endswith("s") and 58.0 < float(delay[:-1]) <= 60.0
    (failure,) = [d for d in error_details(err) if d["@type"].endswith("QuotaFailure")]
    assert failure["violations"][0]["quotaValue"] == "1"
    assert failure["violations"][0]["quotaId"] == "EmbedContentRequestsPerMinutePerProjectPerModel-FreeTier"

    sim.config.retry_info_rate = 0.0
    with pytest.raises(errors.ClientError) as caught:
        await embed(client, ["b"])
    assert caught.value.code == 429 and retry_delay(caught.value) is None
    assert caught.value.message is not None and "Please retry" not in caught.value.message
    assert sim.stats.rate_limited == 2 and sim.stats.embeds_per_text == {text_sha256("a"): 1}


@pytest.mark.asyncio
async def test_tpm_trips_on_tokens(sim: GeminiSimulator) -> None:
    sim.config.tpm = 10
    client = client_for(sim)
    await embed(client, ["東京" * 4])  # 8 tokens
    with pytest.raises(errors.ClientError) as caught:
        await embed(client, ["大阪です"])  # 4 more would make 12
    assert caught.value.code == 429 and caught.value.message is not None
    assert "embed_content_free_tier_input_token_count, limit: 10" in caught.value.message
    await embed(client, ["京都"])  # 2 fit


@pytest.mark.asyncio
@pytest.mark.parametrize(("mode", "admitted_calls"), [("call", 4), ("text", 2)])
async def test_rpm_counts_calls_or_texts(sim: GeminiSimulator, mode: str, admitted_calls: int) -> None:
    sim.config.rpm = 4
    sim.config.window_seconds = 0.6
    sim.config.count_mode = mode  # type: ignore[assignment]
    client = client_for(sim)
    for i in range(admitted_calls):  # 2 texts per call
        await embed(client, [f"{mode}{i}a", f"{mode}{i}b"])
    with pytest.raises(errors.ClientError) as caught:
        await embed(client, ["over", "limit"])
    assert caught.value.code == 429
    delay = retry_delay(caught.value)
    assert delay is not None and 0.0 < float(delay[:-1]) <= 0.6
    await asyncio.sleep(float(delay[:-1]) + 0.05)  # waiting the advertised delay is enough
    await embed(client, ["after", "window"])
    assert sim.stats.successful_calls == admitted_calls + 1 and sim.stats.rate_limited == 1


@pytest.mark.asyncio
async def test_burst_503_then_recovery(sim: GeminiSimulator) -> None:
    sim.config.burst_503 = 2
    client = client_for(sim)
    for _ in range(2):
        with pytest.raises(errors.ServerError) as caught:
            await embed(client, ["x"])
        assert (caught.value.code, caught.value.status) == (503, "UNAVAILABLE")
        assert caught.value.message == "The model is overloaded. Please try again later."
    assert sim.config.burst_503 == 0
    await embed(client, ["x"])
    assert sim.stats.faults["burst_503"] == 2 and sim.stats.server_errors == 2 and sim.stats.successful_calls == 1


@pytest.mark.asyncio
async def test_poison_marker_fails_the_whole_batch(sim: GeminiSimulator) -> None:
    sim.config.poison_marker = "☠"
    with pytest.raises(errors.ClientError) as caught:
        await embed(client_for(sim), ["fine", "bad ☠ text", "fine too"])
    assert (caught.value.code, caught.value.status) == (400, "INVALID_ARGUMENT")
    assert sim.stats.texts_embedded == 0
    await embed(client_for(sim), ["fine", "fine too"])


@pytest.mark.asyncio
async def test_unknown_model_is_404(sim: GeminiSimulator) -> None:
    with pytest.raises(errors.ClientError) as caught:
        await embed(client_for(sim), ["x"], model="text-embedding-004")
    assert (caught.value.code, caught.value.status) == (404, "NOT_FOUND")
    # google-genai 3.x talks to /v1 by default (not v1beta)
    assert caught.value.message == (
        "models/text-embedding-004 is not found for API version v1, or is not supported for "
        "batchEmbedContents. Call ListModels to see the list of available models and their supported methods."
    )


@pytest.mark.asyncio
async def test_wrong_key_is_400_api_key_invalid(sim: GeminiSimulator) -> None:
    sim.config.api_key = KEY
    with pytest.raises(errors.ClientError) as caught:
        await embed(client_for(sim, key="wrong"), ["x"])
    assert (caught.value.code, caught.value.status) == (400, "INVALID_ARGUMENT")
    assert caught.value.message == "API key not valid. Please pass a valid API key."
    info = error_details(caught.value)[0]
    assert info["reason"] == "API_KEY_INVALID" and info["metadata"] == {"service": "generativelanguage.googleapis.com"}
    await embed(client_for(sim), ["x"])


@pytest.mark.asyncio
async def test_dimension_out_of_range_is_400(sim: GeminiSimulator) -> None:
    with pytest.raises(errors.ClientError) as caught:
        await embed(client_for(sim), ["x"], dims=64)
    assert caught.value.code == 400
    (vector,) = values(await embed(client_for(sim), ["x"], dims=128))
    assert vector.shape == (128,)


@pytest.mark.asyncio
async def test_over_limit_truncates_or_rejects(sim: GeminiSimulator) -> None:
    long_text = "語" * 3000
    (vector,) = values(await embed(client_for(sim), [long_text]))
    np.testing.assert_array_equal(vector, simulated_embedding("語" * 2048, 768))
    assert sim.stats.tokens_counted == 2048
    sim.config.over_limit = "reject"
    with pytest.raises(errors.ClientError) as caught:
        await embed(client_for(sim), ["ok", long_text])
    assert caught.value.code == 400
    assert caught.value.message == ("The input token count (3000) exceeds the maximum number of tokens allowed (2048).")


@pytest.mark.asyncio
async def test_dropped_connection_raises_the_transports_protocol_error(sim: GeminiSimulator) -> None:
    sim.config.drop_rate = 1.0
    with pytest.raises(TRANSPORT_PROTOCOL_ERRORS, match="Server disconnected without sending a response"):
        await embed(client_for(sim), ["x"])
    assert sim.stats.drops == 1 and sim.stats.successful_calls == 0


@pytest.mark.asyncio
async def test_malformed_body_raises_json_decode_error(sim: GeminiSimulator) -> None:
    sim.config.malformed_rate = 1.0
    with pytest.raises(json.JSONDecodeError):
        await embed(client_for(sim), ["x", "y"])
    assert sim.stats.faults["malformed"] == 1 and sim.stats.successful_calls == 0


@pytest.mark.asyncio
async def test_slow_answer_exceeds_the_client_timeout(sim: GeminiSimulator) -> None:
    sim.config.slow_rate = 1.0
    sim.config.slow_seconds = 2.0
    started = time.monotonic()
    with pytest.raises(TRANSPORT_TIMEOUTS):
        await embed(client_for(sim, timeout_ms=300), ["x"])
    assert time.monotonic() - started < 1.5


@pytest.mark.asyncio
async def test_corrupted_200s_pass_through_the_sdk_unchecked(sim: GeminiSimulator) -> None:
    client = client_for(sim)
    texts = ["a", "b", "c", "d"]
    sim.config.count_mismatch_rate = 1.0
    assert len(values(await embed(client, texts))) in (3, 5)
    sim.config.count_mismatch_rate = 0.0
    sim.config.wrong_length_rate = 1.0
    assert sorted(len(v) for v in values(await embed(client, texts))) == [384, 768, 768, 768]
    sim.config.wrong_length_rate = 0.0
    sim.config.nan_rate = 1.0
    got = values(await embed(client, texts))
    assert sum(int(np.isnan(v).sum()) for v in got) == 1
    assert sim.stats.successful_calls == 0 and sim.stats.texts_embedded == 0
    assert sim.stats.status_counts[200] == 3


@pytest.mark.asyncio
async def test_faults_are_deterministic_per_seed() -> None:
    async def outcomes() -> list[str]:
        config = SimulatorConfig(error_rate_503=0.3, error_rate_500=0.2, seed=7)
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

    first = await outcomes()
    assert first == await outcomes()
    assert {"ok", "500", "503"} <= set(first)


@pytest.mark.asyncio
async def test_keep_alive_and_concurrency(sim: GeminiSimulator) -> None:
    client = client_for(sim)
    results = await asyncio.gather(*[embed(client, [f"c{i}-{j}" for j in range(5)]) for i in range(40)])
    assert all(len(values(r)) == 5 for r in results)
    assert sorted(sim.stats.embeds_per_text.values()) == [1] * 200


# ----------------------------------------------------------------------------- raw HTTP


@pytest.mark.asyncio
async def test_missing_key_is_403_and_query_key_works(sim: GeminiSimulator) -> None:
    url = f"{sim.base_url}/v1beta/models/{MODEL}:embedContent"
    body = {"content": {"parts": [{"text": "hi"}]}, "embedContentConfig": {"outputDimensionality": 256}}
    async with httpx.AsyncClient() as http:
        response = await http.post(url, json=body)
        assert response.status_code == 403
        assert response.headers["content-type"].startswith("application/json")
        assert response.json() == {
            "error": {
                "code": 403,
                "message": "Method doesn't allow unregistered callers (callers without established identity). "
                "Please use API Key or other form of API consumer identity to call this API.",
                "status": "PERMISSION_DENIED",
            }
        }
        response = await http.post(url, params={"key": "anything"}, json=body)
        assert response.status_code == 200
        got = np.asarray(response.json()["embedding"]["values"], dtype=np.float32)
        np.testing.assert_array_equal(got, simulated_embedding("hi", 256))
        assert sim.stats.calls_by_endpoint["embedContent"] == 2


@pytest.mark.asyncio
async def test_google_style_400s_for_bad_bodies(sim: GeminiSimulator) -> None:
    url = f"{sim.base_url}/v1beta/models/{MODEL}:batchEmbedContents"
    headers = {"x-goog-api-key": KEY}
    ok = {"content": {"parts": [{"text": "x"}]}}
    cases: list[tuple[Any, str]] = [
        (b"{not json", "Invalid JSON payload received."),
        ({"requests": []}, "* BatchEmbedContentsRequest.requests: requests must not be empty.\n"),
        ({"requests": [{"content": {"parts": []}}]}, "contents.parts must not be empty."),
        ({"requests": [{"content": {"parts": [{"text": ""}]}}]}, "The text content is empty."),
        ({"requests": [{**ok, "taskType": "NOPE"}]}, "Invalid value at 'requests[0].task_type'"),
        ({"requests": [{**ok, "colour": 1}]}, "Unknown name \"colour\" at 'requests[0]'"),
        ({"requests": [{**ok, "model": "models/other"}]}, "requests[0].model"),
    ]
    async with httpx.AsyncClient() as http:
        for body, expected in cases:
            if isinstance(body, bytes):
                response = await http.post(url, content=body, headers=headers)
            else:
                response = await http.post(url, json=body, headers=headers)
            assert response.status_code == 400, body
            error = response.json()["error"]
            assert error["status"] == "INVALID_ARGUMENT" and expected in error["message"], (body, error)
        # snake_case names and the nested embedContentConfig are accepted
        nested = {**ok, "embed_content_config": {"task_type": "RETRIEVAL_QUERY", "output_dimensionality": 128}}
        response = await http.post(url, json={"requests": [nested]}, headers=headers)
        assert response.status_code == 200 and len(response.json()["embeddings"][0]["values"]) == 128


@pytest.mark.asyncio
async def test_admin_endpoints(sim: GeminiSimulator) -> None:
    await embed(client_for(sim), ["a", "b"])
    async with httpx.AsyncClient(base_url=sim.base_url) as http:
        stats = (await http.get("/_sim/stats")).json()
        assert stats["successful_calls"] == 1 and stats["texts_embedded"] == 2
        assert stats["embeds_per_text"] == {text_sha256("a"): 1, text_sha256("b"): 1}
        response = await http.post("/_sim/config", json={"rpm": 7, "window_seconds": 1.5})
        assert response.status_code == 200 and response.json()["rpm"] == 7
        assert (sim.config.rpm, sim.config.window_seconds) == (7, 1.5)
        response = await http.post("/_sim/config", json={"rpm": -1})
        assert response.status_code == 400 and sim.config.rpm == 7
        assert (await http.post("/_sim/reset")).status_code == 200
        assert (await http.get("/_sim/stats")).json()["successful_calls"] == 0
    assert sim.stats.successful_calls == 0 and not sim.stats.embeds_per_text


@pytest.mark.asyncio
async def test_zero_latency_throughput(sim: GeminiSimulator) -> None:
    """A floor, not the figure: the client shares this process (the server alone does ~5,000/s)."""
    url = f"{sim.base_url}/v1/models/{MODEL}:batchEmbedContents"

    def batch(b: int) -> bytes:
        requests = [
            {"content": {"parts": [{"text": f"段落{b}-{i}。東京の天気は晴れ。"}]}, "outputDimensionality": 768}
            for i in range(100)
        ]
        return json.dumps({"requests": requests}).encode()

    async with httpx.AsyncClient(headers={"x-goog-api-key": KEY}) as http:
        started = time.perf_counter()

        async def worker(w: int) -> None:
            for b in range(w, 20, 2):
                response = await http.post(url, content=batch(b))
                assert response.status_code == 200 and len(response.content) > 100 * 768 * 10

        await asyncio.gather(worker(0), worker(1))
        rate = 2000 / (time.perf_counter() - started)
    assert sim.stats.texts_embedded == 2000
    assert rate > 800, f"{rate:.0f} texts/s"


# ----------------------------------------------------------------------------- thread and CLI


def test_run_in_thread_serves_a_synchronous_client() -> None:
    with run_simulator_in_thread(SimulatorConfig(rpm=2)) as simulator:
        client = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=simulator.base_url))
        _OPEN_CLIENTS.append(client)
        client.models.embed_content(model=MODEL, contents=["one"])
        client.models.embed_content(model=MODEL, contents=["two"])
        with pytest.raises(errors.ClientError) as caught:
            client.models.embed_content(model=MODEL, contents=["three"])
        assert caught.value.code == 429
        simulator.reset()
        client.models.embed_content(model=MODEL, contents=["three"])
        assert simulator.stats.snapshot().embeds_per_text == {text_sha256("three"): 1}


@pytest.mark.slow
def test_cli_prints_the_url_serves_and_exits_0_on_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    help_text = subprocess.run(
        [sys.executable, "-m", "modules.gemini_simulator", "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=True,
    ).stdout
    flags = ("--rpm", "--tpm", "--window-seconds", "--count-mode", "--retry-info-rate", "--burst-503")
    flags += ("--quota-shape", "--rpd", "--day-seconds", "--bare-429-rate", "--retry-delay-override")
    flags += ("--overflow-rate", "--drip-bytes-per-second", "--hang-rate", "--redirect-location", "--echo-key-rate")
    for flag in flags:
        assert flag in help_text
    assert "GOOGLE_GEMINI_BASE_URL" in help_text
    process = subprocess.Popen(
        [sys.executable, "-m", "modules.gemini_simulator", "--port", "0", "--rpm", "1", "--count-mode", "text"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        body = {"requests": [{"content": {"parts": [{"text": "cli"}]}}]}
        url = f"{base_url}/v1beta/models/{MODEL}:batchEmbedContents?key=k"
        assert httpx.post(url, json=body).status_code == 200
        assert httpx.post(url, json=body).status_code == 429
        assert httpx.get(f"{base_url}/_sim/config").json()["count_mode"] == "text"
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=10)
    assert process.returncode == 0
