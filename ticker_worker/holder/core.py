"""The holder core: reconcile desired state against the live connections, and keep the word
`active` true: every placed instrument is acknowledged by its first tick, re-placed when Kite
refuses it, and every silence of it becomes a `stream_gap` event.

What the connections report, and the settle pass that answers it, are in holder/signals.py
(ConnectionSignals, a part of this class). It does no I/O of its own: Postgres, Kite
connections, Redis and time come in through the ports of holder/ports.py, so the unit suite
drives it with fakes and a hand-turned clock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from ticker_worker.config import Settings
from ticker_worker.core import wire
from ticker_worker.core.gaps import GapBook
from ticker_worker.core.placement import Layout, Slot
from ticker_worker.core.reconcile import PASS_LIMIT, Placed, Plan, plan
from ticker_worker.db.accounts import AccountRow
from ticker_worker.errors import Fenced
from ticker_worker.holder.accounts import AccountState
from ticker_worker.holder.ports import Clock, Link, LinkFactory, Publisher, Store, TickSink
from ticker_worker.holder.signals import ConnectionSignals

log = logging.getLogger(__name__)


def _left(result: Plan) -> list[int]:
    """Tokens the plan takes off their connections or leaves with none (queued, failed,
    removed): no new connection will confirm them, so a pending release, an open gap and
    their tick bookkeeping end now."""
    return ([t for tokens in result.unsubscribe.values() for t in tokens]
            + [d.token for d, _ in result.queued] + [d.token for d, _ in result.failed]
            + [d.token for d in result.removed])


class HolderCore(ConnectionSignals):
    """Keeps every wanted instrument streaming on exactly one connection, and says so truly."""

    def __init__(self, settings: Settings, store: Store, open_link: LinkFactory,
                 publisher: Publisher, ticks: TickSink, clock: Clock,
                 ask: Callable[[bool], None]) -> None:
        self.settings, self.store, self.open_link = settings, store, open_link
        self.publisher, self.ticks, self.clock, self.ask = publisher, ticks, clock, ask
        self.accounts: dict[str, AccountState] = {}
        self.actual: dict[int, Placed] = {}
        self.releases: dict[int, Slot] = {}  # moved token -> old slot, freed once confirmed
        self.confirmed: set[int] = set()  # moved tokens whose new connection ticked
        self.refused: dict[int, str] = {}  # token -> Kite's refusal, until placed again
        self.gaps = GapBook()
        self.awaiting: list[int] = []  # re-sent once and still without a first tick
        self.placing = False  # a bulk change is being placed slice by slice
        self.has_queued = False  # rows wait as `queued` for room (known from the last passes)
        self.stood_down = False  # close() ran: a pass still in flight must open no socket
        self.reconciles = 0
        self.last_reconcile_at = 0.0
        self.reconcile_seconds = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---- reconcile ---------------------------------------------------------------------------

    async def reconcile(self, full: bool, tokens: set[int] | None = None) -> Plan:
        """One pass: accounts (on a full pass), desired rows, the diff, the sends, the records.

        `tokens` narrows a nudge's pass to the rows it named; None reads every dirty row.
        """
        started = time.perf_counter()
        if full or not self.accounts:
            self.sync_accounts(await self.store.accounts())
        desired, meta = await self.store.desired(full, tokens)
        desired = self._slice(desired, full, tokens)
        per_conn = self.settings.max_tokens_per_connection
        layout = Layout([a.load(per_conn) for a in self.accounts.values()], per_conn,
                        self.settings.max_connections_per_account)
        result = plan(desired, self.actual, layout, full)
        result.queued = [(d, self.refused.get(d.token, r)) for d, r in result.queued]
        if not result.is_empty():
            await self.apply(result)
            events = await self.store.record(result, meta)
            if events:
                await self.publisher.publish(events)
            self._log_plan(result)
        self._place_queued_soon(result, desired, full)
        await self._retire_unusable()
        self.last_reconcile_at = self.clock.time()
        self.reconcile_seconds = time.perf_counter() - started
        self.reconciles += 1
        return result

    def _place_queued_soon(self, result: Plan, desired: list[Any], full: bool) -> None:
        """A nudge's pass reads only the rows it names: when it frees room while rows wait as
        `queued`, ask for a full pass now rather than at the timer."""
        if full:
            self.has_queued = bool(result.queued) or any(
                d.wanted and d.status == "queued" and d.token not in self.actual for d in desired)
        elif result.queued:
            self.has_queued = True
        elif self.has_queued and (result.unsubscribe or result.failed):
            self.ask(True)

    def _slice(self, desired: list[Any], full: bool, tokens: set[int] | None) -> list[Any]:
        """At most PASS_LIMIT new rows per pass; the rest go to the next pass at once."""
        self.placing = False
        if not full:
            if not tokens and len(desired) >= PASS_LIMIT:
                self._more()
            return desired
        fresh = [d for d in desired if d.dirty and d.token not in self.actual]
        if len(fresh) <= PASS_LIMIT:
            return desired
        deferred = {d.token for d in fresh[PASS_LIMIT:]}
        self._more()
        # Deferred rows are not placed yet, so leaving them out cannot make them orphans.
        return [d for d in desired if d.token not in deferred]

    def _more(self) -> None:
        self.placing = True
        self.ask(False)

    def sync_accounts(self, rows: list[AccountRow]) -> None:
        """Take the latest account rows (a deleted account becomes unusable)."""
        names = {r.name for r in rows}
        for row in rows:
            state = self.accounts.get(row.name)
            if state is None:
                self.accounts[row.name] = AccountState(row)
            elif state.update(row):
                log.info("account usable again", extra={"account": row.name})
        for name in [n for n in self.accounts if n not in names]:
            self.accounts[name].row = AccountRow(name, "", "", enabled=False, healthy=False,
                                                 unhealthy_reason="deleted")

    async def apply(self, result: Plan) -> None:
        """Send the plan's messages, each connection's unsubscribes first (wire.py)."""
        by_slot: dict[Slot, list[wire.Message]] = defaultdict(list)
        for m in wire.messages(result, self.settings.subscribe_batch_size):
            by_slot[m.slot].append(m)
        for slot, messages in by_slot.items():
            await self.link(slot).apply(messages)
        self.releases.update(result.release_after_ack)
        gone = [t for t in dict.fromkeys(_left(result)) if t not in self.actual]
        await self._release([t for t in gone if t in self.releases])
        self.gaps.end(gone, self.clock.time())
        self.ticks.forget(gone)
        for t in gone + [d.token for d, _ in result.activated]:
            self.refused.pop(t, None)
        self.ticks.expect_first([d.token for d, _ in result.activated if d.status != "active"])

    def link(self, slot: Slot) -> Link:
        """The connection of `slot`, opened on first use, restarted if it had given up (a 403
        before the account's token was renewed)."""
        if self.stood_down:  # a pass that began before the step-down sends nothing
            raise Fenced(0)
        state = self.accounts[slot[0]]
        conn = state.connections.get(slot[1])
        if conn is None:
            conn = self.open_link(state.name, slot[1], state.credentials, self)
            state.connections[slot[1]] = conn
        conn.start()
        return conn

    async def _release(self, tokens: list[int]) -> None:
        """Let go of moved tokens on their old connections (make-before-break, the break)."""
        by_slot: dict[Slot, list[int]] = defaultdict(list)
        for t in tokens:
            old = self.releases.pop(t, None)
            self.confirmed.discard(t)
            if old is not None:
                by_slot[old].append(t)
        for slot, batch in by_slot.items():
            if (conn := self._existing(slot)) is not None:
                await conn.apply([wire.Message(slot, "unsubscribe", tuple(batch))])

    async def _retire_unusable(self) -> None:
        held = {slot for slot in self.releases.values()}
        for state in self.accounts.values():
            if state.usable or not state.connections:
                continue
            for index in [i for i in state.connections if (state.name, i) not in held]:
                await state.connections.pop(index).stop()

    def _log_plan(self, result: Plan) -> None:
        log.info("reconciled: %d placed, %d removed, %d queued, %d failed, %d mode changes on "
                 "%d connections", len(result.activated), len(result.removed),
                 len(result.queued), len(result.failed),
                 sum(len(t) for m in result.set_mode.values() for t in m.values()),
                 len(result.touched()))

    # ---- taking over and standing down -------------------------------------------------------

    async def resume(self) -> int:
        """Starting or taking over: every row still active has been silent since its last
        recorded tick; open its gap (closed by its first tick through this holder)."""
        self.stand_up()
        rows = await self.store.streaming_since()
        by_token = {r.instrument_token: r for r in rows}
        return self.gaps.begin(by_token, lambda t: by_token[t].since.timestamp(),
                               lambda t: (by_token[t].mode, by_token[t].generation),
                               None, None, "holder restarted")

    def stand_up(self) -> None:
        """Taking over: forget whatever a pass still in flight at the step-down left behind,
        and let connections open again."""
        self._forget()
        self.stood_down = False

    async def close(self) -> None:
        """Close every connection; forget what they held and what they owed. A standby holds
        nothing and owes no word: whoever takes over reports the silence from its resume()."""
        self.stood_down = True
        # All at once: a hand-over waits for these Kite slots.
        await asyncio.gather(*(conn.stop() for conn in self.links()))
        for state in self.accounts.values():
            state.connections.clear()
        self._forget()

    def _forget(self) -> None:
        self.actual.clear()
        self.releases.clear()
        self.confirmed.clear()
        self.refused.clear()
        self.awaiting = []
        self.gaps.open.clear()
