"""Drives the official KiteTicker against a simulator and prints one JSON result line.

Run as `python kite_scenarios.py SCENARIO WS_URL HTTP_URL API_KEY ACCESS_TOKEN [TOKENS...]`,
in its own process because Twisted's reactor cannot be restarted.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import threading
import urllib.request
from collections.abc import Callable
from typing import Any

from kiteconnect import KiteTicker
from twisted.internet import reactor


class Recorder:
    """Collects KiteTicker callbacks (they run on the reactor thread)."""

    def __init__(self, kws: KiteTicker) -> None:
        self.cond = threading.Condition()
        self.frames: list[list[dict[str, Any]]] = []
        self.events: list[list[Any]] = []
        kws.on_ticks = self._ticks
        kws.on_connect = lambda ws, response: self._event("connect")
        kws.on_close = lambda ws, code, reason: self._event("close", code, str(reason))
        kws.on_error = lambda ws, code, reason: self._event("error", code, str(reason))
        kws.on_reconnect = lambda ws, attempts: self._event("reconnect", attempts)
        kws.on_noreconnect = lambda ws: self._event("noreconnect")

    def _ticks(self, ws: KiteTicker, ticks: list[dict[str, Any]]) -> None:
        with self.cond:
            self.frames.append(ticks)
            self.cond.notify_all()

    def _event(self, *event: Any) -> None:
        with self.cond:
            self.events.append(list(event))
            self.cond.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise TimeoutError(f"gave up after {timeout}s; events={self.events}")

    def count(self, kind: str) -> int:
        return sum(1 for e in self.events if e[0] == kind)

    def window(self, frames: int) -> list[dict[str, Any]]:
        """Skip two frames (in flight before the last command), then collect `frames` more."""
        start = len(self.frames) + 2
        self.wait(lambda: len(self.frames) >= start + frames)
        with self.cond:
            return [t for frame in self.frames[start:start + frames] for t in frame]


def on_reactor(fn: Callable[..., Any], *args: Any) -> None:
    reactor.callFromThread(fn, *args)


def post(http: str, path: str) -> Any:
    request = urllib.request.Request(http + path, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def modes(ticks: list[dict[str, Any]]) -> dict[str, list[str]]:
    seen: dict[str, set[str]] = {}
    for tick in ticks:
        seen.setdefault(str(tick["instrument_token"]), set()).add(tick["mode"])
    return {token: sorted(m) for token, m in seen.items()}


def volume_steps_ok(ticks: list[dict[str, Any]], token: int) -> bool:
    """In quote/full mode, volume grows by exactly the last traded quantity per tick.

    A mode change repeats the current step's packet (volume unchanged): that is not a new tick.
    """
    mine = [t for t in ticks if t["instrument_token"] == token]
    mine = [b for a, b in itertools.pairwise([None, *mine])
            if a is None or a["volume_traded"] != b["volume_traded"]]
    pairs = itertools.pairwise(mine)
    return len(mine) > 2 and all(
        b["volume_traded"] - a["volume_traded"] == b["last_traded_quantity"] for a, b in pairs
    )


def scenario_modes(
    kws: KiteTicker, rec: Recorder, http: str, api_key: str, tokens: list[int]
) -> dict[str, Any]:
    index, equity, ltp_token = 256265, 408065, 5633
    on_reactor(kws.subscribe, [index, equity, ltp_token, *tokens])
    on_reactor(kws.set_mode, kws.MODE_FULL, [equity, *tokens])
    on_reactor(kws.set_mode, kws.MODE_LTP, [ltp_token])
    first = rec.window(5)
    on_reactor(kws.unsubscribe, [ltp_token])
    second = rec.window(3)
    on_reactor(kws.set_mode, kws.MODE_FULL, [index])
    third = rec.window(3)
    last = {str(t["instrument_token"]): t for t in first}
    return {
        "first": modes(first), "second": modes(second), "third": modes(third),
        "last": last, "volume_ok": volume_steps_ok(first, equity),
        "index_full": [t for t in third if t["instrument_token"] == index][-1],
    }


def scenario_faults(
    kws: KiteTicker, rec: Recorder, http: str, api_key: str, tokens: list[int]
) -> dict[str, Any]:
    on_reactor(kws.subscribe, [408065])
    on_reactor(kws.set_mode, kws.MODE_FULL, [408065])
    before = rec.window(2)
    post(http, f"/_sim/drop?api_key={api_key}")
    rec.wait(lambda: rec.count("connect") >= 2)
    after_drop = rec.window(3)
    post(http, f"/_sim/expire?api_key={api_key}")
    rec.wait(lambda: any(e[0] == "error" and "403" in e[2] for e in rec.events))
    return {"before": modes(before), "after_drop": modes(after_drop), "events": rec.events}


def scenario_ack(
    kws: KiteTicker, rec: Recorder, http: str, api_key: str, tokens: list[int]
) -> dict[str, Any]:
    """On a simulator whose clock does not step: every frame is the answer to a command."""
    on_reactor(kws.subscribe, [408065, 256265])
    rec.wait(lambda: len(rec.frames) >= 1)
    on_reactor(kws.set_mode, kws.MODE_FULL, [408065])
    rec.wait(lambda: len(rec.frames) >= 2)
    return {"frames": rec.frames[:2]}


SCENARIOS = {"modes": scenario_modes, "faults": scenario_faults, "ack": scenario_ack}


def main() -> None:
    name, ws_url, http, api_key, access_token, *extra = sys.argv[1:]
    kws = KiteTicker(api_key, access_token, root=ws_url, reconnect_max_delay=5,
                     reconnect_max_tries=3)
    rec = Recorder(kws)
    kws.connect(threaded=True)
    rec.wait(lambda: rec.count("connect") >= 1)
    result = SCENARIOS[name](kws, rec, http, api_key, [int(t) for t in extra])
    print(json.dumps(result, default=str), flush=True)
    # The reactor thread would keep reconnecting; leave without waiting for it.
    os._exit(0)


if __name__ == "__main__":
    main()
