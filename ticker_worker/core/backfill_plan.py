"""Backfill windows over trading sessions (pure): how far back `days` sessions reach, the
requests that cover only session time, and the validation of a gap's `start`/`end` window.

Kite reads `from`/`to` as naive IST wall-clock times with one-second resolution, both inclusive.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ticker_worker.core import sessions
from ticker_worker.core.ist import IST
from ticker_worker.core.sessions import Hours
from ticker_worker.errors import InvalidWindow

SECOND = timedelta(seconds=1)
MAX_WINDOW_DAYS = 2000  # the longest gap window a task may ask for (Kite's day-candle cap)


@dataclass(frozen=True)
class Window:
    """One historical request: `start` and `end` (inclusive) as naive IST, as Kite reads them."""

    start: datetime
    end: datetime


def naive_ist(moment: datetime) -> datetime:
    """`moment` as Kite's naive IST wall-clock time, to the second."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{moment.isoformat()} has no UTC offset; refusing to guess its zone")
    return moment.astimezone(IST).replace(tzinfo=None, microsecond=0)


def sessions_start(hours: Hours, now: datetime, count: int) -> datetime | None:
    """The open of the `count`-th most recent session that has begun; None if there is none."""
    found = sessions.last_sessions(hours, now, count)
    return found[0][0] if found else None


def session_windows(
    hours: Hours, start: datetime, end: datetime, interval: str, cap_days: int
) -> list[Window]:
    """Requests covering the session time in [start, end], oldest first, each within the cap.

    Consecutive sessions share a request while it stays under `cap_days`; weekends, holidays
    and nights between them cost nothing, and a span with no session costs no request at all.
    Day candles are stamped 00:00 IST, so a day window starts at its first day's midnight.
    """
    cap = timedelta(days=cap_days) - SECOND
    windows: list[Window] = []
    for lo, hi in sessions.sessions_between(hours, start, end + SECOND):
        first, last = naive_ist(lo), min(naive_ist(hi), naive_ist(end))
        if interval == "day":
            first = first.replace(hour=0, minute=0, second=0)
        if windows and last - windows[-1].start <= cap:
            windows[-1] = Window(windows[-1].start, last)
        else:
            windows.append(Window(first, last))
    return windows


def parse_instant(value: Any, name: str) -> datetime:
    """An ISO-8601 string (or datetime) with a UTC offset; InvalidWindow naming the value."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise InvalidWindow(f"{name} must be an ISO-8601 instant such as "
                                f"2026-11-27T10:03:00+05:30, got {value!r}") from None
    else:
        raise InvalidWindow(f"{name} must be an ISO-8601 string, got {value!r}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidWindow(f"{name} {value!r} has no UTC offset; add one (e.g. +05:30 or Z)")
    return moment


def floor_to_candle(moment: datetime, hours: Hours, step: timedelta) -> datetime:
    """The start of the candle holding `moment`: candles count from the session open (IST)."""
    local = moment.astimezone(IST)
    if step >= timedelta(days=1):
        return local.replace(hour=0, minute=0, second=0, microsecond=0)
    anchor = datetime.combine(local.date(), hours.open, IST)
    if local < anchor:
        return local.replace(second=0, microsecond=0)
    return anchor + (local - anchor) // step * step


def gap_window(
    start: Any, end: Any, hours: Hours, step: timedelta, now: datetime
) -> tuple[datetime, datetime]:
    """Validate a gap's window and round it out to whole candles; `end` defaults to now."""
    first = parse_instant(start, "start")
    last = now if end is None else parse_instant(end, "end")
    if first > now:
        raise InvalidWindow(f"start {first.isoformat()} is in the future")
    if last < first:
        raise InvalidWindow(f"start {first.isoformat()} is after end {last.isoformat()}")
    if last - first > timedelta(days=MAX_WINDOW_DAYS):
        raise InvalidWindow(f"the window from {first.isoformat()} to {last.isoformat()} is "
                            f"longer than {MAX_WINDOW_DAYS} days")
    return floor_to_candle(first, hours, step), floor_to_candle(min(last, now), hours, step)
