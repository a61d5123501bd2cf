"""The pacer's learning from 429s, on recorded sends (no sleeping, no server)."""

from __future__ import annotations

import time

import pytest

from modules.pacing import BatchSizer, Pacer, QuotaHit, Send, TokenBucket


def pacer_with_history(sends: list[tuple[float, Send]]) -> Pacer:
    pacer = Pacer(concurrency=4, max_concurrency=8, adaptive=True, batch_size=None)
    now = time.monotonic()
    for ago, send in sends:
        pacer._sent.append((now - ago, send))
    return pacer


def test_a_per_call_quota_is_learned_with_its_window() -> None:
    # 10 calls of 10 texts over the last 0.9 s; the 11th gets 429 "limit 10 requests, retry in 0.1 s".
    pacer = pacer_with_history([(0.9 - i * 0.1, Send(1, 10, 500)) for i in range(10)])
    pacer.rate_limited(0.1, QuotaHit(0.1, "requests", 10), Send(1, 10, 500))
    assert pacer.request_unit == "calls"
    bucket = pacer.buckets["calls"]
    assert (bucket.quota, bucket.limit) == (10, 9)  # one call's worth of room stays free
    assert 0.9 <= bucket.period <= 1.2  # ~1 s window (plus the 3% safety margin)
    assert pacer.limiter.limit == 4  # paced by the learned bucket: no need to send fewer batches at once


def test_a_per_text_quota_is_recognised_when_calls_cannot_explain_the_count() -> None:
    # Only 2 calls were sent, but 20 texts: a limit of 20 "requests" can only be counting texts.
    pacer = pacer_with_history([(0.5, Send(1, 10, 500)), (0.2, Send(1, 10, 500))])
    pacer.rate_limited(0.5, QuotaHit(0.5, "requests", 20), Send(1, 10, 500))
    assert pacer.request_unit == "texts"
    assert "calls" not in pacer.buckets
    assert pacer.buckets["texts"].quota == 20


def test_a_token_quota_paces_tokens_and_keeps_each_call_a_small_share_of_it() -> None:
    pacer = pacer_with_history([(0.5, Send(1, 50, 6000)), (0.1, Send(1, 50, 6000))])
    pacer.rate_limited(0.4, QuotaHit(0.4, "tokens", 10000), Send(1, 50, 6000))
    assert pacer.buckets["tokens"].quota == 10000
    assert pacer.batch_size == 2  # 50 texts were 60% of the quota: 2.5% is 2 texts
    assert pacer.buckets["tokens"].limit == 10000 - 240  # one call's worth (now 2 texts) of room stays free


def test_a_429_without_quota_details_only_pauses() -> None:
    pacer = pacer_with_history([])
    pacer.rate_limited(2.0, QuotaHit(None), Send(1, 10, 100))
    assert pacer.buckets == {}
    assert pacer.limiter.limit == 2  # nothing learned: halve the batches in flight instead
    assert 1.9 <= pacer.paused_for() <= 2.0


@pytest.mark.parametrize(("latency", "grows"), [(0.1, True), (40.0, False)])
def test_auto_batch_size_grows_on_fast_answers_and_shrinks_on_slow_ones(latency: float, grows: bool) -> None:
    sizer = BatchSizer(None, 100, slow_seconds=30.0)
    before = sizer.size
    sizer.succeeded(latency)
    assert (sizer.size > before) is grows


def test_a_fixed_batch_size_never_moves() -> None:
    sizer = BatchSizer(10, 100, slow_seconds=30.0)
    sizer.succeeded(0.01)
    sizer.rate_limited(10, 1.0)
    assert sizer.size == 10


def test_token_bucket_waits_for_refill_and_lets_an_oversized_request_through_when_full() -> None:
    bucket = TokenBucket(10, period=1.0)
    assert bucket.wait_time(10) == 0
    bucket.take(10)
    assert 0.45 <= bucket.wait_time(5) <= 0.5
    assert TokenBucket(10, period=1.0).wait_time(50) == 0  # capped at capacity
