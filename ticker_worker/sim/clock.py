"""The simulator's market clock: what time it is in the simulated world, and what is open.

`always-open` (the development default) streams every instrument around the clock; `real`
follows each segment's session hours and the exchange holidays (`core.sessions`). `--now`
starts the simulated time at a chosen instant, from which it runs at wall-clock speed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from ticker_worker.core import sessions
from ticker_worker.core.ist import IST

MARKETS = ("always-open", "real")


def parse_instant(text: str) -> datetime:
    """An ISO-8601 instant; one without an offset is read as IST, as Kite's clocks are."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"invalid instant {text!r}: expected ISO-8601, e.g. "
                         "2026-11-27T09:15:00+05:30") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=IST)


class MarketClock:
    """Simulated time (epoch seconds) and the sessions it implies."""

    def __init__(
        self, market: str = "always-open", start: datetime | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if market not in MARKETS:
            raise ValueError(f"unknown market {market!r}: expected one of {', '.join(MARKETS)}")
        self.market = market
        self._wall = wall
        self._offset = 0.0
        if start is not None:
            self.set(start)

    @property
    def real(self) -> bool:
        """True when sessions and holidays apply."""
        return self.market == "real"

    def now(self) -> float:
        """The simulated time, in epoch seconds."""
        return self._wall() + self._offset

    def now_ist(self) -> datetime:
        """The simulated time as an IST datetime."""
        return datetime.fromtimestamp(self.now(), IST)

    def set(self, moment: datetime) -> None:
        """Jump the simulated time to `moment`; it runs on from there."""
        self._offset = moment.timestamp() - self._wall()

    def is_open(self, token: int, at: float | None = None) -> bool:
        """True when the token's segment is in session (always, in `always-open`)."""
        if not self.real:
            return True
        moment = datetime.fromtimestamp(self.now() if at is None else at, IST)
        return sessions.is_open(sessions.hours_for_token(token), moment)

    def closed_segments(self, at: float) -> frozenset[int]:
        """Segment codes out of session at `at`; empty in `always-open` (the fast path)."""
        if not self.real:
            return frozenset()
        moment = datetime.fromtimestamp(at, IST)
        return frozenset(
            code for code, hours in sessions.SEGMENT_HOURS.items()
            if not sessions.is_open(hours, moment)
        )

    def describe(self) -> dict[str, object]:
        """The `/_sim/clock` document."""
        now = self.now_ist()
        return {
            "market": self.market, "now": now.isoformat(),
            "open_segments": sorted(set(sessions.SEGMENT_HOURS) - self.closed_segments(
                now.timestamp())),
        }
