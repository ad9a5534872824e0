"""The hot standby (issue 9): while another holder streams, keep the accounts and the recorded
placement (every active row with its account, connection and mode) loaded; on takeover, put that
placement back on the wire at once, before the first full pass reads Postgres.

Each row keeps the connection it had (issue 9: "resume with their placement where possible").
The full pass that follows finds those instruments already placed (HolderCore.actual): it
announces nothing for them, sends nothing more for them, and corrects whatever changed since the
last refresh (a removal, a mode change, an account gone) the way it corrects anything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any, Protocol

from ticker_worker.core.placement import Slot
from ticker_worker.core.reconcile import Placed, Plan
from ticker_worker.db import accounts as account_repo
from ticker_worker.db import holder as holder_sql
from ticker_worker.db import standby as sql
from ticker_worker.db.accounts import AccountRow
from ticker_worker.holder.core import HolderCore
from ticker_worker.holder.database import Database, in_conn

log = logging.getLogger(__name__)
REFRESH_PERIOD = 1.0  # seconds between a standby's looks at the fingerprint


class PlacementSource(Protocol):
    """Where the standby reads the placement (Postgres; a fake in the unit suite)."""

    async def fingerprint(self) -> tuple[Any, ...]:
        """Changes whenever the active rows' placement or mode, or the accounts, do."""

    async def accounts(self) -> list[AccountRow]:
        """Every account row."""

    async def placement(self) -> list[Any]:
        """Active rows: `instrument_token`, `mode`, `generation`, `account`, `connection`."""


class PgPlacement:
    """PlacementSource on Postgres: one fingerprint statement a look, more only on a change."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def fingerprint(self) -> tuple[Any, ...]:
        return await self.db.run(in_conn(sql.fingerprint), lane="slow")

    async def accounts(self) -> list[AccountRow]:
        return await self.db.run(in_conn(account_repo.list_all), lane="slow")

    async def placement(self) -> list[Any]:
        return await self.db.run(in_conn(holder_sql.streaming_since), lane="slow")


class WarmPlacement:
    """The accounts and the recorded placement, kept fresh while this holder is a standby."""

    def __init__(self, source: PlacementSource, period: float = REFRESH_PERIOD) -> None:
        self.source, self.period = source, period
        self.accounts: list[AccountRow] = []
        self.rows: list[Any] = []
        self.reads = 0  # placement reads (a look that found no change reads nothing)
        self.fresh_at = float("-inf")  # monotonic time of the last look that succeeded
        self._mark: tuple[Any, ...] | None = None

    async def refresh(self) -> bool:
        """Read the placement again if the fingerprint moved; True when it did."""
        mark = await self.source.fingerprint()
        if mark == self._mark:
            self.fresh_at = time.monotonic()
            return False
        # A change between the two reads leaves newer rows under an older mark: the next look
        # reads them again, never the reverse.
        self.accounts, self.rows = await self.source.accounts(), await self.source.placement()
        self._mark = mark
        self.reads += 1
        self.fresh_at = time.monotonic()
        return True

    def take(self) -> tuple[list[AccountRow], list[Any]]:
        """The placement to adopt, once: it goes stale the moment this holder streams. Nothing
        when the last successful look is older than two periods (Postgres was away: an account
        may have been disabled meanwhile, and its api key must not be used on an old word)."""
        fresh = time.monotonic() - self.fresh_at <= 2 * self.period
        taken = (self.accounts, self.rows) if fresh else ([], [])
        self.accounts, self.rows, self._mark = [], [], None
        return taken

    async def run(self, active: asyncio.Event) -> None:
        """Refresh every `period` seconds while `active` is not set, forever."""
        while True:
            if active.is_set():
                self.accounts, self.rows, self._mark = [], [], None
            else:
                try:
                    await self.refresh()
                except Exception as exc:  # noqa: BLE001 - Postgres away: the takeover reads it
                    log.debug("standby refresh failed: %s", exc)
            await asyncio.sleep(self.period)


def recorded_plan(core: HolderCore, rows: list[Any]) -> Plan:
    """Subscribe each row on its recorded connection in its mode: usable accounts only, and
    within Kite's caps (the rest is left to the full pass)."""
    s, result, held = core.settings, Plan(), Counter[Slot]()
    for r in rows:
        state = core.accounts.get(r.account) if r.account is not None else None
        slot = (r.account, r.connection)
        if (state is None or not state.usable or r.connection is None
                or not 0 <= r.connection < s.max_connections_per_account
                or held[slot] >= s.max_tokens_per_connection):
            continue
        held[slot] += 1
        result.subscribe[slot][r.mode].append(r.instrument_token)
    return result


async def take_over(core: HolderCore, warm: WarmPlacement) -> tuple[int, int]:
    """Open the gaps (core.resume) and put the warm placement back on the wire; return (gaps
    opened, instruments adopted). Without a warm placement it only resumes."""
    accounts, rows = warm.take()
    if not accounts or not rows:
        return await core.resume(), 0
    core.stand_up()
    core.sync_accounts(accounts)
    plan = recorded_plan(core, rows)
    generation = {r.instrument_token: r.generation for r in rows}
    try:
        for slot in sorted(plan.subscribe):
            core.link(slot)  # the handshakes run while resume() reads the gaps
        opened = await core.resume()  # before any subscribe: a first tick closes a gap
        for (account, index), modes in plan.subscribe.items():
            for mode, tokens in modes.items():
                core.actual.update((t, Placed(account, index, mode, generation[t]))
                                   for t in tokens)
        await core.apply(plan)
    except BaseException:
        await core.close()
        raise
    return opened, sum(len(t) for m in plan.subscribe.values() for t in m.values())


async def report_resumed(core: HolderCore, since: float, limit: float = 30.0) -> None:
    """Log when every gap the takeover opened has closed (each resumed instrument ticked)."""
    while core.gaps.open and time.monotonic() - since < limit:
        await asyncio.sleep(0.02)
    left = len(core.gaps.open)
    log.info("takeover: %s %.3f s after the lease was taken",
             f"{left} instrument(s) still silent" if left else "every resumed instrument ticked",
             time.monotonic() - since)
