"""Mock ticks outside market hours, with a manual clock and hand-written fakes (no I/O)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Mapping
from datetime import datetime

import orjson

from ticker_worker.config import Settings
from ticker_worker.core.ist import IST
from ticker_worker.holder.mock_ticks import MockTicks

INFY, NIFTY, MCX, UNPRICED = 408065, 256265, (50_000 << 8) | 7, 5633
SATURDAY = datetime(2026, 11, 28, 11, 0, tzinfo=IST)


class Fakes:
    def __init__(self, wanted: dict[int, str], prices: dict[int, float]) -> None:
        self.wanted, self.prices = wanted, prices
        self.price_reads: list[list[int]] = []
        self.frames: list[list[dict[str, object]]] = []
        self.now = SATURDAY.timestamp()

    def read_wanted(self) -> Mapping[int, str]:
        return dict(self.wanted)

    def read_prices(self, tokens: Iterable[int]) -> Mapping[int, float]:
        asked = sorted(tokens)
        self.price_reads.append(asked)
        return {t: self.prices[t] for t in asked if t in self.prices}

    async def publish(self, body: bytes) -> None:
        self.frames.append(orjson.loads(body))

    def mock(self) -> MockTicks:
        return MockTicks(Settings(mock_outside_market_hours=True), self.read_wanted,
                         self.read_prices, self.publish, clock=lambda: self.now,
                         rng=random.Random(7))

    def step(self, mock: MockTicks, at: datetime) -> list[dict[str, object]]:
        self.now = at.timestamp()
        return asyncio.run(mock.step())


def test_closed_instruments_tick_from_their_last_real_price_flagged_mock() -> None:
    fakes = Fakes({INFY: "full", NIFTY: "quote", UNPRICED: "ltp"}, {INFY: 1500.0, NIFTY: 24000.0})
    mock = fakes.mock()
    ticks = {t["instrument_token"]: t for t in fakes.step(mock, SATURDAY)}
    assert set(ticks) == {INFY, NIFTY}  # no price known for UNPRICED: nothing to continue from
    assert all(t["is_mock"] is True for t in ticks.values())
    infy, nifty = ticks[INFY], ticks[NIFTY]
    assert infy["mode"] == "full" and infy["tradable"] is True
    assert abs(float(infy["last_price"]) - 1500.0) < 15  # type: ignore[arg-type]
    assert {"depth", "exchange_timestamp", "volume_traded", "ohlc"} <= set(infy)
    assert nifty["mode"] == "quote" and nifty["tradable"] is False
    assert "volume_traded" not in nifty and nifty["ohlc"]["close"] == 24000.0  # type: ignore[index]
    assert fakes.frames == [list(ticks.values())]  # one JSON array per step


def test_prices_continue_step_to_step_and_are_read_once() -> None:
    fakes = Fakes({INFY: "ltp"}, {INFY: 1500.0})
    mock = fakes.mock()
    first = fakes.step(mock, SATURDAY)[0]["last_price"]
    fakes.prices[INFY] = 9999.0  # a later read would jump; the walk continues instead
    second = fakes.step(mock, SATURDAY.replace(second=1))[0]["last_price"]
    assert abs(float(second) - float(first)) < 5  # type: ignore[arg-type]
    assert fakes.price_reads == [[INFY]]


def test_mock_ticks_stop_at_the_open_and_follow_each_segment() -> None:
    fakes = Fakes({INFY: "ltp", MCX: "ltp"}, {INFY: 1500.0, MCX: 70_000.0})
    mock = fakes.mock()
    before = {t["instrument_token"] for t in fakes.step(mock, datetime(2026, 11, 27, 8, 59,
                                                                       tzinfo=IST))}
    assert before == {INFY, MCX}
    # MCX opens at 09:00, NSE at 09:15.
    assert {t["instrument_token"] for t in fakes.step(
        mock, datetime(2026, 11, 27, 9, 14, 59, tzinfo=IST))} == {INFY}
    published = len(fakes.frames)
    assert fakes.step(mock, datetime(2026, 11, 27, 9, 15, tzinfo=IST)) == []
    assert len(fakes.frames) == published  # nothing at all is published in session
    # After the close the walk starts again from the (new) last real price.
    fakes.prices[INFY] = 1600.0
    after = fakes.step(mock, datetime(2026, 11, 27, 15, 30, tzinfo=IST))
    assert [t["instrument_token"] for t in after] == [INFY]
    assert abs(float(after[0]["last_price"]) - 1600.0) < 16  # type: ignore[arg-type]


def test_nothing_is_published_without_wanted_instruments() -> None:
    fakes = Fakes({}, {INFY: 1500.0})
    assert fakes.step(fakes.mock(), SATURDAY) == [] and fakes.frames == []
