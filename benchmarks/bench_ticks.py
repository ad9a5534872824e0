"""Tick decode + publish to Redis vs the official client's parser alone, on the same frames.

Full-mode frames of 500 packets (one Kite message per connection per tick round). Ours is the
holder's own path: decode, JSON-encode, PUBLISH on `{prefix}:ticks`. The baseline is
`KiteTicker._parse_binary` with no publishing at all. Both run in this process, with the same
interpreter settings, best of several rounds.

Run: `.venv/bin/python -m benchmarks.bench_ticks`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from kiteconnect import KiteTicker

from benchmarks import harness as h
from ticker_worker.holder.main import tune_runtime
from ticker_worker.holder.ticks import TickPipeline
from ticker_worker.kite import codec

PACKETS, FRAMES, ROUNDS = 500, 40, 5


def full_packet(rng: random.Random, token: int, ts: int) -> bytes:
    price = round(rng.uniform(50, 5000), 2)
    depth = {side: [{"quantity": rng.randint(1, 5000), "price": round(price + k * 0.05, 2),
                     "orders": rng.randint(1, 50)} for k in range(5)] for side in ("buy", "sell")}
    return codec.encode_full(
        token, last_price=price, last_traded_quantity=rng.randint(1, 500),
        average_traded_price=price, volume_traded=rng.randint(1, 10**7),
        total_buy_quantity=rng.randint(1, 10**6), total_sell_quantity=rng.randint(1, 10**6),
        ohlc={"open": price, "high": price + 5, "low": price - 5, "close": price - 1},
        last_trade_time=ts, oi=0, oi_day_high=0, oi_day_low=0, exchange_timestamp=ts,
        depth=depth)


def frames() -> list[bytes]:
    rng = random.Random(7)
    now = int(time.time())
    return [codec.encode_frame([full_packet(rng, ((i * PACKETS + j + 1) << 8) | 1, now + i)
                                for j in range(PACKETS)]) for i in range(FRAMES)]


def best_rate(run: Callable[[], None]) -> float:
    """Ticks per second, best of ROUNDS."""
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return PACKETS * FRAMES / best


async def ours(data: list[bytes]) -> float:
    client = aioredis.Redis.from_url(h.SETTINGS.redis_url)
    pipeline = TickPipeline(client, h.KEYS.ticks, is_mock=True)
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for frame in data:
            await pipeline.put(frame)
        task = asyncio.create_task(pipeline.run())
        while pipeline.frames_total % FRAMES or pipeline.queue.qsize():
            await asyncio.sleep(0)
        best = min(best, time.perf_counter() - started)
        task.cancel()
    await client.aclose()
    return PACKETS * FRAMES / best


def main() -> dict[str, Any]:
    data = frames()
    tune_runtime()
    official = KiteTicker("k", "t")
    baseline = best_rate(lambda: [official._parse_binary(f) for f in data])
    decode_only = best_rate(lambda: [codec.decode_frame(f) for f in data])
    rate = asyncio.run(ours(data))
    result = {"official_parser_ticks_s": baseline, "decode_only_ticks_s": decode_only,
              "decode_publish_ticks_s": rate, "ratio": rate / baseline,
              "decode_only_ratio": decode_only / baseline}
    print(f"\nfull-mode ticks/s, {PACKETS}-packet frames, best of {ROUNDS} rounds")
    print(f"  official KiteTicker._parse_binary alone  : {baseline:>10,.0f}")
    print(f"  our pure-Python decoder alone (fallback) : {decode_only:>10,.0f}  "
          f"({result['decode_only_ratio']:.1f}x)")
    print(f"  ours: decode + JSON + PUBLISH to Redis   : {rate:>10,.0f}  "
          f"({result['ratio']:.1f}x)  [target >= 6x]")
    return result


if __name__ == "__main__":
    main()
