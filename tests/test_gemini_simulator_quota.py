"""The simulator's quota shapes, its per-day quota and the variants of its 429 bodies, driven over
HTTP by the real google-genai client (httpx where the SDK hides what is tested)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from google.genai import errors

from modules.gemini_simulator import GeminiSimulator, SimulatorConfig
from modules.gemini_simulator.quota_book import QuotaBook
from modules.gemini_simulator.quota_shapes import FixedWindowQuota, TokenBucketQuota, make_quota
from tests.test_gemini_simulator import (  # noqa: F401  (the autouse fixture is found by name)
    KEY,
    MODEL,
    _close_sdk_clients,
    client_for,
    embed,
    error_details,
    retry_delay,
)


@pytest.fixture
async def sim() -> AsyncIterator[GeminiSimulator]:
    async with GeminiSimulator(SimulatorConfig()) as simulator:
        yield simulator


def quota_failure(err: errors.APIError) -> dict[str, object]:
    (failure,) = [d for d in error_details(err) if d["@type"].endswith("QuotaFailure")]
    return failure


def seconds(delay: str | None) -> float:
    assert delay is not None and delay.endswith("s"), delay
    return float(delay[:-1])


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# ----------------------------------------------------------------------------- shapes, pure


def test_fixed_windows_reset_at_each_boundary_and_say_when_it_comes() -> None:
    clock = Clock(1000.0)
    quota = FixedWindowQuota(clock, origin=1000.0)
    for step in (0.0, 3.0, 6.0):
        clock.now = 1000.0 + step
        assert quota.check(1, 5, rpm=3, tpm=None, window=10.0) == []
        quota.charge(1, 5)
    clock.now = 1007.5
    (violation,) = quota.check(1, 5, rpm=3, tpm=None, window=10.0)
    assert violation.metric == "requests" and violation.retry_after == pytest.approx(2.5)  # boundary at 1010
    (violation,) = quota.check(1, 5, rpm=None, tpm=12, window=10.0)
    assert violation.metric == "tokens" and violation.retry_after == pytest.approx(2.5)
    clock.now = 1010.0  # a new window: everything is room again, however recent the last calls
    assert quota.check(3, 15, rpm=3, tpm=15, window=10.0) == []
    assert quota.usage(10.0) == (0, 0)
    (violation,) = quota.check(4, 1, rpm=3, tpm=None, window=10.0)  # larger than the limit: refused at every boundary
    assert violation.retry_after == pytest.approx(10.0)


def test_token_bucket_refills_continuously() -> None:
    clock = Clock()
    quota = TokenBucketQuota(clock)
    for _ in range(4):  # a full bucket takes a burst of `limit`
        assert quota.check(1, 0, rpm=4, tpm=None, window=8.0) == []
        quota.charge(1, 0)
    (violation,) = quota.check(1, 0, rpm=4, tpm=None, window=8.0)
    assert violation.retry_after == pytest.approx(2.0)  # one request comes back every 8/4 s
    clock.now += 1.0
    (violation,) = quota.check(1, 0, rpm=4, tpm=None, window=8.0)
    assert violation.retry_after == pytest.approx(1.0)
    clock.now += 1.0
    assert quota.check(1, 0, rpm=4, tpm=None, window=8.0) == []
    quota.charge(1, 0)
    (violation,) = quota.check(3, 0, rpm=4, tpm=None, window=8.0)  # needs three back: 6 s
    assert violation.retry_after == pytest.approx(6.0)
    (violation,) = quota.check(0, 100, rpm=None, tpm=50, window=8.0)  # never fits: wait for a full bucket
    assert violation.metric == "tokens" and violation.retry_after == pytest.approx(8.0)
    assert quota.usage(8.0) == (4, 0)


def test_make_quota_picks_the_shape() -> None:
    assert type(make_quota("fixed")).__name__ == "FixedWindowQuota"
    assert type(make_quota("token_bucket")).__name__ == "TokenBucketQuota"
    assert type(make_quota("sliding")).__name__ == "SlidingWindowQuota"


def test_day_quota_reports_short_reset_or_no_delay() -> None:
    clock = Clock(0.0)
    book = QuotaBook(clock)
    config = SimulatorConfig(rpd=2, day_seconds=1000.0, window_seconds=60.0)
    for _ in range(2):
        assert book.check(MODEL, 1, 1, config) is None
        book.charge(MODEL, 1, 1, config)
    clock.now = 130.0
    refusal = book.check(MODEL, 1, 1, config)
    assert refusal is not None and refusal.retry_info_allowed
    (violation,) = refusal.violations
    assert (violation.kind, violation.limit) == ("day_requests", 2)
    assert violation.retry_after == pytest.approx(50.0)  # "short": the next minute boundary, not the day's
    config.day_retry_delay = "reset"
    refusal = book.check(MODEL, 1, 1, config)
    assert refusal is not None and refusal.violations[0].retry_after == pytest.approx(870.0)
    config.day_retry_delay = "none"
    refusal = book.check(MODEL, 1, 1, config)
    assert refusal is not None and not refusal.retry_info_allowed
    assert book.check("gemini-embedding-2", 1, 1, config) is None  # quotas are per model
    clock.now = 1000.0
    assert book.check(MODEL, 1, 1, config) is None  # a new day


# ----------------------------------------------------------------------------- shapes over HTTP


@pytest.mark.asyncio
async def test_fixed_windows_through_the_sdk(sim: GeminiSimulator) -> None:
    sim.config.update({"quota_shape": "fixed", "rpm": 2, "window_seconds": 0.8})
    sim.reset()  # windows count from here
    client = client_for(sim)
    await embed(client, ["f1"])
    await embed(client, ["f2"])
    with pytest.raises(errors.ClientError) as caught:
        await embed(client, ["f3"])
    wait = seconds(retry_delay(caught.value))
    assert 0.0 < wait <= 0.8
    await asyncio.sleep(wait + 0.02)
    await embed(client, ["f3"])  # a new window
    await embed(client, ["f4"])  # the whole limit again at once
    assert sim.stats.rate_limits_by_kind == {"minute_requests": 1}


@pytest.mark.asyncio
async def test_token_bucket_through_the_sdk(sim: GeminiSimulator) -> None:
    sim.config.update({"quota_shape": "token_bucket", "tpm": 40, "window_seconds": 1.0, "count_mode": "text"})
    client = client_for(sim)
    await embed(client, ["a" * 160])  # 40 tokens: the whole bucket
    with pytest.raises(errors.ClientError) as caught:
        await embed(client, ["b" * 40])  # 10 tokens: a quarter of the window to refill
    assert "embed_content_free_tier_input_token_count, limit: 40" in (caught.value.message or "")
    wait = seconds(retry_delay(caught.value))
    assert 0.15 < wait <= 0.25
    await asyncio.sleep(wait + 0.02)
    await embed(client, ["b" * 40])
    assert sim.stats.rate_limits_by_kind == {"minute_tokens": 1}


@pytest.mark.asyncio
async def test_per_day_quota_counts_texts_and_answers_like_google(sim: GeminiSimulator) -> None:
    sim.config.update({"rpd": 3, "day_seconds": 30.0, "count_mode": "text", "window_seconds": 60.0})
    client = client_for(sim)
    await embed(client, ["d1", "d2"])
    with pytest.raises(errors.ClientError) as caught:
        await embed(client, ["d3", "d4"])  # 2 more texts would make 4 of 3
    err = caught.value
    assert (err.code, err.status) == (429, "RESOURCE_EXHAUSTED")
    failure = quota_failure(err)
    (violation,) = failure["violations"]  # type: ignore[misc]
    assert violation == {
        "quotaMetric": "generativelanguage.googleapis.com/embed_content_free_tier_requests",
        "quotaId": "EmbedContentRequestsPerDayPerUserPerProjectPerModel-FreeTier",
        "quotaDimensions": {"location": "global", "model": "gemini-embedding-1.0"},
        "quotaValue": "3",
    }
    assert "embed_content_free_tier_requests, limit: 3, model: gemini-embedding-1.0" in (err.message or "")
    assert seconds(retry_delay(err)) <= 60.0  # Google's short delay, however far the day's reset is
    await embed(client, ["d3"])  # one more text fits the day
    sim.config.day_retry_delay = "reset"
    with pytest.raises(errors.ClientError) as caught:
        await embed(client, ["d4"])
    assert 25.0 < seconds(retry_delay(caught.value)) <= 30.0  # until the (compressed) day resets
    sim.config.day_retry_delay = "none"
    with pytest.raises(errors.ClientError) as caught:
        await embed(client, ["d4"])
    assert retry_delay(caught.value) is None and "Please retry" not in (caught.value.message or "")
    assert sim.day_usage() == 3
    assert sim.stats.rate_limits_by_kind == {"day_requests": 3}


@pytest.mark.asyncio
async def test_minute_and_day_limits_are_named_together(sim: GeminiSimulator) -> None:
    sim.config.update({"rpm": 1, "rpd": 1})
    client = client_for(sim)
    await embed(client, ["x"])
    with pytest.raises(errors.ClientError) as caught:
        await embed(client, ["y"])
    ids = [v["quotaId"] for v in quota_failure(caught.value)["violations"]]  # type: ignore[attr-defined]
    assert ids == [
        "EmbedContentRequestsPerMinutePerProjectPerModel-FreeTier",
        "EmbedContentRequestsPerDayPerUserPerProjectPerModel-FreeTier",
    ]
    assert sim.stats.rate_limits_by_kind == {"minute_requests": 1, "day_requests": 1}


# ----------------------------------------------------------------------------- 429 body variants


@pytest.mark.asyncio
async def test_quota_value_can_be_missing_and_retry_delay_garbage(sim: GeminiSimulator) -> None:
    sim.config.update({"rpm": 1, "quota_value_rate": 0.0, "retry_delay_override": "soon"})
    client = client_for(sim)
    await embed(client, ["x"])
    with pytest.raises(errors.ClientError) as caught:
        await embed(client, ["y"])
    (violation,) = quota_failure(caught.value)["violations"]  # type: ignore[misc]
    assert "quotaValue" not in violation
    assert retry_delay(caught.value) == "soon"
    assert (caught.value.message or "").endswith("Please retry in soon.")
    for override in ("86400s", "0s", "-5s"):
        sim.config.retry_delay_override = override
        with pytest.raises(errors.ClientError) as caught:
            await embed(client, ["y"])
        assert retry_delay(caught.value) == override


@pytest.mark.asyncio
async def test_bare_429_bodies(sim: GeminiSimulator) -> None:
    sim.config.update({"rpm": 1, "bare_429_rate": 1.0})
    client = client_for(sim)
    await embed(client, ["x"])
    with pytest.raises(errors.ClientError) as caught:  # Vertex AI's minimal JSON
        await embed(client, ["y"])
    assert (caught.value.code, caught.value.status) == (429, "RESOURCE_EXHAUSTED")
    assert caught.value.message == (
        "Resource exhausted. Please try again later. Please refer to "
        "https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more details."
    )
    assert error_details(caught.value) == [] and retry_delay(caught.value) is None

    sim.config.bare_429_body = "html"
    with pytest.raises(errors.ClientError) as caught:  # the SDK keeps a non-JSON body as the message
        await embed(client, ["y"])
    assert caught.value.code == 429 and caught.value.status == "Too Many Requests"
    assert "<h1>429 Too Many Requests</h1>" in (caught.value.message or "")

    sim.config.bare_429_body = "text"
    url = f"{sim.base_url}/v1beta/models/{MODEL}:embedContent"
    async with httpx.AsyncClient() as http:
        response = await http.post(url, json={"content": {"parts": [{"text": "y"}]}}, headers={"x-goog-api-key": KEY})
    assert response.status_code == 429 and response.text == "local_rate_limited"
    assert response.headers["content-type"] == "text/plain"
    assert sim.stats.faults["bare_429"] == 3 and sim.stats.rate_limited == 3
    assert sim.stats.rate_limits_by_kind == {"minute_requests": 3}


@pytest.mark.asyncio
async def test_new_quota_fields_through_the_admin_endpoint(sim: GeminiSimulator) -> None:
    async with httpx.AsyncClient(base_url=sim.base_url) as http:
        response = await http.post("/_sim/config", json={"quota_shape": "token_bucket", "rpd": "1000"})
        assert response.status_code == 200 and response.json()["quota_shape"] == "token_bucket"
        assert (sim.config.quota_shape, sim.config.rpd) == ("token_bucket", 1000)
        for bad in ({"quota_shape": "leaky"}, {"day_retry_delay": "later"}, {"bare_429_body": "xml"}):
            assert (await http.post("/_sim/config", json=bad)).status_code == 400
        stats = (await http.get("/_sim/stats")).json()
        assert stats["rate_limits_by_kind"] == {}
