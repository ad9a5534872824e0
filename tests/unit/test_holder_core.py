"""The holder core driven deterministically through fakes (holder_fakes.py): placement and the
order of messages on the wire, make-before-break moves, the acknowledgement timeout and Kite's
refusals. Gaps and the lifecycle's events are in test_holder_lifecycle.py.

Kite's caps are made small (a few tokens per connection) so every limit is reached in a handful
of instruments; the clock only moves when a test advances it.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from tests.unit.holder_fakes import Harness

REFUSAL = "Maximum number of instruments per connection exceeded"


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


async def start(h: Harness, *tokens: int) -> None:
    """Subscribe `tokens`, place them, and let them tick once (acknowledged)."""
    h.db.subscribe(*tokens)
    await h.nudge(*tokens)
    await h.tick_all()


# ---- placement and wire order -------------------------------------------------------------


@pytest.mark.parametrize("unsubscribe_first", [True, False], ids=["unsub+sub", "sub+unsub"])
async def test_swaps_in_one_batch_keep_the_cap_on_the_wire(unsubscribe_first: bool) -> None:
    h = Harness(per_conn=5, max_conns=1, batch_size=2)
    await start(h, 1, 2, 3, 4, 5)
    streaming, fresh = [1, 2, 3, 4, 5], iter(range(100, 200))
    for _ in range(6):
        out, new = streaming[:2], [next(fresh), next(fresh)]
        if unsubscribe_first:
            h.db.unsubscribe(*out)
            h.db.subscribe(*new)
        else:
            h.db.subscribe(*new)
            h.db.unsubscribe(*out)
        await h.nudge(*out, *new)
        streaming = streaming[2:] + new
        assert await h.link().tick(new) == new  # each swapped-in one acknowledged
    assert h.db.by_status("active") == sorted(streaming)
    assert h.kite.peak(("a", 0)) == 5
    h.assert_streaming()
    assert h.core.awaiting == [] and h.db.by_status("queued") == []


async def test_a_subscribe_passed_before_its_unsubscribe_waits_queued_never_over_the_cap() -> None:
    h = Harness(per_conn=3, max_conns=1)
    await start(h, 1, 2, 3)
    h.db.subscribe(9)
    await h.nudge(9)
    assert h.row(9).status == "queued" and "no capacity" in (h.row(9).reason or "")
    h.db.unsubscribe(1)
    await h.nudge(1)
    await h.full()  # the timer's pass places what waits
    await h.link().tick([9])
    assert h.row(9).status == "active" and h.row(1).status == "removed"
    assert h.kite.peak(("a", 0)) == 3
    h.assert_streaming()


async def test_random_swaps_over_accounts_and_connections_keep_every_cap() -> None:
    rng = random.Random(8)
    h = Harness(per_conn=3, max_conns=2, accounts=("a", "b"), batch_size=2)
    streaming = list(range(1, 13))  # 2 accounts x 2 connections x 3 = full house
    await start(h, *streaming)
    fresh = iter(range(100, 1000))
    for _ in range(12):
        out = rng.sample(streaming, rng.randint(1, 4))
        new = [next(fresh) for _ in out]
        if rng.random() < 0.5:
            h.db.unsubscribe(*out)
            h.db.subscribe(*new)
        else:
            h.db.subscribe(*new)
            h.db.unsubscribe(*out)
        await h.nudge(*out, *new)
        streaming = [t for t in streaming if t not in out] + new
        await h.tick_all()
        h.assert_streaming()
    assert h.db.by_status("active") == sorted(streaming)
    assert max(h.kite.peak(s) for s in h.kite.links) == 3


async def test_what_a_new_connection_was_given_before_it_connected_goes_in_its_picture() -> None:
    h = Harness(per_conn=5, max_conns=1)
    h.kite.connect_at_start = False
    h.db.subscribe(1, 2)
    h.db.subscribe(3, mode="full")
    await h.nudge(1, 2, 3)
    assert h.kite.sent() == [] and h.row(1).status == "active"
    h.clock.advance(10.0)
    await h.core.settle()
    assert h.core.awaiting == []  # the ack clock starts when the picture is sent
    h.link().reconnect()
    assert h.link().wire == {1: "quote", 2: "quote", 3: "full"}
    assert sorted(await h.link().tick()) == [1, 2, 3]
    h.assert_streaming()


async def test_a_mode_change_while_dropped_is_in_the_picture_sent_on_reconnect() -> None:
    h = Harness(per_conn=5, max_conns=1)
    await start(h, 1, 2)
    h.link().drop()
    h.db.set_mode(1, "full")
    h.db.unsubscribe(2)
    await h.nudge(1, 2)
    assert h.link().wire == {}
    h.link().reconnect()
    assert h.link().wire == {1: "full"}
    h.assert_streaming()


# ---- make-before-break ----------------------------------------------------------------------


async def two_accounts() -> Harness:
    """Tokens 1, 3 on account a and 2, 4 on b (least-loaded, ties by name), all acknowledged;
    then a turns unhealthy and the timer's pass moves 1 and 3 to b."""
    h = Harness(per_conn=5, max_conns=1, accounts=("a", "b"))
    await start(h, 1, 2, 3, 4)
    assert sorted(h.link("a").wire) == [1, 3] and sorted(h.link("b").wire) == [2, 4]
    h.db.set_health("a", False, "token expired")
    await h.full()
    return h


