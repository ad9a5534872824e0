"""Mock ticks outside market hours (`MOCK_OUTSIDE_MARKET_HOURS=true`), the original service's mock
mode done right: only for wanted instruments whose session is closed, continuing from their
last real price, flagged `"is_mock": true`, on the same ticks channel, and silent once the
instrument's session opens (real ticks take over).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson
import redis.asyncio as aioredis

from ticker_worker.bootstrap import Runtime
from ticker_worker.config import Settings
from ticker_worker.core import sessions
from ticker_worker.core.ist import IST
from ticker_worker.db import candles, subscriptions
from ticker_worker.kite.codec import is_index

log = logging.getLogger(__name__)

Wanted = Callable[[], Mapping[int, str]]  # token -> mode, of every wanted instrument
LastPrices = Callable[[Iterable[int]], Mapping[int, float]]  # the last real price we know
Publish = Callable[[bytes], Awaitable[None]]
TICK = 0.05
WANTED_REFRESH = 5.0  # seconds between reads of the wanted set (a database query)


class _Walk:
    """One instrument's simulated day: a random walk from its last real price."""

    def __init__(self, token: int, price: float, rng: random.Random) -> None:
        self.token, self.close, self.rng = token, price, rng
        self.price = self.open = self.high = self.low = price
        self.volume = 0

    def step(self) -> None:
        moved = self.price * (1 + self.rng.gauss(0, 0.0004))
        self.price = max(TICK, round(round(moved / TICK) * TICK, 2))
        self.high, self.low = max(self.high, self.price), min(self.low, self.price)
        self.volume += self.rng.randint(1, 50)

    def tick(self, mode: str, stamp: str) -> dict[str, Any]:
        """A tick with the official client's key names for `mode`."""
        tick: dict[str, Any] = {"tradable": not is_index(self.token), "mode": mode,
                                "instrument_token": self.token, "last_price": self.price}
        if mode != "ltp":
            change = (self.price - self.close) * 100 / self.close if self.close else 0.0
            tick["ohlc"] = {"open": self.open, "high": self.high, "low": self.low,
                            "close": self.close}
            tick["change"] = change
            if not is_index(self.token):
                tick.update(last_traded_quantity=1, average_traded_price=self.price,
                            volume_traded=self.volume, total_buy_quantity=0,
                            total_sell_quantity=0)
        if mode == "full":
            tick["exchange_timestamp"] = stamp
            if not is_index(self.token):
                tick.update(last_trade_time=stamp, oi=0, oi_day_high=0, oi_day_low=0,
                            depth={"buy": [], "sell": []})
        tick["is_mock"] = True
        return tick


class MockTicks:
    """Publishes one frame of mock ticks per interval for the closed, wanted instruments."""

    def __init__(
        self, settings: Settings, wanted: Wanted, last_prices: LastPrices, publish: Publish,
        *, clock: Callable[[], float] = time.time, interval: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        self.settings, self.wanted, self.last_prices, self.publish = (
            settings, wanted, last_prices, publish)
        self.clock, self.interval = clock, interval
        self.rng = rng or random.Random()
        self.walks: dict[int, _Walk] = {}
        self._wanted: Mapping[int, str] = {}
        self._wanted_at = float("-inf")
        self._unpriced: set[int] = set()  # asked already; asked again after the next refresh
        self.published = 0

    async def run(self) -> None:
        """Step forever (the holder starts this only when mock mode is on)."""
        while True:
            try:
                await self.step()
            except Exception:  # a failed read or publish must not end mock mode
                log.exception("mock ticks: step failed")
            await asyncio.sleep(self.interval)

    async def step(self) -> list[dict[str, Any]]:
        """One frame: the closed instruments' ticks, published as one JSON array."""
        now = self.clock()
        if now - self._wanted_at >= WANTED_REFRESH:
            self._wanted = await asyncio.to_thread(self.wanted)
            self._wanted_at = now
            self._unpriced.clear()
        moment = datetime.fromtimestamp(now, IST)
        closed = {t: m for t, m in self._wanted.items()
                  if not sessions.is_open(sessions.hours_for_token(t), moment)}
        for token in [t for t in self.walks if t not in closed]:
            del self.walks[token]  # opened (or unwanted): the next close starts from real prices
        await self._start_walks([t for t in closed
                                 if t not in self.walks and t not in self._unpriced])
        stamp = moment.isoformat()
        ticks = []
        for token, mode in closed.items():
            walk = self.walks.get(token)
            if walk is not None:
                walk.step()
                ticks.append(walk.tick(mode, stamp))
        if ticks:
            await self.publish(orjson.dumps(ticks))
            self.published += len(ticks)
        return ticks

    async def _start_walks(self, tokens: list[int]) -> None:
        if not tokens:
            return
        prices = await asyncio.to_thread(self.last_prices, tokens)
        for token in tokens:
            price = prices.get(token)
            if price:
                self.walks[token] = _Walk(token, float(price), self.rng)
            else:  # no real price known yet: nothing honest to continue from
                self._unpriced.add(token)


def from_runtime(
    rt: Runtime, aredis: aioredis.Redis, may_publish: Callable[[], bool]
) -> MockTicks:
    """Mock ticks wired to this process: wanted rows and last prices from Postgres, Redis out.

    Only the active holder publishes (`may_publish`: the lease), as for real ticks.
    """

    def wanted() -> Mapping[int, str]:
        with rt.engine.connect() as conn:
            return subscriptions.wanted_modes(conn)

    def last_prices(tokens: Iterable[int]) -> Mapping[int, float]:
        with rt.engine.connect() as conn:
            return candles.last_prices(conn, list(tokens))

    async def publish(body: bytes) -> None:
        if may_publish():
            await aredis.publish(rt.keys.ticks, body)

    return MockTicks(rt.settings, wanted, last_prices, publish)
