"""The pacer's learning from 429s, on recorded sends (no server), and its replica of the quota window."""

from __future__ import annotations

import asyncio
import time

import pytest

from benchmarks.corpus import generate
from modules.engine.pacing import BatchSizer, Pacer, Quota, QuotaHit, Send, Ticket
from modules.engine.windows import WindowVotes, window_interval
from modules.gemini_simulator.tokens import count_tokens
from modules.text import estimate_tokens


def pacer_with_history(sends: list[tuple[float, Send]], latency: float = 0.01) -> Pacer:
    """A pacer whose log holds `sends`, each sent `ago` seconds ago and answered `latency` later."""
    pacer = Pacer(concurrency=4, max_concurrency=8, adaptive=True, batch_size=None)
    now = time.monotonic()
    for ago, send in sends:
        pacer._sent.append(Ticket(send, now - ago, now - ago + latency))
    return pacer


def refused(pacer: Pacer, send: Send) -> Ticket:
    """The ticket of a call that was just sent (and is about to be refused)."""
    ticket = Ticket(send, time.monotonic())
    pacer._sent.append(ticket)
    pacer._in_flight.add(ticket)
    return ticket


def test_a_per_call_quota_is_learned_with_its_window() -> None:
    # 10 calls of 10 texts over the last 0.9 s; the 11th gets 429 "limit 10 requests, retry in 0.1 s":
    # the oldest call (sent 0.9 s ago) leaves the window in 0.1 s, so the window is about 1 s.
    pacer = pacer_with_history([(0.9 - i * 0.1, Send(1, 10, 500)) for i in range(10)])
    pacer.pause(0.1)
    pacer.rate_limited(refused(pacer, Send(1, 10, 500)), QuotaHit(0.1, "requests", 10))
    assert pacer.request_unit == "calls"
    quota = pacer.quotas["calls"]
    assert quota.limit == 10
    assert 0.99 <= quota.window <= 1.02
    assert pacer.limiter.limit == 4  # paced by the learned quota: no need to send fewer batches at once
    assert 0.09 <= pacer.paused_for() <= 0.1  # and every sender waits for the room the server named


def test_a_per_text_quota_is_recognised_when_calls_cannot_explain_the_count() -> None:
    # Only 2 calls were sent, but 20 texts: a limit of 20 "requests" can only be counting texts.
    pacer = pacer_with_history([(0.5, Send(1, 10, 500)), (0.2, Send(1, 10, 500))])
    pacer.pause(0.5)
    pacer.rate_limited(refused(pacer, Send(1, 10, 500)), QuotaHit(0.5, "requests", 20))
    assert pacer.request_unit == "texts"
    assert "calls" not in pacer.quotas
    assert pacer.quotas["texts"].limit == 20
    assert 0.99 <= pacer.quotas["texts"].window <= 1.02  # the first call, sent 0.5 s ago, frees in 0.5 s


def test_a_token_quota_keeps_each_call_a_small_share_of_it_and_some_room_for_estimates() -> None:
    pacer = pacer_with_history([(0.5, Send(1, 50, 6000)), (0.1, Send(1, 50, 6000))])
    pacer.pause(0.4)
    pacer.rate_limited(refused(pacer, Send(1, 50, 6000)), QuotaHit(0.4, "tokens", 10000))
    quota = pacer.quotas["tokens"]
    assert quota.limit == 10000
    assert pacer.batch_size == 2  # 50 texts were 60% of the quota: 2.5% is 2 texts
    assert quota.room == pytest.approx(9800)  # our token counts are estimates: 2% stays free


def test_a_429_without_quota_details_only_pauses() -> None:
    pacer = pacer_with_history([])
    pacer.pause(2.0)
    pacer.rate_limited(refused(pacer, Send(1, 10, 100)), QuotaHit(None))
    assert pacer.quotas == {}
    assert pacer.limiter.limit == 2  # nothing learned: halve the batches in flight instead
    assert 1.9 <= pacer.paused_for() <= 2.0


def test_a_429_on_a_call_the_replica_admitted_moves_the_window_above_the_one_in_use() -> None:
    pacer = pacer_with_history([(0.9 - i * 0.1, Send(1, 10, 500)) for i in range(10)])
    pacer.pause(0.1)
    pacer.rate_limited(refused(pacer, Send(1, 10, 500)), QuotaHit(0.1, "requests", 10))
    first = pacer.quotas["calls"].window
    time.sleep(0.01)
    ticket = refused(pacer, Send(1, 10, 500))  # sent under the learned model, yet refused
    pacer.pause(0.01)
    pacer.rate_limited(ticket, QuotaHit(0.01, "requests", 10))
    assert pacer.quotas["calls"].window >= first * 1.01


def test_the_replica_admits_until_the_window_is_full_then_waits_for_the_oldest_to_leave() -> None:
    now = 100.0
    quota = Quota("calls", limit=3, window=1.0)
    sent = [Ticket(Send(1, 1, 10), at, at + 0.01) for at in (99.2, 99.5)]
    assert quota.wait_time(1, sent, set(), now) == 0.0  # 2 of 3 used
    sent.append(Ticket(Send(1, 1, 10), 99.9, None))
    in_flight = {sent[-1]}
    assert quota.wait_time(1, sent, in_flight, now) == pytest.approx(0.2)  # the call sent at 99.2 leaves at 100.2
    assert quota.wait_time(1, sent, in_flight, 100.3) == 0.0
    # A call still in flight a whole window after it was sent still counts; only its answer frees room.
    stuck = Ticket(Send(1, 1, 10), 98.0, None)
    assert Quota("calls", 1, 1.0).wait_time(1, [stuck], {stuck}, now) is None


