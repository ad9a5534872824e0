"""Holder benchmarks against the simulator, with real Celery, Redis and Postgres (DESIGN 6.1).

1. subscribe task sent -> `subscription_created` received, with 9,000 instruments streaming,
   for our incremental holder and for the full-reload baseline, in the same run;
2. disruption on the 9,000 streaming instruments during 1,000 subscribe/unsubscribe operations;
3. 27,000 instruments (3 accounts x 9,000) from one `subscribe_many` to all active;
4. holder RSS with 27,000 instruments streaming.

Run: `.venv/bin/python -m benchmarks.bench_holder [--quick]`.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import psutil
import redis
from celery import Celery
from sqlalchemy import Engine

from benchmarks import harness as h

INTERVAL = 1.0  # Kite's own rate: about one tick per instrument per second


def latency(client: Celery, clock: h.EventClock, tokens: list[int]) -> list[float]:
    """Sequential subscribes; seconds from send_task to the event's arrival."""
    samples = []
    for token in tokens:
        sent = time.perf_counter()
        client.send_task("ticker_worker.subscribe", args=[token, "quote"])
        samples.append(clock.wait(token) - sent)
    return samples


def churn(client: Celery, tokens: list[int], ops: int, rate: float) -> None:
    """`ops` subscribe/unsubscribe operations at `rate` per second: sub a, sub b, unsub a, ..."""
    done, i = 0, 0
    started = time.perf_counter()
    while done < ops:
        token = tokens[i % len(tokens)]
        client.send_task("ticker_worker.subscribe", args=[token, "quote"])
        done += 1
        if i >= 1 and done < ops:
            client.send_task("ticker_worker.unsubscribe", args=[tokens[(i - 1) % len(tokens)]])
            done += 1
        i += 1
        ahead = started + done / rate - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)


def run_strategy(name: str, full_reload: bool, ctx: dict[str, Any], quick: bool) -> dict[str, Any]:
    engine, sim, r = ctx["engine"], ctx["sim"], ctx["redis"]
    h.reset_subscriptions(engine, r)
    holder, _ = h.holder_proc(sim, full_reload=full_reload, log_level="INFO")
    worker = h.celery_worker(concurrency=4, env={"LOG_LEVEL": "INFO"})
    try:
        h.wait_for(lambda: "ready" in worker.output(), 60, "the worker")
        streaming = ctx["streaming"]
        client = Celery(broker=h.SETTINGS.celery_broker_url)
        client.send_task("ticker_worker.subscribe_many", args=[streaming, "quote"])
        h.wait_active(engine, streaming, 180)
        h.wait_outbox_drained(engine, 180)
        recorder = h.TickRecorder(r, set(streaming), INTERVAL)
        h.wait_for(lambda: recorder.streaming() >= len(streaming) * 0.99, 60, "ticks flowing")
        recorder.close()
        clock = h.EventClock(r)
        n = ctx["latency_n"] // (10 if full_reload else 1)
        samples = latency(client, clock, ctx["fresh"][:n])
        ops = ctx["churn_ops"]
        recorder = h.TickRecorder(r, set(streaming), INTERVAL)
        h.wait_for(lambda: recorder.streaming() >= len(streaming) * 0.99, 60, "ticks again")
        with recorder.window():
            churn(client, ctx["fresh"][n:n + 200], ops, rate=ops / 20)
            time.sleep(2)
        return {"strategy": name, **h.summary(samples), "churn_ops": ops,
                "missed_ticks_volume": recorder.jumps, "missed_ticks_gaps": recorder.gap_missed,
                "max_gap_intervals": recorder.max_gap / INTERVAL, "ticks_seen": recorder.ticks}
    finally:
        worker.stop()
        holder.stop()


def bulk(ctx: dict[str, Any]) -> dict[str, Any]:
    """27,000 instruments in one subscribe_many: seconds to all active; then holder RSS."""
    engine, sim, r = ctx["engine"], ctx["sim"], ctx["redis"]
    h.reset_subscriptions(engine, r)
    tokens = h.equity_tokens(engine, 27_000)
    holder, _ = h.holder_proc(sim, log_level=ctx["holder_log_level"])
    worker = h.celery_worker(concurrency=2, env={"LOG_LEVEL": "INFO"})
    try:
        h.wait_for(lambda: "ready" in worker.output(), 60, "the worker")
        time.sleep(2)  # let the holder finish starting
        client = Celery(broker=h.SETTINGS.celery_broker_url)
        # CPU seconds of the holder, the simulator and the worker for the placement: unlike
        # the wall time, they do not grow when other processes share the cores.
        procs = [psutil.Process(p.popen.pid) for p in (holder, sim.proc, worker)]
        cpu = [sum(p.cpu_times()[:2]) for p in procs]
        sent = time.perf_counter()
        client.send_task("ticker_worker.subscribe_many", args=[tokens, "quote"])
        h.wait_for(lambda: h.count_active(engine) == len(tokens), 120, "27,000 active")
        seconds = time.perf_counter() - sent
        cpu = [sum(p.cpu_times()[:2]) - c for p, c in zip(procs, cpu, strict=True)]
        proc = procs[0]
        recorder = h.TickRecorder(r, set(tokens), INTERVAL)
        h.wait_for(lambda: recorder.streaming() >= len(tokens) * 0.99, 60, "27,000 streaming")
        time.sleep(10)
        rss = proc.memory_info().rss / 2**20
        if ctx["holder_log_level"] != "WARNING":
            print(f"holder log: {holder.log.name}", flush=True)
        return {"instruments": len(tokens), "seconds_to_active": seconds, "holder_cpu": cpu[0],
                "sim_cpu": cpu[1], "worker_cpu": cpu[2],
                "streaming": recorder.streaming(), "holder_rss_mb": rss}
    finally:
        worker.stop()
        holder.stop()


