"""The simulator's pure parts: the instrument universe, candles, accounts and the message parser."""

from __future__ import annotations

import csv
import gzip
import io
import re
from datetime import date, datetime

import pytest

from ticker_worker.kite.codec import EXCHANGE_SEGMENTS
from ticker_worker.sim.accounts import Accounts, RestRateWindows
from ticker_worker.sim.candles import CandleMaker, make_candles
from ticker_worker.sim.universe import CSV_HEADER, build_universe
from ticker_worker.sim.ws import ProtocolError, parse_message

TODAY = date(2026, 11, 27)
SEGMENT_OF = {"INDICES": 9, **{k.upper(): v for k, v in EXCHANGE_SEGMENTS.items()}}


def test_the_dump_is_kite_shaped() -> None:
    text = gzip.decompress(build_universe(3, TODAY).csv_gz()).decode()
    rows = list(csv.reader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_HEADER
    body = rows[1:]
    assert 90_000 < len(body) < 110_000
    assert len({r[0] for r in body}) == len(body)
    for row in body:
        token, segment, exchange = int(row[0]), row[10], row[11]
        assert token & 0xFF == SEGMENT_OF[segment.split("-")[0]], row
        assert token >> 8 == int(row[1])
        assert segment == "INDICES" or segment.startswith(exchange), row
        assert all(row[i] for i in (0, 4, 6, 7, 8)), row
        assert row[5] == "" or (re.fullmatch(r"\d{4}-\d{2}-\d{2}", row[5]) and row[5] >= "2026-11-27")


def test_anchor_instruments_keep_their_real_tokens() -> None:
    by_key = build_universe(3, TODAY).by_key
    assert {k: by_key[k].instrument_token for k in ("NSE:INFY", "NSE:RELIANCE", "NSE:ACC")} == {
        "NSE:INFY": 408065, "NSE:RELIANCE": 738561, "NSE:ACC": 5633,
    }
    assert by_key["NSE:NIFTY 50"].instrument_token == 256265
    assert by_key["NSE:NIFTY BANK"].instrument_token == 260105


def test_the_universe_is_deterministic_per_seed() -> None:
    assert build_universe(5, TODAY).instruments == build_universe(5, TODAY).instruments
    assert build_universe(5, TODAY).instruments != build_universe(6, TODAY).instruments
    segments = {i.segment for i in build_universe(5, TODAY).instruments}
    assert {"NFO-OPT", "NFO-FUT", "BFO-OPT", "MCX-FUT", "CDS-FUT", "BCD-OPT", "INDICES"} <= segments


def test_candles_depend_only_on_their_start() -> None:
    infy = build_universe(1, TODAY).by_key["NSE:INFY"]
    maker = CandleMaker(1, infy)
    wide = make_candles(maker, "15minute", datetime(2024, 3, 4), datetime(2024, 3, 8, 23), False)
    narrow = make_candles(maker, "15minute", datetime(2024, 3, 6, 10), datetime(2024, 3, 6, 11), False)
    assert [c[0] for c in narrow] == [f"2024-03-06T{t}:00+0530" for t in ("10:00", "10:15", "10:30", "10:45", "11:00")]
    assert all(c in wide for c in narrow)
    hourly = make_candles(maker, "60minute", datetime(2024, 3, 4), datetime(2024, 3, 4, 23), True)
    assert [c[0][11:16] for c in hourly] == ["09:15", "10:15", "11:15", "12:15", "13:15", "14:15", "15:15"]
    assert all(len(c) == 7 and c[6] == 0 for c in hourly)  # equities carry no OI


def test_an_expired_key_accepts_only_a_new_token() -> None:
    accounts = Accounts(None)
    assert accounts.authenticate("k", "day-1") and not accounts.authenticate("k", "")
    accounts.by_key["k"].expire()
    assert accounts.authenticate("k", "day-1") is None
    assert accounts.by_key["k"].state == "expired"
    assert accounts.authenticate("k", "day-2") and accounts.by_key["k"].state == "ok"
    accounts.by_key["k"].restore()
    assert accounts.authenticate("k", "day-1")


def test_rate_limiter_is_a_sliding_one_second_window() -> None:
    now = [0.0]
    limiter = RestRateWindows(clock=lambda: now[0])
    assert [limiter.allow("k", "historical", 3) for _ in range(4)] == [True, True, True, False]
    now[0] = 0.999
    assert not limiter.allow("k", "historical", 3)
    assert limiter.allow("other", "historical", 3)
    now[0] = 1.0
    assert limiter.allow("k", "historical", 3)


def test_control_messages_parse() -> None:
    assert parse_message('{"a": "mode", "v": ["full", [1, 2]]}').tokens == [1, 2]
    assert parse_message('{"a": "subscribe", "v": []}').action == "subscribe"
    for bad in ('{"a": "subscribe", "v": [true]}', '{"a": "subscribe", "v": [-1]}',
                '{"a": "mode", "v": ["full", 1]}', '{"v": [1]}', "null"):
        with pytest.raises(ProtocolError):
            parse_message(bad)
