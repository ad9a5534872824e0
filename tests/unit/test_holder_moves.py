"""Make-before-break, driven deterministically through fakes (holder_fakes.py): an instrument
that moves (its account turned unhealthy or refused at the handshake) is subscribed on its new
connection first, and let go of on the old one only once the new one confirmed it (its first
tick) or it is known to be silent there (awaiting after the ack timeout). A moving instrument is
silent only when neither of its connections streams it.
"""

from __future__ import annotations

from tests.unit.holder_fakes import REFUSAL, Harness, iso


async def two_accounts() -> Harness:
    """Tokens 1, 3 on account a and 2, 4 on b (least-loaded, ties by name), all acknowledged;
    then a turns unhealthy and the timer's pass moves 1 and 3 to b."""
    h = Harness(per_conn=5, max_conns=1, accounts=("a", "b"))
    await h.stream(1, 2, 3, 4)
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
    await h.stream(1, 2, 3, 4)
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
    await h.stream(1, 2, 3)  # a: 1, 3; b: 2
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


async def test_a_move_refused_where_it_went_and_queued_lets_go_of_the_old_connection() -> None:
    h = Harness(per_conn=2, max_conns=1, accounts=("a", "b"))
    await h.stream(1, 2, 3)  # a: 1, 3; b: 2
    h.db.set_health("a", False)
    await h.full()  # 1 moves to b (a still streams it until b confirms); 3 finds no room
    assert 1 in h.link("a").wire and h.row(3).status == "queued"
    h.link("b").refuse([1], REFUSAL)
    await h.idle()
    assert (h.row(1).status, h.row(1).reason) == ("queued", f"refused by Kite: {REFUSAL}")
    await h.full()
    h.assert_streaming()  # a queued instrument streams nowhere
    assert h.link("a").stopped


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
