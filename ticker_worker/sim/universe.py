"""The simulator's instrument universe: a deterministic, Kite-shaped instrument dump (~100k rows).

Rows depend only on the seed and today's IST date (expiries lie ahead of it); the gzipped CSV
per exchange is built once and cached.
"""

from __future__ import annotations

import csv
import gzip
import io
import random
import zlib
from collections.abc import Iterable, Iterator
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import NamedTuple

from ticker_worker.core.ist import IST
from ticker_worker.kite.codec import EXCHANGE_SEGMENTS
from ticker_worker.sim import catalog
from ticker_worker.sim.catalog import Listed, Underlying

CSV_HEADER = (
    "instrument_token", "exchange_token", "tradingsymbol", "name", "last_price", "expiry",
    "strike", "tick_size", "lot_size", "instrument_type", "segment", "exchange",
)
#: Exchanges `/instruments/{exchange}` answers (some of them with only the header).
EXCHANGES = ("NSE", "BSE", "NFO", "BFO", "CDS", "BCD", "MCX", "MCXSX", "NCO")
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_WEEKLY_MONTH_CODES = "123456789OND"
_THURSDAY, _FRIDAY = 3, 4
_SYNTHETIC_NSE, _SYNTHETIC_BSE, _STOCK_UNDERLYINGS = 3000, 4500, 210
_STOCK_STRIKES_EACH_SIDE = 30


class Instrument(NamedTuple):
    """One row of Kite's instrument dump, in CSV column order."""

    instrument_token: int
    exchange_token: int
    tradingsymbol: str
    name: str
    last_price: float
    expiry: str
    strike: float
    tick_size: float
    lot_size: int
    instrument_type: str
    segment: str
    exchange: str

    @property
    def key(self) -> str:
        """The `EXCHANGE:TRADINGSYMBOL` key used by the quote endpoints."""
        return f"{self.exchange}:{self.tradingsymbol}"


class Universe:
    """All instruments, indexed by token and by `EXCHANGE:SYMBOL`, with cached CSV dumps."""

    def __init__(self, instruments: Iterable[Instrument]) -> None:
        self.instruments = list(instruments)
        self.by_token = {i.instrument_token: i for i in self.instruments}
        self.by_key = {i.key: i for i in self.instruments}
        if len(self.by_token) != len(self.instruments):
            raise ValueError("instrument tokens are not unique")
        self._dumps: dict[str | None, bytes] = {}

    def csv_gz(self, exchange: str | None = None) -> bytes:
        """Return the gzipped CSV dump, of every exchange or of one."""
        if exchange not in self._dumps:
            rows = (i for i in self.instruments if exchange is None or i.exchange == exchange)
            self._dumps[exchange] = gzip.compress(_to_csv(rows), compresslevel=1, mtime=0)
        return self._dumps[exchange]


