"""`ticker-worker holder`: wires the Holder's loops, its HTTP server and state key, supervises.

If any loop dies unexpectedly the process exits non-zero, so a supervisor restarts it cleanly
(a restart loses nothing: desired state is in Postgres and reconcile rebuilds the streams).
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
from aiohttp import web

from ticker_worker.bootstrap import Runtime
from ticker_worker.holder import mock_ticks, snapshot
from ticker_worker.holder.http import build_app
from ticker_worker.holder.service import Holder

log = logging.getLogger(__name__)
STATE_TTL = 10


class Supervisor:
    """Runs the holder until a signal or a loop failure."""

    def __init__(self, rt: Runtime, celery_app: Any, holder_cls: type[Holder] = Holder) -> None:
        self.holder = holder_cls(rt, celery_app)
        self.rt = rt
        self.rate = 0.0
        self.http_port: int | None = None

    def document(self) -> dict[str, Any]:
        """The state as of now (cheap: no I/O), with the last measured tick rate."""
        doc = snapshot.build(self.holder, self.rate)
        doc["http_port"] = self.http_port
        return doc

    async def snapshot_loop(self) -> None:
        """Refresh the state document every second and publish it with a TTL."""
        last_total, last_at = 0, time.monotonic()
        while True:
            await asyncio.sleep(1)
            now, total = time.monotonic(), self.holder.ticks.ticks_total
            self.rate = (total - last_total) / max(now - last_at, 1e-6)
            last_total, last_at = total, now
            with contextlib.suppress(Exception):
                await self.holder.aredis.set(
                    self.rt.keys.holder_state, orjson.dumps(self.document()), ex=STATE_TTL)

    async def _start_http(self) -> web.AppRunner:
        runner = web.AppRunner(build_app(self.document), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.rt.settings.holder_http_host,
                           self.rt.settings.holder_http_port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.http_port = sockets[0].getsockname()[1] if sockets else None
        log.info("holder HTTP on port %s (/health, /metrics)", self.http_port)
        return runner

    async def run(self) -> int:
        """Start every loop; return the exit code."""
        holder = self.holder
        holder.session = aiohttp.ClientSession()
        runner = await self._start_http()
        loops = {
            asyncio.create_task(coro, name=name) for name, coro in (
                ("nudges", holder.listener.run()), ("reconcile", holder.reconcile_loop()),
                ("relay", holder.relay_loop()), ("ticks", holder.ticks.run()),
                ("tick-times", holder.tick_times_loop()), ("stats", holder.stats_loop()),
                ("snapshot", self.snapshot_loop()))
        }
        if self.rt.settings.mock_outside_market_hours:
            mock = mock_ticks.from_runtime(self.rt, holder.aredis).run()
            loops.add(asyncio.create_task(mock, name="mock-ticks"))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        stopper = asyncio.create_task(stop.wait(), name="signals")
        done, _ = await asyncio.wait(loops | {stopper}, return_when=asyncio.FIRST_COMPLETED)
        code = 0
        for task in done:
            if task is not stopper:
                log.error("holder loop %s died: %r; exiting", task.get_name(), task.exception())
                code = 1
        for task in loops | {stopper}:
            task.cancel()
        await asyncio.gather(*loops, stopper, return_exceptions=True)
        await holder.close()
        await runner.cleanup()
        with contextlib.suppress(Exception):
            self.rt.redis.delete(self.rt.keys.holder_state)
        log.info("holder stopped")
        return code


def tune_runtime() -> None:
    """Tune the interpreter for a process that decodes tens of thousands of ticks a second.

    Tick dicts are acyclic and short-lived: freeze the start-up heap and collect less often
    (the default gen-0 threshold of 700 allocations collects every few packets, for nothing).
    A shorter GIL switch interval lets the event loop answer a nudge within half a
    millisecond while the decode thread chews through a 3000-packet frame.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    sys.setswitchinterval(0.0005)


def run(rt: Runtime, holder_cls: type[Holder] = Holder) -> int:
    """Run the holder in this process until SIGINT/SIGTERM."""
    from ticker_worker.celery import app

    # The holder enqueues a backfill per created subscription, 27,000 after a bulk subscribe.
    # A `task-sent` event per message halves that rate, and Flower still sees every backfill
    # from the worker's received/started/succeeded events.
    app.conf.task_send_sent_event = False
    log.info("holder starting (Kite ticker at %s)", rt.settings.kite_ws_root)
    tune_runtime()
    return asyncio.run(Supervisor(rt, app, holder_cls).run())
