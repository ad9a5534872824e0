"""End-to-end tick figures: subscribe to first tick, the latency the holder adds, the ceiling.

1. `first-tick`: `send_task("ticker_worker.subscribe")` -> the new instrument's first tick on
   `{prefix}:ticks` (and, beside it, -> its `subscription_created`), for our holder and for
   the full-reload baseline, to the same stop, with N instruments streaming, at each tick
   interval. The simulator answers a subscribe with the current packet, as Kite does.
2. `added`: a direct client on a second api key subscribes to a sample of the streaming
   instruments; each tick it sees is matched by (token, volume) with the same tick on Redis.
   Arrivals are stamped before any parsing. p50/p99/max of the difference. The simulator
   builds all frames of a step before it queues any; its `/_sim/sends` times (same clock,
   CLOCK_MONOTONIC) are printed beside the figure, not subtracted from it: how much later the
   holder's frames of a step began to leave than the observer's (the fairness check), and the
   holder's delay from its own frame's send to Redis (the simulator out of the clock).
3. `ceiling`: `added` at --streaming instruments (27,000 by default in the docs) with shorter
   and shorter tick intervals, until the simulator cannot send at the asked rate, a tick is
   lost or the added p99 passes 50 ms; says what broke first. A level's rate is the one the
   simulator really sent (steps seen in the window x instruments), not the one asked.

Every figure is the median of --runs runs, with the min-max of the runs.

Run: `.venv/bin/python -m benchmarks.bench_e2e first-tick|added|ceiling [options]`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psutil
import redis
from celery import Celery
from sqlalchemy import Engine

from benchmarks import harness as h
from benchmarks.ticksource import Observer, RawTicks

P99_LIMIT_MS = 50.0


@contextmanager
def streaming(engine: Engine, sim: h.Sim, tokens: list[int], full_reload: bool = False,
              worker: bool = True) -> Iterator[tuple[h.Proc, int]]:
    """A holder (and a command worker) with `tokens` active and ticking; yields (holder, port)."""
    r = redis.Redis.from_url(h.SETTINGS.redis_url)
    h.reset_subscriptions(engine, r)
    holder, port = h.holder_proc(sim, full_reload=full_reload)
    proc = h.celery_worker(concurrency=4, env={"LOG_LEVEL": "INFO"}) if worker else None
    try:
        if proc is not None:
            h.wait_for(lambda: "ready" in proc.output(), 60, "the worker")
        from ticker_worker import commands

        commands.subscribe_many(engine, tokens, "quote")
        h.wait_active(engine, tokens, 180)
        h.wait_outbox_drained(engine, 180)
        h.wait_for(lambda: sim_streaming(sim) >= len(tokens), 60, "every instrument on a socket")
        time.sleep(2)  # a couple of steps: every socket has ticked since its subscribe
        yield holder, port
    finally:
        if proc is not None:
            proc.stop()
        holder.stop()


def sim_streaming(sim: h.Sim) -> int:
    keys = sim.stats()["api_keys"]
    return sum(c["tokens"] for k, v in keys.items() if k.startswith("key")
               for c in v["connections"])


def first_tick_run(client: Celery, raw: RawTicks, clock: h.EventClock,
                   tokens: list[int]) -> tuple[list[float], list[float]]:
    """Sequential subscribes: (seconds to the first tick, seconds to the event)."""
    ticks, events = [], []
    for token in tokens:
        raw.reset()
        sent = time.perf_counter()
        client.send_task("ticker_worker.subscribe", args=[token, "quote"])
        ticks.append(raw.first_arrival(token, sent) - sent)
        events.append(clock.wait(token) - sent)
    return ticks, events


def first_tick(ctx: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    fresh = iter(ctx["fresh"])
    for interval in args.intervals:
        sim = h.Sim(tick_interval=interval, seed=11)
        try:
            for name, full_reload in (("ours", False), ("full reload", True)):
                n = max(3, args.samples // (10 if full_reload else 1))
                with streaming(ctx["engine"], sim, ctx["streaming"], full_reload):
                    r = redis.Redis.from_url(h.SETTINGS.redis_url)
                    raw, clock = RawTicks(r), h.EventClock(r)
                    client = Celery(broker=h.SETTINGS.celery_broker_url)
                    runs = [first_tick_run(client, raw, clock, [next(fresh) for _ in range(n)])
                            for _ in range(args.runs)]
                    raw.close()
                rows.append({"interval": interval, "strategy": name, "n": n, "runs": runs})
                report_first_tick(rows[-1])
        finally:
            sim.stop()
    return rows


def per_run(runs: list[Any], pick: int, q: float) -> list[float]:
    return [h.percentile(run[pick], q) * 1e3 for run in runs]


def report_first_tick(row: dict[str, Any]) -> None:
    runs = row["runs"]
    print(f"  interval {row['interval']} s, {row['strategy']:<12} (n={row['n']} x "
          f"{len(runs)} runs): first tick p50 {h.spread(per_run(runs, 0, 50))} ms, "
          f"p99 {h.spread(per_run(runs, 0, 99))} ms; event p50 "
          f"{h.spread(per_run(runs, 1, 50))} ms, p99 {h.spread(per_run(runs, 1, 99))} ms",
          flush=True)


def added(sim: h.Sim, interval: float, ctx: dict[str, Any], tokens: list[int],
          args: argparse.Namespace) -> dict[str, Any]:
    """The delay the holder adds, `--runs` windows, with the holder's CPU and the sim's drops."""
    sample = tokens[:: max(1, len(tokens) // args.sample)][: args.sample]
    observer = Observer(sim.ws, sample)  # before the holder: see ticksource.Observer
    r = redis.Redis.from_url(h.SETTINGS.redis_url)
    try:
        with streaming(ctx["engine"], sim, tokens, worker=False) as (holder, _):
            proc = psutil.Process(holder.popen.pid)
            runs = []
            for _ in range(args.runs):
                dropped = sim.stats()["ticks_dropped"]
                proc.cpu_percent()
                result = observer.window(r, args.seconds, sim)
                result["holder_cpu"] = proc.cpu_percent()
                result["sim_dropped"] = sim.stats()["ticks_dropped"] - dropped
                result["holder_rss_mb"] = proc.memory_info().rss / 2**20
                runs.append(result)
    finally:
        observer.close()
    return {"instruments": len(tokens), "interval": interval, "runs": runs}


def pct(values: list[float], q: float) -> float:
    return h.percentile(values, q) if values else float("nan")


def report_added(row: dict[str, Any]) -> None:
    runs = row["runs"]
    rate = row["instruments"] / row["interval"]
    print(f"  {row['instruments']:,} streaming at {row['interval']} s ({rate:,.0f} ticks/s asked, "
          f"{delivered(row):,.0f} sent): "
          f"added p50 {h.spread([pct(r['delays_ms'], 50) for r in runs])} ms, "
          f"p99 {h.spread([pct(r['delays_ms'], 99) for r in runs])} ms, "
          f"max {h.spread([max(r['delays_ms'], default=float('nan')) for r in runs])} ms; matched "
          f"{sum(r['matched'] for r in runs):,}, lost {sum(r['lost'] for r in runs)}, "
          f"sim dropped {sum(r['sim_dropped'] for r in runs)}, holder CPU "
          f"{h.spread([r['holder_cpu'] for r in runs], '{:.0f}')}%, RSS "
          f"{h.spread([r['holder_rss_mb'] for r in runs], '{:.0f}')} MB", flush=True)
    print(f"    sim: holder's last frame of a step began to leave p50 "
          f"{h.spread([pct(r['spread_ms'], 50) for r in runs], '{:.2f}')} ms, max "
          f"{h.spread([max(r['spread_ms'], default=float('nan')) for r in runs], '{:.2f}')} ms "
          f"after the observer's ({sum(len(r['spread_ms']) for r in runs)} steps); step built in "
          f"p50 {h.spread([pct(r['build_ms'], 50) for r in runs])} ms; holder from its own "
          f"frame's send: p50 {h.spread([pct(r['from_send_ms'], 50) for r in runs])} ms, p99 "
          f"{h.spread([pct(r['from_send_ms'], 99) for r in runs])} ms "
          f"(n={sum(len(r['from_send_ms']) for r in runs):,})", flush=True)


def delivered(row: dict[str, Any]) -> float:
    """Ticks/s the simulator really sent to each subscriber: the median run's steps/s x N."""
    return statistics.median(r["steps_per_s"] for r in row["runs"]) * row["instruments"]


