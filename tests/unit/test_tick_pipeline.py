"""The tick pipeline publishes every frame's ticks in arrival order, sliced or not, and a
malformed frame between good ones stops nothing."""

from __future__ import annotations

import asyncio
import struct

import orjson

from ticker_worker.holder.ticks import SLICE_PACKETS, TickPipeline
from ticker_worker.kite import codec


class RecordingRedis:
    """The one call the pipeline makes on Redis, recorded."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def publish(self, channel: str, body: bytes) -> int:
        self.bodies.append(body)
        return 1


def ltp_frame(first: int, count: int) -> bytes:
    return codec.encode_frame([struct.pack(">II", ((first + i) << 8) | 1, 100 + i)
                               for i in range(count)])


def test_frames_big_and_small_come_out_whole_and_in_order() -> None:
    malformed = b"\x00\x02" + struct.pack(">HII", 8, 9999 << 8 | 1, 1)  # promises 2, holds 1
    frames = [ltp_frame(1, 2 * SLICE_PACKETS + 3), ltp_frame(5000, 1), malformed,
              ltp_frame(6000, SLICE_PACKETS + 1), ltp_frame(8000, 2)]
    expected = [t for f in frames if f is not malformed for t in codec.frame_tokens(f)]
    redis = RecordingRedis()

    async def body() -> list[int]:
        pipeline = TickPipeline(redis, "ticks", is_mock=False)  # type: ignore[arg-type]
        task = asyncio.create_task(pipeline.run())
        for frame in frames:
            await pipeline.put(frame)
        last = expected[-1]
        while not any(t["instrument_token"] == last
                      for b in redis.bodies[-1:] for t in orjson.loads(b)):
            await asyncio.sleep(0.01)  # the barrier: the last frame's last tick is out
        task.cancel()
        return [t["instrument_token"] for b in redis.bodies for t in orjson.loads(b)]

    assert asyncio.run(asyncio.wait_for(body(), 20)) == expected
    assert max(len(orjson.loads(b)) for b in redis.bodies) == SLICE_PACKETS
