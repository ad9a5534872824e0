"""Fault 3b: Postgres frozen (SIGSTOP on every process of a private cluster) for 20 s.

A frozen server keeps its TCP connections open and answers nothing: a client waits forever on
its reply. Proves: the holder's event loop never waits on it (every database call runs on a
thread), so ticks keep flowing with no tick lost; /health turns 503 with the reason within about
a second or two; after SIGCONT everything reconciles (a subscribe sent during the freeze is
placed) and no event is delivered twice under different ids.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
import redis
from sqlalchemy import Engine

from tests.e2e.stack import Sim, add_accounts
from tests.procs import wait_for
from tests.reliability.conftest import (
    KEYS,
    Stack,
    all_active,
    load_registry,
    outbox_delivered,
    stream_events,
    ticked,
)
from tests.reliability.servers import PostgresCluster
from ticker_worker import commands

pytestmark = pytest.mark.e2e
FREEZE = 20.0


class Arrivals:
    """Every tick published on the ticks channel, with the time it was received."""

    def __init__(self, client: redis.Redis) -> None:
        self.by_token: dict[int, list[tuple[float, dict[str, Any]]]] = defaultdict(list)
        self.lock = threading.Lock()
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(**{KEYS.ticks: self._on})
        self.thread = self.pubsub.run_in_thread(sleep_time=0.005, daemon=True)

    def _on(self, message: dict[str, Any]) -> None:
        now = time.monotonic()
        with self.lock:
            for tick in orjson.loads(message["data"]):
                self.by_token[tick["instrument_token"]].append((now, tick))

    def between(self, token: int, start: float, end: float) -> list[tuple[float, dict[str, Any]]]:
        with self.lock:
            return [(t, tick) for t, tick in self.by_token[token] if start <= t <= end]

    def close(self) -> None:
        self.thread.stop()
        self.thread.join(5)
        self.pubsub.close()


@pytest.fixture
def arrivals(rredis: redis.Redis) -> Iterator[Arrivals]:
    a = Arrivals(rredis)
    yield a
    a.close()


def cluster_processes(cluster: PostgresCluster) -> list[psutil.Process]:
    pid = int(Path(cluster.data, "postmaster.pid").read_text().split()[0])
    main = psutil.Process(pid)
    return [main, *main.children(recursive=True)]


def signal_all(procs: list[psutil.Process], sig: int) -> None:
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, sig)


def test_frozen_postgres_never_stops_the_ticks(
    pg_stack: Stack, pg_cluster: PostgresCluster, pg_engine: Engine, sim: Sim,
    universe: list[dict[str, Any]], rredis: redis.Redis, arrivals: Arrivals,
) -> None:
    stocks = load_registry(pg_engine, universe, 10)
    sim.call("POST", "/_sim/reset")
    add_accounts(pg_engine, 1)
    holder = pg_stack.holder()
    tokens, late = stocks[:4], stocks[4]
    commands.subscribe_many(pg_engine, tokens, "quote")
    wait_for(lambda: all_active(pg_engine, tokens), 30, "four instruments active")
    wait_for(lambda: all(arrivals.by_token[t] for t in tokens), 30, "ticks before the freeze")
    wait_for(lambda: holder.health()["status"] == "healthy", 30, "a healthy holder")
    before = {e["event_id"] for e in stream_events(rredis)}

    frozen = cluster_processes(pg_cluster)
    signal_all(frozen, signal.SIGSTOP)
    start = time.monotonic()
    try:
        health = wait_for(lambda: (h := holder.health()) and h["status"] == "unhealthy" and h,
                          10, "/health to turn unhealthy")
        noticed = time.monotonic() - start
        assert any(r.startswith("database:") for r in health["reasons"]), health["reasons"]
        print(f"/health unhealthy {noticed:.2f} s into the freeze: {health['reasons']}")
        time.sleep(max(0.0, FREEZE - (time.monotonic() - start)))
        end = time.monotonic()
    finally:
        signal_all(frozen, signal.SIGCONT)

    interval = 0.2
    for t in tokens:
        seen = arrivals.between(t, start, end)
        assert len(seen) >= 0.5 * FREEZE / interval, (t, len(seen))
        # Quote mode: the simulator grows volume by the last traded quantity on every tick, so
        # a tick lost anywhere between the simulator and Redis shows as a jump.
        lost = [(a["volume_traded"], b["volume_traded"]) for (_, a), (_, b) in
                itertools.pairwise(seen)
                if b["volume_traded"] - a["volume_traded"] != b["last_traded_quantity"]]
        assert not lost, (t, lost[:5])
        widest = max(b - a for (a, _), (b, _) in itertools.pairwise(seen))
        assert widest < 5 * interval, (t, widest)

    commands.subscribe(pg_engine, late, "quote")
    wait_for(lambda: holder.health()["status"] == "healthy", 30, "healthy again")
    wait_for(lambda: all_active(pg_engine, [late]), 30, "a subscribe after the thaw placed")
    listener = pg_stack.listen(rredis)
    wait_for(lambda: ticked(listener, [late, *tokens]), 30, "every instrument ticking")
    wait_for(lambda: outbox_delivered(pg_engine, rredis), 30, "every event delivered")
    after = stream_events(rredis)
    new = [e for e in after if e["event_id"] not in before]
    # One transition, one id: as many distinct ids as distinct transitions delivered.
    transitions = {(e["instrument_token"], e["event_type"], e["generation"]) for e in new}
    assert any(e["instrument_token"] == late for e in new)
    assert len({e["event_id"] for e in new}) == len(transitions), new
