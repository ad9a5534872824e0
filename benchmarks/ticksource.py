"""Tick sources for the end-to-end benchmarks, each stamping arrivals before any parsing.

`RawTicks` keeps every message published on `{prefix}:ticks` as (arrival, bytes), stamped as
the socket delivers its last byte (the RESP is parsed afterwards); `first_arrival` finds an
instrument's first tick in them by a byte search (no JSON parse).
`Observer` is a second api key's own WebSocket to the simulator, subscribed to a sample of the
same instruments: the simulator sends every connection the same packets of a step, so a tick
matched by (token, volume) on both sides gives the delay the holder adds. The simulator's send
times (`/_sim/sends`) show that both sides' frames of a step left together, and time the
holder from the moment its own frame began to leave (`send_times`).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import socket
import sys
import threading
import time
from typing import Any

import aiohttp
import orjson
import redis

from benchmarks import harness as h
from ticker_worker.kite.codec import decode_frame

OBSERVER_KEY = "direct-observer"


class RawTicks:
    """Every message on the ticks channel as (arrival, bytes), parsed only when asked for.

    A thread of its own reads the subscription's socket and stamps each chunk it receives
    (perf_counter) before anything else; a message's arrival is the stamp of the chunk that
    held its last byte. The RESP is parsed later, outside the stopwatch: a client library would
    stamp only after parsing a 160 kB-1 MB message, charging the reader to the holder.
    """

    def __init__(self, client: redis.Redis) -> None:
        kwargs = client.connection_pool.connection_kwargs
        self.sock = socket.create_connection((kwargs.get("host", "127.0.0.1"),
                                              kwargs.get("port", 6379)))
        commands = [[b"SELECT", b"%d" % kwargs.get("db", 0)], [b"SUBSCRIBE", h.KEYS.ticks.encode()]]
        if kwargs.get("password"):
            commands.insert(0, [b"AUTH", *(v.encode() for v in (kwargs.get("username"),
                                                                  kwargs["password"]) if v)])
        self.sock.sendall(b"".join(_resp(c) for c in commands))
        self.chunks: list[tuple[float, bytes]] = []
        self.closed = False
        self._parser = _PushParser(replies=len(commands) - 1)
        self._parsed: list[tuple[float, bytes]] = []
        self._taken = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        recv, chunks, clock = self.sock.recv, self.chunks, time.perf_counter
        with contextlib.suppress(OSError):
            while not self.closed:
                data = recv(1 << 20)
                if not data:
                    return
                chunks.append((clock(), data))

    @property
    def messages(self) -> list[tuple[float, bytes]]:
        """The messages received so far, parsed now: (arrival, body)."""
        chunks = self.chunks
        end = len(chunks)
        for stamp, data in chunks[self._taken:end]:
            self._parsed.extend(self._parser.feed(stamp, data))
        self._taken = end
        return self._parsed

    def reset(self) -> None:
        """Forget what arrived so far (a fresh list: parsing goes on into the new one)."""
        _ = self.messages
        self._parsed = []

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
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def _resp(args: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


class _PushParser:
    """RESP2 replies in, pub/sub `message` bodies out, each stamped with its last chunk's time.

    The first `replies` replies (AUTH, SELECT) and the subscribe confirmation are skipped.
    """

    def __init__(self, replies: int) -> None:
        self.buf = bytearray()
        self.skip = replies

    def feed(self, stamp: float, data: bytes) -> list[tuple[float, bytes]]:
        self.buf += data
        out: list[tuple[float, bytes]] = []
        pos = 0
        while True:
            parsed = _reply(self.buf, pos)
            if parsed is None:
                break
            value, pos = parsed
            if self.skip:
                self.skip -= 1
            elif isinstance(value, list) and value and value[0] == b"message":
                out.append((stamp, value[2]))
        del self.buf[:pos]
        return out


def _reply(buf: bytearray, pos: int) -> tuple[Any, int] | None:
    """One RESP2 value at `pos`, and the position after it; None when it is not all there."""
    line_end = buf.find(b"\r\n", pos)
    if line_end < 0:
        return None
    kind, head = buf[pos:pos + 1], bytes(buf[pos + 1:line_end])
    pos = line_end + 2
    if kind in (b"+", b"-", b":"):
        return head, pos
    if kind == b"$":
        size = int(head)
        if size < 0:
            return None, pos
        if len(buf) < pos + size + 2:
            return None
        return bytes(buf[pos:pos + size]), pos + size + 2
    items = []
    for _ in range(int(head)):  # "*": an array
        parsed = _reply(buf, pos)
        if parsed is None:
            return None
        item, pos = parsed
        items.append(item)
    return items, pos


class Observer:
    """A second api key's own socket to the simulator, on a thread and loop of its own.

    Open it before the holder connects, so its frame of a step is queued first. The simulator
    builds every frame of a step before it queues any, and `/_sim/sends` says when each began
    to leave: `window` reports that spread beside the figure and subtracts nothing from it.
    """

    def __init__(self, ws_url: str, sample: list[int]) -> None:
        self.url = f"{ws_url}/?api_key={OBSERVER_KEY}&access_token=t"
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

    def window(self, r: redis.Redis, seconds: float, sim: h.Sim,
               settle: float = 3.0) -> dict[str, Any]:
        """Record `seconds` of the sample on both sides and match them; time the sim's sends."""
        relayed = RawTicks(r)
        # A reader waiting for the GIL would otherwise wait up to 5 ms before it could stamp.
        sys.setswitchinterval(0.0001)
        try:
            time.sleep(0.5)  # the Redis subscription is in place
            self.frames = []
            self.recording = True
            window_start = time.perf_counter()
            time.sleep(seconds)
            window_end = time.perf_counter()
            self.recording = False
            time.sleep(settle)  # ticks of the window still in flight via the holder
        finally:
            relayed.close()
            sys.setswitchinterval(0.005)
        result = match(self.frames, relayed.messages, set(self.sample), window_end)
        result.update(send_times(sim.call("GET", "/_sim/sends"), sim.stats(tokens=True),
                                 result.pop("pairs"), window_start, window_end))
        return result

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
    pairs = [(key[0], stamp, arrived[key]) for key, stamp in seen.items() if key in arrived]
    delays = [(on_redis - direct) * 1e3 for _, direct, on_redis in pairs]
    return {"delays_ms": delays, "matched": len(delays), "lost": len(seen) - len(delays),
            "relayed_messages": len(relayed), "pairs": pairs}


