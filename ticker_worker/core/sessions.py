"""Indian exchange trading sessions: each segment's hours in IST and the exchange holidays.

Pure functions shared by the simulator's market clock, backfill planning and mock ticks.
Holidays come from the `holidays` package's financial calendars (XNSE, XBOM), which track the
exchanges' published holiday circulars. MCX and the currency segments follow the NSE list
here: their own calendars differ on a few days (MCX keeps its evening session on some equity
holidays), which this approximation treats as closed all day.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache

from ticker_worker.core.ist import IST

SATURDAY = 5


@dataclass(frozen=True)
class Hours:
    """One segment's continuous session in IST, and the holiday calendar it follows."""

    open: time
    close: time
    calendar: str  # an ISO 10383 market code `holidays.financial_holidays` knows

    @property
    def minutes(self) -> int:
        """The session's length in minutes."""
        return (self.close.hour * 60 + self.close.minute) - (self.open.hour * 60 + self.open.minute)


NSE_EQUITY = Hours(time(9, 15), time(15, 30), "XNSE")
BSE_EQUITY = Hours(time(9, 15), time(15, 30), "XBOM")
NSE_CURRENCY = Hours(time(9, 0), time(17, 0), "XNSE")
BSE_CURRENCY = Hours(time(9, 0), time(17, 0), "XBOM")
COMMODITY = Hours(time(9, 0), time(23, 30), "XNSE")
#: Every minute of every day (MARKET_HOURS=always-open, the simulator's default market).
ALWAYS_OPEN = Hours(time(0, 0), time.max, "")

#: Hours by Kite segment code (`instrument_token & 0xFF`); indices (9) follow NSE equity.
SEGMENT_HOURS: dict[int, Hours] = {
    1: NSE_EQUITY, 2: NSE_EQUITY, 3: NSE_CURRENCY, 4: BSE_EQUITY, 5: BSE_EQUITY,
    6: BSE_CURRENCY, 7: COMMODITY, 8: NSE_CURRENCY, 9: NSE_EQUITY, 12: COMMODITY,
}
#: Hours by the instrument dump's `exchange` column.
EXCHANGE_HOURS: dict[str, Hours] = {
    "NSE": NSE_EQUITY, "NFO": NSE_EQUITY, "CDS": NSE_CURRENCY, "BSE": BSE_EQUITY,
    "BFO": BSE_EQUITY, "BCD": BSE_CURRENCY, "MCX": COMMODITY, "MCXSX": NSE_CURRENCY,
    "NCO": COMMODITY,
}


def hours_for_token(token: int) -> Hours:
    """The session hours of an instrument, from its token's segment byte."""
    return SEGMENT_HOURS.get(token & 0xFF, NSE_EQUITY)


@lru_cache(maxsize=64)
def _holidays(calendar: str, year: int) -> dict[date, str]:
    # Imported on first use: the package and its calendars cost ~3 MB of RSS, and a holder
    # needs them only if it asks about a day's session (mock ticks outside market hours).
    import holidays

    return dict(holidays.financial_holidays(calendar, years=year))


def holiday_name(hours: Hours, day: date) -> str | None:
    """The holiday's name when the exchange is closed on `day` for one, else None."""
    return _holidays(hours.calendar, day.year).get(day)


def is_trading_day(hours: Hours, day: date) -> bool:
    """True on a weekday that is not an exchange holiday (every day when always open)."""
    if not hours.calendar:
        return True
    return day.weekday() < SATURDAY and day not in _holidays(hours.calendar, day.year)


def session_on(hours: Hours, day: date) -> tuple[datetime, datetime] | None:
    """The (open, close) instants of `day`'s session in IST, or None on a closed day."""
    if not is_trading_day(hours, day):
        return None
    return (datetime.combine(day, hours.open, IST), datetime.combine(day, hours.close, IST))


def is_open(hours: Hours, moment: datetime) -> bool:
    """True when `moment` (timezone-aware) lies in a session: open <= moment < close."""
    local = moment.astimezone(IST)
    bounds = session_on(hours, local.date())
    return bounds is not None and bounds[0] <= local < bounds[1]


def _days_back(day: date) -> Iterator[date]:
    while True:
        yield day
        day -= timedelta(days=1)


def last_sessions(hours: Hours, now: datetime, count: int) -> list[tuple[datetime, datetime]]:
    """The last `count` sessions that have opened by `now`, oldest first, clipped at `now`.

    A session in progress counts as one; so does the day's session before its open does not.
    """
    found: list[tuple[datetime, datetime]] = []
    local = now.astimezone(IST)
    for day in _days_back(local.date()):
        if len(found) == count or day.year < local.year - 10:
            break
        bounds = session_on(hours, day)
        if bounds is not None and bounds[0] <= local:
            found.append((bounds[0], min(bounds[1], local)))
    return found[::-1]


def sessions_between(
    hours: Hours, start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    """The parts of sessions inside [start, end), oldest first; empty when none."""
    result: list[tuple[datetime, datetime]] = []
    first, last = start.astimezone(IST), end.astimezone(IST)
    day = first.date()
    while day <= last.date():
        bounds = session_on(hours, day)
        if bounds is not None:
            lo, hi = max(bounds[0], first), min(bounds[1], last)
            if lo < hi:
                result.append((lo, hi))
        day += timedelta(days=1)
    return result


def next_open(hours: Hours, moment: datetime) -> datetime:
    """The next session open at or after `moment` (or the current session's open if in one)."""
    local = moment.astimezone(IST)
    day = local.date()
    for _ in range(30):
        bounds = session_on(hours, day)
        if bounds is not None and local < bounds[1]:
            return bounds[0]
        day += timedelta(days=1)
    raise ValueError(f"no session within 30 days of {moment.isoformat()}")


def token_expiry(issued: datetime) -> datetime:
    """When a Kite access token issued at `issued` dies: the next 06:00 IST after it."""
    local = issued.astimezone(IST)
    six = datetime.combine(local.date(), time(6, 0), IST)
    return six if local < six else six + timedelta(days=1)
