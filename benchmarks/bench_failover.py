"""Failover benchmark (DESIGN 6.1): how long 9,000 streaming instruments stay dark when the
active holder dies (`kill -9`) or is stopped for a deploy (SIGTERM), and what a standby costs.

One api key with 3 connections x 3,000 instruments (the takeover finds no spare Kite slot),
the simulator ticking each instrument once a second. A trial's failover time runs from the
signal to the moment every instrument has ticked through the new holder: a tick counts once it
arrives after the new holder took the lease (its `acquired_at`, on the same host's clock), since
the old holder publishes nothing after its lease is gone. The killed or stopped holder is
replaced by a fresh standby before the next trial, so the roles alternate.

The standby's steady cost is measured on its own: the benchmark holds the lease itself while
the standby waits, and counts the standby's CPU, RSS and transactions on its database.

Everything is private: a redis-server on a free port and database `ticker_worker_bench_failover`.
Run: `.venv/bin/python -m benchmarks.bench_failover [--trials 5] [--instruments 9000]`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import time
from typing import Any

import psutil
from sqlalchemy import Engine, create_engine, text

from benchmarks import harness as h
from tests.reliability.failover import TickClock
from tests.reliability.servers import RedisServer
from ticker_worker import commands
from ticker_worker.db import migrate
from ticker_worker.keys import RedisKeys

DB = "ticker_worker_bench_failover" + (
    f"_{os.environ['TEST_RUN_ID']}" if os.environ.get("TEST_RUN_ID", "0") != "0" else "")
URL = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{DB}"
KEYS = RedisKeys(os.environ["TICKER_REDIS_PREFIX"])  # harness: suffixed by TEST_RUN_ID
INTERVAL = 1.0


class Holders:
    """The active holder and its standby, as processes on the private servers."""

    def __init__(self, sim: h.Sim, redis_url: str) -> None:
        self.sim, self.redis_url = sim, redis_url
        self.procs: list[tuple[h.Proc, int]] = []

    def start(self) -> tuple[h.Proc, int]:
        proc, port = h.holder_proc(self.sim, database_url=URL, redis_url=self.redis_url,
                                   celery_broker_url=self.redis_url, log_level="INFO")
        self.procs.append((proc, port))
        h.wait_for(lambda: role(port) is not None or not proc.alive(), 60, "a holder up")
        return proc, port

    def stop_all(self) -> None:
        for proc, _ in self.procs:
            proc.stop()


def role(port: int) -> str | None:
    import json
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            return str(json.loads(r.read())["role"])
    except urllib.error.HTTPError as exc:
        return str(json.loads(exc.read())["role"])
    except OSError:
        return None


def fresh_database() -> Engine:
    admin = create_engine(URL.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)'))
    admin.dispose()
    migrate.upgrade(URL)
    return create_engine(URL, pool_size=2)


def acquired_at(engine: Engine, epoch: int) -> float | None:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT epoch, acquired_at FROM holder_lease")).first()
    return row.acquired_at.timestamp() if row and row.epoch >= epoch else None


def trial(engine: Engine, clock: TickClock, tokens: list[int], active: tuple[h.Proc, int],
          sig: int) -> dict[str, float]:
    """Signal the active holder; seconds until every instrument ticked through the next."""
    with engine.connect() as conn:
        epoch = int(conn.execute(text("SELECT epoch FROM holder_lease")).scalar_one())
    clock.keep_arrivals(True)
    sent = time.time()
    os.killpg(active[0].popen.pid, sig)
    taken = h.wait_for(lambda: acquired_at(engine, epoch + 1), 60, "the standby to take over")
    assert isinstance(taken, float)
    h.wait_for(lambda: clock.ticked_since(taken, tokens), 120, "every instrument ticking again")
    firsts, silence = clock.first_after(taken, tokens), clock.longest_silence()
    clock.keep_arrivals(False)
    # A stopped holder may still be enqueueing its last 9,000 gap backfills before it exits.
    with contextlib.suppress(subprocess.TimeoutExpired):
        active[0].popen.wait(120)
    return {"seconds": max(firsts.values()) - sent, "takeover": taken - sent,
            "longest_silence": silence}


def standby_cost(engine: Engine, holders: Holders, seconds: float = 30.0) -> dict[str, float]:
    """The standby alone, the lease held by the benchmark: CPU, RSS, transactions/s."""
    with engine.begin() as conn:
        conn.execute(text("UPDATE holder_lease SET expires_at = now() + interval '1 hour', "
                          "holder_id = 'bench', epoch = epoch + 1"))
    *others, (standby, _) = holders.procs  # the newest is the standby; the rest go
    for proc, _ in others:
        proc.stop()
    ps = psutil.Process(standby.popen.pid)
    time.sleep(5)  # settle after the other holder left
    cpu0, (c0, r0), t0 = sum(ps.cpu_times()[:2]), transactions(engine), time.monotonic()
    time.sleep(seconds)
    cpu1, (c1, r1), t1 = sum(ps.cpu_times()[:2]), transactions(engine), time.monotonic()
    # This function's own reads of pg_stat_database count too: one commit and one rollback
    # (the pool's reset on return) between the two readings.
    return {"cpu_percent": 100 * (cpu1 - cpu0) / (t1 - t0),
            "rss_mb": ps.memory_info().rss / 2**20,
            "commits_per_s": (c1 - c0 - 1) / (t1 - t0),
            "rollbacks_per_s": (r1 - r0 - 1) / (t1 - t0)}


def transactions(engine: Engine) -> tuple[int, int]:
    """(commits, rollbacks) of the benchmark database so far."""
    time.sleep(1.2)  # Postgres publishes its counters about once a second
    with engine.connect() as conn:
        row = conn.execute(text("SELECT xact_commit, xact_rollback FROM pg_stat_database "
                                "WHERE datname = :d"), {"d": DB}).one()
        return int(row[0]), int(row[1])


def ready(clock: TickClock, tokens: list[int], standby: tuple[h.Proc, int]) -> None:
    """Every instrument streaming through the active holder, the standby waiting."""
    since = time.time()
    h.wait_for(lambda: clock.ticked_since(since, tokens), 120, "all streaming")
    h.wait_for(lambda: role(standby[1]) == "standby", 60, "the standby ready")


def run(trials: int, n: int, kills: int) -> dict[str, Any]:
    engine = fresh_database()
    server = RedisServer()
    server.start()
    sim = h.Sim(INTERVAL, 11)
    holders = Holders(sim, server.url)
    clock = TickClock(server.client(), KEYS.ticks)
    try:
        h.sync_instruments(engine, sim)
        h.add_accounts(engine, 1)
        tokens = h.equity_tokens(engine, n)
        commands.subscribe_many(engine, tokens, "quote")
        active = holders.start()
        h.wait_for(lambda: role(active[1]) == "active", 60, "the first holder active")
        h.wait_active(engine, tokens, 180)
        standby = holders.start()
        results: dict[str, Any] = {"instruments": n, "kill": [], "sigterm": [],
                                   "load_before": os.getloadavg()}
        plan = [("kill", signal.SIGKILL)] * kills + [("sigterm", signal.SIGTERM)] * trials
        for kind, sig in plan:
            ready(clock, tokens, standby)
            results[kind].append(trial(engine, clock, tokens, active, sig))
            server.client().delete("backfill", "backfill_gaps")  # no worker drains them here
            active, standby = standby, holders.start()
        results["standby"] = standby_cost(engine, holders)
        results["load"] = os.getloadavg()
        return results
    finally:
        clock.stop()
        holders.stop_all()
        sim.stop()
        server.close()
        engine.dispose()


def report(res: dict[str, Any]) -> None:
    print(f"\nfailover with {res['instruments']} instruments streaming "
          f"(1 api key x 3 connections, 1 tick/s each); load average (1 min) "
          f"{res['load_before'][0]:.1f} before, {res['load'][0]:.1f} after")
    print(f"{'signal':<8} {'n':>3} {'p50 s':>7} {'max s':>7} {'takeover p50':>13} "
          f"{'longest silence':>16}  target")
    for kind, target in (("kill", "p50 <= 5 s"), ("sigterm", "< 1 s")):
        rows = res[kind]
        if not rows:
            continue
        secs = [r["seconds"] for r in rows]
        print(f"{kind:<8} {len(rows):>3} {statistics.median(secs):>7.2f} {max(secs):>7.2f} "
              f"{statistics.median(r['takeover'] for r in rows):>12.2f}s "
              f"{max(r['longest_silence'] for r in rows):>15.2f}s  {target}")
    s = res["standby"]
    print(f"standby alone: CPU {s['cpu_percent']:.1f}% of a core, RSS {s['rss_mb']:.0f} MB, "
          f"{s['commits_per_s']:.1f} statements/s committed (+{s['rollbacks_per_s']:.1f}/s "
          "rollbacks: the connection pool's reset on return)")


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--instruments", type=int, default=9_000)
    parser.add_argument("--skip-kill", action="store_true", help="SIGTERM trials only")
    args = parser.parse_args()
    res = run(args.trials, args.instruments, 0 if args.skip_kill else args.trials)
    report(res)
    return res


if __name__ == "__main__":
    main()
