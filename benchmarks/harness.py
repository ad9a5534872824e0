"""Shared benchmark plumbing: an isolated database and Redis db, the real processes, recorders.

Benchmarks never touch the service's own data: database `ticker_worker_bench`, Redis db 13,
prefix `ticker:bench`. Set before anything reads the settings. Two benchmark runs on one machine
stay apart with TEST_RUN_ID (database and prefix suffixed) and BENCH_REDIS_URL (a Redis of their
own, which also carries their Celery broker).
"""

from __future__ import annotations

import os

os.environ.update({
    "BENCH_SUFFIX": "" if os.environ.get("TEST_RUN_ID", "0") == "0"
    else f"_{os.environ['TEST_RUN_ID']}",
})
os.environ.update({
    "DATABASE_URL": "postgresql+psycopg2://postgres@127.0.0.1:5432/ticker_worker_bench"
    + os.environ["BENCH_SUFFIX"],
    "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"),
    "TICKER_REDIS_PREFIX": "ticker:bench" + os.environ["BENCH_SUFFIX"],
    "LOG_LEVEL": "WARNING",
})

import contextlib
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import redis
from sqlalchemy import Engine, create_engine, text

from tests.e2e.stack import Sim
from tests.procs import Proc, celery_worker, free_port, wait_for
from ticker_worker.config import get_settings
from ticker_worker.db import accounts, instruments, migrate
from ticker_worker.keys import RedisKeys

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = get_settings()
KEYS = RedisKeys(SETTINGS.ticker_redis_prefix)
BENCH_DB = SETTINGS.database_url.rsplit("/", 1)[1]

__all__ = ["KEYS", "SETTINGS", "Proc", "Sim", "celery_worker", "free_port", "wait_for"]


def fresh_database() -> Engine:
    """Drop and migrate the benchmark database; return an engine on it."""
    url = SETTINGS.database_url
    admin = create_engine(url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)'))
    admin.dispose()
    migrate.upgrade(url)
    return create_engine(url, pool_size=4)


def sync_instruments(engine: Engine, sim: Sim) -> tuple[int, float]:
    """Load the simulator's dump like `ticker-worker instruments sync`; (rows, seconds)."""
    from kiteconnect import KiteConnect

    started = time.perf_counter()
    rows = KiteConnect("k", "t", root=sim.http, timeout=60).instruments()
    with engine.begin() as conn:
        total, _ = instruments.sync(conn, rows)
    return total, time.perf_counter() - started


def add_accounts(engine: Engine, n: int) -> None:
    with engine.begin() as conn:
        for i in range(1, n + 1):
            accounts.add(conn, f"acct{i}", f"key{i}", f"bench-token-{i}")


