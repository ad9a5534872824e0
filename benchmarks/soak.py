"""A trading day in miniature (`make soak`, not in CI): a long run with churn and faults.

N instruments stream at 1 tick/s (default 27,000 over 3 accounts) for --minutes (default 30)
while a client subscribes and unsubscribes (--churn operations a second) and one api key's
sockets are dropped every minute, in turn. Reported at the end: holder RSS at minute 5 (or at
a sixth of a shorter run) and at the end, ticks lost on the streaming instruments (the volume
rule), every silence of a streaming instrument longer than two intervals and whether a
`stream_gap` event covers it (the criterion: nothing lost that is not reported), the largest
gap, the event backlog, and Postgres and Redis memory.

Run: `.venv/bin/python -m benchmarks.soak [--minutes 2] [--instruments 27000]`.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections import defaultdict
from datetime import datetime
from typing import Any

import orjson
import psutil
import redis
from sqlalchemy import text

from benchmarks import harness as h
from benchmarks.bench_e2e import streaming
from ticker_worker import commands


def churn(engine: Any, fresh: list[int], rate: float, stop: threading.Event) -> int:
    """Subscribe a fresh instrument and unsubscribe the one before, `rate` operations/s."""
    done, previous = 0, None
    for token in fresh:
        if stop.wait(2 / rate):
            break
        commands.subscribe(engine, token, "quote")
        if previous is not None:
            commands.unsubscribe(engine, previous)
        previous, done = token, done + 2
    return done


class SilenceRecorder(h.TickRecorder):
    """The tick recorder, also keeping every silence longer than two intervals (wall clock).

    A silence ends with any tick of the instrument, a repeated packet included: the simulator
    stops an instrument's walk while nobody subscribes it, so the answer to the resubscribe
    repeats the last packet, and nothing happened in the market meanwhile that could be missed."""

    def __init__(self, client: redis.Redis, watched: set[int], interval: float) -> None:
        self.silences: list[tuple[int, float, float]] = []  # token, last tick, next tick
        self.heard: dict[int, float] = {}
        self.offset = time.time() - time.perf_counter()
        super().__init__(client, watched, interval)

    def _see(self, tick: dict[str, Any], now: float) -> None:
        token = tick["instrument_token"]
        if token in self.watched:
            before = self.heard.get(token)
            self.heard[token] = now
            if self.recording and before is not None and now - before > 2 * self.interval:
                self.silences.append((token, before + self.offset, now + self.offset))
        super()._see(tick, now)


class GapEvents:
    """Every `stream_gap` event on the events channel, as (gap_start, gap_end) per token (the
    events stream is trimmed to 100k entries; a long soak emits more)."""

    def __init__(self, client: redis.Redis) -> None:
        self.windows: dict[int, list[tuple[float, float]]] = defaultdict(list)
        self.count = 0
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(h.KEYS.events)
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        for message in self.pubsub.listen():
            event = orjson.loads(message["data"])
            if event.get("event_type") == "stream_gap":
                self.count += 1
                self.windows[event["instrument_token"]].append(
                    (datetime.fromisoformat(event["gap_start"]).timestamp(),
                     datetime.fromisoformat(event["gap_end"]).timestamp()))

    def unreported(self, silences: list[tuple[int, float, float]], slack: float) -> int:
        """Silences that no event's window covers (give or take `slack` seconds of delivery)."""
        return sum(1 for token, start, end in silences
                   if not any(gs <= start + slack and ge >= end - slack
                              for gs, ge in self.windows.get(token, ())))


def soak(args: argparse.Namespace) -> dict[str, Any]:
    engine = h.fresh_database()
    r = redis.Redis.from_url(h.SETTINGS.redis_url)
    r.flushdb()
    sim = h.Sim(tick_interval=1.0, seed=11)
    try:
        h.sync_instruments(engine, sim)
        h.add_accounts(engine, 3)
        tokens = h.equity_tokens(engine, args.instruments)
        fresh = h.equity_tokens(engine, 100_000, offset=args.instruments)
        with streaming(engine, sim, tokens, worker=False) as (holder, _):
            return run(engine, r, sim, holder, tokens, fresh, args)
    finally:
        sim.stop()


