"""The pacer on its own (no server): its replica of the quota window, what it learns from each kind
of 429, its margins, lanes and batch sizes. Whole runs against every quota shape are in
benchmarks/quota_matrix.py; whole runs through the SDK in test_gemini_run.py."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from modules.engine.batch_size import BatchSizer
from modules.engine.pacing import LEAVE_WAIT, SKEW, STRETCH, Pacer, QuotaHit, Send, Ticket
from modules.engine.quotas import Limit, SendLog
from modules.gemini_simulator.tokens import count_tokens
from modules.text import estimate_tokens


def pacer_with_history(sends: list[tuple[float, Send]], *, window: float = 1.0, **kwargs: object) -> Pacer:
    """A pacer (auto batch size and lanes) whose log holds `sends`, each sent `ago` seconds ago and answered."""
    pacer = Pacer(window_seconds=window, concurrency=1, max_concurrency=8, adaptive=True, batch_size=None, **kwargs)  # type: ignore[arg-type]
    now = time.monotonic()
    for ago, send in sends:
        ticket = Ticket(send, now - ago)
        pacer.sends.add(ticket)
        pacer.sends.answered(ticket, now - ago + 0.01)
        pacer.texts_sent += send.texts
        pacer.tokens_sent += send.tokens
    return pacer


def in_flight(pacer: Pacer, send: Send) -> Ticket:
    """A call just sent (about to be answered, or refused)."""
    ticket = Ticket(send, time.monotonic())
    pacer.sends.add(ticket)
    return ticket


# --- the replica ------------------------------------------------------------------------------------


def test_the_replica_admits_until_the_window_is_full_then_waits_for_the_oldest_to_leave() -> None:
    log = SendLog()
    for at in (99.2, 99.5):
        ticket = Ticket(Send(1, 1, 10), at)
        log.add(ticket)
        log.answered(ticket, at + 0.01)
    assert log.wait("calls", 1, 3, 100.0, 1.0) == 0.0  # 2 of 3 used
    log.add(Ticket(Send(1, 1, 10), 99.9))  # in flight
    assert log.wait("calls", 1, 3, 100.0, 1.0) == pytest.approx(0.2)  # the call sent at 99.2 leaves at 100.2
    assert log.wait("calls", 1, 3, 100.3, 1.0) == 0.0
    # A call still in flight a whole window after it was sent is still counted; only its answer frees room.
    stuck = SendLog()
    stuck.add(Ticket(Send(1, 1, 10), 98.0))
    assert stuck.wait("calls", 1, 1, 100.0, 1.0) is None
    # A call bigger than the whole quota goes alone, once nothing else is counted.
    assert SendLog().wait("texts", 500, 375, 100.0, 1.0) == 0.0


def test_a_server_error_answer_frees_its_room_but_a_timeout_does_not() -> None:
    pacer = Pacer(rpm=2, window_seconds=60.0)
    refused_by_server = in_flight(pacer, Send(1, 1, 10))
    pacer.failed(refused_by_server, charged=False)  # a 503: the server did no work
    timed_out = in_flight(pacer, Send(1, 1, 10))
    pacer.failed(timed_out, charged=True)  # a timeout: it may have been counted
    now = time.monotonic()
    assert pacer.sends.wait("calls", 1, 2, now, 60.0) == 0.0  # one of two used
    wait = pacer.sends.wait("calls", 2, 2, now, 60.0)
    assert wait is not None and wait > 0  # not room for two


async def test_wait_turn_paces_sends_by_a_given_quota() -> None:
    pacer = Pacer(rpm=2, window_seconds=0.3, concurrency=4)
    started = time.monotonic()
    for _ in range(3):
        ticket = await pacer.wait_turn(Send(1, 1, 10))
        pacer.sent(ticket)
        pacer.succeeded(ticket, 0.0)
    assert time.monotonic() - started >= 0.3  # the third call waits for the first to leave the window


async def test_a_cancelled_wait_sends_nothing() -> None:
    pacer = Pacer(rpm=1, window_seconds=60.0)
    first = await pacer.wait_turn(Send(1, 1, 10))
    pacer.sent(first)
    waiting = asyncio.create_task(pacer.wait_turn(Send(1, 1, 10)))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert len(pacer.sends) == 1


async def test_a_call_counts_from_when_it_left_and_the_next_waits_for_that() -> None:
    pacer = Pacer(window_seconds=60.0, concurrency=2, max_concurrency=2)
    first = await pacer.wait_turn(Send(1, 1, 10))
    second = asyncio.create_task(pacer.wait_turn(Send(1, 1, 10)))
    await asyncio.sleep(0.05)
    assert not second.done()  # the first request is still being built
    pacer.sent(first)
    assert first.sent_at - first.admitted_at >= 0.05  # counted from when it left, not when it was let through
    await asyncio.wait_for(second, 1.0)
    # a request that never reports leaving holds the next one back for LEAVE_WAIT at most
    started = time.monotonic()
    await pacer.wait_turn(Send(1, 1, 10))
    assert LEAVE_WAIT * 0.9 <= time.monotonic() - started < LEAVE_WAIT * 2


# --- what a 429 teaches ------------------------------------------------------------------------------


def test_a_named_request_limit_that_calls_could_not_reach_counts_texts() -> None:
    # 3 calls of 100 texts in the window; the 4th refused, "limit 375 requests": calls can't explain it.
    pacer = pacer_with_history([(0.9 - i * 0.3, Send(1, 100, 50_000)) for i in range(3)])
    pacer.rate_limited(in_flight(pacer, Send(1, 100, 50_000)), QuotaHit(0.1, "requests", 375))
    assert list(pacer.limits) == ["texts"]
    assert pacer.limits["texts"].exact and pacer.limits["texts"].level == 375
    assert pacer.batch_size == 93  # 4 calls of 93 fill a window of 375, where 3 of 100 would leave 75 unused


def test_a_named_request_limit_the_calls_reached_counts_calls_and_keeps_calls_full() -> None:
    pacer = pacer_with_history([(0.9 - i * 0.09, Send(1, 100, 50_000)) for i in range(10)])
    pacer.rate_limited(in_flight(pacer, Send(1, 100, 50_000)), QuotaHit(0.1, "requests", 10))
    assert list(pacer.limits) == ["calls"] and pacer.limits["calls"].level == 10
    assert pacer.batch_size == 100  # a call costs one request whatever it holds


def test_a_given_rpm_read_as_calls_is_corrected_by_the_first_429() -> None:
    pacer = pacer_with_history([(0.5, Send(1, 100, 50_000)), (0.2, Send(1, 100, 50_000))], rpm=250)
    pacer.rate_limited(in_flight(pacer, Send(1, 100, 50_000)), QuotaHit(0.5, "requests", 250))
    assert list(pacer.limits) == ["texts"]  # the same limit, in the unit the server counts


def test_a_named_token_limit_sizes_calls_to_fill_the_window_with_room_for_their_spread() -> None:
    pacer = pacer_with_history([(0.5, Send(1, 100, 51_500)), (0.1, Send(1, 100, 51_500))])
    pacer.rate_limited(in_flight(pacer, Send(1, 100, 51_500)), QuotaHit(0.4, "tokens", 250_000))
    assert pacer.room("tokens") == pytest.approx(247_500)  # token counts are estimates: 1% stays free
    # 5 calls a window; their expected tokens leave 3% of it for their spread
    assert pacer.batch_size == 93
    assert 5 * 93 * 515 <= 247_500 * 0.97


def test_a_429_without_the_limit_brackets_it_and_the_search_narrows() -> None:
    pacer = pacer_with_history([(0.9 - i * 0.3, Send(1, 100, 50_000)) for i in range(3)])
    pacer.rate_limited(in_flight(pacer, Send(1, 100, 50_000)), QuotaHit(0.1, "requests", None))
    texts = pacer.limits["texts"]
    assert list(pacer.limits) == ["texts"] and not texts.exact
    assert (texts.high, texts.level) == (400, 350)  # held 300, refused 100 more: halfway into the bracket
    assert pacer.retry_hint > 0  # without RetryInfo the retry waits for the replica's room
    # a whole window at the quota, filled as calls of 87 fill 350, without a 429: try halfway up
    texts.let_through(300)
    texts.pressed = True
    assert not texts.quiet(texts.since + 2.0, 1.0, 1.0)  # not filled to the level yet: nothing learned
    texts.let_through(348)
    assert texts.quiet(texts.since + 2.0, 1.0, 1.0)
    assert (texts.low, texts.level) == (348, 374)
    # refused at 372 + 93: the bracket narrows, and the pace goes back into it
    assert texts.refused(279, 93, texts.since + 1.0)
    assert texts.high == 372 and texts.low <= texts.level < texts.high
    # a refusal at or below what ran quiet contradicts it: reported, so the pacer widens its margins
    assert not texts.refused(200, 100, texts.since + 1.0)


def test_a_bare_429_is_bracketed_in_texts() -> None:
    pacer = pacer_with_history([(0.5, Send(1, 100, 50_000))])
    pacer.rate_limited(in_flight(pacer, Send(1, 100, 50_000)), QuotaHit(None))
    assert list(pacer.limits) == ["texts"] and not pacer.limits["texts"].exact


def test_a_429_on_a_call_let_through_under_a_named_limit_widens_the_margins() -> None:
    pacer = pacer_with_history([(0.9 - i * 0.09, Send(1, 100, 50_000)) for i in range(10)])
    pacer.rate_limited(in_flight(pacer, Send(1, 100, 50_000)), QuotaHit(0.1, "requests", 10))
    assert (pacer.stretch, pacer.skew) == (STRETCH, SKEW)  # learning the limit is no surprise
    time.sleep(0.01)
    pacer.rate_limited(in_flight(pacer, Send(1, 100, 50_000)), QuotaHit(0.01, "requests", 10))
    assert (pacer.stretch, pacer.skew) == (STRETCH * 2, SKEW * 2)
    assert pacer.span == pytest.approx(1.0 * (1 + STRETCH * 2) + SKEW * 2)
    assert pacer.stats.margin_raises == 1


def test_overruns_with_the_widest_margins_mean_another_worker_spends_the_quota_too() -> None:
    pacer = pacer_with_history([(0.9 - i * 0.09, Send(1, 100, 50_000)) for i in range(10)])
    pacer.rate_limited(in_flight(pacer, Send(1, 100, 50_000)), QuotaHit(0.1, "requests", 10))
    for _ in range(3):  # 1% -> 2% -> 4% -> 8%: the widest
        time.sleep(0.002)
        pacer.rate_limited(in_flight(pacer, Send(1, 100, 50_000)), QuotaHit(0.01, "requests", 10))
    assert (pacer.stretch, pacer.share) == (0.08, 1.0)
    time.sleep(0.002)
    pacer.rate_limited(in_flight(pacer, Send(1, 100, 50_000)), QuotaHit(0.01, "requests", 10))
    assert pacer.share == pytest.approx(0.7) and pacer.room("calls") == pytest.approx(7)
    pacer.relax(time.monotonic() + 3 * pacer.span)  # two windows without a 429: a little back
    assert pacer.share == pytest.approx(0.75)


async def test_an_embedder_that_cant_tell_when_a_request_left_is_not_waited_for() -> None:
    pacer = Pacer(window_seconds=60.0, concurrency=2, max_concurrency=2)
    first = await pacer.wait_turn(Send(1, 1, 10))
    pacer.succeeded(first, 0.01)  # answered, never reported leaving: another HTTP stack
    second = await pacer.wait_turn(Send(1, 1, 10))
    started = time.monotonic()
    await pacer.wait_turn(Send(1, 1, 10))  # the second is neither reported nor answered: no wait
    assert time.monotonic() - started < LEAVE_WAIT / 2
    assert second.sent_at == second.admitted_at


# --- lanes and batch sizes ---------------------------------------------------------------------------


async def test_until_a_limit_is_known_one_call_is_in_flight_while_another_lane_gets_ready() -> None:
    pacer = Pacer(window_seconds=60.0, concurrency=1, max_concurrency=8, adaptive=True, batch_size=None)
    assert pacer.limiter.limit == 2
    first = await pacer.wait_turn(Send(1, 100, 50_000))
    pacer.sent(first)
    second = asyncio.create_task(pacer.wait_turn(Send(1, 100, 50_000)))
    await asyncio.sleep(0.05)
    assert not second.done()  # a 429 now would find one call to refuse, not two
    pacer.succeeded(first, 0.05)
    await asyncio.wait_for(second, 1.0)


def test_lanes_follow_littles_law_once_a_limit_is_known() -> None:
    pacer = pacer_with_history([(0.5, Send(1, 100, 50_000))])
    assert pacer.lanes_needed(0.3) == 2  # no limit known: at least two (they wait at the pacer)
    pacer.limits["calls"] = Limit.named("calls", 600, 0.0)  # 600 calls a second
    assert pacer.lanes_needed(0.02) == 15  # 600/s x 0.02 s x 1.25


def test_auto_batch_size_is_the_apis_maximum_unless_a_quota_cant_take_it() -> None:
    sizer = BatchSizer(None, 100, slow_seconds=30.0)
    assert sizer.size == 100
    sizer.fit({"texts": Limit.named("texts", 420, 0)}, {"texts": 420.0}, 500.0)
    assert sizer.size == 100  # 4 full calls fill 95% of the window: no 5th call for the last 5%
    sizer.fit({"texts": Limit.named("texts", 375, 0)}, {"texts": 375.0}, 500.0)
    assert sizer.size == 93
    sizer.fit({"texts": Limit.named("texts", 60, 0)}, {"texts": 60.0}, 500.0)
    assert sizer.size == 60  # a call that can't pass whole: as much as the window takes


def test_auto_batch_size_shrinks_on_slow_answers_and_grows_back_on_fast_ones() -> None:
    sizer = BatchSizer(None, 100, slow_seconds=30.0)
    sizer.succeeded(40.0)
    assert sizer.size == 70
    sizer.succeeded(0.1)
    assert 70 < sizer.size <= 100


def test_a_fixed_batch_size_never_moves() -> None:
    sizer = BatchSizer(10, 100, slow_seconds=30.0)
    sizer.succeeded(40.0)
    sizer.fit({"texts": Limit.named("texts", 5, 0)}, {"texts": 5.0}, 500.0)
    assert sizer.size == 10


# --- the token estimate ------------------------------------------------------------------------------


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


def test_the_token_estimate_never_undercounts_the_simulators_tokenizer_on_the_sample_documents() -> None:
    samples = Path(__file__).resolve().parent.parent / "samples"
    texts = [
        line
        for path in sorted(samples.iterdir())
        if path.suffix in (".md", ".txt") and path.name != "README.md"
        for line in path.read_text(encoding="utf-8").splitlines()
        if line
    ]
    assert len(texts) > 50
    assert sum(estimate_tokens(t) for t in texts) >= sum(count_tokens(t) for t in texts)
