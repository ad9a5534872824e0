"""Backfill: plan Kite-sized windows, fetch candles with the official client, upsert them.

Owns Kite's interval table, the look-back rule (only what is missing since the last stored
candle), the split into requests within Kite's per-interval caps, and the IST conversion of
`from`/`to`, which Kite reads as naive IST (the original service sent UTC and shifted every
window by 5h30). Accounts are tried in turn: a refused token marks that account unhealthy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kiteconnect import KiteConnect
from kiteconnect import exceptions as kite_errors
from sqlalchemy import Engine

from ticker_worker.bootstrap import Runtime
from ticker_worker.config import Settings
from ticker_worker.core.model import parse_token
from ticker_worker.db import accounts, candles, instruments
from ticker_worker.db.accounts import AccountRow
from ticker_worker.db.instruments import IST
from ticker_worker.errors import (
    HistoricalAccessDenied,
    InvalidDays,
    InvalidInterval,
    NoHealthyAccount,
    UnknownInstrument,
)
from ticker_worker.kite import rest
from ticker_worker.logs import redact
from ticker_worker.ratelimit import HistoricalLimiter, ReplyHook, historical_limiter

log = logging.getLogger(__name__)

# Candle length of each of Kite's intervals, and the longest span one request may ask for
# (Kite answers 400 "interval exceeds max limit: N days" beyond it).
INTERVALS: dict[str, timedelta] = {
    "minute": timedelta(minutes=1), "3minute": timedelta(minutes=3),
    "5minute": timedelta(minutes=5), "10minute": timedelta(minutes=10),
    "15minute": timedelta(minutes=15), "30minute": timedelta(minutes=30),
    "60minute": timedelta(minutes=60), "day": timedelta(days=1),
}
MAX_DAYS_PER_REQUEST: dict[str, int] = {
    "minute": 60, "3minute": 100, "5minute": 100, "10minute": 100,
    "15minute": 200, "30minute": 200, "60minute": 400, "day": 2000,
}
MAX_DAYS = 2000  # the longest look-back a task may ask for (Kite's day-candle cap)
SECOND = timedelta(seconds=1)

ClientFactory = Callable[[Settings, str, str], KiteConnect]


@dataclass(frozen=True)
class Window:
    """One historical request: `start` and `end` (inclusive) as naive IST, as Kite reads them."""

    start: datetime
    end: datetime


def parse_interval(value: Any) -> str:
    """Return `value` as one of Kite's eight intervals, case-insensitive; else InvalidInterval."""
    if isinstance(value, str) and value.strip().lower() in INTERVALS:
        return value.strip().lower()
    raise InvalidInterval(f"unknown interval {value!r}: expected one of {', '.join(INTERVALS)}")


def parse_days(value: Any) -> int:
    """Return `value` as a look-back in days (1..MAX_DAYS); else InvalidDays naming the value."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_DAYS:
        raise InvalidDays(f"days must be a whole number from 1 to {MAX_DAYS}, got {value!r}")
    return value


def to_ist_naive(moment: datetime) -> datetime:
    """`moment` as Kite's naive IST wall-clock time, to the second."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{moment.isoformat()} has no UTC offset; refusing to guess its zone")
    return moment.astimezone(IST).replace(tzinfo=None, microsecond=0)


def lookback_start(
    now: datetime, days: int, last_stored: datetime | None, interval: str
) -> datetime:
    """The first instant to fetch: `days` back, or just after the newest stored candle."""
    earliest = now - timedelta(days=days)
    if last_stored is None:
        return earliest
    return max(earliest, last_stored + INTERVALS[interval])


def plan_windows(start: datetime, end: datetime, interval: str) -> list[Window]:
    """Cover [start, end] with requests no longer than Kite's cap for `interval`, oldest first.

    Each window stops one second short of the cap, and the next starts one second later:
    Kite's `from`/`to` have one-second resolution and are both inclusive, so no candle falls
    between two windows and none is asked for twice.
    """
    first, last = to_ist_naive(start), to_ist_naive(end)
    span = timedelta(days=MAX_DAYS_PER_REQUEST[interval]) - SECOND
    windows: list[Window] = []
    while first <= last:
        stop = min(first + span, last)
        windows.append(Window(first, stop))
        first = stop + SECOND
    return windows


def order_accounts(rows: Sequence[AccountRow], instrument_token: int) -> list[AccountRow]:
    """The enabled, healthy accounts in the order one backfill tries them.

    The starting account rotates with the token, so many backfills spread over every account's
    rate limit instead of queueing behind the first one's.
    """
    usable = sorted((a for a in rows if a.enabled and a.healthy), key=lambda a: a.name)
    if not usable:
        return []
    k = instrument_token % len(usable)
    return usable[k:] + usable[:k]


