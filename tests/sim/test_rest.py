"""The official KiteConnect client, unchanged but for `root=`, against the simulator's REST API."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kex

from tests.sim.conftest import ThreadedSim
from ticker_worker.sim.universe import build_universe

_keys = itertools.count()
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))


@pytest.fixture
def kite(sim: ThreadedSim) -> KiteConnect:
    """A client with an api key of its own, so rate-limit windows never leak between tests."""
    return KiteConnect(f"rest-{next(_keys)}", access_token="token", root=sim.http)


def test_instruments_parse_with_the_official_client(kite: KiteConnect) -> None:
    rows = kite.instruments()
    assert len(rows) > 90_000
    by_token = {r["instrument_token"]: r for r in rows}
    assert by_token[408065]["tradingsymbol"] == "INFY" and by_token[408065]["exchange"] == "NSE"
    assert by_token[256265]["segment"] == "INDICES"
    assert all(r["instrument_token"] & 0xFF == 9 for r in rows if r["segment"] == "INDICES")
    futures = [r for r in rows if r["instrument_type"] == "FUT"]
    assert futures and all(isinstance(r["expiry"], dt.date) for r in futures)


def test_instruments_of_one_exchange(kite: KiteConnect) -> None:
    rows = kite.instruments("CDS")
    assert rows and {r["exchange"] for r in rows} == {"CDS"}
    assert all(r["instrument_token"] & 0xFF == 3 for r in rows)
    with pytest.raises(kex.InputException):
        kite.instruments("NOPE")


def test_a_session_of_minute_candles(kite: KiteConnect) -> None:
    candles = kite.historical_data(408065, "2024-01-02 09:15:00", "2024-01-02 15:30:00", "minute")
    assert len(candles) == 375  # 09:15 .. 15:29
    assert candles[0]["date"] == dt.datetime(2024, 1, 2, 9, 15, tzinfo=IST)
    assert candles[0]["date"].utcoffset() == dt.timedelta(hours=5, minutes=30)
    assert all(c["low"] <= min(c["open"], c["close"]) for c in candles)
    assert all(c["high"] >= max(c["open"], c["close"]) for c in candles)


def test_candles_agree_across_overlapping_windows(kite: KiteConnect) -> None:
    a = kite.historical_data(408065, dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 5, 23), "5minute")
    b = kite.historical_data(408065, dt.datetime(2024, 1, 3), dt.datetime(2024, 1, 9), "5minute")
    overlap = [c for c in a if c["date"].date() >= dt.date(2024, 1, 3)]
    assert len(overlap) == 3 * 75
    assert overlap == b[: len(overlap)]


def test_day_candles_skip_weekends_and_carry_oi(kite: KiteConnect) -> None:
    future = next(i for i in build_universe(1).instruments if i.instrument_type == "FUT")
    candles = kite.historical_data(
        future.instrument_token, "2024-01-01 00:00:00", "2024-01-07 00:00:00", "day", oi=True
    )
    assert [c["date"].day for c in candles] == [1, 2, 3, 4, 5]
    assert all(c["oi"] > 0 for c in candles)


def test_over_long_span_is_refused(kite: KiteConnect) -> None:
    with pytest.raises(kex.InputException, match="interval exceeds max limit: 60 days"):
        kite.historical_data(408065, dt.datetime(2024, 1, 1), dt.datetime(2024, 3, 2), "minute")


def test_unknown_token_is_an_input_error(kite: KiteConnect) -> None:
    with pytest.raises(kex.InputException, match="Invalid instrument token"):
        kite.historical_data(999_999_999, "2024-01-02", "2024-01-03", "day")


def test_a_burst_of_historical_calls_is_rate_limited(kite: KiteConnect) -> None:
    with pytest.raises(kex.NetworkException, match="Too many requests") as caught:
        for _ in range(4):
            kite.historical_data(408065, "2024-01-02", "2024-01-03", "day")
    assert caught.value.code == 429


def test_quote_ltp_and_ohlc_parse(sim: ThreadedSim) -> None:
    keys = ["NSE:INFY", "NSE:NIFTY 50", "NSE:NO-SUCH-THING"]
    quote = KiteConnect("quote-a", access_token="t", root=sim.http).quote(*keys)
    assert set(quote) == {"NSE:INFY", "NSE:NIFTY 50"}
    infy = quote["NSE:INFY"]
    assert infy["instrument_token"] == 408065
    assert isinstance(infy["timestamp"], dt.datetime)
    assert isinstance(infy["last_trade_time"], dt.datetime)
    assert len(infy["depth"]["buy"]) == 5 and infy["ohlc"]["low"] <= infy["last_price"]
    ltp = KiteConnect("quote-b", access_token="t", root=sim.http).ltp(keys)
    assert ltp["NSE:INFY"] == {"instrument_token": 408065, "last_price": infy["last_price"]}
    ohlc = KiteConnect("quote-c", access_token="t", root=sim.http).ohlc("NSE:INFY")
    assert set(ohlc["NSE:INFY"]) == {"instrument_token", "last_price", "ohlc"}


def test_quote_family_allows_one_call_per_second(kite: KiteConnect) -> None:
    kite.ltp("NSE:INFY")
    with pytest.raises(kex.NetworkException):
        kite.ohlc("NSE:INFY")


def test_quote_caps_the_instrument_count(kite: KiteConnect) -> None:
    with pytest.raises(kex.InputException, match="at most 500"):
        kite.quote(["NSE:INFY"] * 501)


def test_missing_credentials_are_a_token_error(sim: ThreadedSim) -> None:
    with pytest.raises(kex.TokenException) as caught:
        KiteConnect("anonymous", root=sim.http).profile()
    assert caught.value.code == 403


def test_expired_key_raises_token_exception_until_a_new_token(sim: ThreadedSim) -> None:
    old = KiteConnect("expiring", access_token="day-1", root=sim.http)
    assert old.profile()["user_id"].startswith("SIM")
    assert sim.call("POST", "/_sim/expire?api_key=expiring") == (
        200, {"api_key": "expiring", "state": "expired", "connections": 0},
    )
    with pytest.raises(kex.TokenException):
        old.profile()
    assert KiteConnect("expiring", access_token="day-2", root=sim.http).profile()
    assert sim.stats()["api_keys"]["expiring"]["state"] == "ok"
    with pytest.raises(kex.TokenException):
        old.profile()


def test_unknown_routes_answer_json(sim: ThreadedSim) -> None:
    status, body = sim.call("GET", "/no/such/route")
    assert status == 404 and body["error_type"] == "GeneralException"


def test_no_candle_lies_in_the_future(kite: KiteConnect) -> None:
    now = dt.datetime.now(IST)
    start = (now - dt.timedelta(days=6)).replace(tzinfo=None)
    rows = kite.historical_data(408065, start, (now + dt.timedelta(days=5)).replace(tzinfo=None),
                                "minute")
    assert all(r["date"] <= now for r in rows)
    days = kite.historical_data(408065, start, (now + dt.timedelta(days=5)).replace(tzinfo=None),
                                "day")
    assert all(r["date"].date() <= now.date() for r in days)