async def test_a_move_lets_go_of_the_old_connection_only_after_the_first_tick() -> None:
    h = await two_accounts()
    a, b = h.link("a"), h.link("b")
    assert sorted(b.wire) == [1, 2, 3, 4] and sorted(a.wire) == [1, 3]  # made, not broken
    await h.core.settle()
    assert sorted(a.wire) == [1, 3]
    await b.tick([1])
    await h.core.settle()
    assert sorted(a.wire) == [3]
    assert h.kite.first(b.slot, "tick", 1) < h.kite.first(a.slot, "apply", 1, "unsubscribe")
    assert (h.row(1).account, h.row(1).connection, h.row(1).status) == ("b", 0, "active")


async def test_a_silent_move_lets_go_once_awaiting_after_the_ack_timeout() -> None:
    h = await two_accounts()
    a, b = h.link("a"), h.link("b")
    await b.tick([1])
    h.clock.advance(2.0)  # one ack timeout: 3 is sent again, still held on a
    await h.core.settle()
    assert [e.tokens for e in h.kite.sent(b.slot) if e.kind == "resend"] == [(3,), (3,)]
    assert 3 in a.wire and h.core.awaiting == []
    h.clock.advance(2.0)  # two: 3 awaits its first tick, and the old connection is of no use
    await h.core.settle()
    assert h.core.awaiting == [3] and a.wire == {}
    await h.full()
    assert a.stopped  # an unusable account's idle connection is closed
    assert [e["event_type"] for e in h.publisher.events] == ["subscription_created"] * 4


async def test_an_account_refused_at_the_handshake_moves_and_reports_the_gaps() -> None:
    h = Harness(per_conn=5, max_conns=1, accounts=("a", "b"))
    await start(h, 1, 2, 3, 4)
    h.clock.advance(1.0)
    last_tick = h.clock.time()
    await h.tick_all()
    h.clock.advance(5.0)
    h.link("a").reject_auth()
    await h.idle()  # the core marked a unhealthy and asked for a full pass
    assert not h.db.account_rows["a"].healthy
    assert sorted(h.link("b").wire) == [1, 2, 3, 4]
    h.clock.advance(0.5)
    await h.link("b").tick([1, 3])
    await h.core.settle()
    gaps = sorted(h.publisher.of_type("stream_gap"), key=lambda e: e["instrument_token"])
    assert [(g["instrument_token"], g["account"], g["reason"]) for g in gaps] == [
        (1, "a", "auth"), (3, "a", "auth")]
    assert {g["gap_start"] for g in gaps} == {iso(last_tick)}
    assert {g["gap_end"] for g in gaps} == {iso(h.clock.time())}
    await h.full()
    assert h.link("a").stopped
    h.assert_streaming()


