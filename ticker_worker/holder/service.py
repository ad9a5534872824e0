"""The Holder: level-triggered reconcile of desired state against the live Kite connections.

One asyncio loop owns every connection. Reconcile runs on each nudge, after each (re)connect
problem, and on a timer; it sends only the difference, on the connections concerned.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import aiohttp
import redis.asyncio as aioredis
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from ticker_worker.bootstrap import Runtime
from ticker_worker.core.placement import Layout, Slot
from ticker_worker.core.reconcile import Placed, Plan, plan
from ticker_worker.db import accounts as account_repo
from ticker_worker.db import instruments
from ticker_worker.db.engine import make_engine
from ticker_worker.holder import store
from ticker_worker.holder.accounts import AccountState
from ticker_worker.holder.listener import NudgeListener
from ticker_worker.holder.relay import Relay
from ticker_worker.holder.ticks import TickPipeline
from ticker_worker.kite.ticker import TickerConnection

log = logging.getLogger(__name__)
T = TypeVar("T")
INLINE_ROWS = 200  # above this, a pass's database writes run on a thread
SWEEP_INTERVAL = 2.0  # seconds between outbox sweeps

try:
    _libc: ctypes.CDLL | None = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc: nothing to trim
    _libc = None


def release_memory() -> None:
    """Hand the memory of a bulk pass back to the OS instead of keeping it as free heap."""
    gc.collect()
    if _libc is not None:
        _libc.malloc_trim(0)


class Holder:
    """Keeps every wanted instrument streaming on exactly one connection."""

    def __init__(self, rt: Runtime, celery_app: Any) -> None:
        self.rt, self.settings = rt, rt.settings
        self.accounts: dict[str, AccountState] = {}
        self.actual: dict[int, Placed] = {}
        self.nudged = asyncio.Event()
        self.aredis = aioredis.Redis.from_url(self.settings.redis_url, socket_timeout=5,
                                              socket_connect_timeout=5)
        self.ticks = TickPipeline(self.aredis, rt.keys.ticks, self.settings.uses_simulator)
        self.relay = Relay(rt.engine, rt.redis, rt.keys, celery_app)
        self.listener = NudgeListener(self.settings.database_url, self.nudged)
        self.inline_engine = make_engine(
            self.settings.database_url, pool_size=1, application_name="ticker_worker-holder",
            statement_timeout_ms=250, lock_timeout_ms=50, connect_timeout=1,
        ).execution_options(isolation_level="AUTOCOMMIT")
        self.outbox: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
        self.session: aiohttp.ClientSession | None = None
        self.db_ok = False
        self.last_reconcile_at = 0.0
        self.reconcile_seconds = 0.0
        self.reconciles = 0
        self.counts: dict[str, int] = {}
        self.outbox_backlog = 0
        self.instruments = 0
        self.last_sweep = time.monotonic()
        # True while a bulk change is being placed slice by slice: the relay waits, so that
        # enqueueing thousands of backfills does not compete with placement for the GIL.
        self.placing = False

    # ---- reconcile -------------------------------------------------------------------------

    async def reconcile(self, full: bool, tokens: set[int] | None = None) -> Plan:
        """One pass: accounts, desired rows, the diff, the sends, the records.

        `tokens` narrows a nudge's pass to the rows it named; None reads every dirty row.
        """
        started = time.perf_counter()
        if full or not self.accounts:
            # Account changes (set-token, disable) are picked up within one timer period; a
            # nudge for a subscribe does not pay for re-reading them.
            await self._sync_accounts(await asyncio.to_thread(self._read_accounts))
        # A nudge naming a few tokens is small: run its SQL inline (a thread hop costs more than
        # the query). Other passes may read thousands of rows: a thread keeps the loop free.
        if full or not tokens:
            desired, meta = await asyncio.to_thread(self._read_desired, self.rt.autocommit, full,
                                                    None)
        else:
            desired, meta = await self._inline(self._read_desired, full, tokens)
        desired = self._slice(desired, full, tokens)
        layout = Layout([a.load() for a in self.accounts.values()],
                        self.settings.max_tokens_per_connection,
                        self.settings.max_connections_per_account)
        result = plan(desired, self.actual, layout, full)
        if not result.is_empty():
            await self._apply(result)
            if len(desired) > INLINE_ROWS:
                events = await asyncio.to_thread(self._record, self.rt.autocommit, result, meta)
            else:
                events = await self._inline(self._record, result, meta)
            if events:
                await self._publish(events)
            self._log_plan(result)
            if len(desired) > INLINE_ROWS and not full:
                release_memory()
        await self._retire_unusable()
        self.db_ok = True
        self.last_reconcile_at = time.time()
        self.reconcile_seconds = time.perf_counter() - started
        self.reconciles += 1
        return result

    def _slice(self, desired: list[Any], full: bool, tokens: set[int] | None) -> list[Any]:
        """At most PASS_LIMIT new rows per pass; the rest go to the next pass at once."""
        self.placing = False
        if not full:
            if not tokens and len(desired) >= store.PASS_LIMIT:
                self._more()
            return desired
        fresh = [d for d in desired if d.dirty and d.token not in self.actual]
        if len(fresh) <= store.PASS_LIMIT:
            return desired
        deferred = {d.token for d in fresh[store.PASS_LIMIT:]}
        self._more()
        # Deferred rows are not placed yet, so leaving them out cannot make them orphans.
        return [d for d in desired if d.token not in deferred]

    def _more(self) -> None:
        self.placing = True
        self.listener.ask()

    def _read_accounts(self) -> list[account_repo.AccountRow]:
        with self.rt.engine.connect() as conn:
            return account_repo.list_all(conn)

    async def _inline(self, call: Callable[..., T], *args: Any) -> T:
        """Run a small database call on the loop itself: a thread hop costs more than the
        query. Its connection gives up on a lock after 50 ms and on the statement after
        250 ms, and the call is then retried on a thread, so a migration holding a lock or a
        slow server never freezes the ticks and /health. Each call is one autocommit
        statement, so a cancelled one wrote nothing."""
        try:
            return call(self.inline_engine, *args)
        except DBAPIError as exc:
            log.info("inline database call gave up (%s); retrying on a thread", exc.orig)
            return await asyncio.to_thread(call, self.rt.autocommit, *args)

    @staticmethod
    def _read_desired(
        engine: Engine, full: bool, tokens: set[int] | None
    ) -> tuple[list[Any], store.Metadata]:
        with engine.connect() as conn:
            return store.read_desired(conn, full, tokens)

    @staticmethod
    def _record(engine: Engine, result: Plan, meta: store.Metadata) -> list[dict[str, Any]]:
        with engine.connect() as conn:
            return store.record(conn, result, meta)

    async def _sync_accounts(self, rows: list[account_repo.AccountRow]) -> None:
        names = {r.name for r in rows}
        for row in rows:
            state = self.accounts.get(row.name)
            if state is None:
                self.accounts[row.name] = AccountState(row)
            elif state.update(row):
                log.info("account usable again", extra={"account": row.name})
        for name in [n for n in self.accounts if n not in names]:
            self.accounts[name].row = account_repo.AccountRow(
                name, "", "", enabled=False, healthy=False, unhealthy_reason="deleted")

    async def _retire_unusable(self) -> None:
        for state in self.accounts.values():
            if not state.usable and state.connections:
                await self._retire(state)

    async def _retire(self, state: AccountState) -> None:
        # Called after the plan moved its instruments elsewhere (subscribed there first).
        for conn in state.connections.values():
            await conn.stop()
        state.connections.clear()

    def _connection(self, slot: Slot) -> TickerConnection:
        state = self.accounts[slot[0]]
        conn = state.connections.get(slot[1])
        if conn is None:
            assert self.session is not None
            conn = TickerConnection(
                state.name, slot[1], self.settings.kite_ws_root, state.credentials, self.session,
                self._on_frame, self._on_auth_rejected, stale_after=self.settings.stale_after,
                max_delay=self.settings.reconnect_max_delay,
                batch_size=self.settings.subscribe_batch_size,
                # Level-triggered: every (re)connect is followed by a reconcile pass.
                on_connected=lambda _: self.listener.ask())
            state.connections[slot[1]] = conn
            conn.start()
        return conn

    async def _apply(self, result: Plan) -> None:
        # Make before break: subscribe on the new connections before releasing old ones.
        for slot, by_mode in result.subscribe.items():
            conn = self._connection(slot)
            for mode, tokens in by_mode.items():
                await conn.subscribe(tokens, mode)
        for slot, by_mode in result.set_mode.items():
            for mode, tokens in by_mode.items():
                await self._connection(slot).set_mode(tokens, mode)
        for slot, tokens in result.unsubscribe.items():
            state = self.accounts.get(slot[0])
            old = state.connections.get(slot[1]) if state else None
            if old is not None:
                await old.unsubscribe(tokens)
        gone = [t for tokens in result.unsubscribe.values() for t in tokens if t not in self.actual]
        self.ticks.forget(gone)
        self.ticks.expect_first([d.token for d, _ in result.activated if d.status != "active"])

    def _log_plan(self, result: Plan) -> None:
        log.info("reconciled: %d placed, %d removed, %d queued, %d mode changes on %d connections",
                 len(result.activated), len(result.removed), len(result.queued),
                 sum(len(t) for m in result.set_mode.values() for t in m.values()),
                 len(result.touched()))

    async def _publish(self, events: list[dict[str, Any]]) -> None:
        try:
            await self.relay.publish_now(self.aredis, events)
        except Exception as exc:  # noqa: BLE001 - still in the outbox: the sweep delivers it
            log.warning("events not published now (%s); the outbox sweep will retry", exc)
            return
        self.outbox.put_nowait(events)

    # ---- callbacks from connections -------------------------------------------------------

    async def _on_frame(self, conn: TickerConnection, frame: bytes) -> None:
        await self.ticks.put(frame)

    def _on_auth_rejected(self, conn: TickerConnection) -> None:
        state = self.accounts.get(conn.account)
        if state is None or state.auth_failed:
            return
        state.auth_failed = True
        reason = "access token rejected by Kite (403): run `ticker-worker accounts set-token`"
        asyncio.get_running_loop().create_task(self._mark_unhealthy(state.name, reason))
        self.listener.ask(full=True)  # move its instruments now, not at the next timer pass

    async def _mark_unhealthy(self, name: str, reason: str) -> None:
        def write() -> None:
            with self.rt.engine.begin() as db:
                account_repo.mark_health(db, name, False, reason)
        try:
            await asyncio.to_thread(write)
        except Exception:
            log.exception("could not record the account's health", extra={"account": name})

    # ---- loops ---------------------------------------------------------------------------

    async def reconcile_loop(self) -> None:
        """Reconcile on every nudge (dirty rows) and on the timer (everything)."""
        next_full = 0.0
        while True:
            timeout = max(0.0, next_full - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.nudged.wait(), timeout)
            self.nudged.clear()
            full_wanted, all_dirty, tokens = self.listener.take()
            full = full_wanted or time.monotonic() >= next_full
            try:
                await self.reconcile(full, None if all_dirty else tokens)
            except Exception as exc:  # noqa: BLE001 - Postgres down: retry on the timer
                self.db_ok = False
                log.warning("reconcile failed (%s: %s); retrying", type(exc).__name__, exc)
                await asyncio.sleep(1)
                continue
            if full:
                next_full = time.monotonic() + self.settings.reconcile_interval

    async def relay_loop(self) -> None:
        """Finish fresh events as they come; sweep the outbox every 2 s whatever the traffic.

        The sweep has its own clock: events that missed Redis during an outage must go out
        even while new commands keep arriving.
        """
        next_sweep = time.monotonic() + SWEEP_INTERVAL
        while True:
            events = await self._next_events(next_sweep)
            if events:
                await self._finish(events)
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + SWEEP_INTERVAL
                if self.outbox.empty() or self._sweep_overdue():
                    await self._sweep()

    async def _next_events(self, until: float) -> list[dict[str, Any]] | None:
        if not self.outbox.empty():
            return self.outbox.get_nowait()
        try:
            return await asyncio.wait_for(self.outbox.get(), max(0.01, until - time.monotonic()))
        except TimeoutError:
            return None

    async def _finish(self, events: list[dict[str, Any]]) -> None:
        await self._wait_for_placement()
        try:
            await asyncio.to_thread(self.relay.finish, events)
        except Exception as exc:  # noqa: BLE001 - left in the outbox, swept later
            log.warning("event delivery failed (%s); will retry from the outbox", exc)
        if len(events) > INLINE_ROWS and self.outbox.empty():
            release_memory()

    async def _sweep(self) -> None:
        self.last_sweep = time.monotonic()
        try:
            await asyncio.to_thread(self.relay.sweep)
        except Exception as exc:  # noqa: BLE001 - Redis or Postgres still away
            log.warning("outbox sweep failed: %s", exc)

    async def _wait_for_placement(self, limit: float = 10.0) -> None:
        # Events are already published; only their backfill enqueue waits, and not forever.
        deadline = time.monotonic() + limit
        while self.placing and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    def _sweep_overdue(self) -> bool:
        # A bulk change keeps the queue busy for a while; never let the sweep starve for long.
        return time.monotonic() - self.last_sweep > 30

    async def tick_times_loop(self) -> None:
        """Store first-tick times every flush interval, last-tick times every few of them.

        Writing every streaming row every second would cost Postgres 27,000 updates a second
        and slow every subscribe; last-tick times tolerate a coarser clock.
        """
        next_last = time.monotonic() + self.settings.last_tick_flush_interval
        while True:
            await asyncio.sleep(self.settings.tick_flush_interval)
            seen = self.ticks.take_first()
            if time.monotonic() >= next_last:
                seen = {**self.ticks.last_tick, **seen}
                next_last = time.monotonic() + self.settings.last_tick_flush_interval
            if not seen:
                continue
            try:
                await asyncio.to_thread(self._write_ticks, seen)
            except Exception as exc:  # noqa: BLE001 - times only; the next flush catches up
                log.warning("tick times not stored: %s", exc)
                self.ticks.first_seen.update(seen)

    def _write_ticks(self, seen: dict[int, float]) -> None:
        with self.rt.engine.begin() as conn:
            store.record_ticks(conn, seen)

    async def stats_loop(self) -> None:
        """Refresh the counts that /health and status show every 2 s (the registry's size,
        a scan of ~100k rows that changes once a day, every minute)."""
        rounds = 0
        while True:
            try:
                with_registry = rounds % 30 == 0 or not self.instruments
                self.counts, self.outbox_backlog, registry = await asyncio.to_thread(
                    self._read_stats, with_registry)
                self.instruments = registry if registry is not None else self.instruments
                self.db_ok = True
            except Exception:  # noqa: BLE001
                self.db_ok = False
            rounds += 1
            await asyncio.sleep(2)

    def _read_stats(self, with_registry: bool) -> tuple[dict[str, int], int, int | None]:
        with self.rt.engine.connect() as conn:
            return (store.status_counts(conn), store.outbox_backlog(conn),
                    instruments.count(conn) if with_registry else None)

    async def close(self) -> None:
        """Close every connection and client."""
        for state in self.accounts.values():
            await self._retire(state)
        await self.aredis.aclose()
        self.inline_engine.dispose()
        if self.session is not None:
            await self.session.close()
