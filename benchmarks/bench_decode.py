"""Where the C encoder should run: on the event loop, or on the decode thread with or without the GIL.

The holder's loop must stay free to serve subscribes and `/health` while a burst of frames is
encoded (one 3,000-packet full-mode frame per connection per step). For each placement, a
probe coroutine on the loop asks for a 1 ms sleep over and over and records how late it wakes;
the same frames are encoded meanwhile. Reported: encode throughput and the probe's lateness
(p50, p99, max), each the median of RUNS runs with its min-max.

Run: `.venv/bin/python -m benchmarks.bench_decode [--frames N] [--runs N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks.bench_ticks import full_packet
from benchmarks.harness import percentile, spread
from ticker_worker.holder.main import tune_runtime
from ticker_worker.kite import codec

try:
    from ticker_worker.kite._tickjson import frame_to_json
except ImportError:  # pragma: no cover - the benchmark needs the accelerator
    raise SystemExit("the C accelerator is not built: run `make install`") from None

PACKETS = 3000


def make_frames(count: int) -> list[bytes]:
    import random

    rng = random.Random(11)
    now = int(time.time())
    return [codec.encode_frame([full_packet(rng, ((j + 1) << 8) | 1, now + i)
                                for j in range(PACKETS)]) for i in range(count)]


async def _probe(stop: asyncio.Event, late: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        asked = loop.time()
        await asyncio.sleep(0.001)
        late.append((loop.time() - asked - 0.001) * 1000)


async def one_run(frames: list[bytes], placement: str) -> tuple[float, list[float]]:
    """(frames encoded per second, probe lateness in ms) for one placement."""
    loop = asyncio.get_running_loop()
    stop, late = asyncio.Event(), []
    probe = asyncio.create_task(_probe(stop, late))
    await asyncio.sleep(0.01)
    encode: Callable[[bytes], Any] = {
        "inline": lambda f: frame_to_json(f, True, False),
        "thread, GIL held": lambda f: frame_to_json(f, True, False),
        "thread, GIL released": lambda f: frame_to_json(f, True, True),
    }[placement]
    started = time.perf_counter()
    with ThreadPoolExecutor(1) as pool:
        for frame in frames:
            if placement == "inline":
                encode(frame)
                await asyncio.sleep(0)  # what the pipeline does between frames
            else:
                await loop.run_in_executor(pool, encode, frame)
    elapsed = time.perf_counter() - started
    stop.set()
    await probe
    return len(frames) / elapsed, late


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    tune_runtime()
    frames = make_frames(args.frames)
    results: dict[str, Any] = {}
    print(f"\n{PACKETS}-packet full-mode frames, {args.frames} per run, {args.runs} runs "
          "(median [min-max])")
    for placement in ("inline", "thread, GIL held", "thread, GIL released"):
        rates, p50s, p99s, maxes = [], [], [], []
        for _ in range(args.runs):
            rate, late = asyncio.run(one_run(frames, placement))
            rates.append(rate * PACKETS)
            p50s.append(statistics.median(late))
            p99s.append(percentile(late, 99))
            maxes.append(max(late))
        results[placement] = {"ticks_s": rates, "lag_p50": p50s, "lag_p99": p99s, "lag_max": maxes}
        print(f"  {placement:<22} ticks/s {spread(rates, '{:,.0f}')}; loop lateness ms: "
              f"p50 {spread(p50s)}, p99 {spread(p99s)}, max {spread(maxes)}")
    return results


if __name__ == "__main__":
    main()
