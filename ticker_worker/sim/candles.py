"""Deterministic historical candles: each is a pure function of (seed, token, interval, start).

So overlapping requests agree candle for candle. Without a market calendar sessions are
09:15-15:30 IST on every weekday; with one (`--market real`) each exchange's own hours and
trading days apply. A candle's close is the next candle's open within a session.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta

from ticker_worker.core import sessions
from ticker_worker.core.sessions import Hours
from ticker_worker.sim.noise import hash_ints, mix64, unit
from ticker_worker.sim.universe import Instrument

#: Candle length in minutes; a day candle spans the whole 375-minute session.
INTERVAL_MINUTES = {
    "minute": 1, "3minute": 3, "5minute": 5, "10minute": 10, "15minute": 15,
    "30minute": 30, "60minute": 60, "day": 375,
}
#: The longest span one request may ask for, in days (Kite answers 400 beyond it).
MAX_DAYS = {
    "minute": 60, "3minute": 100, "5minute": 100, "10minute": 100, "15minute": 200,
    "30minute": 200, "60minute": 400, "day": 2000,
}
SESSION_OPEN = time(9, 15)
SESSION_MINUTES = 375  # 09:15 to 15:30
_IST_OFFSET_MINUTES = 330
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_MONTH_MINUTES = 60 * 24 * 23
_DERIVATIVE_TYPES = ("FUT", "CE", "PE")

Candle = list[str | float | int]


class CandleMaker:
    """Candles for one instrument and one request; the level is a wave plus per-minute noise."""

    def __init__(self, seed: int, instrument: Instrument) -> None:
        self.token = instrument.instrument_token
        self.base = instrument.last_price
        self.tick = instrument.tick_size or 0.05
        self.decimals = len(f"{self.tick:.10f}".rstrip("0").split(".")[1])
        self.lot = max(1, instrument.lot_size)
        self.has_volume = instrument.segment != "INDICES"
        self.has_oi = instrument.instrument_type in _DERIVATIVE_TYPES
        h = hash_ints(seed, self.token, 0)
        self._level_key = hash_ints(seed, self.token, 1)
        self._candle_key = hash_ints(seed, self.token, 2)
        self.phase1 = unit(h) * math.tau
        self.phase2 = unit(h >> 7) * math.tau
        self._levels: dict[int, float] = {}

    def level(self, minute: int) -> float:
        """The price at an absolute epoch minute; depends on nothing else."""
        cached = self._levels.get(minute)
        if cached is None:  # a candle's close is the next one's open: compute each once
            slow = math.sin(math.tau * minute / _MONTH_MINUTES + self.phase1)
            fast = math.sin(math.tau * minute / (2 * SESSION_MINUTES) + self.phase2)
            noise = unit(mix64(self._level_key ^ minute)) - 0.5
            cached = self.base * (1 + 0.06 * slow + 0.01 * fast + 0.004 * noise)
            self._levels[minute] = cached
        return cached

    def _price(self, value: float) -> float:
        return round(max(self.tick, round(value / self.tick) * self.tick), self.decimals)

    def candle(self, stamp: str, minute: int, length: int, interval: int, with_oi: bool) -> Candle:
        """One candle of an `interval`-minute series, starting at epoch minute `minute`."""
        h = mix64(self._candle_key ^ (interval << 40) ^ minute)
        open_, close = self.level(minute), self.level(minute + length)
        spread = self.base * 0.0008 * math.sqrt(length)
        high = max(open_, close) + spread * unit(h)
        low = min(open_, close) - spread * unit(h >> 13)
        volume = self.lot * (50 + (h >> 26) % 1000) * length if self.has_volume else 0
        row: Candle = [
            stamp, self._price(open_), self._price(high), self._price(low), self._price(close),
            volume,
        ]
        if with_oi:
            wave = 1 + 0.1 * math.sin(math.tau * minute / _MONTH_MINUTES + self.phase2)
            row.append(int(self.lot * 20_000 * wave) if self.has_oi else 0)
        return row


def _session_minute(day: date, opens: time = SESSION_OPEN) -> int:
    """The epoch minute of the session open (IST) on `day`."""
    return ((day.toordinal() - _EPOCH_ORDINAL) * 1440 + opens.hour * 60 + opens.minute
            - _IST_OFFSET_MINUTES)


def _days(first: date, last: date, hours: Hours | None) -> Iterator[date]:
    day = first
    while day <= last:
        if day.weekday() < 5 if hours is None else sessions.is_trading_day(hours, day):
            yield day
        day += timedelta(days=1)


def make_candles(
    maker: CandleMaker, interval: str, start: datetime, end: datetime, with_oi: bool,
    hours: Hours | None = None,
) -> list[Candle]:
    """Candles whose start lies in [start, end] (naive IST); day candles by date.

    `hours` (the instrument's exchange session and calendar) replaces the weekday default.
    """
    length = INTERVAL_MINUTES[interval]
    opens = SESSION_OPEN if hours is None else hours.open
    minutes = SESSION_MINUTES if hours is None else hours.minutes
    rows: list[Candle] = []
    for day in _days(start.date(), end.date(), hours):
        first = _session_minute(day, opens)
        session = datetime.combine(day, opens)
        if interval == "day":
            if session <= end:  # today's day candle exists once the session opened
                rows.append(maker.candle(f"{day:%Y-%m-%d}T00:00:00+0530", first, minutes, 0,
                                         with_oi))
            continue
        for offset in range(0, minutes, length):
            at = session + timedelta(minutes=offset)
            if start <= at <= end:
                stamp = f"{at:%Y-%m-%dT%H:%M:%S}+0530"
                size = min(length, minutes - offset)
                rows.append(maker.candle(stamp, first + offset, size, length, with_oi))
    return rows
