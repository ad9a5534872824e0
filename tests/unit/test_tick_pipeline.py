"""The tick pipeline publishes every frame's ticks in arrival order, one message per frame (or
in slices when TICK_MESSAGE_TICKS asks for them), several ready messages in one round trip; a
malformed frame or a Redis error between good ones stops nothing."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

import orjson
import pytest
import redis.exceptions

from ticker_worker.holder import ticks
from ticker_worker.holder.ticks import PIPELINE_DEPTH, SLICE_PACKETS, TickPipeline
from ticker_worker.kite import codec


class RecordingRedis:
    """The calls the pipeline makes on Redis (PUBLISHes in pipelines), recorded per round trip.

    `fail` round trips raise a connection error first; while `hold` is clear they wait."""

    def __init__(self, fail: int = 0) -> None:
        self.bodies: list[bytes] = []
        self.trips: list[int] = []  # messages per round trip
        self.fail = fail
        self.hold = asyncio.Event()
        self.hold.set()

    def pipeline(self, transaction: bool = True) -> RecordingPipe:
        assert not transaction
        return RecordingPipe(self)


class RecordingPipe:
    def __init__(self, redis: RecordingRedis) -> None:
        self.redis = redis
        self.bodies: list[bytes] = []

    def publish(self, channel: str, body: bytes) -> RecordingPipe:
        self.bodies.append(body)
        return self

    async def execute(self) -> list[int]:
        await self.redis.hold.wait()
        if self.redis.fail:
            self.redis.fail -= 1
            raise redis.exceptions.ConnectionError("Redis went away")
        self.redis.bodies += self.bodies
        self.redis.trips.append(len(self.bodies))
        return [1] * len(self.bodies)


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


def tokens_of(bodies: list[bytes]) -> list[int]:
    return [t["instrument_token"] for b in bodies for t in orjson.loads(b)]


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)


def test_a_burst_goes_out_in_order_in_fewer_round_trips_than_messages() -> None:
    redis = RecordingRedis()
    frames = [ltp_frame(1 + 10 * i, 3) for i in range(1 + PIPELINE_DEPTH)]

    async def body() -> None:
        pipeline = TickPipeline(redis, "ticks", is_mock=False)  # type: ignore[arg-type]
        task = asyncio.create_task(pipeline.run())
        redis.hold.clear()  # Redis is slow: the first round trip waits, the burst queues behind
        await pipeline.put(frames[0])
        await until(lambda: pipeline.frames_total == 1)  # the first message is in flight
        for frame in frames[1:]:
            await pipeline.put(frame)
        await until(pipeline.queue.empty)  # all of them encoded and waiting
        redis.hold.set()
        await until(lambda: len(redis.bodies) == len(frames))  # the barrier: all out
        task.cancel()

    asyncio.run(asyncio.wait_for(body(), 20))
    assert tokens_of(redis.bodies) == [t for f in frames for t in codec.frame_tokens(f)]
    assert [len(orjson.loads(b)) for b in redis.bodies] == [3] * len(frames)
    assert redis.trips[0] == 1 and len(redis.trips) < len(frames)


def test_a_redis_error_counts_a_failure_and_the_next_message_still_goes_out() -> None:
    redis = RecordingRedis(fail=1)

    async def body() -> TickPipeline:
        pipeline = TickPipeline(redis, "ticks", is_mock=False)  # type: ignore[arg-type]
        task = asyncio.create_task(pipeline.run())
        await pipeline.put(ltp_frame(1, 2))
        await until(lambda: pipeline.publish_failures == 1)
        assert not pipeline.redis_ok
        await pipeline.put(ltp_frame(100, 2))
        await until(lambda: len(redis.bodies) == 1)  # the barrier: the next message is out
        task.cancel()
        return pipeline

    pipeline = asyncio.run(asyncio.wait_for(body(), 20))
    assert tokens_of(redis.bodies) == codec.frame_tokens(ltp_frame(100, 2))
    assert pipeline.redis_ok and pipeline.publish_failures == 1
    assert pipeline.ticks_total == 4 and pipeline.frames_total == 2
