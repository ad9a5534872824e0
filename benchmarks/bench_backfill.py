"""Backfill benchmark (DESIGN 6.1): historical requests/s under the shared limiter, and upsert rows/s.

Run: .venv/bin/python benchmarks/bench_backfill.py [--duration 20] [--workers 6] [--rows 500000]

(1) Several worker processes fetch from a simulator with Kite's 3 requests/s limit on, through
    the shared Redis limiter; an unthrottled run in the same session is the baseline (429s).
(2) Candle upsert: our bulk statement against a naive one-INSERT-per-row loop, same run.
Uses the benchmark database (ticker_worker_bench, only its candles table) and Redis db 13
(only its own rate-limit key), as benchmarks/harness.py does.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import redis
import requests
from kiteconnect import exceptions as kite_errors
from sqlalchemy import Engine, text

from ticker_worker.config import Settings
from ticker_worker.db import candles, migrate
from ticker_worker.db.engine import make_engine
from ticker_worker.db.instruments import IST
from ticker_worker.keys import RedisKeys
from ticker_worker.kite import rest
from ticker_worker.ratelimit import ReplyHook, api_key_hash, historical_limiter

DATABASE_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/ticker_worker_bench")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
PREFIX = "ticker:bench"
API_KEY, ACCESS_TOKEN = "bench-key", "bench-token"
NIFTY = 256265
KITE_LIMIT = 3

NAIVE_INSERT = text("""
INSERT INTO candles (instrument_token, interval, ts, open, high, low, close, volume, oi)
VALUES (:t, 'minute', :date, :open, :high, :low, :close, :volume, :oi)
ON CONFLICT (instrument_token, interval, ts) DO UPDATE SET open = EXCLUDED.open,
    high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close, volume = EXCLUDED.volume,
    oi = EXCLUDED.oi
""")


def start_sim() -> tuple[subprocess.Popen[bytes], str]:
    """The simulator as a subprocess, Kite's rate limits on; returns it and its URL."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "ticker_worker.sim", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/_sim/stats", timeout=1).ok:
                return proc, url
        except requests.ConnectionError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the simulator did not start within 60 s")


def fetch_loop(sim_url: str, duration: float, limited: bool) -> list[tuple[float, bool]]:
    """One worker process: fetch one day of minute candles repeatedly; (done time, ok) each."""
    settings = Settings(kite_api_root=sim_url, redis_url=REDIS_URL, ticker_redis_prefix=PREFIX)
    client = redis.Redis.from_url(REDIS_URL)
    limiter = historical_limiter(client, RedisKeys(PREFIX), KITE_LIMIT, timeout=duration + 10)
    kite = rest.client(settings, API_KEY, ACCESS_TOKEN)
    hook = ReplyHook(kite.reqsession)  # as backfill does: a slot counts from its reply
    day = datetime(2025, 3, 7, 9, 0)
    results: list[tuple[float, bool]] = []
    deadline = time.time() + duration
    while time.time() < deadline:
        with limiter.slot(API_KEY, hook) if limited else contextlib.nullcontext():
            try:
                kite.historical_data(NIFTY, day, day + timedelta(hours=8), "minute")
                results.append((time.time(), True))
            except kite_errors.NetworkException:
                results.append((time.time(), False))
    client.close()
    return results


def request_rate(sim_url: str, workers: int, duration: float, limited: bool) -> dict[str, float]:
    """Run `workers` processes at once; steady-state successful requests/s and 429 count."""
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        runs = pool.starmap(fetch_loop, [(sim_url, duration, limited)] * workers)
    done = sorted(t for run in runs for t, ok in run if ok)
    refused = sum(1 for run in runs for _, ok in run if not ok)
    # The first window's burst of 3 is free; the rate after it is what a long backfill gets.
    steady = (len(done) - KITE_LIMIT) / (done[-1] - done[0]) if len(done) > KITE_LIMIT else 0.0
    return {"ok": len(done), "refused": refused, "rate": steady}


