"""Backfill: plan Kite-sized windows, fetch candles with the official client, upsert them.

Owns Kite's interval table, the look-back rule (the last `days` trading sessions, only what is
missing since the last stored candle, or a gap's explicit `start`/`end`), the split into
requests within Kite's per-interval caps that skip time without a session, and the IST
conversion of `from`/`to`, which Kite reads as naive IST (the original service sent UTC and
shifted every window by 5h30). Accounts are tried in turn: a refused token marks that account
unhealthy. A task delivered twice (same task id) calls Kite once.
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

from ticker_worker.backfill_once import Once
from ticker_worker.bootstrap import Runtime
from ticker_worker.config import Settings
from ticker_worker.core import sessions
from ticker_worker.core.backfill_plan import Window, gap_window, session_windows, sessions_start
from ticker_worker.core.model import parse_token
from ticker_worker.db import accounts, candles, instruments
from ticker_worker.db.accounts import AccountRow
from ticker_worker.errors import (
    HistoricalAccessDenied,
    InvalidDays,
    InvalidInterval,
    InvalidWindow,
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

ClientFactory = Callable[[Settings, str, str], KiteConnect]


def parse_interval(value: Any) -> str:
    """Return `value` as one of Kite's eight intervals, case-insensitive; else InvalidInterval."""
    if isinstance(value, str) and value.strip().lower() in INTERVALS:
        return value.strip().lower()
    raise InvalidInterval(f"unknown interval {value!r}: expected one of {', '.join(INTERVALS)}")


def parse_days(value: Any) -> int:
    """Return `value` as a look-back in trading sessions (1..MAX_DAYS); else InvalidDays."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_DAYS:
        raise InvalidDays(f"days must be a whole number from 1 to {MAX_DAYS}, got {value!r}")
    return value


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
        task_id: str | None = None, start: Any = None, end: Any = None,
    ) -> dict[str, object]:
        """Validate, plan, fetch window by window (oldest first), upsert each; report the count.

        Each window is committed on its own, so a retried run resumes after the last stored one.
        """
        token = parse_token(instrument_token)
        interval = parse_interval(self.settings.backfill_interval if interval is None else interval)
        days = parse_days(self.settings.backfill_days if days is None else days)
        if end is not None and start is None:
            raise InvalidWindow("end was given without start: a gap window needs its start")
        extra: dict[str, object] = {"task_id": task_id, "instrument_token": token}
        with self.engine.connect() as conn:
            row = instruments.lookup(conn, [token]).get(token)
            if row is None:
                # Refused here rather than by Kite: no request and no rate-limit slot spent.
                raise UnknownInstrument(f"unknown instrument {token}: not in the instrument "
                                        "registry (run `ticker-worker instruments sync`)")
            last = candles.last_ts(conn, token, interval)
            rows = accounts.list_all(conn)
        hours = (sessions.ALWAYS_OPEN if self.settings.market_hours == "always-open"
                 else sessions.EXCHANGE_HOURS.get(row.exchange) or sessions.hours_for_token(token))
        windows = self._plan(hours, interval, days, last, start, end)
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
        log.info("backfill %s %s done: %d candles in %d requests%s", token, interval, stored,
                 len(windows), "" if windows else " (no trading session in the window)",
                 extra=extra)
        return {"instrument_token": token, "interval": interval, "candles": stored}

    def _plan(
        self, hours: sessions.Hours, interval: str, days: int, last: datetime | None,
        start: Any, end: Any,
    ) -> list[Window]:
        now = self.now()
        if start is not None:
            first, final = gap_window(start, end, hours, INTERVALS[interval], now)
        else:
            opened = sessions_start(hours, now, days)
            if opened is None:
                return []
            first = opened if last is None else max(opened, last + INTERVALS[interval])
            final = now
        return session_windows(hours, first, final, interval, MAX_DAYS_PER_REQUEST[interval])

    def _usable(self, rows: Sequence[AccountRow], token: int) -> list[AccountRow]:
        ordered = order_accounts(rows, token)
        if not rows and self.settings.uses_simulator:
            # As rest.pick_account: with no accounts at all, the simulator's demo credentials.
            api_key, access_token = rest.SIM_CREDENTIALS
            ordered = [AccountRow("sim", api_key, access_token, True, True, None)]
        return ordered


def run(
    rt: Runtime, instrument_token: Any, interval: Any = None, days: Any = None,
    task_id: str | None = None, start: Any = None, end: Any = None,
    client_factory: ClientFactory = rest.client,
) -> dict[str, object]:
    """The `ticker_worker.backfill` task body, wired from this process's runtime."""
    limiter = historical_limiter(rt.redis, rt.keys, rt.settings.historical_rate_per_second)
    backfiller = Backfiller(rt.engine, rt.settings, limiter, client_factory)
    if task_id is None:
        return backfiller.run(instrument_token, interval, days, None, start, end)
    once = Once(rt, task_id)
    earlier = once.result()
    if earlier is not None:
        log.info("backfill task %s was done already; not calling Kite again", task_id,
                 extra={"task_id": task_id})
        return earlier
    with once:
        result = backfiller.run(instrument_token, interval, days, task_id, start, end)
        once.finish(result)
    return result
