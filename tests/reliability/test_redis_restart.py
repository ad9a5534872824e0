"""Fault 2: Redis restarts (a private redis-server, without persistence) while the holder streams.

Proves: the holder keeps its WebSockets and keeps placing instruments while Redis is down (a
subscribe written to Postgres during the outage goes active), /health reports Redis unreachable,
and after Redis returns on the same port ticks are published again, /health is healthy, and the
event of the subscribe made during the outage is delivered from the outbox (stream + backfill
enqueue). A real Celery worker reconnects by itself and serves a task sent after the restart.
"""

from __future__ import annotations

import threading
import time

import pytest
import redis
from celery import Celery
from sqlalchemy import Engine

from tests.e2e.stack import add_accounts
from tests.procs import wait_for
from tests.reliability.conftest import (
    KEYS,
    Stack,
    all_active,
    created_in_stream,
    outbox,
    outbox_delivered,
    rows,
    streaming_once,
    ticked,
)
from tests.reliability.servers import RedisServer
from ticker_worker import commands

pytestmark = pytest.mark.e2e


def test_redis_restart_loses_no_event_and_streams_resume(
    stack: Stack, db: Engine, stocks: list[int], rredis: redis.Redis, redis_server: RedisServer,
) -> None:
    add_accounts(db, 2)
    worker = stack.worker()
    holder = stack.holder()
    before = stocks[:4]
    commands.subscribe_many(db, before, "quote")
    listener = stack.listen(rredis)
    wait_for(lambda: all_active(db, before), 30, "the first subscriptions active")
    wait_for(lambda: ticked(listener, before), 30, "ticks before the outage")
    wait_for(lambda: outbox_delivered(db, rredis), 30, "the first events delivered")
    wait_for(lambda: holder.health()["status"] == "healthy", 30, "a healthy holder")

    wiped = {r.event_id for r in outbox(db)}  # the restart loses the stream (no persistence)
    listener.stop()
    stack.listeners.remove(listener)
    redis_server.stop()
    down_at = time.monotonic()

    during = stocks[4]
    commands.subscribe(db, during, "full")
    wait_for(lambda: all_active(db, [during]), 30,
             "the subscribe made during the outage to be placed")
    assert all(r.published_at is None for r in outbox(db)
               if r.payload["instrument_token"] == during)
    health = wait_for(lambda: (h := holder.health()) and h["status"] != "healthy" and h, 30,
                      "/health to report the outage")
    assert health["dependencies"]["redis"] == "unreachable", health
    assert streaming_once(stack.sim, [*before, during])  # the sockets never needed Redis
    time.sleep(max(0.0, 3.0 - (time.monotonic() - down_at)))  # a few seconds of outage

    redis_server.start()  # same port, empty: no persistence
    client = redis_server.client()
    listener = stack.listen(client)
    wait_for(lambda: ticked(listener, [*before, during]), 30, "ticks published again")
    wait_for(lambda: holder.health()["status"] == "healthy", 30, "/health healthy again")
    wait_for(lambda: outbox_delivered(db, client, wiped), 30, "the outbox swept after the restart")
    assert created_in_stream(client)[during] >= 1
    assert client.llen("backfill") >= 1, "the created event enqueued no backfill"
    assert streaming_once(stack.sim, [*before, during])
    assert set(rows(db)) == {*before, during}

    # The worker reconnects to the restarted broker and serves a task sent afterwards.
    after = stocks[5]
    app = Celery(broker=redis_server.url, backend=redis_server.url)
    try:
        result = app.send_task("ticker_worker.subscribe", args=[after, "ltp"]).get(timeout=60)
    finally:
        app.close()
    assert result["instrument_token"] == after and result["changed"] is True
    assert worker.alive()
    wait_for(lambda: all_active(db, [after]), 30, "the task's subscription placed")
    wait_for(lambda: outbox_delivered(db, client, wiped) and created_in_stream(client)[after] >= 1, 30,
             "its event delivered")
    wait_for(lambda: ticked(listener, [after]), 30, "ticks for the task's subscription")
    assert KEYS.events_stream.encode() in client.keys("*")
    client.close()


def test_outbox_backlog_from_an_outage_drains_under_steady_traffic(
    stack: Stack, db: Engine, stocks: list[int], rredis: redis.Redis, redis_server: RedisServer,
) -> None:
    """Events that failed during an outage are delivered while new commands keep coming.

    A steady trickle of commands (another service subscribing and unsubscribing about twice a
    second) runs from before the outage until the end: it must not starve the outbox sweep.
    """
    add_accounts(db, 1)
    stack.holder()
    churn = stocks[10:14]
    stop = threading.Event()
    sent: list[int] = []

    def traffic() -> None:
        i = 0
        while not stop.is_set():
            token = churn[(i // 2) % len(churn)]
            if i % 2 == 0:
                commands.subscribe(db, token, "ltp")
            else:
                commands.unsubscribe(db, token)
            i += 1
            sent.append(i)
            stop.wait(0.4)

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    try:
        time.sleep(1.5)
        redis_server.stop()
        stranded = stocks[:3]
        commands.subscribe_many(db, stranded, "ltp")
        wait_for(lambda: all_active(db, stranded), 30, "the outage's subscriptions placed")
        time.sleep(1.0)
        redis_server.start()
        client = redis_server.client()
        restarted_at = len(sent)

        def drained() -> bool:
            return all(r.published_at is not None for r in outbox(db))

        try:
            wait_for(drained, 15, "the outbox backlog delivered during steady traffic")
        except TimeoutError:
            backlog = [r for r in outbox(db) if r.published_at is None]
            raise AssertionError(
                f"{len(sent) - restarted_at} commands after Redis came back, and still "
                f"{len(backlog)} events of the outage unpublished, e.g. "
                f"{[(r.event_type, r.payload['instrument_token']) for r in backlog[:5]]}"
            ) from None
    finally:
        stop.set()
        thread.join(5)
    assert all(created_in_stream(client)[t] >= 1 for t in stranded)
    client.close()
