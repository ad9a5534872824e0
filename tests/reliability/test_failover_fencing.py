"""Fencing: a holder that lost its lease while paused or cut off from Postgres stays silent.

Proves, from Redis and the tables (never the holder's own logs):
- SIGSTOP on the active holder for 30 s: the standby takes over once the lease has expired; the
  resumed process publishes no tick and no event, writes no row, outbox entry or lease, and
  becomes a standby (its registry row and its /health say so).
- the active holder cut off from Postgres but not Redis (a proxy that stops forwarding): it
  publishes no tick once its lease time has passed, and the standby, connected directly, takes
  over.
- a paused holder still holding 2 of its api key's 3 Kite connections: the new holder streams on
  the free slot at once and retries the rest with backoff (refused, never a 4th connection on
  the simulator), and gets them once the paused one wakes and lets go.
Commands are attributed to a holder by the client ports of its Redis sockets (MONITOR).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from tests.e2e.stack import Holder, add_accounts, holder_env
from tests.procs import free_port, wait_for
from tests.reliability.conftest import (
    KEYS,
    Stack,
    TrackedHolder,
    all_active,
    outbox,
    outbox_delivered,
    stream_events,
    streaming_once,
)
from tests.reliability.failover import (
    CommandLog,
    ConnectionWatch,
    StallingProxy,
    TickClock,
    lease_row,
    redis_ports,
    registry,
    role,
    wait_role,
)
from ticker_worker import commands

pytestmark = pytest.mark.e2e
PAUSE = 30.0
LEASE_TTL = 3.0  # the default
WRITES = ("PUBLISH", "XADD", "SET", "LPUSH", "RPUSH", "HSET", "DEL", "EVALSHA", "EVAL")


def pair(stack: Stack, db: Engine, tokens: list[int],
         first_env: dict[str, str] | None = None) -> tuple[Holder, Holder]:
    """An active holder streaming `tokens` and a standby, everything announced."""
    add_accounts(db, 1)
    commands.subscribe_many(db, tokens, "quote")
    first = (TrackedHolder(first_env, stack.procs) if first_env else stack.holder())
    wait_role(first, "active")
    second = stack.holder()
    wait_role(second, "standby")
    return first, second


def table_state(db: Engine) -> dict[str, Any]:
    """What a holder writes: subscription rows, outbox rows, the lease (not its expiry, which
    the new holder renews)."""
    lease = lease_row(db)
    with db.connect() as conn:
        subs = {r[0]: tuple(r[1:]) for r in conn.execute(text(
            "SELECT instrument_token, status, account, connection, updated_at, generation, "
            "observed_generation, first_tick_at, reason FROM subscriptions"))}
    return {"subscriptions": subs, "outbox": [tuple(r) for r in outbox(db)],
            "lease": (lease.holder_id, lease.epoch, lease.acquired_at)}


def foreign_writes(log: CommandLog, since: float, allowed: set[int]) -> list[Any]:
    """Writing commands after `since` from any port but `allowed`, except presence keys."""
    return [c for c in log.since(since, *WRITES) if c[1] not in allowed
            and not c[2].startswith(f"SET {KEYS.holder_alive('')}")]


def test_paused_holder_resumes_as_a_silent_standby(
    stack: Stack, db: Engine, stocks: list[int], rredis: redis.Redis,
    redis_server: Any,
) -> None:
    tokens = stocks[:200]
    first, second = pair(stack, db, tokens)
    first_id = first.health()["holder"]["id"]
    clock = TickClock(rredis, KEYS.ticks)
    log = CommandLog(rredis)
    try:
        wait_for(lambda: all_active(db, tokens), 30, "the subscriptions active")
        wait_for(lambda: outbox_delivered(db, rredis), 30, "their events delivered")
        os.kill(first.proc.popen.pid, signal.SIGSTOP)
        paused = time.time()
        wait_role(second, "active", 30)
        wait_for(lambda: clock.ticked_since(paused, tokens), 30, "ticks through the standby")
        wait_for(lambda: sum(e["event_type"] == "stream_gap" for e in stream_events(rredis))
                 >= len(tokens) and outbox_delivered(db, rredis), 30, "the takeover's gaps")
        time.sleep(max(0.0, PAUSE - (time.time() - paused)))  # the length of the pause
        before = table_state(db)
        woke = time.time()
        os.kill(first.proc.popen.pid, signal.SIGCONT)
        wait_role(first, "standby", 30)
        # Barrier: the resumed process has run its loops since (its registry row says standby,
        # written after it woke, twice over), and the new holder still streams everything.
        wait_for(lambda: (r := registry(db)[first.proc.popen.pid]).role == "standby"
                 and r.seen_at.timestamp() > woke + 1, 30, "the resumed holder's standby row")
        since_wake = time.time()
        wait_for(lambda: clock.ticked_since(since_wake, tokens), 30, "ticks after the wake")
        after = table_state(db)
        allowed = redis_ports(second, redis_server.port)
    finally:
        clock.stop()
        log.stop()

    assert after == before, "a table changed after the paused holder woke"
    late = foreign_writes(log, woke, allowed)
    assert not late, f"Redis writes after the wake from the paused holder: {late[:5]}"
    presence = [c for c in log.since(woke, "SET") if first_id in c[2]]
    assert presence and all(" standby " in c[2] for c in presence), presence[:3]
    row = registry(db)[first.proc.popen.pid]
    assert (row.role, row.epoch) == ("standby", None)
    assert role(second) == "active" and first.health()["holder"]["epoch"] is None
    wait_for(lambda: streaming_once(stack.sim, tokens), 30, "only the new holder's sockets")
    assert first.health()["ticker"]["accounts"][0]["connections"] == [], "a standby holds a socket"


@pytest.fixture
def proxy(stack: Stack, rdb_url: str) -> Iterator[StallingProxy]:
    """A proxy to the reliability database (torn down before the stack, so that the cut-off
    holder's stalled calls end and it can stop)."""
    url = make_url(rdb_url)
    p = StallingProxy((url.host or "127.0.0.1", url.port or 5432))
    yield p
    p.close()


def test_holder_cut_off_from_postgres_stops_publishing_within_the_lease(
    stack: Stack, db: Engine, stocks: list[int], rredis: redis.Redis, redis_server: Any,
    proxy: StallingProxy, rdb_url: str,
) -> None:
    tokens = stocks[:200]
    proxied = make_url(rdb_url).set(host="127.0.0.1", port=proxy.port)
    env = {**holder_env(stack.sim), **stack.env(),
           "DATABASE_URL": proxied.render_as_string(hide_password=False)}
    first, second = pair(stack, db, tokens, env)
    clock = TickClock(rredis, KEYS.ticks)
    log = CommandLog(rredis)
    try:
        wait_for(lambda: all_active(db, tokens), 30, "the subscriptions active")
        ticking = time.time()
        wait_for(lambda: clock.ticked_since(ticking, tokens), 30, "ticks before the cut")
        cut = time.time()
        proxy.stall()
        stalled = time.time()
        wait_role(second, "active", 30)
        wait_for(lambda: clock.ticked_since(stalled, tokens), 30, "ticks through the standby")
        wait_role(first, "standby", 30)
        wait_for(lambda: streaming_once(stack.sim, tokens), 30, "the cut-off holder's sockets closed")
        allowed = redis_ports(second, redis_server.port)
    finally:
        clock.stop()
        log.stop()
    others = [c for c in log.since(cut, "PUBLISH", "XADD") if c[1] not in allowed]
    last = max((c[0] for c in others), default=cut)
    print(f"the cut-off holder published for {last - cut:.2f} s after the cut "
          f"(lease {LEASE_TTL} s)")
    # Its lease was last renewed before the cut, and its gate refuses a frame once that renewal
    # is a lease old; 0.5 s covers a frame that passed the gate just before, still in flight.
    assert last - cut < LEASE_TTL + 0.5, f"published {last - cut:.2f} s after the cut"
    assert not [c for c in others if KEYS.events in c[2].split(" ")[1:2]], \
        "the cut-off holder published an event"


def by_connection(db: Engine, tokens: list[int]) -> dict[int, list[int]]:
    with db.connect() as conn:
        rows = conn.execute(text("SELECT instrument_token, connection FROM subscriptions "
                                 "WHERE instrument_token = ANY(:t)"), {"t": tokens}).all()
    out: dict[int, list[int]] = {}
    for token, index in rows:
        out.setdefault(index, []).append(token)
    return out


def test_new_holder_uses_the_free_slot_first_while_a_paused_one_holds_two(
    stack: Stack, db: Engine, stocks: list[int], rredis: redis.Redis,
) -> None:
    tokens = stocks[:200]
    small = {**holder_env(stack.sim, max_tokens_per_connection=100), **stack.env()}
    first, second = pair(stack, db, tokens, small)  # 2 connections x 100 on one api key
    second.proc.stop()  # the standby must place 100 per connection too
    second = TrackedHolder({**small, "HOLDER_HTTP_PORT": str(free_port())}, stack.procs)
    wait_role(second, "standby")
    clock = TickClock(rredis, KEYS.ticks)
    watch = ConnectionWatch(stack.sim)
    try:
        wait_for(lambda: all_active(db, tokens), 30, "the subscriptions active")
        groups = by_connection(db, tokens)
        assert sorted(groups) == [0, 1] and all(len(g) == 100 for g in groups.values())
        os.kill(first.proc.popen.pid, signal.SIGSTOP)
        paused = time.time()
        wait_role(second, "active", 30)
        # One of its two connections got the free slot and streams; the other was refused
        # (the paused holder's sockets are still open) and keeps retrying with backoff.
        wait_for(lambda: any(clock.ticked_since(paused, g) for g in groups.values()), 30,
                 "ticks on the free slot")
        wait_for(lambda: max((c["reconnects"] for c in connections(second)), default=0) >= 2
                 and watch.most_connections["key1"] >= 3, 30,
                 "the other connection refused twice, the simulator seen at 3 connections")
        free = [i for i, g in groups.items() if clock.ticked_since(paused, g)]
        held = [t for i, g in groups.items() if i not in free for t in g]
        assert len(free) == 1 and not any(clock.ticked_since(paused, [t]) for t in held)
        assert [c["connected"] for c in connections(second)].count(True) == 1
        woke = time.time()
        os.kill(first.proc.popen.pid, signal.SIGCONT)
        wait_role(first, "standby", 30)
        wait_for(lambda: clock.ticked_since(woke, tokens), 30, "every instrument ticking")
        wait_for(lambda: streaming_once(stack.sim, tokens), 30, "the paused one's sockets gone")
        wait_for(lambda: sum(e["event_type"] == "stream_gap" for e in stream_events(rredis))
                 >= len(tokens) and outbox_delivered(db, rredis), 30, "the takeover's gaps")
    finally:
        clock.stop()
        watch.stop()
    assert watch.polls > 20 and dict(watch.most_connections) == {"key1": 3}, \
        dict(watch.most_connections)
    gaps = [e for e in stream_events(rredis) if e["event_type"] == "stream_gap"]
    twice = [e for e in gaps if sum(g["instrument_token"] == e["instrument_token"]
                                    for g in gaps) > 1]
    assert sorted(e["instrument_token"] for e in gaps) == sorted(tokens), twice[:4]


def connections(holder: Holder) -> list[dict[str, Any]]:
    doc = holder.health()
    assert doc is not None
    return list(doc["ticker"]["accounts"][0]["connections"])
