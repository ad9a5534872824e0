"""Fault 1: the holder is killed (SIGKILL) in the middle of a bulk subscribe.

Proves: a replacement holder brings every wanted instrument back on exactly one connection,
no subscriptions row is lost, and every `subscription_created` event reaches the Redis stream
(at least once) with its outbox row marked published, wherever the kill landed (before the
reconcile, between the WebSocket sends and the commit, or between the commit and the relay).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest
import redis
from sqlalchemy import Engine, text

from tests.e2e.stack import add_accounts
from tests.procs import Proc, wait_for
from tests.reliability.conftest import (
    Stack,
    all_active,
    created_in_stream,
    outbox,
    outbox_delivered,
    placement,
    rows,
    streaming_once,
    ticked,
)
from tests.reliability.servers import tail
from ticker_worker import commands

pytestmark = pytest.mark.e2e


def kill_when(proc: Proc, state: Callable[[], bool], too_late: Callable[[], bool]) -> bool:
    """SIGKILL `proc` in `state`: freeze it (SIGSTOP), look, thaw it, until the state shows.

    Returns whether the kill landed in `state`; if `too_late()` comes first it kills anyway.
    """
    pid = proc.popen.pid
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            os.kill(pid, signal.SIGSTOP)
            time.sleep(0.005)
            if state():
                return True
            if too_late():
                return False
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.001)
        return False
    finally:
        proc.kill()


def outbox_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM outbox")).scalar_one())


def unpublished(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL")).scalar_one())


def subscribe_all(db: Engine, tokens: list[int]) -> None:
    result = commands.subscribe_many(db, tokens, "quote")
    assert sorted(result["accepted"]) == sorted(tokens) and result["rejected"] == []


@pytest.mark.parametrize("moment", ["committed", "sent", "recorded"])
def test_holder_killed_mid_bulk_subscribe(
    stack: Stack, db: Engine, stocks: list[int], rredis: redis.Redis, moment: str,
) -> None:
    """moment: right after the command commits (before the holder reacts); once the simulator
    holds tokens but no row is active yet (sent on a WebSocket, not recorded); once the outbox
    has rows not yet published (recorded, not relayed)."""
    add_accounts(db, 3)
    first = stack.holder(max_tokens_per_connection=40)
    # Some instruments streaming already, so the bulk goes partly on open sockets (sent at once)
    # and partly on new ones (sent when they connect).
    warm = stocks[200:203]
    commands.subscribe_many(db, warm, "quote")
    wait_for(lambda: all_active(db, warm) and streaming_once(stack.sim, warm), 30,
             "the first instruments streaming")
    wait_for(lambda: outbox_delivered(db, rredis), 30, "their events delivered")
    tokens = stocks[:200]

    if moment == "sent":
        # Holding the lease row stalls the holder's fenced record (it share-locks that row)
        # after its WebSocket sends: "sent, not recorded" lasts until the kill, not microseconds.
        with db.connect() as locker, locker.begin():
            locker.execute(text("SELECT 1 FROM holder_lease FOR UPDATE"))
            subscribe_all(db, tokens)
            landed = kill_when(first.proc, lambda: set(tokens) <= set(placement(stack.sim))
                               and all(rows(db)[t].status == "pending" for t in tokens),
                               lambda: False)
    else:
        subscribe_all(db, tokens)
    if moment == "committed":
        first.proc.kill()
        landed = True
    elif moment == "recorded":
        landed = kill_when(first.proc, lambda: unpublished(db) > 0,
                           lambda: outbox_rows(db) > len(warm) and unpublished(db) == 0)
    at_kill = rows(db)
    box = outbox(db)
    print(f"kill {'in' if landed else 'after'} state {moment!r}: "
          f"{sum(r.status == 'active' for r in at_kill.values())} active, "
          f"{len(box)} outbox rows, {sum(r.published_at is None for r in box)} unpublished")
    assert landed, f"the kill missed the moment {moment!r}: this run did not test it"
    assert set(at_kill) == {*tokens, *warm}  # desired state committed before the crash
    tokens = [*tokens, *warm]

    second = stack.holder(max_tokens_per_connection=40)
    listener = stack.listen(rredis)
    wait_for(lambda: all_active(db, tokens), 60, "all 203 subscriptions active")
    wait_for(lambda: streaming_once(stack.sim, tokens), 30,
             "each token on exactly one simulator connection")
    wait_for(lambda: ticked(listener, tokens), 30, "ticks for each of the 200 tokens")
    wait_for(lambda: outbox_delivered(db, rredis), 30,
             "every outbox row published and in the stream")

    after = rows(db)
    assert set(after) == set(tokens)
    assert all(r.wanted and r.mode == "quote" for r in after.values())
    created = created_in_stream(rredis)
    missing = [t for t in tokens if created[t] < 1]
    assert not missing, f"no subscription_created in the stream for {missing[:10]}..."
    # Each row's account/connection is where the simulator really streams it.
    lists = stack.sim.token_lists()
    for t, r in after.items():
        key = f"key{r.account.removeprefix('acct')}"
        assert any(t in conn for conn in lists[key]), (t, r.account, r.connection)
    health = wait_for(lambda: (h := second.health()) and h["status"] == "healthy" and h, 20,
                      "a healthy holder")
    assert health["ticker"]["active_subscriptions"] == 203, tail(second.proc.output())