@dataclass
class _AccountPool:
    """The accounts one run may use, in order. A refused account is dropped for the rest of it."""

    engine: Engine
    settings: Settings
    limiter: HistoricalLimiter | None
    client_factory: ClientFactory
    queue: list[AccountRow]
    context: dict[str, object]  # the run's log ids (task_id, instrument_token)
    refusals: dict[str, str] = field(default_factory=dict)
    denied: set[str] = field(default_factory=set)
    clients: dict[str, tuple[KiteConnect, ReplyHook]] = field(default_factory=dict)

    def fetch(self, token: int, interval: str, window: Window) -> tuple[str, list[dict[str, Any]]]:
        """(account name, candles) for one window, moving past accounts that Kite refuses."""
        while self.queue:
            account = self.queue[0]
            try:
                return account.name, self._call(account, token, interval, window)
            except kite_errors.TokenException as exc:
                self._refuse(account, f"Kite refused its access token ({redact(str(exc))})",
                             unhealthy=True)
            except kite_errors.PermissionException as exc:
                # An entitlement of the account's app, not a sign its session is bad.
                self._refuse(account, f"no historical-data permission ({redact(str(exc))})",
                             unhealthy=False)
        raise self._exhausted(token)

    def _client(self, account: AccountRow) -> tuple[KiteConnect, ReplyHook]:
        if account.name not in self.clients:
            client = self.client_factory(self.settings, account.api_key, account.access_token)
            # Test fakes have no HTTP session; their slots count from the end of the call.
            hook = ReplyHook(getattr(client, "reqsession", None))
            self.clients[account.name] = (client, hook)
        return self.clients[account.name]

    def _call(
        self, account: AccountRow, token: int, interval: str, window: Window
    ) -> list[dict[str, Any]]:
        client, hook = self._client(account)
        limiter = self.limiter
        with nullcontext() if limiter is None else limiter.slot(account.api_key, hook):
            rows: list[dict[str, Any]] = client.historical_data(
                token, window.start, window.end, interval, oi=True
            )
        return rows

    def _refuse(self, account: AccountRow, reason: str, *, unhealthy: bool) -> None:
        self.queue.pop(0)
        self.refusals[account.name] = reason
        log.warning("account %s skipped for backfill: %s", account.name, reason,
                    extra={**self.context, "account": account.name})
        if unhealthy:
            with self.engine.begin() as conn:
                accounts.mark_health(conn, account.name, False, reason)
        else:
            self.denied.add(account.name)

    def _exhausted(self, token: int) -> Exception:
        if not self.refusals:
            return NoHealthyAccount(
                f"no enabled, healthy account to fetch candles of {token} with: add one with "
                "`ticker-worker accounts add` or renew one with `ticker-worker accounts set-token`"
            )
        reasons = "; ".join(f"{name}: {why}" for name, why in self.refusals.items())
        if self.denied == self.refusals.keys():
            return HistoricalAccessDenied(
                f"no account may read historical candles of {token}: {reasons}"
            )
        return NoHealthyAccount(
            f"no healthy account left to fetch candles of {token}: {reasons}; renew tokens with "
            "`ticker-worker accounts set-token NAME TOKEN`"
        )


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Backfiller:
    """Fetches and stores the candles missing for one instrument and interval."""

    engine: Engine
    settings: Settings
    limiter: HistoricalLimiter | None
    client_factory: ClientFactory = rest.client
    now: Callable[[], datetime] = _utc_now

    def run(
        self, instrument_token: Any, interval: Any = None, days: Any = None,
        task_id: str | None = None,
    ) -> dict[str, object]:
        """Validate, plan, fetch window by window (oldest first), upsert each; report the count.

        Each window is committed on its own, so a retried run resumes after the last stored one.
        """
        token = parse_token(instrument_token)
        interval = parse_interval(self.settings.backfill_interval if interval is None else interval)
        days = parse_days(self.settings.backfill_days if days is None else days)
        extra: dict[str, object] = {"task_id": task_id, "instrument_token": token}
        with self.engine.connect() as conn:
            if not instruments.lookup(conn, [token]):
                # Refused here rather than by Kite: no request and no rate-limit slot spent.
                raise UnknownInstrument(f"unknown instrument {token}: not in the instrument "
                                        "registry (run `ticker-worker instruments sync`)")
            last = candles.last_ts(conn, token, interval)
            rows = accounts.list_all(conn)
        now = self.now()
        windows = plan_windows(lookback_start(now, days, last, interval), now, interval)
        pool = _AccountPool(self.engine, self.settings, self.limiter, self.client_factory,
                            self._usable(rows, token), extra)
        stored = 0
        for i, window in enumerate(windows, 1):
            name, got = pool.fetch(token, interval, window)
            with self.engine.begin() as conn:
                stored += candles.upsert(conn, token, interval, got)
            log.info("backfill %s %s: chunk %d of %d (%s to %s IST): %d candles", token, interval,
                     i, len(windows), window.start, window.end, len(got),
                     extra={**extra, "account": name})
        log.info("backfill %s %s done: %d candles in %d requests", token, interval, stored,
                 len(windows), extra=extra)
        return {"instrument_token": token, "interval": interval, "candles": stored}

    def _usable(self, rows: Sequence[AccountRow], token: int) -> list[AccountRow]:
        ordered = order_accounts(rows, token)
        if not rows and self.settings.uses_simulator:
            # As rest.pick_account: with no accounts at all, the simulator's demo credentials.
            api_key, access_token = rest.SIM_CREDENTIALS
            ordered = [AccountRow("sim", api_key, access_token, True, True, None)]
        return ordered


def run(
    rt: Runtime, instrument_token: Any, interval: Any = None, days: Any = None,
    task_id: str | None = None,
) -> dict[str, object]:
    """The `ticker_worker.backfill` task body, wired from this process's runtime."""
    limiter = historical_limiter(rt.redis, rt.keys, rt.settings.historical_rate_per_second)
    return Backfiller(rt.engine, rt.settings, limiter).run(
        instrument_token, interval, days, task_id
    )
