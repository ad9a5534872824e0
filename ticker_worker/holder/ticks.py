"""Ticks: decode each Kite frame, publish it as JSON arrays on `{prefix}:ticks`, note times.

A frame is published as one JSON array (DESIGN 4.3: one Kite frame's worth per message), the
frames of a step encoded on two threads at once. With `TICK_MESSAGE_TICKS=N` a frame is cut into
slices of at most N ticks that go out as messages of their own, in order.

Frames pass through one bounded queue: a slow Redis slows the sockets' reads (backpressure)
instead of growing memory without bound. Tick times go to Postgres in batches, never per tick.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from itertools import pairwise
from typing import Any

import orjson
import redis.asyncio as aioredis
import redis.exceptions

from ticker_worker.core.ist import IST
from ticker_worker.kite.codec import decode_frame

try:
    from ticker_worker.kite._tickjson import frame_slices, frame_to_json
except ImportError:  # built without a C compiler: the pure-Python path serves
    frame_to_json = None  # type: ignore[assignment]
    frame_slices = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
#: `split_frame`'s default slice size.
SLICE_PACKETS = 500
PIPELINE_DEPTH = 8  # messages encoded ahead of the one being published
ENCODERS = 2  # threads; the C encoder runs without the GIL, so two frames encode at once
INLINE_BYTES = 4096  # frames up to this size (about 90 quote packets) encode on the loop
_COUNT = struct.Struct(">H")
#: Which encoder turns frames into JSON: "c" (the accelerator) or "python" (the fallback).
DECODER = "c" if frame_to_json is not None else "python"


class DecodeCounts:
    """Frames the C encoder handed to the Python path (malformed), and frames both refused."""

    def __init__(self) -> None:
        self.fallback = 0
        self.rejected = 0


class IsoTimes:
    """Epoch seconds -> ISO-8601 with the IST offset, cached: a frame's ticks share seconds."""

    def __init__(self, size: int = 4096) -> None:
        self._cache: dict[int, str] = {}
        self._size = size

    def __call__(self, epoch: int) -> str:
        value = self._cache.get(epoch)
        if value is None:
            if len(self._cache) >= self._size:
                self._cache.clear()
            value = self._cache[epoch] = datetime.fromtimestamp(epoch, IST).isoformat()
        return value


def encode_ticks(
    frame: bytes, is_mock: bool, times: IsoTimes, counts: DecodeCounts | None = None
) -> tuple[bytes, list[int]]:
    """One frame -> (JSON array of ticks, tokens seen).

    The C accelerator writes the JSON straight from the packets, without holding the GIL; a
    malformed frame, or an install without a compiler, takes the pure-Python decoder (same
    ticks, 5-10x slower), which raises `struct.error` where the official parser would.
    """
    if frame_to_json is not None:
        fast: tuple[bytes, list[int]] | None = frame_to_json(frame, is_mock)
        if fast is not None:
            return fast
        if counts is not None and len(frame) > 1:  # a heartbeat is not malformed
            counts.fallback += 1
    try:
        return encode_ticks_python(frame, is_mock, times)
    except struct.error:
        if counts is not None:
            counts.rejected += 1
        raise


def split_frame(frame: bytes, per: int = SLICE_PACKETS) -> list[bytes]:
    """Cut a frame into frames of at most `per` packets, in order; a malformed or small frame
    (or an install without the C accelerator) stays whole for `encode_ticks` to judge."""
    if frame_slices is None or len(frame) < 2 or _COUNT.unpack_from(frame)[0] <= per:
        return [frame]
    bounds = frame_slices(frame, per)
    if bounds is None:
        return [frame]
    count = _COUNT.unpack_from(frame)[0]
    return [_COUNT.pack(min(per, count - i * per)) + frame[start:end]
            for i, (start, end) in enumerate(pairwise(bounds))]