def verdict(row: dict[str, Any]) -> str | None:
    """None when the level held; else what broke first."""
    runs = row["runs"]
    if delivered(row) < 0.9 * row["instruments"] / row["interval"]:
        return ("the simulator: it could not build steps at this interval "
                f"({delivered(row):,.0f} ticks/s sent)")
    if any(r["sim_dropped"] for r in runs):
        return "socket read: the holder fell behind its sockets and the simulator skipped steps"
    if any(r["lost"] for r in runs):
        return "decode/publish: ticks read from the socket never reached Redis"
    if statistics.median(pct(r["delays_ms"], 99) for r in runs) > P99_LIMIT_MS:
        cpu = max(r["holder_cpu"] for r in runs)
        where = "the holder (one core busy)" if cpu > 90 else "Redis or the machine (holder CPU "
        return f"latency: added p99 over {P99_LIMIT_MS:.0f} ms; {where}" + (
            "" if cpu > 90 else f"{cpu:.0f}%)")
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["first-tick", "added", "ceiling"])
    parser.add_argument("--streaming", type=int, nargs="+", default=[9_000])
    parser.add_argument("--intervals", type=float, nargs="+",
                        help="tick intervals (first-tick: 1 0.1; ceiling: 1 0.5 0.25 0.15 0.1)")
    parser.add_argument("--samples", type=int, default=100, help="subscribes per run (ours)")
    parser.add_argument("--sample", type=int, default=300, help="instruments seen directly")
    parser.add_argument("--seconds", type=float, default=10, help="window per `added` run")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not args.intervals:
        args.intervals = [1.0, 0.5, 0.25, 0.15, 0.1] if args.what == "ceiling" else [1.0, 0.1]
    ctx = prepare(max(args.streaming))
    if args.what == "first-tick":
        print(f"\nsubscribe -> first tick on {h.KEYS.ticks} (and -> subscription_created), "
              f"{len(ctx['streaming']):,} streaming; median [min-max] of runs")
        first_tick(ctx, args)
    elif args.what == "added":
        print("\nlatency the holder adds to a tick (direct client vs Redis), 1 tick/s")
        sim = h.Sim(tick_interval=1.0, seed=11)
        try:
            for n in args.streaming:
                report_added(added(sim, 1.0, ctx, ctx["streaming"][:n], args))
        finally:
            sim.stop()
    else:
        ceiling(ctx, args)


