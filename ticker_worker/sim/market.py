"""Live market state for the simulator: one random-walking quote per instrument, and its packets.

Prices are kept as integers in wire units (price x segment divisor) so encoding is one
`struct.pack` per packet, cached until the instrument's next step.
"""

from __future__ import annotations

import struct
from datetime import datetime
from functools import lru_cache
from typing import Any

from ticker_worker.core.ist import IST
from ticker_worker.kite.codec import (
    FULL_FORMAT,
    INDEX_FULL_FORMAT,
    INDEX_QUOTE_FORMAT,
    LTP_FORMAT,
    QUOTE_FORMAT,
    divisor,
    is_index,
)
from ticker_worker.sim.noise import hash_ints, mix64
from ticker_worker.sim.universe import Instrument, Universe

MODES = ("ltp", "quote", "full")
LTP, QUOTE, FULL = 0, 1, 2


def _framed(packet_format: str) -> struct.Struct:
    # A leading uint16 length lets a packet drop straight into a frame without concatenation.
    return struct.Struct(">H" + packet_format[1:])


_LTP = _framed(LTP_FORMAT)
_QUOTE = _framed(QUOTE_FORMAT)
_FULL = _framed(FULL_FORMAT)
_INDEX_QUOTE = _framed(INDEX_QUOTE_FORMAT)
_INDEX_FULL = _framed(INDEX_FULL_FORMAT)
_MASK32 = 0xFFFFFFFF
# Price moves in ticks, chosen by 4 bits of the step hash; symmetric, mostly small.
_MOVES = (-3, -2, -2, -1, -1, -1, 0, 0, 0, 0, 1, 1, 1, 2, 2, 3)
_FLOOR_TICKS = 16  # keeps 5 bid levels (at most 13 ticks down) above zero


@lru_cache(maxsize=64)
def _depth_shapes(lot: int) -> tuple[tuple[int, ...], ...]:
    """256 order-book shapes: 10 level quantities (buy then sell), 10 order counts, and 10
    price offsets in ticks from the last price (buy below, sell above).

    Real books have gaps between levels, and the last trade sits at or between the best bid
    and offer: the best bid is 0-1 ticks below it, the best offer 1 tick above (0 when the bid
    is a tick below), and each further level 1-3 ticks beyond the previous one.
    """
    shapes = []
    for n in range(256):
        hs = [hash_ints(lot, n, level) for level in range(10)]
        quantities = [lot * (1 + h % 200) for h in hs]
        orders = [1 + (h >> 20) % 25 for h in hs]
        first_bid = hs[0] >> 40 & 1
        offsets = _offsets(first_bid, hs[:5]) + _offsets(1 - first_bid, hs[5:])
        shapes.append((*quantities, *orders, *offsets))
    return tuple(shapes)


def _offsets(first: int, hs: list[int]) -> list[int]:
    offsets, at = [], first
    for h in hs:
        offsets.append(at)
        at += 1 + (h >> 48) % 3
    return offsets