def send_times(sends: dict[str, Any], stats: dict[str, Any], pairs: list[tuple[int, float, float]],
               start: float, end: float) -> dict[str, Any]:
    """What the simulator's own send times say about the window (`/_sim/sends`).

    - `spread_ms`: per step, how much later the holder's last frame began to leave than the
      observer's frame (negative: before it). Near zero means the `added` figure is the holder's.
    - `build_ms`: per step, the simulator's time from the step's start to its frames queued.
    - `steps_per_s`: steps the simulator really sent in the window (it cannot go faster than
      it can build them, whatever the tick interval asks).
    - `from_send_ms`: per matched tick, Redis arrival minus the moment the simulator began to
      write the holder's frame that carried it: what the holder (and loopback TCP) adds, with
      the simulator out of the clock. The step of a tick is the observer's latest send begun
      before the tick reached the observer.
    """
    observer: dict[int, float] = {}
    holder: dict[int, dict[int, float]] = {}  # connection id -> step -> write began
    for conn in sends["connections"]:
        times = {step: began for step, began, _ in conn["sends"]}
        if conn["api_key"] == OBSERVER_KEY:
            observer.update(times)
        else:
            holder[conn["id"]] = times
    steps = sorted(s for s, began in observer.items() if start <= began <= end)
    spread = [(max(t[s] for t in holder.values() if s in t) - observer[s]) * 1e3
              for s in steps if any(s in t for t in holder.values())]
    built = {entry[0]: (entry[3] - entry[1]) * 1e3 for entry in sends["steps"]}
    conn_of = {token: conn["id"] for key, doc in stats["api_keys"].items() if key != OBSERVER_KEY
               for conn in doc["connections"] for token in conn["token_list"]}
    began_at = [observer[s] for s in steps]
    from_send = []
    for token, direct, on_redis in pairs:
        at = bisect.bisect_right(began_at, direct) - 1
        began = holder.get(conn_of.get(token, -1), {}).get(steps[at]) if at >= 0 else None
        if began is not None:
            from_send.append((on_redis - began) * 1e3)
    return {"spread_ms": spread, "build_ms": [built[s] for s in steps if s in built],
            "from_send_ms": from_send, "steps_per_s": (len(steps) - 1) / (
                began_at[-1] - began_at[0]) if len(steps) > 1 else float("nan")}
