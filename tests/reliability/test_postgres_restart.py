"""Fault 3: Postgres restarts (a private cluster on a free port) while the holder streams.

Proves: ticks keep flowing during the outage (the WebSockets do not need Postgres), /health
reports the database unreachable during it and healthy after, the nudge listener reconnects,
and a subscribe task sent after the restart (its worker's pooled connections died with the
server, so it retries) is applied, placed, streamed and announced. A second test
checks the nudge listener itself: after a reconnect a NOTIFY must wake it through its socket
reader, not only through its 5-second keep-alive poll.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg2
import pytest
import redis
from celery import Celery
from sqlalchemy import Engine

from tests.e2e.stack import Sim, add_accounts
from tests.procs import wait_for
from tests.reliability.conftest import (
    Stack,
    all_active,
    created_in_stream,
    load_registry,
    outbox_delivered,
    rows,
    streaming_once,
    ticked,
)
from tests.reliability.servers import PostgresCluster
from ticker_worker.holder.listener import NudgeListener

pytestmark = pytest.mark.e2e


def test_postgres_restart_keeps_ticks_flowing_and_placement_resumes(
    request: pytest.FixtureRequest, pg_stack: Stack, pg_cluster: PostgresCluster, pg_engine: Engine, sim: Sim,
    universe: list[dict[str, Any]], rredis: redis.Redis,
) -> None:
    stocks = load_registry(pg_engine, universe, 20)
    sim.call("POST", "/_sim/reset")
    add_accounts(pg_engine, 2)
    worker = pg_stack.worker()
    holder = pg_stack.holder()
    before = stocks[:4]
    app = Celery(broker=pg_stack.redis_url, backend=pg_stack.redis_url)
    request.addfinalizer(app.close)
    # Through the worker, so that its pooled connections are the ones the restart breaks.
    got = app.send_task("ticker_worker.subscribe_many", args=[before, "quote"]).get(timeout=30)
    assert got["accepted"] == before
    listener = pg_stack.listen(rredis)
    wait_for(lambda: all_active(pg_engine, before), 30, "the first subscriptions active")
    wait_for(lambda: ticked(listener, before), 30, "ticks before the outage")
    wait_for(lambda: (h := holder.health())["status"] == "healthy"
             and h["dependencies"]["nudges"] == "listening", 30, "a healthy, listening holder")

    pg_cluster.stop("fast")
    down_at = time.monotonic()
    health = wait_for(lambda: (h := holder.health())["dependencies"]["database"] == "unreachable"
                      and h, 30, "/health to report the database unreachable")
    assert health["status"] == "unhealthy"
    listener.clear()
    wait_for(lambda: ticked(listener, before), 20, "ticks during the outage")
    assert not pg_cluster.running()
    assert holder.proc.alive()
    time.sleep(max(0.0, 3.0 - (time.monotonic() - down_at)))
    assert streaming_once(sim, before)

    pg_cluster.start()
    wait_for(lambda: (h := holder.health())["status"] == "healthy"
             and h["dependencies"]["database"] == "ok"
             and h["dependencies"]["nudges"] == "listening", 30,
             "/health healthy again with the nudge listener reconnected")
    after = stocks[4]
    # The worker's pooled connections died with the server: the task retries (OperationalError
    # is in its autoretry_for) and succeeds on a fresh connection.
    got = app.send_task("ticker_worker.subscribe", args=[after, "full"]).get(timeout=60)
    assert got["instrument_token"] == after and got["changed"] is True
    assert worker.alive()
    wait_for(lambda: all_active(pg_engine, [after]), 30, "the subscribe after the restart placed")
    wait_for(lambda: ticked(listener, [after]), 30, "its ticks")
    wait_for(lambda: rows(pg_engine)[after].first_tick_at is not None, 30,
             "its first tick recorded (tick times written again)")
    wait_for(lambda: outbox_delivered(pg_engine, rredis), 30, "every event delivered")
    assert created_in_stream(rredis)[after] >= 1
    assert streaming_once(sim, [*before, after])
    assert set(rows(pg_engine)) == {*before, after}


def _notify(port: int, payload: str) -> None:
    conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
    conn.autocommit = True
    conn.cursor().execute("SELECT pg_notify('ticker_worker_nudge', %s)", (payload,))
    conn.close()


def test_nudge_listener_hears_nudges_again_after_a_postgres_restart(
    pg_cluster: PostgresCluster,
) -> None:
    """A nudge after the restart reaches the holder as soon as it is sent (the reader of the
    LISTEN socket, not the 5 s keep-alive query, delivers it), with the tokens it named."""
    url = pg_cluster.url("postgres")

    async def until(cond: Any, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while not (value := cond()):
            if time.monotonic() > deadline:
                raise TimeoutError(what)
            await asyncio.sleep(0.02)
        return value

    async def scenario() -> tuple[set[int], set[int]]:
        listener = NudgeListener(url, asyncio.Event())
        task = asyncio.create_task(listener.run())
        try:
            await until(lambda: listener.connected, 15, "the first connection")
            listener.take()
            await asyncio.to_thread(_notify, pg_cluster.port, "111")
            first = await until(lambda: listener.take()[2], 3, "the first nudge")
            await asyncio.to_thread(pg_cluster.stop, "fast")
            await until(lambda: not listener.connected, 15, "the listener to see the outage")
            await asyncio.to_thread(pg_cluster.start)
            await until(lambda: listener.connected, 20, "the listener to reconnect")
            listener.take()
            await asyncio.to_thread(_notify, pg_cluster.port, "222,333")
            # Well under the keep-alive period: only the socket reader can deliver it in time.
            second = await until(lambda: listener.take()[2], 3, "a nudge after the restart")
            return first, second
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    first, second = asyncio.run(scenario())
    assert first == {111}
    assert second == {222, 333}
