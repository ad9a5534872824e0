"""The simulator's market clock: ticks only in session, candles only in sessions (--market real)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Iterator

import aiohttp
import pytest
from kiteconnect import KiteConnect

from tests.sim.conftest import ThreadedSim
from ticker_worker.core.ist import IST
from ticker_worker.kite.codec import decode_frame
from ticker_worker.sim.accounts import Account
from ticker_worker.sim.clock import MarketClock
from ticker_worker.sim.server import SimConfig
from ticker_worker.sim.state import Simulator

INFY, NIFTY = 408065, 256265
SATURDAY = dt.datetime(2026, 11, 28, 11, 0, tzinfo=IST)
HOLIDAY = dt.datetime(2026, 11, 24, 11, 0, tzinfo=IST)  # Guru Nanak Jayanti, a Tuesday
FRIDAY = dt.date(2026, 11, 27)


def at(day: dt.date, hh: int, mm: int, ss: int = 0) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hh, mm, ss, tzinfo=IST)


def test_sessions_by_segment_weekend_and_holiday() -> None:
    clock = MarketClock("real")
    before, opening = at(FRIDAY, 9, 14, 59).timestamp(), at(FRIDAY, 9, 15).timestamp()
    assert {1, 2, 4, 5, 9} <= clock.closed_segments(before)
    assert 7 not in clock.closed_segments(before)  # MCX opens at 09:00
    assert clock.closed_segments(opening).isdisjoint({1, 2, 4, 5, 9})
    assert clock.closed_segments(at(FRIDAY, 15, 30).timestamp()) >= {1, 9}
    assert clock.closed_segments(SATURDAY.timestamp()) >= {1, 3, 7, 9}
    assert clock.closed_segments(HOLIDAY.timestamp()) >= {1, 2, 9}
    assert MarketClock("always-open").closed_segments(SATURDAY.timestamp()) == frozenset()


def test_the_clock_starts_at_now_and_runs_on() -> None:
    wall = [1_000.0]
    clock = MarketClock("real", SATURDAY, wall=lambda: wall[0])
    assert clock.now() == SATURDAY.timestamp()
    wall[0] += 90
    assert clock.now_ist() == SATURDAY + dt.timedelta(seconds=90)


def _tokens_ticked(sim: Simulator, moment: dt.datetime) -> set[int]:
    conn = sim.hub.connections[1]
    conn.pending.clear()
    asyncio.run(sim.hub.step(int(moment.timestamp())))
    return {t["instrument_token"] for frame in conn.pending for t in decode_frame(frame)}


def test_ticks_only_in_session_at_0914_59_and_0915_00() -> None:
    sim = Simulator(SimConfig(market="real", now=SATURDAY))
    mcx = next(i.instrument_token for i in sim.universe.instruments if i.exchange == "MCX")
    conn = sim.hub.open(Account("k", None), ws=None)  # type: ignore[arg-type]
    assert conn is not None
    sim.hub.subscribe(conn, [INFY, NIFTY, mcx])
    assert _tokens_ticked(sim, SATURDAY) == set()
    assert _tokens_ticked(sim, HOLIDAY) == set()
    assert _tokens_ticked(sim, at(FRIDAY, 9, 14, 59)) == {mcx}
    assert _tokens_ticked(sim, at(FRIDAY, 9, 15)) == {INFY, NIFTY, mcx}
    assert _tokens_ticked(sim, at(FRIDAY, 15, 30)) == {mcx}


@pytest.fixture(scope="module")
def real_sim() -> Iterator[ThreadedSim]:
    server = ThreadedSim(SimConfig(port=0, market="real", now=at(dt.date(2026, 11, 30), 8, 0),
                                   tick_interval=0.1, heartbeat_interval=0.2))
    yield server
    server.close()


def test_on_a_saturday_only_the_snapshot_then_heartbeats(real_sim: ThreadedSim) -> None:
    real_sim.call("POST", "/_sim/clock?now=2026-11-28T11:00:00%2B05:30")

    async def main() -> list[int]:
        async with aiohttp.ClientSession() as session, session.ws_connect(
                f"{real_sim.ws}/?api_key=weekend&access_token=t") as ws:
            await ws.send_str(json.dumps({"a": "subscribe", "v": [INFY, NIFTY]}))
            frames: list[bytes] = []
            while sum(len(f) == 1 for f in frames) < 5:  # five heartbeats: many clock steps
                msg = await asyncio.wait_for(ws.receive(), 5)
                frames.append(msg.data)
            ticks = [f for f in frames if len(f) > 1]
            # Like Kite, the current packet of each token right after the subscribe; no more.
            assert len(ticks) == 1, "a tick on a Saturday besides the snapshot"
            assert sorted(t["instrument_token"] for t in decode_frame(ticks[0])) == [NIFTY, INFY]
            real_sim.call("POST", "/_sim/clock?now=2026-11-27T09:15:00%2B05:30")
            while True:  # Friday, in session: ticks follow
                msg = await asyncio.wait_for(ws.receive(), 5)
                if len(msg.data) > 1:
                    return [t["instrument_token"] for t in decode_frame(msg.data)]

    try:
        assert sorted(asyncio.run(main())) == [NIFTY, INFY]
    finally:
        real_sim.call("POST", "/_sim/clock?now=2026-11-30T08:00:00%2B05:30")


def test_historical_candles_only_in_past_sessions(real_sim: ThreadedSim) -> None:
    kite = KiteConnect("hist", "token", root=real_sim.http)
    rows = kite.historical_data(INFY, "2026-11-20 00:00:00", "2026-12-05 00:00:00", "minute")
    days = sorted({r["date"].date() for r in rows})
    # Mon 23rd to Fri 27th without the 24th (holiday); nothing on the weekend or on Monday
    # the 30th, whose session has not opened at the clock's 08:00.
    assert days == [dt.date(2026, 11, d) for d in (20, 23, 25, 26, 27)]
    times = {r["date"].time() for r in rows}
    assert min(times) == dt.time(9, 15) and max(times) == dt.time(15, 29)
    daily = kite.historical_data(INFY, "2026-11-20", "2026-12-05", "day")
    assert [r["date"].date() for r in daily] == days


def test_clock_can_be_moved_over_http(real_sim: ThreadedSim) -> None:
    status, body = real_sim.call("POST", "/_sim/clock?now=2026-11-27T09:15:00%2B05:30")
    assert status == 200 and 1 in body["open_segments"]
    status, body = real_sim.call("POST", "/_sim/clock?now=yesterday")
    assert status == 400 and "ISO-8601" in body["error"]
    real_sim.call("POST", "/_sim/clock?now=2026-11-30T08:00:00%2B05:30")
