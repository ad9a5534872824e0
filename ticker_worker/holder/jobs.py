"""The holder's periodic jobs, one small unit each: reconcile, settle, tick times, stats.

Each has one loop, runs only while this holder is the active one, and never blocks the event
loop (its database work goes through holder/database.py's threads). holder/main.py starts and
watches them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import time
from typing import Any

from ticker_worker.errors import Fenced
from ticker_worker.holder.core import HolderCore
from ticker_worker.holder.database import PgStore
from ticker_worker.holder.lease import LeaseKeeper
from ticker_worker.holder.listener import NudgeListener
from ticker_worker.holder.ticks import TickPipeline

log = logging.getLogger(__name__)

try:
    _libc: ctypes.CDLL | None = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc: nothing to trim
    _libc = None


M_ARENA_MAX = -8  # glibc's mallopt() parameter number (malloc.h)


def limit_arenas(arenas: int = 2) -> None:
    """Let glibc keep at most `arenas` malloc arenas. Left alone it gives each thread that
    allocates (the decode thread, the database lanes, the relay's enqueues) an arena of its own,
    up to 8 per core, and each keeps the free memory of the bulk's peak. Call before threads."""
    if _libc is not None:
        _libc.mallopt(M_ARENA_MAX, arenas)


def release_memory() -> None:
    """Hand the free heap of a bulk pass back to the OS (run on a thread: ctypes calls release
    the GIL, so the loop keeps serving ticks while glibc walks its arenas)."""
    if _libc is not None:
        _libc.malloc_trim(0)


class Reconciler:
    """Reconcile on every nudge (the rows it names) and on the timer (everything)."""

    def __init__(self, core: HolderCore, listener: NudgeListener, lease: LeaseKeeper,
                 interval: float) -> None:
        self.core, self.listener, self.lease, self.interval = core, listener, lease, interval
        self.failed_at = 0.0

    async def run(self) -> None:
        """Pass after pass while active."""
        next_full = 0.0
        while True:
            if not self.lease.active.is_set():
                await self.lease.active.wait()
                next_full = 0.0
            timeout = max(0.0, next_full - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.listener.event.wait(), timeout)
            self.listener.event.clear()
            full_wanted, all_dirty, tokens = self.listener.take()
            full = full_wanted or time.monotonic() >= next_full
            try:
                result = await self.core.reconcile(full, None if all_dirty else tokens)
            except Fenced as exc:
                await self.lease.lost(str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - Postgres away: retry on the timer
                self.failed_at = time.monotonic()
                log.warning("reconcile failed (%s: %s); retrying", type(exc).__name__, exc)
                await asyncio.sleep(1)
                continue
            if full:
                next_full = time.monotonic() + self.interval
            if len(result.activated) > 200 and not full:
                await asyncio.to_thread(release_memory)


class Settler:
    """Acknowledgements, make-before-break releases and stream gaps, four times a second."""

    def __init__(self, core: HolderCore, lease: LeaseKeeper, period: float = 0.25) -> None:
        self.core, self.lease, self.period = core, lease, period

    async def run(self) -> None:
        """Settle while active."""
        while True:
            await self.lease.active.wait()
            try:
                await self.core.settle()
            except Fenced as exc:
                await self.lease.lost(str(exc))
            except Exception as exc:  # noqa: BLE001 - gaps stay in the book for the next try
                log.warning("settle failed (%s: %s)", type(exc).__name__, exc)
            await asyncio.sleep(self.period)


class TickTimes:
    """Store first-tick times every flush interval, last-tick times every few of them.

    Writing every streaming row every second would cost Postgres 27,000 updates a second and
    slow every subscribe; last-tick times tolerate a coarser clock.
    """

    def __init__(self, store: PgStore, ticks: TickPipeline, lease: LeaseKeeper,
                 every: float, last_every: float) -> None:
        self.store, self.ticks, self.lease = store, ticks, lease
        self.every, self.last_every = every, last_every

    async def run(self) -> None:
        """Flush while active."""
        next_last = time.monotonic() + self.last_every
        while True:
            await asyncio.sleep(self.every)
            await self.lease.active.wait()
            seen = self.ticks.take_first()
            if time.monotonic() >= next_last:
                seen = {**self.ticks.last_tick, **seen}
                next_last = time.monotonic() + self.last_every
            if not seen:
                continue
            try:
                await self.store.record_ticks(seen)
            except Exception as exc:  # noqa: BLE001 - times only; the next flush catches up
                log.warning("tick times not stored: %s", exc)
                self.ticks.first_seen.update(seen)


class Stats:
    """The counts that /health and status show, every 2 s (the registry's size every minute)."""

    def __init__(self, store: PgStore) -> None:
        self.store = store
        self.counts: dict[str, int] = {}
        self.outbox_backlog = 0
        self.instruments = 0

    async def run(self) -> None:
        """Refresh forever (standbys too: their /health shows the same counts)."""
        rounds = 0
        while True:
            with contextlib.suppress(Exception):
                with_registry = rounds % 30 == 0 or not self.instruments
                self.counts, self.outbox_backlog, registry = await self.store.stats(with_registry)
                self.instruments = registry if registry is not None else self.instruments
            rounds += 1
            await asyncio.sleep(2)

    def document(self) -> dict[str, Any]:
        """For the state snapshot."""
        return {"subscriptions": self.counts, "outbox_backlog": self.outbox_backlog}
