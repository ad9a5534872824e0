"""Tick sources for the end-to-end benchmarks, each stamping arrivals before any parsing.

`RawTicks` keeps every message published on `{prefix}:ticks` as (arrival, bytes);
`first_arrival` finds an instrument's first tick in them by a byte search (no JSON parse).
`Direct` is a second api key's own WebSocket to the simulator, subscribed to a sample of the
same instruments: the simulator sends every connection the same packets of a step, so a tick
matched by (token, volume) on both sides gives the delay the holder adds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
import time
from typing import Any

import aiohttp
import orjson
import redis

from benchmarks import harness as h
from ticker_worker.kite.codec import decode_frame


class RawTicks:
    """Every message on the ticks channel, stamped on arrival (perf_counter), unparsed."""

    def __init__(self, client: redis.Redis) -> None:
        own = redis.Redis(connection_pool=redis.ConnectionPool(
            **client.connection_pool.connection_kwargs))
        self.pubsub = own.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(h.KEYS.ticks)
        self.messages: list[tuple[float, bytes]] = []
        self.closed = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        with contextlib.suppress(redis.ConnectionError, ValueError, AttributeError):
            for message in self.pubsub.listen():
                if self.closed:
                    return
                self.messages.append((time.perf_counter(), message["data"]))

    def reset(self) -> None:
        """Forget what arrived so far (a fresh list: the reader appends to the new one)."""
        self.messages = []

    def first_arrival(self, token: int, after: float, timeout: float = 60) -> float:
        """When the first tick of `token` arrived after `after` (waits for it)."""
        needle = b'"instrument_token":%d,' % token
        deadline, seen = time.monotonic() + timeout, 0
        while time.monotonic() < deadline:
            messages = self.messages
            for stamp, data in messages[seen:]:
                if stamp >= after and needle in data:
                    return stamp
            seen = len(messages)
            time.sleep(0.0005)
        raise TimeoutError(f"no tick of {token} on {h.KEYS.ticks} within {timeout}s")

    def close(self) -> None:
        self.closed = True
        self.pubsub.close()


class Observer:
    """A second api key's own socket to the simulator, on a thread and loop of its own.

    Open it before the holder connects: the simulator serves a step's connections in the order
    they opened, so the observer gets each step first and the holder's figure includes the
    time the simulator spends on the holder's (bigger) frames: an upper bound, never flattered.
    """

    def __init__(self, ws_url: str, sample: list[int]) -> None:
        self.url = f"{ws_url}/?api_key=direct-observer&access_token=t"
        self.sample = sample
        self.frames: list[tuple[float, bytes]] = []
        self.recording = False
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_until_complete,
                                       args=(self._run(),), daemon=True)
        self.thread.start()
        if not self.ready.wait(30):
            raise TimeoutError("the observer could not connect to the simulator")

    async def _run(self) -> None:
        self.stopped = asyncio.Event()
        async with aiohttp.ClientSession() as session, session.ws_connect(
            self.url, max_msg_size=0
        ) as ws:
            await ws.send_str(json.dumps({"a": "subscribe", "v": self.sample}))
            self.ready.set()
            reader = asyncio.create_task(self._read(ws))
            await self.stopped.wait()
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY and len(msg.data) > 1 and self.recording:
                self.frames.append((time.perf_counter(), msg.data))

    def window(self, r: redis.Redis, seconds: float, settle: float = 3.0) -> dict[str, Any]:
        """Record `seconds` of the sample on both sides and match them."""
        relayed = RawTicks(r)
        # A reader waiting for the GIL would otherwise wait up to 5 ms before it could stamp.
        sys.setswitchinterval(0.0001)
        try:
            time.sleep(0.5)  # the Redis subscription is in place
            self.frames = []
            self.recording = True
            time.sleep(seconds)
            window_end = time.perf_counter()
            self.recording = False
            time.sleep(settle)  # ticks of the window still in flight via the holder
        finally:
            relayed.close()
            sys.setswitchinterval(0.005)
        return match(self.frames, relayed.messages, set(self.sample), window_end)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stopped.set)
        self.thread.join(10)


def match(direct: list[tuple[float, bytes]], relayed: list[tuple[float, bytes]],
          sample: set[int], window_end: float) -> dict[str, Any]:
    seen: dict[tuple[int, int], float] = {}
    for stamp, frame in direct:
        if stamp > window_end:
            continue
        for tick in decode_frame(frame):
            seen.setdefault((tick["instrument_token"], tick["volume_traded"]), stamp)
    arrived: dict[tuple[int, int], float] = {}
    for stamp, body in relayed:
        for tick in orjson.loads(body):
            token = tick["instrument_token"]
            if token in sample and "volume_traded" in tick:
                arrived.setdefault((token, tick["volume_traded"]), stamp)
    delays = [(arrived[key] - stamp) * 1e3 for key, stamp in seen.items() if key in arrived]
    return {"delays_ms": delays, "matched": len(delays), "lost": len(seen) - len(delays),
            "relayed_messages": len(relayed)}