def prepare(quick: bool, n_streaming: int) -> dict[str, Any]:
    engine: Engine = h.fresh_database()
    r = redis.Redis.from_url(h.SETTINGS.redis_url)
    r.flushdb()
    sim = h.Sim(tick_interval=INTERVAL, seed=11)
    rows, seconds = h.sync_instruments(engine, sim)
    h.add_accounts(engine, 3)
    streaming = h.equity_tokens(engine, n_streaming)
    fresh = h.equity_tokens(engine, 1_000, offset=9_000)
    return {"engine": engine, "redis": r, "sim": sim, "streaming": streaming, "fresh": fresh,
            "sync": {"rows": rows, "seconds": seconds},
            "latency_n": 100 if quick else 300, "churn_ops": 200 if quick else 1000}


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples, for a smoke run")
    parser.add_argument("--skip-bulk", action="store_true")
    parser.add_argument("--streaming", type=int, default=9_000, help="instruments already streaming")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--bulk-runs", type=int, default=3, help="runs of the 27,000 bulk")
    parser.add_argument("--bulk-only", action="store_true", help="only the bulk and memory runs")
    parser.add_argument("--holder-log-level", default="WARNING",
                        help="the bulk holder's log level (INFO shows each reconcile pass)")
    args = parser.parse_args()
    ctx = prepare(args.quick, args.streaming)
    ctx["holder_log_level"] = args.holder_log_level
    try:
        results: dict[str, Any] = {"instrument_sync": ctx["sync"], "latency": []}
        if not args.bulk_only:
            results["latency"].append(run_strategy("incremental (ours)", False, ctx, args.quick))
        if not args.skip_baseline and not args.bulk_only:
            ours = results["latency"][0]
            base = run_strategy("full reload (baseline)", True, ctx, args.quick)
            results["latency"].append(base)
            results["latency_ratio_p50"] = base["p50_ms"] / ours["p50_ms"]
        if not args.skip_bulk:
            results["bulk"] = [bulk(ctx) for _ in range(args.bulk_runs)]
        report(results)
        return results
    finally:
        ctx["sim"].stop()


def report(res: dict[str, Any]) -> None:
    print(f"\ninstrument sync: {res['instrument_sync']['rows']} rows in "
          f"{res['instrument_sync']['seconds']:.1f} s")
    if res["latency"]:
        report_latency(res)
    if "bulk" in res:
        report_bulk(res["bulk"])


def report_latency(res: dict[str, Any]) -> None:
    print("\nsubscribe -> subscription_created, 9,000 instruments streaming (quote, 1 tick/s)")
    print(f"{'strategy':<24} {'n':>4} {'p50 ms':>9} {'p99 ms':>9} {'missed':>8} "
          f"{'gap-missed':>11} {'max gap':>9}")
    for row in res["latency"]:
        print(f"{row['strategy']:<24} {row['n']:>4} {row['p50_ms']:>9.1f} {row['p99_ms']:>9.1f} "
              f"{row['missed_ticks_volume']:>8} {row['missed_ticks_gaps']:>11} "
              f"{row['max_gap_intervals']:>8.2f}x")
    if "latency_ratio_p50" in res:
        print(f"ratio (baseline p50 / ours p50): {res['latency_ratio_p50']:.0f}x  "
              f"[target >= 100x; ours p50 <= 15 ms, p99 <= 60 ms]")


def report_bulk(runs: list[dict[str, Any]]) -> None:
    seconds = [b["seconds_to_active"] for b in runs]
    rss = [b["holder_rss_mb"] for b in runs]
    print(f"\nbulk: {runs[0]['instruments']} instruments active in {h.spread(seconds, '{:.2f}')} s"
          f" (median [min-max] of {len(runs)} runs) [target <= 5 s at the worst run]; holder "
          f"RSS {h.spread(rss, '{:.0f}')} MB with {min(b['streaming'] for b in runs)} streaming "
          f"[target <= 150 MB]")
    cpu = [b["holder_cpu"] for b in runs]
    print(f"CPU seconds during the placement: holder {h.spread(cpu, '{:.2f}')}, simulator "
          f"{h.spread([b['sim_cpu'] for b in runs], '{:.2f}')}, command worker "
          f"{h.spread([b['worker_cpu'] for b in runs], '{:.2f}')}")
    print("runs (s to active / holder CPU s / RSS MB): " + ", ".join(
        f"{s:.2f} / {c:.2f} / {m:.0f}" for s, c, m in zip(seconds, cpu, rss, strict=True)))


if __name__ == "__main__":
    main()
