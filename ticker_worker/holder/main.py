"""`ticker-worker holder`: the composition root that builds the holder and watches its jobs.

Everything the holder core needs is built here from the settings and injected (holder/ports.py):
no module looks anything up globally. If any job dies unexpectedly the process exits non-zero,
so a supervisor restarts it cleanly (a restart loses nothing: desired state is in Postgres, and a
standby, if any, takes over meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
import time
from typing import Any

import aiohttp
import orjson
import redis.asyncio as aioredis
from aiohttp import web

from ticker_worker.bootstrap import Runtime
from ticker_worker.db.engine import make_engine
from ticker_worker.holder import mock_ticks, snapshot
from ticker_worker.holder.core import HolderCore
from ticker_worker.holder.database import Database, PgStore
from ticker_worker.holder.http import build_app
from ticker_worker.holder.jobs import (
    Reconciler,
    Settler,
    Stats,
    TickTimes,
    limit_arenas,
    release_memory,
)
from ticker_worker.holder.lease import LeaseKeeper
from ticker_worker.holder.listener import NudgeListener
from ticker_worker.holder.relay import Relay, RelayLoop
from ticker_worker.holder.standby import PgPlacement, WarmPlacement, report_resumed, take_over
from ticker_worker.holder.ticks import TickPipeline
from ticker_worker.kite.ticker import LinkEvents, TickerConnection

log = logging.getLogger(__name__)
STATE_TTL = 10
SHUTDOWN_CLOSE = 1.0  # seconds the sockets get to close before the lease is handed over anyway


class SystemClock:
    """The real clocks."""

    monotonic = staticmethod(time.monotonic)
    time = staticmethod(time.time)


class HolderApp:
    """One holder process: its parts, its jobs, its HTTP face."""

    def __init__(self, rt: Runtime, celery_app: Any,
                 core_cls: type[HolderCore] = HolderCore) -> None:
        self.rt, s = rt, rt.settings
        self.settings = s
        self.aredis = aioredis.Redis.from_url(s.redis_url, socket_timeout=5,
                                              socket_connect_timeout=5)
        engine = make_engine(s.database_url, pool_size=3, application_name="ticker_worker-holder",
                             statement_timeout_ms=10_000, lock_timeout_ms=2_000,
                             connect_timeout=2, keepalives=True, autocommit=True)
        self.db = Database(engine)
        # A released lease is announced on the nudge channel: a standby takes it at once.
        self.listener = NudgeListener(s.database_url, asyncio.Event(),
                                      on_lease_freed=lambda: self.lease.wake.set())
        self.lease = LeaseKeeper(self.db, self.aredis, rt.keys, s.lease_ttl,
                                 self._on_active, self._on_standby)
        self.store = PgStore(self.db, self.lease.current_epoch)
        self.ticks = TickPipeline(self.aredis, rt.keys.ticks, s.uses_simulator,
                                  message_ticks=s.tick_message_ticks)
        self.ticks.gate = self.lease.may_publish
        self.relay = RelayLoop(Relay(rt.engine, rt.redis, rt.keys, celery_app), self.aredis,
                               self.lease.current_epoch, lambda: self.core.placing,
                               release_memory)
        self.session: aiohttp.ClientSession | None = None
        self.core = core_cls(s, self.store, self._open_link, self.relay, self.ticks,
                             SystemClock(), lambda full: self.listener.ask(full=full))
        self.stats = Stats(self.store)
        self.warm = WarmPlacement(PgPlacement(self.db))
        self.rate = 0.0
        self.http_port: int | None = None

    def _open_link(self, account: str, index: int, credentials: Any,
                   events: LinkEvents) -> TickerConnection:
        assert self.session is not None
        s = self.settings
        return TickerConnection(account, index, s.kite_ws_root, credentials, self.session,
                                events, stale_after=s.stale_after, max_delay=s.reconnect_max_delay,
                                batch_size=s.subscribe_batch_size)

    async def _on_active(self, epoch: int) -> None:
        taken = time.monotonic()
        opened, adopted = await take_over(self.core, self.warm)
        if opened:
            log.info("resuming %d streaming instruments (their silence is reported as gaps); "
                     "%d sent at once on their recorded connections (%.3f s)", opened, adopted,
                     time.monotonic() - taken)
            self.core.spawn(report_resumed(self.core, taken))
        self.listener.ask(full=True)

    async def _on_standby(self) -> None:
        self.ticks.clear()
        await self.core.close()

    def document(self) -> dict[str, Any]:
        """The state as of now (cheap: no I/O), with the last measured tick rate."""
        doc = snapshot.build(self, self.rate)
        doc["http_port"] = self.http_port
        return doc

    async def snapshot_loop(self) -> None:
        """Measure the tick rate every second; the active holder publishes its state with a TTL."""
        last_total, last_at = 0, time.monotonic()
        while True:
            await asyncio.sleep(1)
            now, total = time.monotonic(), self.ticks.ticks_total
            self.rate = (total - last_total) / max(now - last_at, 1e-6)
            last_total, last_at = total, now
            # The same gate as ticks: a holder resumed after a pause must not overwrite the
            # new active holder's state with its own stale "active" before it steps down.
            if self.lease.active.is_set() and self.lease.may_publish():
                with contextlib.suppress(Exception):
                    await self.aredis.set(self.rt.keys.holder_state,
                                          orjson.dumps(self.document()), ex=STATE_TTL)

    async def _start_http(self) -> web.AppRunner:
        runner = web.AppRunner(build_app(self.document), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.holder_http_host, self.settings.holder_http_port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.http_port = sockets[0].getsockname()[1] if sockets else None
        log.info("holder HTTP on port %s (/health, /metrics)", self.http_port)
        return runner

    def _jobs(self) -> dict[str, Any]:
        s, core, lease = self.settings, self.core, self.lease
        jobs = {
            "lease": lease.run(), "presence": lease.presence(), "nudges": self.listener.run(),
            "reconcile": Reconciler(core, self.listener, lease, s.reconcile_interval).run(),
            "settle": Settler(core, lease).run(), "relay": self.relay.run(),
            "ticks": self.ticks.run(), "stats": self.stats.run(),
            "tick-times": TickTimes(self.store, self.ticks, lease, s.tick_flush_interval,
                                    s.last_tick_flush_interval).run(),
            "snapshot": self.snapshot_loop(), "standby": self.warm.run(lease.active),
        }
        if s.mock_outside_market_hours:
            jobs["mock-ticks"] = mock_ticks.from_runtime(self.rt, self.aredis,
                                                         lease.may_publish).run()
        return jobs

    async def run(self) -> int:
        """Start every job; return the exit code when a signal arrives or a job dies."""
        self.session = aiohttp.ClientSession()
        runner = await self._start_http()
        jobs = {asyncio.create_task(coro, name=name) for name, coro in self._jobs().items()}
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        stopper = asyncio.create_task(stop.wait(), name="signals")
        done, _ = await asyncio.wait(jobs | {stopper}, return_when=asyncio.FIRST_COMPLETED)
        code = 0
        for task in done:
            if task is not stopper:
                log.error("holder job %s died: %r; exiting", task.get_name(), task.exception())
                code = 1
        await self._shutdown(jobs | {stopper}, runner)
        return code

    async def _shutdown(self, tasks: set[asyncio.Task[Any]], runner: web.AppRunner) -> None:
        was_active = self.lease.active.is_set()
        # Close the sockets, then hand over: the new holder needs their Kite slots (3 per api
        # key) and connects the moment it has the lease; a 4th connection would be refused and
        # retried after a backoff. A pass still running opens nothing once the core stood down.
        self.lease.begin_leaving()
        with contextlib.suppress(TimeoutError):  # a stuck close must not delay the hand-over
            async with asyncio.timeout(SHUTDOWN_CLOSE):
                await self.core.close()
        await self.lease.release()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.core.close()
        if was_active:
            with contextlib.suppress(Exception):
                await self.aredis.delete(self.rt.keys.holder_state)
        await self.aredis.aclose()
        await runner.cleanup()
        if self.session is not None:
            await self.session.close()
        self.db.close()
        log.info("holder stopped")


def tune_runtime() -> None:
    """Tune the interpreter for a process that decodes tens of thousands of ticks a second.

    Tick dicts are acyclic and short-lived: freeze the start-up heap and collect less often
    (the default gen-0 threshold of 700 allocations collects every few packets, for nothing).
    A shorter GIL switch interval lets the event loop answer a nudge within half a
    millisecond while the decode thread chews through a 3000-packet frame. Two malloc arenas
    instead of one per allocating thread (holder/jobs.py).
    """
    limit_arenas()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    sys.setswitchinterval(0.0005)


def run(rt: Runtime, core_cls: type[HolderCore] = HolderCore) -> int:
    """Run the holder in this process until SIGINT/SIGTERM."""
    from ticker_worker.celery import app

    configure_celery(app)
    log.info("holder starting (Kite ticker at %s)", rt.settings.kite_ws_root)
    tune_runtime()
    return asyncio.run(HolderApp(rt, app, core_cls).run())


def configure_celery(app: Any) -> None:
    """The holder's Celery app only sends backfills, and sends a great many."""
    # The holder enqueues a backfill per created subscription, 27,000 after a bulk subscribe.
    # A `task-sent` event per message halves that rate, and Flower still sees every backfill
    # from the worker's received/started/succeeded events.
    app.conf.task_send_sent_event = False
    # It never reads a backfill's result. With the Redis result backend every send_task would
    # SUBSCRIBE this process to the task's result channel, and nothing here ever drains the
    # confirmations: the process grew with every backfill sent (30,000 sends: +11.7 MB RSS, +3.1
    # MB without; a 30-minute soak with a drop a minute sends 290,000). The workers still store
    # results with their own backend: the messages do not change.
    app.conf.result_backend = None
