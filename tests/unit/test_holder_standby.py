"""The hot standby (holder/standby.py): it keeps the recorded placement warm, and a takeover puts
it back on the wire before any database pass; the full pass that follows announces nothing
twice, sends nothing twice, and corrects what changed since the standby's last look.
"""

from __future__ import annotations

from typing import Any

from tests.unit.holder_fakes import Harness
from ticker_worker.holder.standby import WarmPlacement, take_over


class FakePlacement:
    """PlacementSource over the fake store, counting the placement reads."""

    def __init__(self, h: Harness) -> None:
        self.store = h.db
        self.reads = 0

    async def fingerprint(self) -> tuple[Any, ...]:
        rows = self.store.rows.values()
        return (tuple((r.token, r.mode, r.account, r.connection, r.generation) for r in rows
                      if r.wanted and r.status == "active"),
                tuple(self.store.account_rows.values()))

    async def accounts(self) -> list[Any]:
        return await self.store.accounts()

    async def placement(self) -> list[Any]:
        self.reads += 1
        return await self.store.streaming_since()


async def streaming(tokens: range, per_conn: int = 5) -> tuple[Harness, WarmPlacement]:
    """An active holder streaming `tokens` on three connections, and a warm standby's cache."""
    first = Harness(per_conn=per_conn, max_conns=3)
    await first.stream(*tokens)
    first.assert_streaming()
    warm = WarmPlacement(FakePlacement(first))
    assert await warm.refresh()
    return first, warm


async def hand_over(first: Harness, warm: WarmPlacement) -> tuple[Harness, int, int]:
    """The active holder stops; a new core on the same database takes over from `warm`."""
    await first.core.close()
    h = Harness(per_conn=first.per_conn, max_conns=3, store=first.db, clock=first.clock)
    opened, adopted = await take_over(h.core, warm)
    return h, opened, adopted


async def test_a_takeover_sends_the_recorded_placement_before_any_pass() -> None:
    first, warm = await streaming(range(1, 13))
    recorded = {t: (r.account, r.connection) for t, r in first.db.rows.items()}
    records = first.db.records
    h, opened, adopted = await hand_over(first, warm)
    assert (opened, adopted) == (12, 12)
    assert h.db.records == records, "the takeover wrote before its full pass"
    for token, slot in recorded.items():
        assert h.kite.holding(token) == [slot]  # each keeps its connection
    h.clock.advance(1)
    await h.full()  # the full pass: everything is where the rows say
    await h.tick_all()
    await h.full()
    h.assert_streaming()
    assert not h.publisher.of_type("subscription_created")
    subscribes = [t for e in h.kite.sent() if e.action == "subscribe" for t in e.tokens]
    assert sorted(subscribes) == list(range(1, 13)), "a token was subscribed twice"
    gaps = h.publisher.of_type("stream_gap")
    assert sorted(e["instrument_token"] for e in gaps) == list(range(1, 13))


async def test_the_full_pass_corrects_what_changed_after_the_last_look() -> None:
    first, warm = await streaming(range(1, 13))
    first.db.unsubscribe(3)  # committed, but not seen by the old holder nor the standby
    first.db.set_mode(4, "full")
    h, _, adopted = await hand_over(first, warm)
    assert adopted == 12 and h.kite.holding(3)
    await h.full()
    await h.tick_all()
    await h.full()
    h.assert_streaming()
    assert h.kite.holding(3) == [] and h.row(3).status == "removed"
    assert h.link(*h.kite.holding(4)[0]).wire[4] == "full"
    assert [e["instrument_token"] for e in h.publisher.of_type("subscription_removed")] == [3]
    assert not h.publisher.of_type("subscription_created")


async def test_the_adopted_placement_keeps_kites_caps() -> None:
    first, warm = await streaming(range(1, 13))
    for r in warm.rows[:]:  # a placement no holder would write: 12 rows on one connection
        warm.rows[warm.rows.index(r)] = r._replace(connection=0)
    warm.rows.append(warm.rows[0]._replace(instrument_token=99, connection=7))
    h, _, adopted = await hand_over(first, warm)
    assert adopted == 5  # the connection's cap; the rest waits for the full pass
    assert list(h.kite.links) == [("a", 0)]
    await h.full()
    await h.tick_all()
    await h.full()
    h.assert_streaming()  # no connection above its cap at any point, 3 connections at most
    assert not h.publisher.of_type("subscription_created")


async def test_a_standby_reads_the_placement_only_when_it_changed() -> None:
    first, warm = await streaming(range(1, 4))
    source = warm.source
    assert isinstance(source, FakePlacement) and source.reads == 1
    assert not await warm.refresh()
    assert source.reads == 1
    first.db.set_mode(2, "full")
    await first.nudge(2)
    assert await warm.refresh() and source.reads == 2
    assert {r.instrument_token: r.mode for r in warm.rows}[2] == "full"


async def test_a_cold_takeover_only_resumes_and_the_cache_is_spent_once_taken() -> None:
    first, warm = await streaming(range(1, 4))
    h, _, adopted = await hand_over(first, warm)
    assert adopted == 3
    assert warm.take() == ([], [])  # stale the moment the holder streams
    await h.core.close()
    again = Harness(per_conn=5, max_conns=3, store=h.db, clock=h.clock)
    assert await take_over(again.core, warm) == (3, 0)
    assert again.kite.links == {}
    await again.full()
    await again.tick_all()
    again.assert_streaming()


async def test_a_placement_not_confirmed_lately_is_not_adopted() -> None:
    first, warm = await streaming(range(1, 4))
    warm.fresh_at -= 10 * warm.period  # Postgres away: the looks failed for a while
    h, _, adopted = await hand_over(first, warm)
    assert adopted == 0 and h.kite.links == {}, "an old word about the accounts was trusted"
