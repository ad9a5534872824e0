"""The simulator's entry points: build the aiohttp app, start it on a loop, or run it blocking.

One port serves the ticker WebSocket at `/`, the Kite REST routes and the `/_sim/` controls.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from ticker_worker.sim import control, login, rest
from ticker_worker.sim.state import SIMULATOR, SimConfig, Simulator, error_response
from ticker_worker.sim.universe import build_universe
from ticker_worker.sim.ws import ticker_socket

__all__ = ["SimConfig", "SimServer", "build_app", "run", "start"]


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    # The official client raises a confusing DataException on aiohttp's text/plain 404s.
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, "GeneralException", f"{exc.reason}: {request.path}")


async def _clock(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(app[SIMULATOR].hub.run(), name="sim-clock")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _drop_sockets(app: web.Application) -> None:
    # Open WebSockets would otherwise hold up a graceful shutdown.
    app[SIMULATOR].hub.reset()


def build_app(config: SimConfig) -> web.Application:
    """Build the simulator's application (the instrument universe is generated here)."""
    app = web.Application(middlewares=[_json_errors])
    app[SIMULATOR] = Simulator(config)
    app.router.add_get("/", ticker_socket)
    rest.add_routes(app.router)
    login.add_routes(app.router)
    control.add_routes(app.router)
    app.cleanup_ctx.append(_clock)
    app.on_shutdown.append(_drop_sockets)
    return app


class SimServer:
    """A running simulator: where it listens, and how to stop it."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self._runner = runner
        self.host = host
        self.port = port
        self.url_ws = f"ws://{host}:{port}"
        self.url_http = f"http://{host}:{port}"

    @property
    def simulator(self) -> Simulator:
        """The live state, for in-process tests."""
        return self._runner.app[SIMULATOR]

    async def stop(self) -> None:
        """Close every socket and the listener."""
        await self._runner.cleanup()


async def start(config: SimConfig) -> SimServer:
    """Start the simulator on the running loop; `config.port=0` picks a free port."""
    # Generating the universe takes a moment; do it off the loop (the result is cached).
    await asyncio.get_running_loop().run_in_executor(None, build_universe, config.seed)
    app = build_app(config)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    port = int(runner.addresses[0][1])
    return SimServer(runner, config.host, port)


async def _serve(config: SimConfig) -> None:
    server = await start(config)
    print(
        f"Kite simulator listening on {server.url_http} (ticker WebSocket {server.url_ws}/, "
        f"seed {config.seed}, tick interval {config.tick_interval}s, market {config.market}, "
        f"now {server.simulator.clock.now_ist().isoformat(timespec='seconds')})",
        flush=True,
    )
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopped.set)
    try:
        await stopped.wait()
    finally:
        await server.stop()


def run(config: SimConfig) -> None:
    """Run the simulator until Ctrl-C or SIGTERM (the `ticker-worker sim` command)."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(config))
