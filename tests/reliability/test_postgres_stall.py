"""Postgres slow rather than down: a table lock held by someone else (a migration, maintenance).

Proves (or shows the lack of): while the holder waits on a Postgres lock to record a placement,
its WebSockets keep streaming and /health keeps answering. DESIGN 6.2's "the holder's WebSockets
don't need Postgres" must also hold when Postgres is merely slow.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest
import redis
from sqlalchemy import Engine, text

from tests.e2e.stack import add_accounts
from tests.procs import wait_for
from tests.reliability.conftest import KEYS, Stack, all_active, ticked
from ticker_worker import commands

pytestmark = pytest.mark.e2e
LOCK_SECONDS = 5.0


def waiting_on_lock(engine: Engine) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query ILIKE '%outbox%' AND pid <> pg_backend_pid()")).scalar())


def test_lock_wait_in_postgres_does_not_freeze_streaming(
    stack: Stack, db: Engine, stocks: list[int], rredis: redis.Redis,
) -> None:
    add_accounts(db, 1)
    holder = stack.holder()
    streaming = stocks[:3]
    commands.subscribe_many(db, streaming, "quote")
    listener = stack.listen(rredis, KEYS.ticks)
    wait_for(lambda: all_active(db, streaming), 30, "instruments streaming")
    wait_for(lambda: ticked(listener, streaming), 30, "their ticks")

    locked = threading.Event()
    release = threading.Event()

    def hold_lock() -> None:  # e.g. a migration altering the outbox table
        with db.begin() as conn:
            conn.execute(text("LOCK TABLE outbox IN EXCLUSIVE MODE"))
            locked.set()
            release.wait(LOCK_SECONDS + 10)

    locker = threading.Thread(target=hold_lock, daemon=True)
    locker.start()
    try:
        assert locked.wait(10)
        commands.subscribe(db, stocks[3], "quote")  # the holder places it, then must wait
        wait_for(lambda: waiting_on_lock(db), 15, "the holder to wait on the outbox lock")
        blocked_at = time.monotonic()
        listener.clear()
        health_ok = False
        try:
            url = f"http://127.0.0.1:{holder.port}/health"
            with urllib.request.urlopen(url, timeout=2) as r:
                health_ok = "status" in json.loads(r.read())
        except urllib.error.HTTPError as exc:
            health_ok = "status" in json.loads(exc.read())
        except OSError:
            health_ok = False
        time.sleep(max(0.0, 3.0 - (time.monotonic() - blocked_at)))
        still_waiting = waiting_on_lock(db)
        got_ticks = ticked(listener, streaming)
    finally:
        release.set()
        locker.join(15)
    wait_for(lambda: all_active(db, [stocks[3]]), 30, "the new instrument placed after the lock")
    assert still_waiting, "the lock wait ended early: the check proves nothing"
    assert health_ok, "/health did not answer while Postgres held a lock"
    assert got_ticks, "no tick was published for 3 s while the holder waited on a Postgres lock"
