"""What the connections report to the holder core (the LinkEvents of holder/ports.py), and the
settle pass that turns it into releases of moved tokens, one resend of silent subscribes, and
`stream_gap` events. A part of HolderCore (holder/core.py), kept apart to be read on its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from ticker_worker.config import Settings
from ticker_worker.core.events import gap_event
from ticker_worker.core.gaps import Gap, GapBook
from ticker_worker.core.placement import Slot
from ticker_worker.core.reconcile import Placed
from ticker_worker.holder.accounts import AccountState
from ticker_worker.holder.ports import Clock, Event, Link, Publisher, Store, TickSink

log = logging.getLogger("ticker_worker.holder.core")
AUTH_REASON = "access token rejected by Kite (403): run `ticker-worker accounts login` or set-token"


class ConnectionSignals:
    """The half of HolderCore that listens: acks, losses, refusals, 403s, and the settle pass."""

    # Owned and set up by HolderCore.__init__.
    settings: Settings
    store: Store
    publisher: Publisher
    ticks: TickSink
    clock: Clock
    ask: Callable[[bool], None]
    accounts: dict[str, AccountState]
    actual: dict[int, Placed]
    releases: dict[int, Slot]
    confirmed: set[int]
    refused: dict[int, str]
    gaps: GapBook
    awaiting: list[int]
    _tasks: set[asyncio.Task[Any]]

    async def _release(self, tokens: list[int]) -> None:
        raise NotImplementedError  # HolderCore's: the break of make-before-break

    def links(self) -> list[Link]:
        """Every open connection."""
        return [c for s in self.accounts.values() for c in s.connections.values()]

    def _existing(self, slot: Slot) -> Link | None:
        """The connection of `slot` if it is open (never opens one)."""
        state = self.accounts.get(slot[0])
        return state.connections.get(slot[1]) if state else None

    # ---- the settle pass: acknowledgements, releases, gaps ----------------------------------

    async def settle(self) -> None:
        """Free the old slots of confirmed moves, re-send silent subscribes once, note what is
        still awaiting its first tick, and turn closed gaps into events."""
        now, timeout = self.clock.monotonic(), self.settings.ack_timeout
        awaiting: list[int] = []
        for conn in self.links():
            due = conn.acks.due_for_resend(now, timeout)
            if due:
                log.info("%d token(s) without a first tick after %.1f s: sending again",
                         len(due), timeout, extra={"account": conn.account,
                                                    "connection": conn.index})
                await conn.resend(due)
            awaiting += conn.acks.awaiting(now, timeout)
        self.awaiting = sorted(awaiting)
        # A moved token is released once its new connection ticked, or once it is known to
        # be a silent one there (awaiting): the old connection is of no more use to it.
        ready = self.confirmed | (set(self.awaiting) & set(self.releases))
        if ready:
            await self._release(sorted(ready))
        await self.flush_gaps()

    async def flush_gaps(self) -> None:
        """Write and publish the gaps closed since the last flush."""
        closed = self.gaps.take()
        if not closed:
            return
        events = [self._gap_event(g) for g in closed]
        try:
            await self.store.record_events(events)
        except Exception:
            self.gaps.restore(closed)
            raise
        await self.publisher.publish(events)
        log.info("%d stream gap(s) reported", len(events))

    @staticmethod
    def _gap_event(gap: Gap) -> Event:
        return gap_event(gap.token, gap.mode, gap.generation, gap.account, gap.connection,
                         datetime.fromtimestamp(gap.start, UTC),
                         datetime.fromtimestamp(gap.end, UTC), gap.reason)

    # ---- what the connections report (LinkEvents) --------------------------------------------

    async def on_frame(self, conn: Any, frame: bytes) -> None:
        """A market-data frame: to the tick pipeline."""
        await self.ticks.put(frame)

    def on_connected(self, conn: Any) -> None:
        """Level-triggered: every (re)connect is followed by a pass."""
        self.ask(False)

    def on_acked(self, conn: Any, tokens: list[int]) -> None:
        """First ticks on `conn`: close their gaps, confirm the moves to it."""
        self.gaps.end(tokens, self.clock.time())
        for t in tokens:
            placed = self.actual.get(t)
            if t in self.releases and placed is not None and placed.slot == (conn.account,
                                                                              conn.index):
                self.confirmed.add(t)

    def on_lost(self, conn: Any, reason: str) -> None:
        """A connection went away: each instrument that streamed only through it is silent from
        its last tick. A moving one streams on its old and its new connection until the new one
        confirms it: losing one leaves the other, and voids the lost one's confirmation."""
        slot = (conn.account, conn.index)
        self.confirmed -= {t for t in conn.tokens if self._home(t) == slot}
        mine = [t for t in conn.tokens if self._silenced(t, slot)]
        last, lost_at = self.ticks.last_tick, self.clock.time()
        opened = self.gaps.begin(mine, lambda t: last.get(t, lost_at), self._placed_of,
                                 conn.account, conn.index, reason)
        if opened:
            log.warning("connection %s: %d instrument(s) silent until resubscribed", reason,
                        opened, extra={"account": conn.account, "connection": conn.index})

    def _home(self, token: int) -> Slot | None:
        placed = self.actual.get(token)
        return placed.slot if placed else None

    def _silenced(self, token: int, slot: Slot) -> bool:
        """Whether losing `slot` leaves `token` streaming through no connection."""
        old = self.releases.get(token)
        if self._home(token) == slot:
            held = self._existing(old) if old else None
            return held is None or not held.connected
        return old == slot and token not in self.confirmed

    def _placed_of(self, token: int) -> tuple[str, int]:
        placed = self.actual.get(token)
        return (placed.mode, placed.generation) if placed else ("full", 0)

    def on_auth_rejected(self, conn: Any) -> None:
        """403 at the handshake: the account is unhealthy now; move its instruments at once."""
        state = self.accounts.get(conn.account)
        if state is None or state.auth_failed:
            return
        state.auth_failed = True
        self.spawn(self.store.mark_unhealthy(state.name, AUTH_REASON))
        self.ask(True)

    def on_refused(self, conn: Any, tokens: list[int], reason: str) -> None:
        """Kite refused these on `conn`: place them again elsewhere, or queue them."""
        slot = (conn.account, conn.index)
        for t in tokens:
            placed = self.actual.get(t)
            if placed is not None and placed.slot == slot:
                del self.actual[t]
                self.refused[t] = reason
        self.ask(True)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run `coro` in the background, keeping its task referenced and its failure logged."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed: %r", task.exception())