def run(engine: Any, r: redis.Redis, sim: h.Sim, holder: h.Proc, tokens: list[int],
        fresh: list[int], args: argparse.Namespace) -> dict[str, Any]:
    proc = psutil.Process(holder.popen.pid)
    recorder = SilenceRecorder(r, set(tokens), 1.0)
    gaps = GapEvents(r)
    h.wait_for(lambda: recorder.streaming() >= len(tokens) * 0.99, 60, "ticks flowing")
    stop = threading.Event()
    churned: list[int] = []
    thread = threading.Thread(
        target=lambda: churned.append(churn(engine, fresh, args.churn, stop)), daemon=True)
    duration = args.minutes * 60
    checkpoint = min(300.0, duration / 6)
    rss: list[tuple[float, float]] = []
    drops = 0
    peak = 0.0
    with recorder.window():
        thread.start()
        started = time.monotonic()
        next_drop = started + 60
        while (now := time.monotonic()) < started + duration:
            rss.append((now - started, proc.memory_info().rss / 2**20))
            peak = max(peak, rss[-1][1])
            if now >= next_drop:
                sim.fault("drop", f"key{drops % 3 + 1}")
                drops, next_drop = drops + 1, next_drop + 60
            time.sleep(min(10.0, max(0.1, started + duration - now)))
        stop.set()
        thread.join(30)
    time.sleep(5)  # the last drop's gap events are on their way
    at_checkpoint = next(m for t, m in rss if t >= checkpoint)
    end = proc.memory_info().rss / 2**20
    with engine.connect() as conn:
        backlog = conn.execute(text(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL")).scalar_one()
        pg_bytes = conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
    info = r.info("memory")
    return {
        "minutes": args.minutes, "instruments": len(tokens), "drops": drops,
        "churn_ops": churned[0] if churned else 0, "checkpoint_s": checkpoint,
        "rss_checkpoint_mb": at_checkpoint, "rss_end_mb": end,
        "rss_drift": end / at_checkpoint - 1, "ticks_seen": recorder.ticks,
        "ticks_lost_volume": recorder.jumps, "ticks_lost_gaps": recorder.gap_missed,
        "rss_peak_mb": peak, "silences": len(recorder.silences),
        "silences_unreported": gaps.unreported(recorder.silences, slack=1.0),
        "stream_gap_events": gaps.count, "max_gap_s": recorder.max_gap,
        "event_backlog": backlog, "postgres_mb": pg_bytes / 2**20,
        "redis_used_mb": info["used_memory"] / 2**20,
    }


def report(res: dict[str, Any]) -> None:
    print(f"\nsoak: {res['instruments']:,} instruments, {res['minutes']} min, "
          f"{res['churn_ops']} churn operations, {res['drops']} key drops (one a minute)")
    print(f"  holder RSS {res['rss_checkpoint_mb']:.0f} MB at {res['checkpoint_s']:.0f} s -> "
          f"{res['rss_end_mb']:.0f} MB at the end: drift {res['rss_drift']:+.1%} "
          f"[target within 10%]; peak {res['rss_peak_mb']:.0f} MB")
    print(f"  ticks seen {res['ticks_seen']:,}; lost by volume {res['ticks_lost_volume']:,}, "
          f"by gaps {res['ticks_lost_gaps']:,}; stream_gap events {res['stream_gap_events']:,}; "
          f"largest gap {res['max_gap_s']:.1f} s")
    print(f"  silences over 2 intervals {res['silences']:,}, of which not covered by a "
          f"stream_gap event: {res['silences_unreported']:,} [target 0]")
    print(f"  event backlog {res['event_backlog']}; Postgres database {res['postgres_mb']:.0f} MB; "
          f"Redis used_memory {res['redis_used_mb']:.0f} MB (the whole shared server)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--instruments", type=int, default=27_000)
    parser.add_argument("--churn", type=float, default=2.0, help="operations per second")
    report(soak(parser.parse_args()))


if __name__ == "__main__":
    main()
