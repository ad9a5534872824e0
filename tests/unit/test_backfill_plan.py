"""Backfill planning (pure): input validation, the look-back rule, IST conversion, chunking."""

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
    Window,
    lookback_start,
    order_accounts,
    parse_days,
    parse_interval,
    plan_windows,
    to_ist_naive,
)
from ticker_worker.db.accounts import AccountRow
from ticker_worker.errors import InvalidDays, InvalidInterval, InvalidRequest

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
    assert to_ist_naive(datetime(2025, 3, 7, 3, 45, 30, 999, tzinfo=UTC)) == datetime(
        2025, 3, 7, 9, 15, 30)
    ist = timezone(timedelta(hours=5, minutes=30))
    assert to_ist_naive(datetime(2025, 3, 7, 9, 15, tzinfo=ist)) == datetime(2025, 3, 7, 9, 15)


def test_naive_input_is_refused_rather_than_guessed() -> None:
    with pytest.raises(ValueError, match="no UTC offset"):
        to_ist_naive(datetime(2025, 3, 7, 9, 15))


def test_lookback_without_stored_candles_is_days_back() -> None:
    assert lookback_start(NOW, 5, None, "minute") == NOW - timedelta(days=5)


def test_lookback_resumes_one_interval_after_the_last_candle() -> None:
    last = NOW - timedelta(hours=1)
    assert lookback_start(NOW, 5, last, "minute") == last + timedelta(minutes=1)
    assert lookback_start(NOW, 5, last, "15minute") == last + timedelta(minutes=15)


def test_lookback_never_reaches_further_back_than_days() -> None:
    long_ago = NOW - timedelta(days=30)
    assert lookback_start(NOW, 5, long_ago, "day") == NOW - timedelta(days=5)


def test_windows_are_sent_as_ist() -> None:
    start = datetime(2025, 3, 3, 3, 45, tzinfo=UTC)  # Monday 09:15 IST
    assert plan_windows(start, NOW, "minute") == [
        Window(datetime(2025, 3, 3, 9, 15), datetime(2025, 3, 7, 15, 30))]


def test_150_days_of_minutes_take_three_requests() -> None:
    windows = plan_windows(NOW - timedelta(days=150), NOW, "minute")
    assert len(windows) == 3
    assert windows[0].end - windows[0].start == timedelta(days=60, seconds=-1)
    assert windows[1].start == windows[0].end + timedelta(seconds=1)
    assert windows[-1].end == to_ist_naive(NOW)


@pytest.mark.parametrize(("interval", "days", "requests"), [
    ("day", 2000, 1), ("day", 2001, 2), ("60minute", 400, 1), ("60minute", 401, 2),
    ("15minute", 600, 3), ("3minute", 100, 1), ("minute", 60, 1), ("minute", 61, 2),
])
def test_request_count_follows_kite_caps(interval: str, days: int, requests: int) -> None:
    # A span of exactly the cap is one request: its last second falls in the one window.
    start = NOW - timedelta(days=days) + timedelta(seconds=1)
    assert len(plan_windows(start, NOW, interval)) == requests


def test_nothing_to_fetch_when_start_is_after_now() -> None:
    assert plan_windows(NOW + timedelta(minutes=1), NOW, "minute") == []


def test_one_second_span_is_one_request() -> None:
    assert len(plan_windows(NOW, NOW, "minute")) == 1


@given(
    interval=st.sampled_from(list(INTERVALS)),
    span=st.integers(min_value=0, max_value=3000 * 86400),
)
def test_windows_tile_the_span_within_the_cap(interval: str, span: int) -> None:
    start = NOW - timedelta(seconds=span)
    windows = plan_windows(start, NOW, interval)
    cap = timedelta(days=MAX_DAYS_PER_REQUEST[interval])
    assert windows[0].start == to_ist_naive(start)
    assert windows[-1].end == to_ist_naive(NOW)
    for w in windows:
        assert w.start <= w.end
        assert w.end - w.start < cap
    for before, after in pairwise(windows):
        assert after.start == before.end + timedelta(seconds=1)


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
