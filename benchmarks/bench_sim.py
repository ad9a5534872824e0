"""Simulator throughput and codec speed, each beside its baseline from the same run.

    .venv/bin/python benchmarks/bench_sim.py [--seconds 10] [--tick-interval 0.1]

1. The simulator (a subprocess, so it has a core of its own) feeds 3 keys x 3 connections x
   3000 instruments in full mode; raw aiohttp clients count the packets they receive.
   Baseline: the 100,000 ticks/s target and the rate the tick interval asks for.
2. `decode_frame` against the official `KiteTicker._parse_binary` on frames of 500 full
   packets, with the default GC and after `gc.freeze()`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import struct
import subprocess
import sys
import time

import aiohttp

from ticker_worker.kite.codec import decode_frame
from ticker_worker.sim.market import Market
from ticker_worker.sim.universe import build_universe

KEYS, CONNECTIONS, TOKENS_PER_CONNECTION = 3, 3, 3000
TARGET_TICKS_PER_SECOND = 100_000
_COUNT = struct.Struct(">H")


def start_sim(tick_interval: float, seed: int) -> tuple[subprocess.Popen[str], str]:
    """Run `python -m ticker_worker.sim` on a free port; return it and its WebSocket URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ticker_worker.sim", "--port", "0", "--seed", str(seed),
         "--tick-interval", str(tick_interval), "--no-rate-limits"],
        stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    ws_url = line.split("ticker WebSocket ")[1].split("/,")[0]
    return proc, ws_url


async def sim_counters(session: aiohttp.ClientSession, ws_url: str) -> tuple[int, int]:
    """The simulator's own (ticks queued, ticks dropped for slow sockets) counters."""
    async with session.get(ws_url.replace("ws://", "http://") + "/_sim/stats") as resp:
        stats = await resp.json()
    return stats["ticks_total"], stats["ticks_dropped"]


async def feed(ws_url: str, tokens: list[int], seconds: float, warmup: float) -> dict[str, float]:
    """Open every connection, subscribe in full mode, count packets over `seconds`."""
    counted = {"packets": 0, "frames": 0, "bytes": 0, "queued": 0, "dropped": 0}
    measuring = asyncio.Event()

    async def connection(session: aiohttp.ClientSession, key: str, chunk: list[int]) -> None:
        async with session.ws_connect(f"{ws_url}/?api_key={key}&access_token=t") as ws:
            await ws.send_str(json.dumps({"a": "subscribe", "v": chunk}))
            await ws.send_str(json.dumps({"a": "mode", "v": ["full", chunk]}))
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY and len(msg.data) > 1 and measuring.is_set():
                    counted["packets"] += _COUNT.unpack_from(msg.data)[0]
                    counted["frames"] += 1
                    counted["bytes"] += len(msg.data)

    async with aiohttp.ClientSession() as session:
        chunks = [tokens[i:i + TOKENS_PER_CONNECTION] for i in range(0, len(tokens), TOKENS_PER_CONNECTION)]
        tasks = [asyncio.create_task(connection(session, f"bench-{n // CONNECTIONS}", chunk))
                 for n, chunk in enumerate(chunks)]
        await asyncio.sleep(warmup)
        measuring.set()
        queued, dropped = await sim_counters(session, ws_url)
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        elapsed = time.perf_counter() - started
        measuring.clear()
        queued_after, dropped_after = await sim_counters(session, ws_url)
        counted["queued"], counted["dropped"] = queued_after - queued, dropped_after - dropped
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {k: v / elapsed for k, v in counted.items()}


def bench_sim(seconds: float, tick_interval: float, seed: int) -> None:
    tokens = [i.instrument_token for i in build_universe(seed).instruments]
    tokens = tokens[:KEYS * CONNECTIONS * TOKENS_PER_CONNECTION]
    proc, ws_url = start_sim(tick_interval, seed)
    try:
        rates = asyncio.run(feed(ws_url, tokens, seconds, warmup=3.0))
    finally:
        proc.terminate()
        proc.wait(10)
    asked = len(tokens) / tick_interval
    print(f"simulator: {len(tokens):,} instruments in full mode over {KEYS * CONNECTIONS} sockets, "
          f"tick interval {tick_interval}s, {seconds:.0f}s measured")
    print(f"  received   {rates['packets']:>12,.0f} ticks/s  ({rates['frames']:,.1f} frames/s, "
          f"{rates['bytes'] / 1e6:,.1f} MB/s)")
    print(f"  sim queued {rates['queued']:>12,.0f} ticks/s  "
          f"(and skipped {rates['dropped']:,.0f}/s for sockets behind)")
    print(f"  asked for  {asked:>12,.0f} ticks/s  (instruments / tick interval)")
    verdict = f"-> {rates['packets'] / TARGET_TICKS_PER_SECOND:.2f}x" if asked > TARGET_TICKS_PER_SECOND else "(needs a shorter interval)"
    print(f"  target     {TARGET_TICKS_PER_SECOND:>12,.0f} ticks/s  {verdict}")


def sample_frame(seed: int, packets: int = 500) -> bytes:
    """A frame of full packets as the simulator sends them (mixed segments)."""
    market = Market(build_universe(seed), seed)
    instruments = build_universe(seed).instruments
    states = [market.state(i.instrument_token, 1_764_216_000) for i in instruments[20:20 + packets]]
    parts = [_COUNT.pack(len(states))]
    for state in states:
        assert state is not None
        state.advance(1_764_216_000)
        parts.append(state.full_packet())
    return b"".join(parts)


def best_rate(parse: object, frame: bytes, packets: int, rounds: int = 7, loops: int = 20) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(loops):
            parse(frame)  # type: ignore[operator]
        best = min(best, (time.perf_counter() - started) / loops)
    return packets / best


def bench_codec(seed: int) -> None:
    from kiteconnect import KiteTicker

    frame = sample_frame(seed)
    official = KiteTicker("k", "t")._parse_binary
    assert decode_frame(frame) == official(frame)
    print("codec: frames of 500 full packets, packets decoded per second")
    for label in ("default GC", "after gc.freeze()"):
        if label != "default GC":
            gc.freeze()
        base, ours = best_rate(official, frame, 500), best_rate(decode_frame, frame, 500)
        print(f"  {label:<18} official {base:>10,.0f}   decode_frame {ours:>10,.0f}   "
              f"-> {ours / base:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--tick-interval", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-sim", action="store_true", help="only the codec benchmark")
    args = parser.parse_args()
    if not args.skip_sim:
        bench_sim(args.seconds, args.tick_interval, args.seed)
    bench_codec(args.seed)


if __name__ == "__main__":
    main()