async def test_a_connection_that_gave_up_on_a_403_restarts_once_the_token_is_renewed() -> None:
    h = Harness(per_conn=5, max_conns=1, accounts=("a", "b"))
    await start(h, 1, 2, 3)  # a: 1, 3; b: 2
    a = h.link("a")
    a.reject_auth()
    await h.idle()  # 1 and 3 move to b; a's connection is kept until b confirms them
    h.db.set_token("a", "renewed")
    h.db.subscribe(9)
    await h.full()  # 9 goes to a, the least loaded: its connection starts again
    assert h.link("a") is a and a.connected and h.row(9).account == "a"
    await h.tick_all()
    await h.core.settle()
    h.assert_streaming()


# ---- the acknowledgement timeout --------------------------------------------------------------


async def test_silence_is_resent_once_then_awaiting_and_never_fails_or_moves() -> None:
    h = Harness(per_conn=5, max_conns=2, ack_timeout=2.0)
    h.db.subscribe(7)
    await h.nudge(7)
    link = h.link()
    resends = lambda: [e for e in h.kite.sent(link.slot) if e.kind == "resend"]  # noqa: E731
    h.clock.advance(1.5)
    await h.core.settle()
    assert resends() == []
    h.clock.advance(0.5)
    await h.core.settle()
    assert [(e.action, e.tokens) for e in resends()] == [("subscribe", (7,)), ("mode", (7,))]
    assert h.core.awaiting == []
    await h.core.settle()
    h.clock.advance(2.0)
    await h.core.settle()
    assert h.core.awaiting == [7]
    for _ in range(5):  # a quiet contract or a closed market: silence alone changes nothing
        h.clock.advance(60.0)
        await h.full()
    assert len(resends()) == 2 and h.core.awaiting == [7]
    assert (h.row(7).status, h.row(7).connection) == ("active", 0)
    assert list(h.kite.links) == [("a", 0)]
    assert [e["event_type"] for e in h.publisher.events] == ["subscription_created"]
    await link.tick([7])
    await h.core.settle()
    assert h.core.awaiting == []


# ---- Kite's refusals ------------------------------------------------------------------------


async def test_refused_tokens_are_placed_again_and_the_connection_counts_as_full() -> None:
    h = Harness(per_conn=5, max_conns=2)
    h.db.subscribe(1, 2, 3)
    await h.nudge(1, 2, 3)
    a0 = h.link("a", 0)
    await a0.tick([1, 2])
    assert a0.refuse([3], REFUSAL) == [3]
    await h.idle()
    assert (h.row(3).status, h.row(3).connection) == ("active", 1)
    assert a0.cap == 2 and sorted(a0.wire) == [1, 2]
    await h.link("a", 1).tick([3])
    await start(h, 4, 5, 6)  # a0 holds 2 of 5 but counts as full: all go to connection 1
    assert [h.row(t).connection for t in (4, 5, 6)] == [1, 1, 1]
    h.assert_streaming()


async def test_refused_tokens_with_no_room_are_queued_with_kites_reason() -> None:
    h = Harness(per_conn=5, max_conns=1)
    h.db.subscribe(1, 2, 3)
    await h.nudge(1, 2, 3)
    await h.link().tick([1, 2])
    h.link().refuse([3], REFUSAL)
    await h.idle()
    assert (h.row(3).status, h.row(3).reason) == ("queued", f"refused by Kite: {REFUSAL}")
    [queued] = h.publisher.of_type("subscription_queued")
    assert (queued["instrument_token"], queued["reason"]) == (3, f"refused by Kite: {REFUSAL}")
    h.db.subscribe(4)
    await h.nudge(4)
    assert h.row(4).status == "queued" and "no capacity" in (h.row(4).reason or "")
    h.db.unsubscribe(1)  # room again on the refused connection
    await h.nudge(1)
    await h.full()
    await h.tick_all()
    assert h.db.by_status("active") == [2, 3, 4]
    h.assert_streaming()


