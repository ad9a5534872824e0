"""The holder core's word about each instrument, driven through fakes (holder_fakes.py): every
silence becomes one `stream_gap`, and every lifecycle transition one event whose id is derived
from it (a retry repeats the id, a second transition never does).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.holder_fakes import Harness, iso
from ticker_worker.core.events import EventType, event_id

EXPIRED = "contract expired on 2025-12-30"




def gaps(h: Harness) -> dict[int, dict[str, Any]]:
    found = h.publisher.of_type("stream_gap")
    assert len(found) == len({g["instrument_token"] for g in found}), "two gaps of one token"
    return {g["instrument_token"]: g for g in found}


def announced(h: Harness) -> list[tuple[str, int, int, str | None]]:
    """(type, token, generation, reason) of every subscription event published."""
    return [(e["event_type"], e["instrument_token"], e["generation"], e.get("reason"))
            for e in h.publisher.events if e["event_type"] != "stream_gap"]


# ---- stream gaps ----------------------------------------------------------------------------


async def test_a_drop_opens_one_gap_per_instrument_closed_by_the_first_tick_after() -> None:
    h = Harness()
    await h.stream(1, 2, 3)
    only_3 = h.clock.time()
    h.clock.advance(1.0)
    await h.link().tick([1, 2])
    last_12 = h.clock.time()
    h.clock.advance(1.0)
    h.link().drop("dropped")
    h.clock.advance(3.0)
    h.link().reconnect()
    await h.idle()
    assert gaps(h) == {}  # still silent: nothing closed yet
    resubscribed = [e.tokens for e in h.kite.sent() if e.kind == "resubscribe" and e.tokens]
    assert sorted(resubscribed[-1]) == [1, 2, 3]
    h.clock.advance(0.25)
    first_after = h.clock.time()
    await h.link().tick()
    await h.core.settle()
    found = gaps(h)
    assert {t: (g["gap_start"], g["gap_end"]) for t, g in found.items()} == {
        1: (iso(last_12), iso(first_after)), 2: (iso(last_12), iso(first_after)),
        3: (iso(only_3), iso(first_after))}
    assert {(g["account"], g["connection"], g["reason"], g["generation"])
            for g in found.values()} == {("a", 0, "dropped", 1)}
    assert {g["event_id"] for g in found.values()} <= set(h.db.outbox)
    h.clock.advance(1.0)
    await h.link().tick()
    await h.core.settle()
    assert len(h.publisher.of_type("stream_gap")) == 3  # one gap, one event


async def test_a_second_drop_is_a_second_gap_with_its_own_id() -> None:
    h = Harness()
    await h.stream(1)
    ids = []
    for _ in range(2):
        h.clock.advance(1.0)
        h.link().drop("stale")
        h.clock.advance(1.0)
        h.link().reconnect()
        await h.link().tick()
        await h.core.settle()
        ids.append(h.publisher.of_type("stream_gap")[-1]["event_id"])
    assert len(set(ids)) == 2 and set(ids) <= set(h.db.outbox)


async def test_an_unsubscribe_while_a_gap_is_open_closes_it_at_that_moment() -> None:
    h = Harness()
    await h.stream(1, 2, 3)
    h.link().drop("dropped")
    h.clock.advance(2.0)
    left_at = h.clock.time()
    h.db.unsubscribe(2)
    await h.nudge(2)
    assert gaps(h)[2]["gap_end"] == iso(left_at)
    h.clock.advance(2.0)
    h.link().reconnect()
    await h.link().tick()
    await h.core.settle()
    assert sorted(gaps(h)) == [1, 2, 3] and gaps(h)[1]["gap_end"] == iso(h.clock.time())
    assert 2 not in h.link().wire and h.row(2).status == "removed"


async def test_resume_opens_gaps_for_rows_already_active() -> None:
    first = Harness()
    await first.stream(1, 2)
    first.clock.advance(1.0)
    await first.tick_all()
    first.db.record_ticks(first.ticks.last_tick)
    recorded = first.clock.time()
    first.clock.advance(10.0)  # the first holder died; this one takes over
    h = Harness(store=first.db, clock=first.clock)
    assert await h.core.resume() == 2
    await h.full()
    h.clock.advance(0.5)
    await h.tick_all()
    await h.core.settle()
    found = gaps(h)
    assert {(g["gap_start"], g["gap_end"], g["reason"]) for g in found.values()} == {
        (iso(recorded), iso(h.clock.time()), "holder restarted")}
    assert sorted(found) == [1, 2] and announced(h) == []  # placed back, no new lifecycle
    h.assert_streaming()


# ---- lifecycle transitions ------------------------------------------------------------------


async def test_created_removed_and_created_again_carry_each_generation() -> None:
    h = Harness()
    await h.stream(1)
    [created] = h.publisher.events
    assert created["event_id"] == event_id(1, 1, EventType.CREATED, 1)
    assert (created["account"], created["connection"]) == ("a", 0)
    h.db.set_mode(1, "full")  # generation 2: a mode change is no transition
    await h.nudge(1)
    assert h.link().wire == {1: "full"} and len(h.publisher.events) == 1
    h.db.unsubscribe(1)
    await h.nudge(1)
    h.db.subscribe(1)
    await h.nudge(1)
    assert announced(h) == [("subscription_created", 1, 1, None),
                            ("subscription_removed", 1, 3, None),
                            ("subscription_created", 1, 4, None)]
    assert len({e["event_id"] for e in h.publisher.events}) == 3
    assert (h.row(1).status, h.row(1).generation, h.row(1).dirty) == ("active", 4, False)


async def test_losing_its_place_queues_and_placing_it_again_creates_anew() -> None:
    h = Harness(per_conn=2, max_conns=1, accounts=("a", "b"))
    await h.stream(1, 2, 3, 4)  # a: 1, 3; b: 2, 4; both full
    h.db.set_health("a", False, "token expired")
    await h.full()
    assert h.db.by_status("queued") == [1, 3] and h.link("a").wire == {}
    reason = "no capacity: all 1 healthy account(s) hold 2 instruments"
    assert announced(h)[4:] == [("subscription_queued", 1, 1, reason),
                                ("subscription_queued", 3, 1, reason)]
    h.db.set_health("a", True)
    await h.full()
    await h.tick_all()
    created_1 = [e["event_id"] for e in h.publisher.of_type("subscription_created")
                 if e["instrument_token"] == 1]
    assert created_1 == [event_id(1, 1, EventType.CREATED, 1), event_id(1, 1, EventType.CREATED, 3)]
    assert h.row(1).transitions == 3 and h.db.by_status("active") == [1, 2, 3, 4]
    h.assert_streaming()


async def test_unsubscribing_active_and_queued_rows_announces_removed() -> None:
    h = Harness(per_conn=2, max_conns=1)
    await h.stream(1, 2)
    h.db.subscribe(3)
    await h.nudge(3)
    assert h.row(3).status == "queued"
    h.db.unsubscribe(1, 3)
    await h.nudge(1, 3)
    removed = {e["instrument_token"]: e for e in h.publisher.of_type("subscription_removed")}
    assert {t: (e["account"], e["connection"], e["generation"]) for t, e in removed.items()} == {
        1: ("a", 0, 2), 3: (None, None, 2)}
    assert h.db.by_status("removed") == [1, 3] and sorted(h.link().wire) == [2]


async def test_an_expired_instrument_fails_with_its_reason_and_frees_its_place() -> None:
    h = Harness(per_conn=2, max_conns=1)
    await h.stream(1, 2)
    h.db.subscribe(3)
    await h.nudge(3)
    h.db.expire(1, EXPIRED)
    await h.full()  # the rollover's pass: 1 leaves, 3 takes its place on the same connection
    assert (h.row(1).status, h.row(1).reason) == ("failed", EXPIRED)
    assert announced(h)[-2:] == [("subscription_created", 3, 1, None),
                                 ("subscription_removed", 1, 1, EXPIRED)]
    slot = h.link().slot
    assert h.kite.first(slot, "apply", 1, "unsubscribe") < h.kite.first(slot, "apply", 3,
                                                                        "subscribe")
    assert h.kite.peak(slot) == 2 and sorted(h.link().wire) == [2, 3]
    events = len(h.publisher.events)
    await h.full()
    assert len(h.publisher.events) == events  # failed stays failed, silently


async def test_a_retried_record_repeats_every_event_id() -> None:
    h = Harness(per_conn=2, max_conns=1, accounts=("a", "b"))
    passes = []
    h.db.subscribe(1, 2, 3, 4, 5)
    passes += await h.nudge(1, 2, 3, 4, 5)
    h.db.set_health("a", False)
    passes += await h.full()
    h.db.unsubscribe(2, 5)
    passes += await h.nudge(2, 5)
    passes += await h.full()  # 1 takes 2's place on b
    h.db.set_health("a", True)
    passes += await h.full()  # 3 goes back to a
    first = [e["event_id"] for e in h.publisher.events]
    assert len(first) == len(set(first)) == len(h.db.outbox) == 11
    again = []
    for plan in passes:  # the commit happened, its answer was lost: the same plan again
        again += [e["event_id"] for e in await h.db.record(plan, {})]
    assert again == first and len(h.db.outbox) == 11
    assert [t for t, _ in sorted(h.db.rows.items()) if h.row(t).status == "active"] == [1, 3, 4]


async def test_a_gap_ends_when_its_instrument_loses_its_place_however_it_lost_it() -> None:
    h = Harness()  # a connection refused at the handshake, no other account: queued
    await h.stream(1)
    h.clock.advance(1.0)
    h.link().reject_auth()
    await h.idle()
    assert h.row(1).status == "queued" and gaps(h)[1]["gap_end"] == iso(h.clock.time())
    first = Harness()  # a new holder finds no room for what the last one streamed: queued
    await first.stream(2, 3)
    first.db.set_health("a", False)
    h = Harness(store=first.db, clock=first.clock)
    assert await h.core.resume() == 2
    h.clock.advance(1.0)
    await h.full()
    assert h.db.by_status("queued") == [2, 3]
    assert {t: g["gap_end"] for t, g in gaps(h).items()} == {2: iso(h.clock.time()),
                                                              3: iso(h.clock.time())}
    assert h.core.gaps.open == {}


async def test_an_instrument_removed_while_queued_ends_its_gap() -> None:
    first = Harness(accounts=("a", "b"))
    await first.stream(1)
    first.db.set_health("a", False)
    first.db.set_health("b", False)
    h = Harness(store=first.db, clock=first.clock)
    await h.core.resume()
    await h.full()
    h.clock.advance(1.0)
    h.db.unsubscribe(1)
    await h.nudge(1)
    assert h.row(1).status == "removed" and sorted(gaps(h)) == [1]
    assert h.core.gaps.open == {}


async def test_a_gap_whose_event_could_not_be_written_is_written_by_the_next_settle() -> None:
    h = Harness()
    await h.stream(1)
    h.link().drop()
    h.link().reconnect()
    await h.link().tick()
    h.db.failures = 1
    with pytest.raises(ConnectionError):
        await h.core.settle()
    assert h.publisher.of_type("stream_gap") == []
    await h.core.settle()
    await h.core.settle()
    assert len(h.publisher.of_type("stream_gap")) == 1 and len(h.db.outbox) == 2


async def test_a_holder_that_steps_down_and_back_reports_only_the_silence_since_the_other() -> None:
    a = Harness()
    await a.stream(1, 2)
    a.db.subscribe(3)
    await a.nudge(3)  # 3 never ticks: awaiting after two timeouts
    for _ in range(2):
        a.clock.advance(2.0)
        await a.core.settle()
    assert a.core.awaiting == [3]
    a.link().drop()  # silent from here; then a loses its lease
    await a.core.close()
    assert a.core.awaiting == [] and a.core.gaps.open == {}  # a standby owes no word
    b = Harness(store=a.db, clock=a.clock)
    await b.core.resume()
    await b.full()
    a.clock.advance(5.0)
    await b.tick_all()
    b.db.record_ticks(b.ticks.last_tick)
    streamed_until = a.clock.time()
    a.clock.advance(5.0)  # b dies; a takes over again
    await a.core.resume()
    await a.full()
    await a.tick_all()
    await a.core.settle()
    assert {g["gap_start"] for g in gaps(a).values()} == {iso(streamed_until)}


async def test_room_freed_by_a_nudge_pass_places_a_queued_row_without_waiting_for_the_timer(
) -> None:
    h = Harness(per_conn=2)
    await h.stream(1, 2)
    h.db.subscribe(3)
    await h.nudge(3)
    assert h.row(3).status == "queued"
    h.db.unsubscribe(1)
    await h.nudge(1)  # the core itself asks for the full pass that reads the queued row
    assert h.row(3).status == "active"
    assert [e["event_type"] for e in h.publisher.events if e["instrument_token"] == 3] == [
        "subscription_queued", "subscription_created"]
    h.assert_streaming()
