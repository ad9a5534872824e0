"""The simulator's data looks like Kite's: books with gaps, index quotes without a book, equity
tick and lot sizes that vary, integers where Kite sends integers."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from kiteconnect import KiteConnect

from tests.sim.conftest import ThreadedSim
from ticker_worker.kite.codec import decode_frame
from ticker_worker.sim.accounts import Account
from ticker_worker.sim.market import FULL
from ticker_worker.sim.server import SimConfig
from ticker_worker.sim.state import Simulator
from ticker_worker.sim.universe import build_universe, equity_tick

_keys = itertools.count()


@pytest.fixture
def kite(sim: ThreadedSim) -> KiteConnect:
    return KiteConnect(f"real-{next(_keys)}", access_token="token", root=sim.http)


def _equities() -> list[str]:
    return [i.key for i in build_universe(1).instruments
            if i.instrument_type == "EQ" and i.segment == "NSE"][:500]


def test_books_have_gaps_and_the_last_price_sits_inside(kite: KiteConnect) -> None:
    quotes = kite.quote(_equities())
    assert len(quotes) == 500
    gaps = Counter()
    for q in quotes.values():
        buy, sell = q["depth"]["buy"], q["depth"]["sell"]
        assert buy[0]["price"] <= q["last_price"] <= sell[0]["price"]
        assert [b["price"] for b in buy] == sorted((b["price"] for b in buy), reverse=True)
        assert [s["price"] for s in sell] == sorted(s["price"] for s in sell)
        assert all(type(level[k]) is int for level in buy + sell for k in ("quantity", "orders"))
        assert all(type(q[k]) is int for k in ("volume", "last_quantity", "buy_quantity",
                                               "sell_quantity", "oi", "instrument_token"))
        tick = equity_tick(q["ohlc"]["close"])
        gaps.update(round((a["price"] - b["price"]) / tick) for a, b in itertools.pairwise(buy))
    assert {1, 2, 3} <= set(gaps)  # levels one, two and three ticks apart


def test_index_quotes_carry_no_depth_and_no_circuit_limits(kite: KiteConnect) -> None:
    nifty = kite.quote("NSE:NIFTY 50")["NSE:NIFTY 50"]
    assert nifty["last_price"] > 0 and set(nifty["ohlc"]) == {"open", "high", "low", "close"}
    assert not {"depth", "lower_circuit_limit", "upper_circuit_limit", "volume"} & set(nifty)


def test_equity_tick_and_lot_sizes_vary_as_in_the_dump() -> None:
    equities = [i for i in build_universe(1).instruments
                if i.instrument_type == "EQ" and i.segment in ("NSE", "BSE")]
    ticks = Counter(i.tick_size for i in equities)
    assert {0.01, 0.05, 0.1} <= set(ticks)
    assert all(round(i.last_price / i.tick_size, 6).is_integer() for i in equities)
    lots = Counter(i.lot_size for i in equities)
    assert lots[1] > 0.9 * len(equities) and len(lots) > 3  # a few SME listings trade in lots


def test_full_packets_carry_the_same_gapped_book() -> None:
    sim = Simulator(SimConfig())
    conn = sim.hub.open(Account("k", None), ws=None)  # type: ignore[arg-type]
    assert conn is not None
    tokens = [i.instrument_token for i in sim.universe.instruments
              if i.instrument_type == "EQ" and i.segment == "NSE"][:200]
    sim.hub.subscribe(conn, tokens)
    sim.hub.set_mode(conn, FULL, tokens)
    frame = conn.frame()
    assert frame is not None
    widest = 0
    for tick in decode_frame(frame):
        buy, sell = tick["depth"]["buy"], tick["depth"]["sell"]
        assert buy[0]["price"] <= tick["last_price"] <= sell[0]["price"]
        widest = max(widest, round((buy[0]["price"] - buy[4]["price"]) * 100))
    assert widest > 4  # five bids span more than four ticks somewhere: the book has gaps
