"""The holder's Store port in memory, applying a plan the way db/holder.py's SQL does, and the
commands of other processes (db/subscriptions.py, db/accounts.py, instruments sync) as helpers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from ticker_worker.core import outcomes
from ticker_worker.core.reconcile import Desired, Plan
from ticker_worker.db import holder as sql
from ticker_worker.db.accounts import AccountRow

Metadata = dict[int, dict[str, Any]]


class WallClock(Protocol):
    def time(self) -> float: ...


@dataclass
class Row:
    """A subscriptions row: the columns the holder reads and writes."""

    token: int
    mode: str
    wanted: bool = True
    status: str = "pending"
    account: str | None = None
    connection: int | None = None
    generation: int = 1
    observed_generation: int = 0
    transitions: int = 0
    reason: str | None = None
    activated_at: float | None = None
    removed_at: float | None = None
    first_tick_at: float | None = None
    last_tick_at: float | None = None

    @property
    def dirty(self) -> bool:
        return self.generation != self.observed_generation


class Streaming(NamedTuple):
    """A row of db/holder.py's `_RESUMED`."""

    instrument_token: int
    mode: str
    generation: int
    account: str | None
    connection: int | None
    since: datetime


class FakeStore:
    """Subscriptions, accounts, instrument expiry and the outbox (keyed by event id)."""

    def __init__(self, clock: WallClock) -> None:
        self.clock = clock
        self.rows: dict[int, Row] = {}
        self.account_rows: dict[str, AccountRow] = {}
        self.expired: dict[int, str] = {}  # the instruments table: why a token cannot stream
        self.outbox: dict[str, dict[str, Any]] = {}
        self.records = 0
        self.failures = 0  # the next this-many writes fail, as with Postgres away

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.time(), UTC)

    # ---- the port ---------------------------------------------------------------------------

    async def accounts(self) -> list[AccountRow]:
        return [self.account_rows[n] for n in sorted(self.account_rows)]

    async def desired(self, full: bool, tokens: set[int] | None) -> tuple[list[Desired], Metadata]:
        """read_desired: every wanted or dirty row (full, no metadata); else the dirty rows,
        only those named when `tokens` is given, with their event metadata."""
        if full:
            return [self._desired(r) for r in self.rows.values() if r.wanted or r.dirty], {}
        dirty = sorted((r for r in self.rows.values() if r.dirty), key=lambda r: r.token)
        dirty = [r for r in dirty if r.token in tokens] if tokens else dirty[:sql.PASS_LIMIT]
        return [self._desired(r) for r in dirty], {r.token: self.metadata(r.token) for r in dirty}

    def _desired(self, r: Row) -> Desired:
        return Desired(r.token, r.mode, r.wanted, r.status, r.account, r.connection,
                       r.generation, r.dirty, r.transitions, self.expired.get(r.token))

    @staticmethod
    def metadata(token: int) -> dict[str, Any]:
        return {"tradingsymbol": f"SYM{token}", "exchange": "NSE"}

    async def record(self, plan: Plan, meta: Metadata) -> list[dict[str, Any]]:
        """db/holder.py's `record`: the outcome CTEs and the outbox insert in one statement.

        Every CTE reads the rows as they were before the statement, so a plan that names one
        row in two outcomes would be a bug of the plan: it is refused here."""
        named = ([d.token for d, _ in plan.activated] + [d.token for d, _ in plan.queued]
                 + [d.token for d, _ in plan.failed] + [d.token for d in plan.removed]
                 + [d.token for d in plan.settled])
        assert len(named) == len(set(named)), f"a plan names a row twice: {sorted(named)}"
        self._maybe_fail()
        known = {t: meta.get(t) or self.metadata(t) for t in outcomes.needs_metadata(plan)}
        events = outcomes.events(plan, known, self.now())
        for d, slot in plan.activated:
            self._activate(d, slot)
        for d, reason in plan.queued:
            self._park(d, "queued", reason)
        for d, reason in plan.failed:
            self._park(d, "failed", reason)
        for d in plan.removed:
            self._remove(d)
        for d in plan.settled:
            self._observe(d)
        self._insert(events)
        self.records += 1
        return events

    def _observe(self, d: Desired) -> Row:
        r = self.rows[d.token]
        r.observed_generation = max(r.observed_generation, d.generation)
        return r

    def _activate(self, d: Desired, slot: tuple[str, int]) -> None:
        """`_ACTIVATE`."""
        r = self._observe(d)
        if r.status != "active":
            r.transitions += 1
            r.activated_at, r.first_tick_at = self.clock.time(), None
        r.status, r.account, r.connection, r.reason = "active", slot[0], slot[1], None

    def _park(self, d: Desired, status: str, reason: str) -> None:
        """`_QUEUE` and `_FAIL`."""
        r = self._observe(d)
        r.transitions += r.status != status
        r.status, r.reason, r.account, r.connection = status, reason, None, None

    def _remove(self, d: Desired) -> None:
        """`_REMOVE`."""
        r = self._observe(d)
        r.transitions += r.status in ("active", "queued")
        r.status, r.reason, r.account, r.connection = "removed", None, None, None
        r.removed_at = self.clock.time()

    def _maybe_fail(self) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("the fake database is away")

    async def record_events(self, events: list[dict[str, Any]]) -> None:
        self._maybe_fail()
        self._insert(events)

    def _insert(self, events: list[dict[str, Any]]) -> None:
        for e in events:  # ON CONFLICT (event_id) DO NOTHING
            self.outbox.setdefault(e["event_id"], e)

    async def streaming_since(self) -> list[Streaming]:
        """`_RESUMED`: active rows since their last recorded tick."""
        return [Streaming(r.token, r.mode, r.generation, r.account, r.connection,
                          datetime.fromtimestamp(r.last_tick_at or r.activated_at
                                                 or self.clock.time(), UTC))
                for r in self.rows.values() if r.wanted and r.status == "active"]

    async def mark_unhealthy(self, account: str, reason: str) -> None:
        self.set_health(account, False, reason)

    # ---- what other processes do to the database --------------------------------------------

    def add_account(self, name: str) -> None:
        self.account_rows[name] = AccountRow(name, f"key-{name}", f"token-{name}", True, True,
                                             None)

    def set_health(self, name: str, healthy: bool, reason: str | None = None) -> None:
        self.account_rows[name] = replace(self.account_rows[name], healthy=healthy,
                                          unhealthy_reason=reason)

    def set_token(self, name: str, access_token: str) -> None:
        """`accounts.set_token`: a new token, and the account healthy again."""
        self.account_rows[name] = replace(self.account_rows[name], access_token=access_token,
                                          healthy=True, unhealthy_reason=None)

    def subscribe(self, *tokens: int, mode: str = "quote") -> None:
        """`_UPSERT`: a new row is pending; a real change bumps the generation."""
        for token in tokens:
            r = self.rows.get(token)
            if r is None:
                self.rows[token] = Row(token, mode)
                continue
            if r.wanted and r.mode == mode and r.status != "failed":
                continue
            if r.status in ("removed", "failed"):
                r.status, r.reason = "pending", None
            r.mode, r.wanted, r.generation = mode, True, r.generation + 1

    def unsubscribe(self, *tokens: int) -> None:
        """`_UNSUBSCRIBE`."""
        for token in tokens:
            r = self.rows.get(token)
            if r is not None and r.wanted:
                r.wanted, r.generation = False, r.generation + 1

    def set_mode(self, token: int, mode: str) -> None:
        """`_SET_MODE`."""
        r = self.rows.get(token)
        if r is not None and r.wanted and r.mode != mode:
            r.mode, r.generation = mode, r.generation + 1

    def expire(self, token: int, reason: str) -> None:
        """The instrument expired or left the dump: seen by the next full pass."""
        self.expired[token] = reason

    def record_ticks(self, seen: dict[int, float]) -> None:
        """`_TICKS`: first/last tick times of active rows."""
        for token, at in seen.items():
            r = self.rows.get(token)
            if r is not None and r.status == "active":
                r.first_tick_at = r.first_tick_at or at
                r.last_tick_at = max(r.last_tick_at or at, at)

    def by_status(self, status: str) -> list[int]:
        return sorted(t for t, r in self.rows.items() if r.status == status)
