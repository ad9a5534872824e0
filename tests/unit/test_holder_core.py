"""The holder core driven deterministically through fakes (holder_fakes.py): placement and the
order of messages on the wire, the acknowledgement timeout, Kite's refusals, and passes that fail
or are too big for one. Moves are in test_holder_moves.py, gaps and the lifecycle's events in
test_holder_lifecycle.py.

Kite's caps are made small (a few tokens per connection) so every limit is reached in a handful
of instruments; the clock only moves when a test advances it.
"""

from __future__ import annotations

import random

import pytest

from tests.unit.holder_fakes import REFUSAL, Harness

# ---- placement and wire order -------------------------------------------------------------


@pytest.mark.parametrize("unsubscribe_first", [True, False], ids=["unsub+sub", "sub+unsub"])
async def test_swaps_in_one_batch_keep_the_cap_on_the_wire(unsubscribe_first: bool) -> None:
    h = Harness(per_conn=5, max_conns=1, batch_size=2)
    await h.stream(1, 2, 3, 4, 5)
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
    await h.stream(1, 2, 3)
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
    await h.stream(*streaming)
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
    await h.stream(1, 2)
    h.link().drop()
    h.db.set_mode(1, "full")
    h.db.unsubscribe(2)
    await h.nudge(1, 2)
    assert h.link().wire == {}
    h.link().reconnect()
    assert h.link().wire == {1: "full"}
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
    await h.stream(4, 5, 6)  # a0 holds 2 of 5 but counts as full: all go to connection 1
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
