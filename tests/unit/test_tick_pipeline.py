"""The tick pipeline publishes every frame's ticks in arrival order, one message per frame (or
in slices when TICK_MESSAGE_TICKS asks for them), and a malformed frame between good ones stops
nothing."""

from __future__ import annotations

import asyncio
import struct

import orjson
import pytest

from ticker_worker.holder import ticks
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


MALFORMED = b"\x00\x02" + struct.pack(">HII", 8, 9999 << 8 | 1, 1)  # promises 2, holds 1
FRAMES = [ltp_frame(1, 2 * SLICE_PACKETS + 3), ltp_frame(5000, 1), MALFORMED,
          ltp_frame(6000, SLICE_PACKETS + 1), ltp_frame(8000, 2)]


def published(message_ticks: int) -> list[bytes]:
    """What the pipeline publishes for FRAMES."""
    expected = [t for f in FRAMES if f is not MALFORMED for t in codec.frame_tokens(f)]
    redis = RecordingRedis()

    async def body() -> None:
        pipeline = TickPipeline(redis, "ticks", is_mock=False,  # type: ignore[arg-type]
                                message_ticks=message_ticks)
        task = asyncio.create_task(pipeline.run())
        for frame in FRAMES:
            await pipeline.put(frame)
        last = expected[-1]
        while not any(t["instrument_token"] == last
                      for b in redis.bodies[-1:] for t in orjson.loads(b)):
            await asyncio.sleep(0.01)  # the barrier: the last frame's last tick is out
        task.cancel()

    asyncio.run(asyncio.wait_for(body(), 20))
    assert [t["instrument_token"] for b in redis.bodies for t in orjson.loads(b)] == expected
    return redis.bodies


def test_by_default_each_frame_is_one_message_whole_and_in_order() -> None:
    bodies = published(0)
    assert [len(orjson.loads(b)) for b in bodies] == [2 * SLICE_PACKETS + 3, 1,
                                                      SLICE_PACKETS + 1, 2]


@pytest.mark.parametrize("per", [SLICE_PACKETS, 7])
def test_asked_for_slices_big_frames_go_out_in_order_in_arrays_of_at_most_n(per: int) -> None:
    if ticks.frame_slices is None:  # CI fails in test_tickjson.test_accelerator_is_built
        pytest.skip("slicing needs the C accelerator (without it, frames go out whole)")
    bodies = published(per)
    assert max(len(orjson.loads(b)) for b in bodies) == per
    assert len(bodies) > 4