async def test_wait_turn_paces_sends_by_the_replica() -> None:
    pacer = Pacer(rpm=2, window_seconds=0.3, concurrency=4)
    started = time.monotonic()
    for _ in range(3):
        ticket = await pacer.wait_turn(Send(1, 1, 10))
        pacer.succeeded(ticket, 0.0)
    assert time.monotonic() - started >= 0.3  # the third call waits for the first to leave the window


async def test_a_cancelled_wait_sends_nothing() -> None:
    pacer = Pacer(rpm=1, window_seconds=60.0)
    await pacer.wait_turn(Send(1, 1, 10))
    waiting = asyncio.create_task(pacer.wait_turn(Send(1, 1, 10)))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert len(pacer._sent) == 1


def test_window_interval_brackets_the_send_that_frees_the_room() -> None:
    sends = [(float(at), at + 0.1, 1) for at in range(10)]  # one unit a second, answered 0.1 s later
    # Limit 6, the refused call 1: room frees when at most 5 remain, i.e. when the 6th newest (sent at 4)
    # leaves at 15; the server counted it between 4 and 4.1, so the window is between 10.9 and 11.
    assert window_interval(sends, counted_before=5, frees_at=15.0, now=10.0, tolerance=0.0) == pytest.approx(
        (10.9, 11.0)
    )
    assert window_interval(sends, counted_before=50, frees_at=15.0, now=10.0, tolerance=0.0) is None


def test_window_votes_follow_the_majority_not_one_odd_429() -> None:
    votes = WindowVotes()
    for interval in [(1.80, 1.95), (1.85, 1.92), (2.9, 3.5), (1.83, 1.90)]:
        votes.add(interval)
    assert votes.best() == pytest.approx(1.90)
    assert votes.shortest() == pytest.approx(1.85)


def test_the_window_search_halves_the_gap_between_refused_and_quiet_windows() -> None:
    votes = WindowVotes()
    votes.add((1.80, 2.00))
    assert votes.pace() == pytest.approx(2.00)  # the long end of the evidence first
    probe = votes.relaxed(2.00)  # 2.00 ran quiet: try 3% shorter
    assert probe == pytest.approx(1.94)
    votes.refused_at(1.96)  # a 429 at 1.96
    assert votes.pace() == pytest.approx(2.00)  # back to the last window that ran quiet
    assert votes.relaxed(2.00) == pytest.approx(1.98)  # then halfway between
    assert votes.relaxed(1.98) == pytest.approx(1.97)  # 1.98 ran quiet too
    assert votes.relaxed(1.965) == pytest.approx(1.965)  # within 0.3%: the search stops
    votes.refused_at(1.965)  # jitter at the settled window: 1% longer, and it must run quiet again
    assert votes.pace() == pytest.approx(1.965 * 1.01)


def test_auto_batch_size_shrinks_on_slow_answers_and_grows_back_on_fast_ones() -> None:
    sizer = BatchSizer(None, 100, slow_seconds=30.0)
    assert sizer.size == 100  # fewer calls never cost more quota: start big
    sizer.succeeded(40.0)
    assert sizer.size == 70
    sizer.succeeded(0.1)
    assert 70 < sizer.size <= 100


def test_auto_batch_size_keeps_a_call_a_small_share_of_a_token_quota() -> None:
    sizer = BatchSizer(None, 100, slow_seconds=30.0)
    sizer.rate_limited(100, 0.5)  # a call of 100 texts was half the quota: 2.5% is 5 texts
    assert sizer.size == 5
    sizer.succeeded(0.1)
    assert sizer.size == 5  # fast answers don't grow it past the quota's share


def test_a_fixed_batch_size_never_moves() -> None:
    sizer = BatchSizer(10, 100, slow_seconds=30.0)
    sizer.succeeded(0.01)
    sizer.rate_limited(10, 1.0)
    assert sizer.size == 10


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("経費精算の締め日", 8),  # one per Japanese character
        ("2026年", 2),  # a number inside Japanese text is at least one token
        ("VPNに接続", 4),
        ("hello world", 3),  # ASCII: one per four characters, rounded up
        ("", 0),
    ],
)
def test_the_token_estimate_counts_japanese_per_character_and_ascii_runs_per_four(text: str, tokens: int) -> None:
    assert estimate_tokens(text) == tokens


def test_the_token_estimate_never_undercounts_the_simulators_tokenizer_on_the_benchmark_corpus() -> None:
    texts = [chunk.content for chunk in generate(300, seed=3)]
    assert sum(estimate_tokens(t) for t in texts) >= sum(count_tokens(t) for t in texts)


def test_a_server_error_answer_frees_its_room_but_a_timeout_does_not() -> None:
    pacer = Pacer(rpm=2, window_seconds=60.0)
    quota = pacer.quotas["calls"]
    refused_by_server = refused(pacer, Send(1, 1, 10))
    pacer.failed(refused_by_server, charged=False)  # a 503: the server did no work
    timed_out = refused(pacer, Send(1, 1, 10))
    pacer.failed(timed_out, charged=True)  # a timeout: it may have been counted
    now = time.monotonic()
    assert quota.wait_time(1, pacer._sent, pacer._in_flight, now) == 0.0  # one of two used
    wait = quota.wait_time(2, pacer._sent, pacer._in_flight, now)
    assert wait is not None and wait > 0  # not room for two