def ceiling(ctx: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\nceiling: {len(ctx['streaming']):,} instruments, shorter and shorter intervals, "
          f"until a tick is lost or the added p99 passes {P99_LIMIT_MS:.0f} ms")
    best = None
    for interval in sorted(args.intervals, reverse=True):
        sim = h.Sim(tick_interval=interval, seed=11)
        try:
            row = added(sim, interval, ctx, ctx["streaming"], args)
        finally:
            sim.stop()
        report_added(row)
        broke = verdict(row)
        if broke:
            print(f"  -> breaks at {len(ctx['streaming']) / interval:,.0f} ticks/s: {broke}")
            break
        best = delivered(row)
    print(f"  highest rate held: {best:,.0f} ticks/s [target >= 200,000]" if best else
          "  no level held")


def prepare(n_streaming: int) -> dict[str, Any]:
    engine = h.fresh_database()
    redis.Redis.from_url(h.SETTINGS.redis_url).flushdb()
    sim = h.Sim(tick_interval=1.0, seed=11)
    try:
        h.sync_instruments(engine, sim)
    finally:
        sim.stop()
    h.add_accounts(engine, 3)
    return {"engine": engine, "streaming": h.equity_tokens(engine, n_streaming),
            "fresh": h.equity_tokens(engine, 3_000, offset=n_streaming)}


if __name__ == "__main__":
    main()
