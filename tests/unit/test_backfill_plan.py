"""Backfill planning (pure): input validation, sessions as the look-back, IST, gap windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ticker_worker.backfill import (
    INTERVALS,
    MAX_DAYS,
    MAX_DAYS_PER_REQUEST,
    order_accounts,
    parse_days,
    parse_interval,
)
from ticker_worker.core.backfill_plan import (
    Window,
    gap_window,
    naive_ist,
    session_windows,
    sessions_start,
)
from ticker_worker.core.ist import IST
from ticker_worker.core.sessions import NSE_EQUITY
from ticker_worker.db.accounts import AccountRow
from ticker_worker.errors import InvalidDays, InvalidInterval, InvalidRequest, InvalidWindow

NOW = datetime(2025, 3, 7, 10, 0, tzinfo=UTC)  # 15:30 IST, a Friday


@pytest.mark.parametrize("name", list(INTERVALS))
def test_each_kite_interval_is_accepted(name: str) -> None:
    assert parse_interval(name) == name
    assert parse_interval(f" {name.upper()} ") == name


@pytest.mark.parametrize("bad", ["1minute", "hour", "", None, 5, ["minute"]])
def test_unknown_interval_is_refused_naming_it(bad: object) -> None:
    with pytest.raises(InvalidInterval, match="unknown interval") as caught:
        parse_interval(bad)
    assert repr(bad) in str(caught.value)
    assert isinstance(caught.value, InvalidRequest)


@pytest.mark.parametrize("good", [1, 5, MAX_DAYS])
def test_days_in_range_are_accepted(good: int) -> None:
    assert parse_days(good) == good


@pytest.mark.parametrize("bad", [0, -1, MAX_DAYS + 1, True, 1.5, "5", None])
def test_bad_days_are_refused_naming_them(bad: object) -> None:
    with pytest.raises(InvalidDays) as caught:
        parse_days(bad)
    assert repr(bad) in str(caught.value)


def test_utc_becomes_naive_ist_wall_clock() -> None:
    assert naive_ist(datetime(2025, 3, 7, 3, 45, 30, 999, tzinfo=UTC)) == datetime(
        2025, 3, 7, 9, 15, 30)
    ist = timezone(timedelta(hours=5, minutes=30))
    assert naive_ist(datetime(2025, 3, 7, 9, 15, tzinfo=ist)) == datetime(2025, 3, 7, 9, 15)


def test_naive_input_is_refused_rather_than_guessed() -> None:
    with pytest.raises(ValueError, match="no UTC offset"):
        naive_ist(datetime(2025, 3, 7, 9, 15))


def ist(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=IST)


def test_days_count_trading_sessions_not_calendar_days() -> None:
    # Five sessions back from Friday 15:30: Monday the 3rd; from Monday 08:00 (before its open),
    # the five are the previous week's.
    assert sessions_start(NSE_EQUITY, NOW, 5) == ist(2025, 3, 3, 9, 15)
    assert sessions_start(NSE_EQUITY, ist(2025, 3, 10, 8), 5) == ist(2025, 3, 3, 9, 15)
    # Wednesday 26 Feb 2025 (Maha Shivaratri) is no session: six back from Friday 7 March
    # reach Thursday the 27th, seven reach Tuesday the 25th.
    assert sessions_start(NSE_EQUITY, NOW, 6) == ist(2025, 2, 28, 9, 15)
    assert sessions_start(NSE_EQUITY, NOW, 7) == ist(2025, 2, 27, 9, 15)
    assert sessions_start(NSE_EQUITY, NOW, 8) == ist(2025, 2, 25, 9, 15)


def test_a_monday_morning_backfill_asks_for_fridays_session_only() -> None:
    monday = ist(2025, 3, 10, 8, 0)
    start = sessions_start(NSE_EQUITY, monday, 1)
    assert start is not None
    assert session_windows(NSE_EQUITY, start, monday, "minute", 60) == [
        Window(datetime(2025, 3, 7, 9, 15), datetime(2025, 3, 7, 15, 30))]


def test_a_window_without_a_session_costs_no_request() -> None:
    assert session_windows(NSE_EQUITY, ist(2025, 3, 8), ist(2025, 3, 9, 23), "minute", 60) == []
    assert session_windows(NSE_EQUITY, ist(2025, 3, 7, 16), ist(2025, 3, 10, 9), "day",
                           2000) == []


def test_consecutive_sessions_share_a_request_within_the_cap() -> None:
    windows = session_windows(NSE_EQUITY, ist(2025, 3, 3), ist(2025, 3, 7, 16), "minute", 60)
    assert windows == [Window(datetime(2025, 3, 3, 9, 15), datetime(2025, 3, 7, 15, 30))]
    day = session_windows(NSE_EQUITY, ist(2025, 3, 3), ist(2025, 3, 7, 16), "day", 2000)
    assert day == [Window(datetime(2025, 3, 3), datetime(2025, 3, 7, 15, 30))]


@pytest.mark.parametrize(("interval", "days", "requests"), [
    ("day", 2000, 1), ("60minute", 400, 1), ("15minute", 600, 3), ("minute", 60, 1),
    ("minute", 150, 3),
])
def test_request_count_follows_kite_caps(interval: str, days: int, requests: int) -> None:
    start = NOW - timedelta(days=days) + timedelta(seconds=1)
    windows = session_windows(NSE_EQUITY, start, NOW, interval, MAX_DAYS_PER_REQUEST[interval])
    assert len(windows) == requests


@given(
    interval=st.sampled_from(list(INTERVALS)),
    span=st.integers(min_value=0, max_value=3000 * 86400),
)
def test_windows_cover_only_sessions_within_the_cap(interval: str, span: int) -> None:
    start = NOW - timedelta(seconds=span)
    windows = session_windows(NSE_EQUITY, start, NOW, interval, MAX_DAYS_PER_REQUEST[interval])
    cap = timedelta(days=MAX_DAYS_PER_REQUEST[interval])
    for w in windows:
        assert w.start <= w.end and w.end - w.start < cap
        assert w.end.time() <= NSE_EQUITY.close
        assert w.start.weekday() < 5 and w.end.weekday() < 5
    for before, after in pairwise(windows):
        assert after.start > before.end


def test_gap_windows_round_out_to_whole_candles() -> None:
    five = INTERVALS["5minute"]
    first, last = gap_window("2025-03-07T10:03:20+05:30", "2025-03-07T04:37:40Z", NSE_EQUITY,
                             five, NOW)
    assert (first, last) == (ist(2025, 3, 7, 10, 0), ist(2025, 3, 7, 10, 5))
    first, last = gap_window("2025-03-07T10:03:20+05:30", None, NSE_EQUITY,
                             INTERVALS["minute"], NOW)
    assert first == ist(2025, 3, 7, 10, 3) and last == ist(2025, 3, 7, 15, 30)


@pytest.mark.parametrize(("start", "end", "message"), [
    ("yesterday", None, "ISO-8601"),
    ("2025-03-07T10:00:00", None, "no UTC offset"),
    ("2025-03-07T10:00:00+05:30", "2025-03-07T09:00:00+05:30", "after end"),
    ("2025-03-08T10:00:00+05:30", None, "in the future"),
    ("2010-03-07T10:00:00+05:30", None, "longer than 2000 days"),
    (1741321800, None, "ISO-8601 string"),
])
def test_bad_gap_windows_are_refused_clearly(start: object, end: object, message: str) -> None:
    with pytest.raises(InvalidWindow, match=message):
        gap_window(start, end, NSE_EQUITY, INTERVALS["minute"], NOW)


def _account(name: str, enabled: bool = True, healthy: bool = True) -> AccountRow:
    return AccountRow(name, f"key-{name}", f"token-{name}", enabled, healthy, None)


def test_only_enabled_healthy_accounts_are_used() -> None:
    rows = [_account("c"), _account("a", healthy=False), _account("b", enabled=False)]
    assert [a.name for a in order_accounts(rows, 1)] == ["c"]
    assert order_accounts([_account("a", healthy=False)], 1) == []


def test_account_order_rotates_with_the_token() -> None:
    rows = [_account("c"), _account("a"), _account("b")]
    assert [a.name for a in order_accounts(rows, 3)] == ["a", "b", "c"]
    assert [a.name for a in order_accounts(rows, 4)] == ["b", "c", "a"]
    assert [a.name for a in order_accounts(rows, 5)] == ["c", "a", "b"]