class TokenState:
    """One tradable instrument's current quote; `advance` moves it one tick."""

    __slots__ = (
        "_full", "_ltp", "_quote", "avg", "buy_qty", "close", "epoch", "has_oi", "high", "key",
        "lot", "low", "lower", "ltq", "oi", "oi_high", "oi_low", "open", "price", "sell_qty",
        "sent", "shape", "shapes", "step", "steps", "tick", "token", "upper", "volume",
    )

    def __init__(self, instrument: Instrument, seed: int, now: int) -> None:
        self.token = token = instrument.instrument_token
        div = divisor(token)
        self.tick = tick = max(1, round(instrument.tick_size * div))
        base = max(round(instrument.last_price * div) // tick * tick, _FLOOR_TICKS * tick)
        # Expensive instruments move several ticks at a time, as an index level does.
        self.step = tick * max(1, base // (tick * 20_000))
        self.key = hash_ints(seed, token)
        h = mix64(self.key)
        self.lot = max(1, instrument.lot_size)
        self.close = base
        self.open = max(base + ((h & 0x3F) - 32) * tick, _FLOOR_TICKS * tick)
        self.price = self.high = self.low = self.avg = self.open
        self.lower, self.upper = base * 9 // 10, base * 11 // 10
        self.ltq = self.lot
        self.volume = self.lot * ((h >> 8) & 0xFFFF)
        self.buy_qty = self.sell_qty = self.lot * 500
        self.has_oi = instrument.instrument_type in ("FUT", "CE", "PE")
        self.oi = self.lot * (1000 + ((h >> 24) & 0xFFFF)) if self.has_oi else 0
        self.oi_high = self.oi_low = self.oi
        self.shapes = _depth_shapes(self.lot)
        self.shape = self.shapes[(h >> 40) & 0xFF]
        self.epoch = now
        self.steps = self.sent = 0
        self._ltp = self._quote = self._full = b""

    def _walk(self) -> int:
        """Step the price; return the step's hash for the other fields to draw from."""
        h = mix64(self.key + self.steps)
        self.steps += 1
        move = _MOVES[h & 15]
        price = self.price
        if price > self.upper:  # drift back toward the previous close, so prices stay sane
            move = -abs(move)
        elif price < self.lower:
            move = abs(move)
        price = max(price + move * self.step, _FLOOR_TICKS * self.tick)
        self.price = price
        if price > self.high:
            self.high = price
        elif price < self.low:
            self.low = price
        self._ltp = self._quote = self._full = b""
        return h

    def advance(self, now: int) -> None:
        """Move one tick: new price, and a trade whose quantity is added to the volume."""
        h = self._walk()
        lot = self.lot
        self.ltq = ltq = lot * (1 + ((h >> 4) & 31))
        # A consumer counts missed ticks from volume: it grows by exactly ltq per tick.
        self.volume = (self.volume + ltq) & _MASK32
        self.avg += (self.price - self.avg) // 16
        self.buy_qty = lot * (500 + ((h >> 9) & 0x3FF))
        self.sell_qty = lot * (500 + ((h >> 19) & 0x3FF))
        self.shape = self.shapes[(h >> 29) & 0xFF]
        if self.has_oi:
            self.oi = oi = max(0, self.oi + lot * (((h >> 37) & 15) - 7))
            self.oi_high = max(self.oi_high, oi)
            self.oi_low = min(self.oi_low, oi)
        self.epoch = now

    def ltp_packet(self) -> bytes:
        """The length-prefixed 8-byte LTP packet for the current step."""
        if not self._ltp:
            self._ltp = _LTP.pack(8, self.token, self.price)
        return self._ltp

    def quote_packet(self) -> bytes:
        """The length-prefixed quote packet for the current step."""
        if not self._quote:
            self._quote = _QUOTE.pack(
                44, self.token, self.price, self.ltq, self.avg, self.volume, self.buy_qty,
                self.sell_qty, self.open, self.high, self.low, self.close,
            )
        return self._quote

    def full_packet(self) -> bytes:
        """The length-prefixed full packet (with 5+5 depth) for the current step."""
        if not self._full:
            p, t, s, e = self.price, self.tick, self.shape, self.epoch
            self._full = _FULL.pack(
                184, self.token, p, self.ltq, self.avg, self.volume, self.buy_qty,
                self.sell_qty, self.open, self.high, self.low, self.close, e, self.oi,
                self.oi_high, self.oi_low, e,
                s[0], p - s[20] * t, s[10], s[1], p - s[21] * t, s[11],
                s[2], p - s[22] * t, s[12], s[3], p - s[23] * t, s[13],
                s[4], p - s[24] * t, s[14],
                s[5], p + s[25] * t, s[15], s[6], p + s[26] * t, s[16],
                s[7], p + s[27] * t, s[17], s[8], p + s[28] * t, s[18],
                s[9], p + s[29] * t, s[19],
            )
        return self._full

    def snapshot(self, now: int) -> dict[str, Any]:
        """The `/quote` entry for this instrument, in Kite's REST shape."""
        div = divisor(self.token)
        p, t, s = self.price, self.tick, self.shape
        levels = [(s[i], p - s[20 + i] * t, s[10 + i]) for i in range(5)]
        levels += [(s[5 + i], p + s[25 + i] * t, s[15 + i]) for i in range(5)]
        depth = [{"price": price / div, "quantity": q, "orders": o} for q, price, o in levels]
        return {
            "instrument_token": self.token,
            "timestamp": _ist_text(now),
            "last_trade_time": _ist_text(self.epoch),
            "last_price": p / div,
            "last_quantity": self.ltq,
            "buy_quantity": self.buy_qty,
            "sell_quantity": self.sell_qty,
            "volume": self.volume,
            "average_price": self.avg / div,
            "oi": self.oi,
            "oi_day_high": self.oi_high,
            "oi_day_low": self.oi_low,
            "net_change": round((p - self.close) / div, 4),
            "lower_circuit_limit": (self.close * 8 // 10 // t * t) / div,
            "upper_circuit_limit": (self.close * 12 // 10 // t * t) / div,
            "ohlc": self.ohlc(),
            "depth": {"buy": depth[:5], "sell": depth[5:]},
        }

    def last_price(self) -> float:
        """The current price in rupees (or the pair's currency)."""
        return self.price / divisor(self.token)

    def ohlc(self) -> dict[str, float]:
        """The day's open, high, low and previous close as prices."""
        div = divisor(self.token)
        return {
            "open": self.open / div, "high": self.high / div,
            "low": self.low / div, "close": self.close / div,
        }


class IndexState(TokenState):
    """An index: no trades, volume or depth, and the 28/32-byte index packet layouts."""

    __slots__ = ()

    def __init__(self, instrument: Instrument, seed: int, now: int) -> None:
        super().__init__(instrument, seed, now)
        self.ltq = self.volume = self.buy_qty = self.sell_qty = 0
        self.shape = (0,) * 30  # an index has no order book

    def advance(self, now: int) -> None:
        """Move the index level one tick."""
        self._walk()
        self.epoch = now

    def snapshot(self, now: int) -> dict[str, Any]:
        """An index's `/quote` entry: a level and its day, no trades, depth or circuit limits."""
        div = divisor(self.token)
        return {
            "instrument_token": self.token, "timestamp": _ist_text(now),
            "last_price": self.price / div,
            "net_change": round((self.price - self.close) / div, 4), "ohlc": self.ohlc(),
        }

    def quote_packet(self) -> bytes:
        """The length-prefixed 28-byte index quote packet."""
        if not self._quote:
            self._quote = _INDEX_QUOTE.pack(
                28, self.token, self.price, self.high, self.low, self.open, self.close,
                (self.price - self.close) & _MASK32,
            )
        return self._quote

    def full_packet(self) -> bytes:
        """The length-prefixed 32-byte index full packet."""
        if not self._full:
            self._full = _INDEX_FULL.pack(
                32, self.token, self.price, self.high, self.low, self.open, self.close,
                (self.price - self.close) & _MASK32, self.epoch,
            )
        return self._full


def _ist_text(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, IST).strftime("%Y-%m-%d %H:%M:%S")


class Market:
    """Every instrument's state, created on first use from the universe."""

    def __init__(self, universe: Universe, seed: int) -> None:
        self.universe = universe
        self.seed = seed
        self.states: dict[int, TokenState] = {}

    def state(self, token: int, now: int) -> TokenState | None:
        """Return the token's state, or None when the token is not in the universe."""
        state = self.states.get(token)
        if state is None:
            instrument = self.universe.by_token.get(token)
            if instrument is None:
                return None
            cls = IndexState if is_index(token) else TokenState
            state = self.states[token] = cls(instrument, self.seed, now)
        return state

    def reset(self) -> None:
        """Forget every state, so the next subscription starts its walk afresh."""
        self.states.clear()
