"""The stream holder against the simulator, with real Postgres, Redis and a Celery worker."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from sqlalchemy import Engine

from tests.e2e.stack import Listener, Sim, add_accounts, sub_rows, wait_status
from tests.procs import Proc, celery_worker, wait_for
from ticker_worker import commands
from ticker_worker.config import Settings
from ticker_worker.db import accounts
from ticker_worker.keys import RedisKeys

pytestmark = pytest.mark.e2e


def ticks_for(listener: Listener, keys: RedisKeys, token: int) -> list[dict[str, Any]]:
    return [t for frame in listener.get(keys.ticks) for t in frame if t["instrument_token"] == token]


def events_for(listener: Listener, keys: RedisKeys, token: int, kind: str) -> list[dict[str, Any]]:
    return [e for e in listener.get(keys.events)
            if e["instrument_token"] == token and e["event_type"] == kind]


def placement(sim: Sim) -> Counter[int]:
    """How many connections hold each token, across every api key."""
    return Counter(t for conns in sim.token_lists().values() for tokens in conns for t in tokens)


@pytest.fixture
def worker(stocks: list[int]) -> Iterator[Proc]:
    proc = celery_worker()
    wait_for(lambda: "ready" in proc.output() or not proc.alive(), 60, "the worker")
    yield proc
    proc.stop()


def test_subscribe_event_ticks_mode_and_unsubscribe(
    engine: Engine, sim: Sim, start_holder: Any, worker: Proc, listener: Listener,
    keys: RedisKeys, settings: Settings, redis_client: redis.Redis,
) -> None:
    add_accounts(engine, 1)
    start_holder()
    client = Celery(broker=settings.celery_broker_url, backend=settings.celery_result_backend)
    # A second instrument keeps streaming throughout: the witness that ticks still flow.
    client.send_task("ticker_worker.subscribe", args=[408065, "quote"]).get(timeout=30)
    result = client.send_task("ticker_worker.subscribe", args=[256265]).get(timeout=30)
    assert result["status"] in ("pending", "active")

    created = wait_for(lambda: events_for(listener, keys, 256265, "subscription_created"),
                       what="subscription_created")
    event = created[0]  # type: ignore[index]
    assert event["mode"] == "full" and event["account"] == "acct1" and event["connection"] == 0
    assert event["metadata"]["tradingsymbol"] == "NIFTY 50"
    assert event["metadata"]["requested_mode"] == "full" and event["event_id"]
    # Like Kite, the simulator answers the subscribe with a quote packet (the default mode) and
    # the `mode` message with a full one: the full ticks follow at once.
    full = wait_for(lambda: [t for t in ticks_for(listener, keys, 256265) if t["mode"] == "full"],
                    what="full ticks for 256265")
    tick = full[-1]  # type: ignore[index]
    assert tick["tradable"] is False and tick["is_mock"] is True
    assert tick["exchange_timestamp"].endswith("+05:30")
    wait_for(lambda: sub_rows(engine)[256265].first_tick_at is not None, what="first_tick_at")
    # The relay enqueues the backfill right after publishing the event (no worker consumes it).
    wait_for(lambda: redis_client.llen("backfill") >= 1, what="a backfill on its queue")

    client.send_task("ticker_worker.set_mode", args=[256265, "ltp"]).get(timeout=30)
    listener.clear()
    wait_for(lambda: [t for t in ticks_for(listener, keys, 256265) if t["mode"] == "ltp"],
             what="ltp ticks")

    client.send_task("ticker_worker.unsubscribe", args=[256265]).get(timeout=30)
    wait_for(lambda: events_for(listener, keys, 256265, "subscription_removed"),
             what="subscription_removed")
    wait_status(engine, [256265], "removed")
    wait_for(lambda: placement(sim)[256265] == 0, what="the simulator to drop 256265")
    listener.clear()
    wait_for(lambda: len(ticks_for(listener, keys, 408065)) >= 3, what="three more ticks of 408065")
    assert ticks_for(listener, keys, 256265) == []


def test_four_small_accounts_stay_balanced(
    engine: Engine, sim: Sim, stocks: list[int], start_holder: Any,
) -> None:
    add_accounts(engine, 4)
    holder = start_holder(max_tokens_per_connection=5, max_connections_per_account=2)
    commands.subscribe_many(engine, stocks[:20], "quote")
    wait_status(engine, stocks[:20], "active")
    per_account = Counter(r.account for r in sub_rows(engine).values())
    assert sorted(per_account.values()) == [5, 5, 5, 5]
    # `active` is written once the subscribe is on the wire; the simulator may read it later.
    wait_for(lambda: all(placement(sim)[t] == 1 for t in stocks[:20]), 20,
             "each instrument on exactly one simulator connection")
    lists = sim.token_lists()
    assert all(len(conns) <= 2 and all(len(c) <= 5 for c in conns) for conns in lists.values())
    wait_for(lambda: holder.health()["status"] == "healthy", what="a healthy holder")


def test_full_house_queues_then_places(
    engine: Engine, sim: Sim, stocks: list[int], start_holder: Any,
) -> None:
    add_accounts(engine, 1)
    start_holder(max_tokens_per_connection=2, max_connections_per_account=2)
    commands.subscribe_many(engine, stocks[:5], "ltp")
    wait_for(lambda: Counter(r.status for r in sub_rows(engine).values()) ==
             {"active": 4, "queued": 1}, what="4 active and 1 queued")
    queued = next(r for r in sub_rows(engine).values() if r.status == "queued")
    assert "no capacity" in queued.reason
    first_active = next(r.instrument_token for r in sub_rows(engine).values()
                        if r.status == "active")
    commands.unsubscribe(engine, first_active)
    wait_status(engine, [queued.instrument_token], "active")
    assert max(placement(sim).values()) == 1


def test_expired_token_moves_instruments_and_set_token_brings_the_account_back(
    engine: Engine, sim: Sim, stocks: list[int], start_holder: Any, listener: Listener,
    keys: RedisKeys,
) -> None:
    add_accounts(engine, 2)
    start_holder()
    tokens = stocks[:6]
    commands.subscribe_many(engine, tokens, "full")
    wait_status(engine, tokens, "active")
    assert Counter(r.account for r in sub_rows(engine).values()) == {"acct1": 3, "acct2": 3}

    sim.fault("expire", "key1")
    wait_for(lambda: all(r.account == "acct2" for r in sub_rows(engine).values()), 30,
             "every instrument on acct2")
    wait_for(lambda: all(placement(sim)[t] == 1 for t in tokens), what="one connection each")
    assert set(sim.token_lists()["key2"][0]) >= set(tokens)
    with engine.connect() as conn:
        acct1 = next(a for a in accounts.list_all(conn) if a.name == "acct1")
    assert not acct1.healthy and "403" in (acct1.unhealthy_reason or "")
    listener.clear()
    wait_for(lambda: {t["instrument_token"] for f in listener.get(keys.ticks) for t in f}
             >= set(tokens), what="ticks for every moved instrument")

    with engine.begin() as conn:
        accounts.set_token(conn, "acct1", "fresh-token-after-login")
    commands.subscribe(engine, stocks[6], "quote")
    wait_status(engine, [stocks[6]], "active")
    assert sub_rows(engine)[stocks[6]].account == "acct1"


def test_muted_connection_is_detected_and_healed(
    engine: Engine, sim: Sim, stocks: list[int], start_holder: Any, listener: Listener,
    keys: RedisKeys,
) -> None:
    add_accounts(engine, 1)
    holder = start_holder()
    commands.subscribe(engine, stocks[0], "quote")
    wait_status(engine, [stocks[0]], "active")
    wait_for(lambda: ticks_for(listener, keys, stocks[0]), what="first ticks")
    sim.fault("mute", "key1")
    wait_for(lambda: holder.health()["ticker"]["accounts"][0]["connections"][0]["reconnects"]
             >= 1, 30, "the holder to drop the silent connection")
    sim.fault("restore", "key1")
    listener.clear()
    wait_for(lambda: ticks_for(listener, keys, stocks[0]), 30, "ticks after healing")
    assert placement(sim)[stocks[0]] == 1


def test_dropped_socket_reconnects_and_resubscribes(
    engine: Engine, sim: Sim, stocks: list[int], start_holder: Any, listener: Listener,
    keys: RedisKeys,
) -> None:
    add_accounts(engine, 1)
    start_holder()
    commands.subscribe_many(engine, stocks[:3], "full")
    wait_status(engine, stocks[:3], "active")
    sim.fault("drop", "key1")
    listener.clear()
    wait_for(lambda: {t["instrument_token"] for f in listener.get(keys.ticks) for t in f}
             >= set(stocks[:3]), 30, "ticks after the drop")
    # The simulator forgets the dropped socket when its handler unwinds, maybe after new ticks.
    wait_for(lambda: all(placement(sim)[t] == 1 for t in stocks[:3]), 20,
             "each instrument on exactly one simulator connection")


def test_killed_holder_restores_every_subscription_without_duplicates(
    engine: Engine, sim: Sim, stocks: list[int], start_holder: Any, listener: Listener,
    keys: RedisKeys,
) -> None:
    add_accounts(engine, 2)
    first = start_holder(max_tokens_per_connection=4)
    tokens = stocks[:12]
    commands.subscribe_many(engine, tokens, "quote")
    wait_status(engine, tokens, "active")
    before = {t: (r.account, r.connection) for t, r in sub_rows(engine).items()}
    first.proc.kill()
    wait_for(lambda: sum(placement(sim).values()) == 0, what="the sim to see the sockets go")
    listener.clear()
    start_holder(max_tokens_per_connection=4)
    wait_for(lambda: all(placement(sim)[t] == 1 for t in tokens), 30, "every token back once")
    assert {t: (r.account, r.connection) for t, r in sub_rows(engine).items()} == before
    # Barrier: a witness subscribed now gets its event, so any event about the restored
    # instruments would have come before it.
    witness = stocks[12]
    commands.subscribe(engine, witness, "quote")
    wait_for(lambda: events_for(listener, keys, witness, "subscription_created"), 30,
             "the witness's subscription_created")
    created = [e for e in listener.get(keys.events) if e["event_type"] == "subscription_created"]
    assert [e["instrument_token"] for e in created] == [witness]  # nothing else was created