async def test_a_move_refused_where_it_went_and_queued_lets_go_of_the_old_connection() -> None:
    h = Harness(per_conn=2, max_conns=1, accounts=("a", "b"))
    await start(h, 1, 2, 3)  # a: 1, 3; b: 2
    h.db.set_health("a", False)
    await h.full()  # 1 moves to b (a still streams it until b confirms); 3 finds no room
    assert 1 in h.link("a").wire and h.row(3).status == "queued"
    h.link("b").refuse([1], REFUSAL)
    await h.idle()
    assert (h.row(1).status, h.row(1).reason) == ("queued", f"refused by Kite: {REFUSAL}")
    await h.full()
    h.assert_streaming()  # a queued instrument streams nowhere
    assert h.link("a").stopped


# ---- passes that fail or are too big for one --------------------------------------------------


async def test_a_pass_whose_write_failed_is_recorded_by_the_next_without_sending_again() -> None:
    h = Harness()
    h.db.subscribe(1, 2)
    h.db.failures = 1
    with pytest.raises(ConnectionError):
        await h.core.reconcile(False, {1, 2})
    assert h.db.by_status("pending") == [1, 2] and sorted(h.link().wire) == [1, 2]
    sent = len(h.kite.sent())
    await h.full()
    assert h.db.by_status("active") == [1, 2] and len(h.kite.sent()) == sent
    assert [e["instrument_token"] for e in h.publisher.events] == [1, 2]


async def test_a_bulk_subscribe_is_placed_in_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ticker_worker.holder.core.PASS_LIMIT", 40)
    monkeypatch.setattr("ticker_worker.db.holder.PASS_LIMIT", 40)
    h = Harness(per_conn=60, max_conns=2)
    h.db.subscribe(*range(1, 101))
    plans = await h.full()
    assert [len(p.activated) for p in plans if not p.is_empty()] == [40, 40, 20]
    assert len(h.db.by_status("active")) == 100 and not h.core.placing
    assert max(h.kite.peak(s) for s in h.kite.links) == 60


async def test_a_move_is_silent_only_when_neither_of_its_connections_streams_it() -> None:
    h = await two_accounts()  # 1 and 3 moving from a to b, neither confirmed
    a, b = h.link("a"), h.link("b")
    b.drop()  # a still streams them: no gap
    h.clock.advance(1.0)
    await a.tick([1, 3])
    last_on_a = h.clock.time()
    assert set(h.core.gaps.open) == {2, 4}
    b.reconnect()
    await b.tick([1])  # confirms 1; a lets go of it at the next settle
    a.drop()  # 3 was only on a now: silent until b's first tick of it
    h.clock.advance(1.0)
    await b.tick([3])
    await h.core.settle()
    gap_3 = h.publisher.of_type("stream_gap")[-1]
    assert (gap_3["instrument_token"], gap_3["gap_start"]) == (3, iso(last_on_a))
    assert sorted(e["instrument_token"] for e in h.publisher.of_type("stream_gap")) == [3]


async def test_a_confirmation_by_a_connection_lost_since_does_not_release_the_old_one() -> None:
    h = await two_accounts()
    a, b = h.link("a"), h.link("b")
    await b.tick([1])
    b.drop()  # before the settle that would have let a go of 1
    await h.core.settle()
    assert 1 in a.wire
    b.reconnect()
    await b.tick([1])
    await h.core.settle()
    assert 1 not in a.wire