def synthetic_candles(n: int) -> list[dict[str, object]]:
    """`n` minute candles in the client's shape (tz-aware IST), consecutive sessions."""
    first = datetime(2020, 1, 1, 9, 15, tzinfo=IST)
    return [{"date": first + timedelta(minutes=i), "open": 100.0 + i % 7, "high": 101.5,
             "low": 99.25, "close": 100.75, "volume": 1000 + i, "oi": None} for i in range(n)]


def timed(fn: object, *args: object) -> float:
    start = time.perf_counter()
    fn(*args)  # type: ignore[operator]
    return time.perf_counter() - start


def bulk_upsert(engine: Engine, rows: list[dict[str, object]]) -> None:
    with engine.begin() as conn:
        candles.upsert(conn, NIFTY, "minute", rows)


def naive_upsert(engine: Engine, rows: list[dict[str, object]]) -> None:
    with engine.begin() as conn:
        for row in rows:
            conn.execute(NAIVE_INSERT, {"t": NIFTY, **row})


def upsert_rates(rows: int, baseline_rows: int) -> dict[str, float]:
    """Rows/s for a fresh bulk upsert, a repeat of it, and the per-row baseline."""
    migrate.upgrade(DATABASE_URL)
    engine = make_engine(DATABASE_URL, application_name="bench_backfill")
    data = synthetic_candles(rows)
    try:
        with engine.begin() as conn:
            conn.execute(text("TRUNCATE candles"))
        fresh = rows / timed(bulk_upsert, engine, data)
        repeat = rows / timed(bulk_upsert, engine, data)
        with engine.begin() as conn:
            conn.execute(text("TRUNCATE candles"))
        naive = baseline_rows / timed(naive_upsert, engine, data[:baseline_rows])
    finally:
        engine.dispose()
    return {"fresh": fresh, "repeat": repeat, "naive": naive}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of fetching")
    parser.add_argument("--workers", type=int, default=6, help="concurrent worker processes")
    parser.add_argument("--rows", type=int, default=500_000, help="candles to upsert")
    parser.add_argument("--baseline-rows", type=int, default=20_000,
                        help="candles for the per-row baseline (it is slow)")
    args = parser.parse_args()
    redis.Redis.from_url(REDIS_URL).delete(RedisKeys(PREFIX).historical_bucket(
        api_key_hash(API_KEY)))
    sim, url = start_sim()
    try:
        ours = request_rate(url, args.workers, args.duration, limited=True)
        time.sleep(1.1)  # the baseline starts on an empty simulator window
        bare = request_rate(url, args.workers, min(args.duration, 3.0), limited=False)
    finally:
        sim.terminate()
        sim.wait(10)
    up = upsert_rates(args.rows, args.baseline_rows)
    print_table(args, ours, bare, up)


def print_table(args: argparse.Namespace, ours: dict[str, float], bare: dict[str, float],
                up: dict[str, float]) -> None:
    pct = 100 * ours["rate"] / KITE_LIMIT
    rows = [
        ("measure", "ours", "baseline", "target"),
        (f"historical req/s ({args.workers} procs, {args.duration:g} s)",
         f"{ours['rate']:.3f} ({pct:.1f}%)", "no limiter:", f">= {0.95 * KITE_LIMIT:.2f}"),
        ("  requests answered 429", f"{ours['refused']:,.0f}", f"{bare['refused']:,.0f}", "0"),
        ("  requests served", f"{ours['ok']:,.0f}", f"{bare['ok']:,.0f}", ""),
        (f"candle upsert rows/s ({args.rows:,} fresh)", f"{up['fresh']:,.0f}",
         f"{up['naive']:,.0f} per-row", ">= 100,000"),
        ("candle upsert rows/s (same rows again)", f"{up['repeat']:,.0f}", "", ""),
        ("bulk / per-row", f"{up['fresh'] / up['naive']:.1f}x", "", ""),
    ]
    print(f"\nbackfill benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores")
    for name, mine, base, target in rows:
        print(f"{name:<42} {mine:>16} {base:>16} {target:>11}")


if __name__ == "__main__":
    main()