def encode_ticks_python(frame: bytes, is_mock: bool, times: IsoTimes) -> tuple[bytes, list[int]]:
    """The reference path: decode to the official client's dicts, then JSON."""
    ticks = decode_frame(frame, to_datetime=times)
    if is_mock:
        for tick in ticks:
            tick["is_mock"] = True
    return orjson.dumps(ticks), [t["instrument_token"] for t in ticks]


class TickPipeline:
    """Consumes frames from the connections and publishes them."""

    def __init__(self, client: aioredis.Redis, channel: str, is_mock: bool,
                 maxsize: int = 1000, message_ticks: int = 0) -> None:
        self.redis, self.channel, self.is_mock = client, channel, is_mock
        self.message_ticks = message_ticks  # 0: one message per frame; N: slices of N ticks
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize)
        self.times = IsoTimes()
        # Tick times go to Postgres in two tempos: the first tick of a new subscription (its
        # acknowledgement) within a second; last-tick times of everything, coarsely.
        self.last_tick: dict[int, float] = {}
        self.awaiting_first: set[int] = set()
        self.first_seen: dict[int, float] = {}
        self.newest_tick_at = 0.0
        self.ticks_total = 0
        self.frames_total = 0
        self.publish_failures = 0
        self.redis_ok = True
        # Set by the holder: False when this process may no longer publish (it lost its lease).
        self.gate: Callable[[], bool] = lambda: True
        self.fenced_frames = 0
        self.decode = DecodeCounts()
        log.info("tick encoder: %s", "C accelerator (ticker_worker.kite._tickjson)"
                 if DECODER == "c" else "pure Python (the C accelerator is not built)")

    async def put(self, frame: bytes) -> None:
        """Queue a frame; waits when the publisher is behind."""
        await self.queue.put(frame)

    async def run(self) -> None:
        """Publish frames until cancelled."""
        # Encoding a 3000-packet frame takes milliseconds. The C encoder releases the GIL while
        # it writes, so on threads of their own it leaves the event loop free to serve subscribes
        # and /health meanwhile (benchmarks/bench_decode.py: the loop's lateness p50 drops from
        # ~11 ms with the GIL held to ~0.1 ms). A step's frames arrive together: two encode at
        # once while the ones before them are published, in order. A frame is not cut into
        # slices to be joined again: six thread hops and their GIL hand-overs cost more than
        # they save (a 3,000-packet quote frame is ready after ~1.4 ms whole, ~2.9 ms in
        # slices; bench_e2e added at 27,000: p50 ~16 ms instead of ~22 ms).
        loop = asyncio.get_running_loop()
        encoded: asyncio.Queue[tuple[bytes, asyncio.Future[tuple[bytes, list[int]]]]] = \
            asyncio.Queue(PIPELINE_DEPTH)
        with ThreadPoolExecutor(ENCODERS, thread_name_prefix="tick-decode") as decoder:
            publisher = asyncio.create_task(self._publish_in_order(encoded), name="tick-publish")
            try:
                while True:
                    frame = await self.queue.get()
                    parts = split_frame(frame, self.message_ticks) if self.message_ticks \
                        else [frame]
                    for part in parts:
                        await encoded.put((part, self._encode(loop, decoder, part)))
            finally:
                publisher.cancel()

    def _encode(self, loop: asyncio.AbstractEventLoop, decoder: ThreadPoolExecutor,
                frame: bytes) -> asyncio.Future[tuple[bytes, list[int]]]:
        """Encode on a decoder thread; a small frame (a subscribe's answer, a quiet connection's
        step) right here, as the thread hop would cost more than the encoding."""
        if len(frame) > INLINE_BYTES:
            return loop.run_in_executor(
                decoder, encode_ticks, frame, self.is_mock, self.times, self.decode)
        done: asyncio.Future[tuple[bytes, list[int]]] = loop.create_future()
        try:
            done.set_result(encode_ticks(frame, self.is_mock, self.times, self.decode))
        except Exception as exc:  # noqa: BLE001 - raised where the publisher awaits it
            done.set_exception(exc)
        return done

    async def _publish_in_order(
        self, encoded: asyncio.Queue[tuple[bytes, asyncio.Future[tuple[bytes, list[int]]]]]
    ) -> None:
        # A step's frames arrive together; awaiting each PUBLISH's reply before sending the next
        # put the frames of a burst one round trip apart (issue 12). The messages already
        # encoded when the publisher comes round go out in one pipelined round trip, in order
        # (one connection), while the frames behind them are still being encoded.
        head: tuple[bytes, asyncio.Future[tuple[bytes, list[int]]]] | None = None
        while True:
            ready = [await self._result(*(head or await encoded.get()))]
            head = None
            while not encoded.empty():
                item = encoded.get_nowait()
                if not item[1].done():
                    head = item  # still encoding: it leads the next round trip
                    break
                ready.append(await self._result(*item))
            try:
                await self._publish([r for r in ready if r is not None])
            except Exception:  # one bad batch must not stop the stream
                log.exception("tick messages dropped")

    async def _result(self, frame: bytes, job: asyncio.Future[tuple[bytes, list[int]]]
                      ) -> tuple[bytes, list[int]] | None:
        """A frame's encoded message, or None when it could not be encoded (logged)."""
        try:
            return await job
        except struct.error as exc:  # counted in frames_rejected
            log.warning("malformed tick frame of %d bytes dropped: %s", len(frame), exc)
        except Exception:  # one bad frame must not stop the stream
            log.exception("tick frame dropped")
        return None

    async def _publish(self, messages: list[tuple[bytes, list[int]]]) -> None:
        """Publish these messages, in order, in one round trip; the gate is asked per message."""
        pipe = self.redis.pipeline(transaction=False)
        sent = 0
        for body, tokens in messages:
            if not tokens:
                continue
            if not self.gate():
                self.fenced_frames += 1
                continue
            self._note(tokens)
            pipe.publish(self.channel, body)
            sent += 1
        if not sent:
            return
        try:
            await pipe.execute()
            self.redis_ok = True
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
            self.publish_failures += sent
            if self.redis_ok:
                log.error("Redis unreachable: ticks are not being published")
            self.redis_ok = False

    def _note(self, tokens: list[int]) -> None:
        """Tick bookkeeping for one message about to go out."""
        now = time.time()
        self.newest_tick_at = now
        last_tick = self.last_tick
        for token in tokens:
            last_tick[token] = now
        if self.awaiting_first:
            for token in self.awaiting_first.intersection(tokens):
                self.first_seen[token] = now
                self.awaiting_first.discard(token)
        self.ticks_total += len(tokens)
        self.frames_total += 1

    def clear(self) -> None:
        """Drop every frame not yet published (the holder stepped down)."""
        while not self.queue.empty():
            self.queue.get_nowait()

    def expect_first(self, tokens: list[int]) -> None:
        """These were just subscribed: their next tick is their acknowledgement."""
        self.awaiting_first.update(tokens)

    def take_first(self) -> dict[int, float]:
        """First-tick times since the last call."""
        taken, self.first_seen = self.first_seen, {}
        return taken

    def last_tick_age(self) -> float | None:
        """Seconds since the newest tick of any instrument."""
        return time.time() - self.newest_tick_at if self.newest_tick_at else None

    def forget(self, tokens: list[int]) -> None:
        """Drop tick bookkeeping for unsubscribed tokens."""
        for token in tokens:
            self.last_tick.pop(token, None)
            self.awaiting_first.discard(token)
            self.first_seen.pop(token, None)

    def stats(self) -> dict[str, Any]:
        """Counters for /health, /metrics and the state snapshot."""
        return {"ticks_total": self.ticks_total, "frames_total": self.frames_total,
                "publish_failures": self.publish_failures, "queue": self.queue.qsize(),
                "decoder": DECODER, "frames_fallback": self.decode.fallback,
                "frames_rejected": self.decode.rejected}