def equity_tokens(engine: Engine, n: int, offset: int = 0) -> list[int]:
    """Tradable instruments that tick in quote mode (NSE/BSE/NFO), in a stable order."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT instrument_token FROM instruments WHERE segment <> 'INDICES' "
            "ORDER BY instrument_token OFFSET :o LIMIT :n"), {"o": offset, "n": n})
        return [r[0] for r in rows]


def reset_subscriptions(engine: Engine, client: redis.Redis) -> None:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE subscriptions, outbox"))
        conn.execute(text("UPDATE accounts SET healthy = true, unhealthy_reason = NULL"))
    client.flushdb()


def holder_proc(sim: Sim, full_reload: bool = False, **extra: object) -> tuple[Proc, int]:
    """A holder (ours, or the full-reload baseline) as a process; (proc, http port)."""
    port = free_port()
    env = {"KITE_WS_ROOT": sim.ws, "KITE_API_ROOT": sim.http, "HOLDER_HTTP_PORT": str(port),
           **{k.upper(): str(v) for k, v in extra.items()}}
    args = ([sys.executable, str(ROOT / "benchmarks" / "full_reload.py")] if full_reload
            else [sys.executable, "-m", "ticker_worker.cli", "holder"])
    proc = Proc("full-reload" if full_reload else "holder", args, env)
    return proc, port


def count_active(engine: Engine, tokens: list[int] | None = None) -> int:
    with engine.connect() as conn:
        if tokens is None:
            sql, params = "SELECT count(*) FROM subscriptions WHERE status = 'active'", {}
        else:
            sql = ("SELECT count(*) FROM subscriptions WHERE status = 'active' "
                   "AND instrument_token = ANY(:t)")
            params = {"t": tokens}
        return int(conn.execute(text(sql), params).scalar_one())


def wait_active(engine: Engine, tokens: list[int], timeout: float = 120) -> None:
    wait_for(lambda: count_active(engine, tokens) == len(tokens), timeout,
             f"{len(tokens)} active subscriptions")


def wait_outbox_drained(engine: Engine, timeout: float = 120) -> None:
    """Every event delivered and its backfill enqueued: the steady state to measure in."""
    def drained() -> bool:
        with engine.connect() as conn:
            return conn.execute(text(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL")).scalar_one() == 0
    wait_for(drained, timeout, "the outbox to drain")


class EventClock:
    """Records when each `subscription_created` arrives, by token (perf_counter clock)."""

    def __init__(self, client: redis.Redis) -> None:
        # A client of its own: a pubsub connection released into a shared pool could be handed
        # to another listener while this thread still reads from it.
        own = redis.Redis(connection_pool=redis.ConnectionPool(**client.connection_pool.connection_kwargs))
        self.pubsub = own.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(KEYS.events)
        self.arrived: dict[int, float] = {}
        self.cond = threading.Condition()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        with contextlib.suppress(redis.ConnectionError, ValueError, AttributeError):
            for message in self.pubsub.listen():  # ends when the benchmark shuts Redis down
                now = time.perf_counter()
                event = orjson.loads(message["data"])
                if event["event_type"] == "subscription_created":
                    with self.cond:
                        self.arrived[event["instrument_token"]] = now
                        self.cond.notify_all()

    def wait(self, token: int, timeout: float = 60) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: token in self.arrived, timeout):
                raise TimeoutError(f"no subscription_created for {token} in {timeout}s")
            return self.arrived[token]


class TickRecorder:
    """Watches ticks of a set of instruments: missed ticks (volume rule) and the longest gap."""

    def __init__(self, client: redis.Redis, watched: set[int], interval: float) -> None:
        self.watched, self.interval = watched, interval
        self.last: dict[int, tuple[int, float]] = {}
        self.jumps = 0
        self.gap_missed = 0
        self.max_gap = 0.0
        self.ticks = 0
        self.recording = False
        own = redis.Redis(connection_pool=redis.ConnectionPool(**client.connection_pool.connection_kwargs))
        self.pubsub = own.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(KEYS.ticks)
        self.closed = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        with contextlib.suppress(redis.ConnectionError, ValueError, AttributeError):
            for message in self.pubsub.listen():  # ends when closed
                if self.closed:
                    return
                now = time.perf_counter()
                for tick in orjson.loads(message["data"]):
                    self._see(tick, now)

    def close(self) -> None:
        """Stop listening (it would compete for the GIL with a latency measurement)."""
        self.closed = True
        self.pubsub.close()

    def _see(self, tick: dict[str, Any], now: float) -> None:
        token = tick["instrument_token"]
        if token not in self.watched or "volume_traded" not in tick:
            return
        volume = tick["volume_traded"]
        previous = self.last.get(token)
        if previous is not None and previous[0] == volume:
            return  # the same step again: the simulator's answer to a (re)subscribe
        self.last[token] = (volume, now)
        if previous is None or not self.recording:
            return
        self.ticks += 1
        if volume - previous[0] != tick["last_traded_quantity"]:
            self.jumps += 1
        gap = now - previous[1]
        self.max_gap = max(self.max_gap, gap)
        if gap > 1.5 * self.interval:  # ticks that never came, whether or not volume moved
            self.gap_missed += round(gap / self.interval) - 1

    @contextmanager
    def window(self) -> Iterator[None]:
        """Count only what happens inside the block (plus the gaps that end after it)."""
        self.jumps, self.max_gap, self.ticks, self.gap_missed = 0, 0.0, 0, 0
        self.recording = True
        yield
        time.sleep(2.5)  # a gap that started inside the window ends here
        self.recording = False

    def streaming(self) -> int:
        """Watched instruments that ticked within the last 2 intervals."""
        now = time.perf_counter()
        return sum(1 for t in self.watched
                   if t in self.last and now - self.last[t][1] <= 2 * self.interval)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": percentile(values, 50) * 1e3,
            "p99_ms": percentile(values, 99) * 1e3, "mean_ms": statistics.mean(values) * 1e3}


def spread(values: list[float], fmt: str = "{:.1f}") -> str:
    """A figure as its median with the min-max of the runs: `7.9 [6.8-9.4]`."""
    return (f"{fmt.format(statistics.median(values))} "
            f"[{fmt.format(min(values))}-{fmt.format(max(values))}]")
