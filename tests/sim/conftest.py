"""A simulator per test module, on a background thread of the test process (port 0).

The official KiteTicker runs in subprocesses (see `kite_scenarios.py`); KiteConnect runs here.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from ticker_worker.sim.server import SimConfig, SimServer, start


class ThreadedSim:
    """A running simulator and small HTTP helpers for its control routes."""

    def __init__(self, config: SimConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.server: SimServer = self.run(start(config))
        self.http = self.server.url_http
        self.ws = self.server.url_ws

    def run(self, coro: Any) -> Any:
        """Run a coroutine on the simulator's loop and return its result."""
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=30)

    def call(self, method: str, path: str) -> tuple[int, Any]:
        """An HTTP call without Kite credentials; returns (status, parsed JSON)."""
        request = urllib.request.Request(self.http + path, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def stats(self, tokens: bool = False) -> dict[str, Any]:
        status, body = self.call("GET", "/_sim/stats" + ("?tokens=1" if tokens else ""))
        assert status == 200
        return dict(body)

    def close(self) -> None:
        self.run(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def sim() -> Iterator[ThreadedSim]:
    """A simulator ticking every 0.1 s, accepting any key/token pair."""
    server = ThreadedSim(SimConfig(port=0, tick_interval=0.1, heartbeat_interval=0.5))
    yield server
    server.close()


@pytest.fixture
def fresh_sim(sim: ThreadedSim) -> ThreadedSim:
    """The module's simulator after `/_sim/reset`."""
    assert sim.call("POST", "/_sim/reset")[0] == 200
    return sim
