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
import threading
import time
from typing import Any

import aiohttp
import orjson
import redis
import redis.asyncio as aioredis

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


async def direct_and_holder(
    ws_url: str, sample: list[int], seconds: float, settle: float = 3.0
) -> dict[str, Any]:
    """Stamp the sample's ticks seen directly and on Redis for `seconds`; match them after.

    Returns the delays (holder arrival - direct arrival, ms), and the ticks seen directly in
    the window that never reached Redis (`lost`).
    """
    direct: list[tuple[float, bytes]] = []
    relayed: list[tuple[float, bytes]] = []
    recording = asyncio.Event()
    client = aioredis.Redis.from_url(h.SETTINGS.redis_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(h.KEYS.ticks)

    async def from_redis() -> None:
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message is not None and recording.is_set():
                relayed.append((time.perf_counter(), message["data"]))

    async def from_kite(ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY and len(msg.data) > 1 and recording.is_set():
                direct.append((time.perf_counter(), msg.data))

    async with aiohttp.ClientSession() as session, session.ws_connect(
        f"{ws_url}/?api_key=direct-observer&access_token=t", max_msg_size=0
    ) as ws:
        await ws.send_str(json.dumps({"a": "subscribe", "v": sample}))
        tasks = [asyncio.create_task(from_redis()), asyncio.create_task(from_kite(ws))]
        await asyncio.sleep(settle)
        recording.set()
        await asyncio.sleep(seconds)
        window_end = time.perf_counter()
        await asyncio.sleep(settle)  # ticks of the window still in flight through the holder
        recording.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await pubsub.aclose()
    await client.aclose()
    return match(direct, relayed, set(sample), window_end)


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