def _to_csv(rows: Iterable[Instrument]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerows(rows)
    return out.getvalue().encode()


def today_ist() -> date:
    """Return today's date in India, which decides which expiries are still live."""
    return datetime.now(IST).date()


@lru_cache(maxsize=2)
def build_universe(seed: int, today: date | None = None) -> Universe:
    """Build the deterministic universe for `seed` as of `today` (default: today in IST)."""
    return Universe(_generate(random.Random(seed), today or today_ist()))


class _Tokens:
    """Hands out unique exchange tokens per segment, starting above the real anchors."""

    def __init__(self) -> None:
        self._next = {code: 40_000 for code in EXCHANGE_SEGMENTS.values()}

    def next(self, segment: int) -> tuple[int, int]:
        exchange_token = self._next[segment]
        self._next[segment] += 1
        return (exchange_token << 8) | segment, exchange_token


def _round_tick(price: float, tick: float) -> float:
    decimals = max(0, len(f"{tick:.10f}".rstrip("0").split(".")[1]))
    return round(max(tick, round(price / tick) * tick), decimals)


def _generate(rng: random.Random, today: date) -> Iterator[Instrument]:
    tokens = _Tokens()
    yield from _indices()
    stocks = list(_equities(rng, tokens))
    yield from stocks
    nse_stocks = [s for s in stocks if s.exchange == "NSE"]
    underlyings = [_stock_underlying(s) for s in nse_stocks[:_STOCK_UNDERLYINGS]]
    thursdays = _weekdays_from(today, _THURSDAY, 10)
    fridays = _weekdays_from(today, _FRIDAY, 10)
    monthly = _monthly_expiries(today, _THURSDAY, 3)
    for u in catalog.NFO_INDEX_UNDERLYINGS:
        yield from _futures(tokens, "NFO", u, monthly)
        weekly = thursdays[:8] if u.name == "NIFTY" else []
        yield from _options(rng, tokens, "NFO", u, sorted({*weekly, *monthly}), monthly)
    for u in underlyings:
        yield from _futures(tokens, "NFO", u, monthly)
        yield from _options(rng, tokens, "NFO", u, monthly, monthly)
    bfo_monthly = _monthly_expiries(today, _FRIDAY, 3)
    for u in catalog.BFO_INDEX_UNDERLYINGS:
        weekly = fridays[:6] if u.name == "SENSEX" else []
        yield from _futures(tokens, "BFO", u, bfo_monthly)
        yield from _options(rng, tokens, "BFO", u, sorted({*weekly, *bfo_monthly}), bfo_monthly)
    yield from _commodities_and_currencies(rng, tokens, today)


def _indices() -> Iterator[Instrument]:
    for exchange, listed in (("NSE", catalog.NSE_INDICES), ("BSE", catalog.BSE_INDICES)):
        for item in listed:
            token = (item.exchange_token << 8) | EXCHANGE_SEGMENTS["indices"]
            yield Instrument(
                token, item.exchange_token, item.symbol, item.name, item.price, "", 0.0, 0.05,
                0, "EQ", "INDICES", exchange,
            )


#: Equity tick sizes by price band (upper bound, tick), modelled on the exchanges' price-band
#: tick sizes that the real dump shows (0.01 for low-priced shares up to 5 for the dearest).
_EQUITY_TICKS = ((250.0, 0.01), (1000.0, 0.05), (5000.0, 0.1), (10000.0, 0.5), (20000.0, 1.0))
#: SME listings trade in lots; about one synthetic equity in twenty is one.
_SME_LOTS = (400, 600, 800, 1000, 1200, 1600, 2000, 3000)


def equity_tick(price: float) -> float:
    """The tick size of an equity trading at `price`."""
    return next((tick for bound, tick in _EQUITY_TICKS if price < bound), 5.0)


def _equity(exchange: str, exchange_token: int, item: Listed, lot: int = 1) -> Instrument:
    token = (exchange_token << 8) | EXCHANGE_SEGMENTS[exchange.lower()]
    tick = equity_tick(item.price)
    return Instrument(
        token, exchange_token, item.symbol, item.name, _round_tick(item.price, tick), "", 0.0,
        tick, lot, "EQ", exchange, exchange,
    )


def _sme_lot(symbol: str) -> int:
    # From the symbol, not the generator, so every other row stays as it was for a seed.
    h = zlib.crc32(symbol.encode())
    return _SME_LOTS[h >> 8 & 7] if h % 20 == 0 else 1


def _equities(rng: random.Random, tokens: _Tokens) -> Iterator[Instrument]:
    for item in catalog.NSE_EQUITIES:
        yield _equity("NSE", item.exchange_token, item)
    for item in catalog.NSE_EQUITIES:
        yield _equity("BSE", catalog.BSE_SCRIP_CODES[item.symbol], item)
    seen = {item.symbol for item in catalog.NSE_EQUITIES}
    for exchange, count in (("NSE", _SYNTHETIC_NSE), ("BSE", _SYNTHETIC_BSE)):
        segment = EXCHANGE_SEGMENTS[exchange.lower()]
        for _ in range(count):
            symbol = _fresh_symbol(rng, seen)
            name = f"{symbol} {rng.choice(catalog.COMPANY_SUFFIXES)}"
            price = _round_tick(10 ** rng.uniform(1.3, 3.9), 0.05)
            _, exchange_token = tokens.next(segment)
            yield _equity(exchange, exchange_token, Listed(symbol, name, exchange_token, price),
                          _sme_lot(symbol))


def _fresh_symbol(rng: random.Random, seen: set[str]) -> str:
    while True:
        symbol = "".join(rng.choices(catalog.SYLLABLES, k=rng.randint(2, 5)))
        if symbol not in seen:
            seen.add(symbol)
            return symbol


def _stock_underlying(stock: Instrument) -> Underlying:
    spot = stock.last_price
    step = next(s for s in (1.0, 2.5, 5.0, 10.0, 20.0, 50.0, 100.0, 250.0) if spot / s <= 60)
    lot = max(1, round(600_000 / spot / 25) * 25) if spot < 24_000 else 25
    return Underlying(stock.tradingsymbol, spot, step, lot, _STOCK_STRIKES_EACH_SIDE, 0.05)


def _weekdays_from(today: date, weekday: int, count: int) -> list[date]:
    first = today + timedelta(days=(weekday - today.weekday()) % 7)
    return [first + timedelta(weeks=n) for n in range(count)]


def _monthly_expiries(today: date, weekday: int, count: int) -> list[date]:
    """Last `weekday` of each month, from the current month on, skipping ones already past."""
    expiries: list[date] = []
    year, month = today.year, today.month
    while len(expiries) < count:
        nxt = date(year + month // 12, month % 12 + 1, 1)
        last = nxt - timedelta(days=(nxt.weekday() - weekday - 1) % 7 + 1)
        if last >= today:
            expiries.append(last)
        year, month = nxt.year, nxt.month
    return expiries


def _exchange_segment(exchange: str) -> int:
    return EXCHANGE_SEGMENTS[exchange.lower()]


def _futures(
    tokens: _Tokens, exchange: str, u: Underlying, expiries: Iterable[date]
) -> Iterator[Instrument]:
    for n, expiry in enumerate(expiries):
        token, exchange_token = tokens.next(_exchange_segment(exchange))
        symbol = f"{u.name}{expiry:%y}{_MONTHS[expiry.month - 1]}FUT"
        price = _round_tick(u.spot * (1 + 0.004 * (n + 1)), u.tick_size)
        yield Instrument(
            token, exchange_token, symbol, u.name, price, expiry.isoformat(), 0.0,
            u.tick_size, u.lot_size, "FUT", f"{exchange}-FUT", exchange,
        )


def _strike_text(strike: float) -> str:
    return str(int(strike)) if strike == int(strike) else f"{strike:g}"


def _options(
    rng: random.Random,
    tokens: _Tokens,
    exchange: str,
    u: Underlying,
    expiries: Iterable[date],
    monthly: list[date],
) -> Iterator[Instrument]:
    atm = round(u.spot / u.strike_step) * u.strike_step
    segment = _exchange_segment(exchange)
    for expiry in expiries:
        if expiry in monthly:
            stem = f"{u.name}{expiry:%y}{_MONTHS[expiry.month - 1]}"
        else:
            stem = f"{u.name}{expiry:%y}{_WEEKLY_MONTH_CODES[expiry.month - 1]}{expiry:%d}"
        for k in range(-u.strikes_each_side, u.strikes_each_side + 1):
            strike = round(atm + k * u.strike_step, 4)
            for kind in ("CE", "PE"):
                intrinsic = max(0.0, (u.spot - strike) if kind == "CE" else (strike - u.spot))
                value = intrinsic + u.spot * 0.004 * rng.uniform(0.5, 1.5)
                token, exchange_token = tokens.next(segment)
                yield Instrument(
                    token, exchange_token, f"{stem}{_strike_text(strike)}{kind}", u.name,
                    _round_tick(value, u.tick_size), expiry.isoformat(), strike, u.tick_size,
                    u.lot_size, kind, f"{exchange}-OPT", exchange,
                )


def _commodities_and_currencies(
    rng: random.Random, tokens: _Tokens, today: date
) -> Iterator[Instrument]:
    mcx_monthly = _monthly_expiries(today, _THURSDAY, 6)
    for u in catalog.MCX_UNDERLYINGS:
        yield from _futures(tokens, "MCX", u, mcx_monthly)
        if u.strikes_each_side:
            yield from _options(rng, tokens, "MCX", u, mcx_monthly[:2], mcx_monthly)
    fx_monthly = _monthly_expiries(today, _FRIDAY - 2, 6)
    fx_weekly = _weekdays_from(today, _FRIDAY, 6)
    for exchange in ("CDS", "BCD"):
        for u in catalog.CURRENCY_UNDERLYINGS:
            yield from _futures(tokens, exchange, u, fx_monthly)
            if u.strikes_each_side and (exchange == "CDS" or u.name == "USDINR"):
                expiries = sorted({*fx_weekly, *fx_monthly[:3]})
                yield from _options(rng, tokens, exchange, u, expiries, fx_monthly)
