"""Nudges: a LISTEN on Postgres that wakes the reconcile loop; the timer heals a lost nudge.

The LISTEN connection lives on a thread of its own, blocked in select(): registering its raw
socket with the event loop races with fd reuse after a Postgres restart (the dead socket's
number goes to a new transport), while a thread owns its connection outright.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg2
import psycopg2.extensions
from sqlalchemy.engine import make_url

from ticker_worker.keys import DIRTY_PASS, FULL_PASS, LEASE_FREED, NUDGE_CHANNEL

log = logging.getLogger(__name__)
KEEPALIVE = 5.0  # seconds between liveness queries on an idle LISTEN connection


def _dsn(database_url: str) -> str:
    url = make_url(database_url)
    parts = {"host": url.host, "port": url.port, "dbname": url.database, "user": url.username,
             "password": url.password}
    return " ".join(f"{k}={v}" for k, v in parts.items() if v is not None)


class NudgeListener:
    """Sets `event` when a command task commits a change; reconnects after a Postgres restart."""

    def __init__(self, database_url: str, event: asyncio.Event,
                 on_lease_freed: Callable[[], None] | None = None) -> None:
        self.dsn = _dsn(database_url)
        self.event = event
        self.on_lease_freed = on_lease_freed  # called on the loop when a holder lets go
        self.connected = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        # What the nudges since the last pass asked for (see keys.py); `take` resets them.
        self.full_requested = False
        self.all_dirty = False
        self.tokens: set[int] = set()

    async def run(self) -> None:
        """Listen on a daemon thread until cancelled."""
        self._loop = asyncio.get_running_loop()
        thread = threading.Thread(target=self._listen_forever, name="nudges", daemon=True)
        thread.start()
        try:
            await asyncio.Event().wait()
        finally:
            self._stop.set()

    def take(self) -> tuple[bool, bool, set[int]]:
        """(full pass wanted, every dirty row wanted, the named tokens) since the last call."""
        with self._lock:
            taken = (self.full_requested, self.all_dirty, self.tokens)
            self.full_requested, self.all_dirty, self.tokens = False, False, set()
        return taken

    def ask(self, full: bool = False) -> None:
        """Ask for another pass over every dirty row (or a full pass) and wake the loop."""
        with self._lock:
            self.all_dirty = True
            self.full_requested = self.full_requested or full
        self.event.set()

    def _listen_forever(self) -> None:
        while not self._stop.is_set():
            conn: Any = None
            try:
                conn = self._connect()
                self._wake(all_dirty=True)  # anything committed while we were away
                self._serve(conn)
            except psycopg2.Error as exc:
                log.warning("nudge listener: %s; retrying", str(exc).strip())
            finally:
                self.connected = False
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
            self._stop.wait(1.0)

    def _connect(self) -> Any:
        conn = psycopg2.connect(self.dsn, connect_timeout=5, keepalives=1, keepalives_idle=5,
                                keepalives_interval=2, keepalives_count=2)
        conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
        conn.cursor().execute(f"LISTEN {NUDGE_CHANNEL}")
        self.connected = True
        return conn

    def _serve(self, conn: Any) -> None:
        checked = time.monotonic()
        while not self._stop.is_set():
            readable, _, _ = select.select([conn], [], [], 1.0)
            if readable:
                conn.poll()
            elif time.monotonic() - checked > KEEPALIVE:
                conn.cursor().execute("SELECT 1")  # raises once the server has gone
                checked = time.monotonic()
            if conn.notifies:
                payloads = [n.payload for n in conn.notifies]
                conn.notifies.clear()
                self._note(payloads)

    def _note(self, payloads: list[str]) -> None:
        with self._lock:
            for payload in payloads:
                if payload == LEASE_FREED:
                    if self.on_lease_freed is not None and self._loop is not None:
                        self._loop.call_soon_threadsafe(self.on_lease_freed)
                    continue
                if payload == FULL_PASS:
                    self.full_requested = True
                elif payload == DIRTY_PASS or not payload:
                    self.all_dirty = True
                else:
                    try:
                        self.tokens.update(int(t) for t in payload.split(","))
                    except ValueError:
                        self.all_dirty = True
        self._wake()

    def _wake(self, all_dirty: bool = False) -> None:
        if all_dirty:
            with self._lock:
                self.all_dirty = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.event.set)
