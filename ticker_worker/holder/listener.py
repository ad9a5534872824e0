"""Nudges: a LISTEN on Postgres that wakes the reconcile loop; the timer heals a lost nudge."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import psycopg2
import psycopg2.extensions
from sqlalchemy.engine import make_url

from ticker_worker.keys import DIRTY_PASS, FULL_PASS, NUDGE_CHANNEL

log = logging.getLogger(__name__)


def _dsn(database_url: str) -> str:
    url = make_url(database_url)
    parts = {"host": url.host, "port": url.port, "dbname": url.database, "user": url.username,
             "password": url.password}
    return " ".join(f"{k}={v}" for k, v in parts.items() if v is not None)


class NudgeListener:
    """Sets `event` when a command task commits a change; reconnects after a Postgres restart."""

    def __init__(self, database_url: str, event: asyncio.Event) -> None:
        self.dsn = _dsn(database_url)
        self.event = event
        self._conn: Any = None
        self.connected = False
        # What the nudges since the last pass asked for (see keys.py); the reader resets them.
        self.full_requested = False
        self.all_dirty = False
        self.tokens: set[int] = set()

    async def run(self) -> None:
        """Keep a LISTEN open until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                self._connect()
                loop.add_reader(self._conn.fileno(), self._readable)
                self.all_dirty = True  # anything committed while we were away: reconcile now
                self.event.set()
                while self._alive():
                    await asyncio.sleep(5)
            except psycopg2.Error as exc:
                log.warning("nudge listener: %s; retrying", str(exc).strip())
            finally:
                self._close(loop)
            await asyncio.sleep(1)

    def _connect(self) -> None:
        self._conn = psycopg2.connect(self.dsn, connect_timeout=5, keepalives=1,
                                      keepalives_idle=5, keepalives_interval=2,
                                      keepalives_count=2)
        self._conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
        self._conn.cursor().execute(f"LISTEN {NUDGE_CHANNEL}")
        self.connected = True

    def _alive(self) -> bool:
        try:
            self._conn.cursor().execute("SELECT 1")
        except psycopg2.Error:
            return False
        self._drain()  # a query collects pending notifications too
        return True

    def _readable(self) -> None:
        try:
            self._conn.poll()
        except psycopg2.Error:
            self.connected = False
            return
        self._drain()

    def _drain(self) -> None:
        if not self._conn.notifies:
            return
        for note in self._conn.notifies:
            self._note(note.payload)
        self._conn.notifies.clear()
        self.event.set()

    def _note(self, payload: str) -> None:
        if payload == FULL_PASS:
            self.full_requested = True
        elif payload == DIRTY_PASS or not payload:
            self.all_dirty = True
        else:
            try:
                self.tokens.update(int(t) for t in payload.split(","))
            except ValueError:
                self.all_dirty = True

    def take(self) -> tuple[bool, bool, set[int]]:
        """(full pass wanted, every dirty row wanted, the named tokens) since the last call."""
        taken = (self.full_requested, self.all_dirty, self.tokens)
        self.full_requested, self.all_dirty, self.tokens = False, False, set()
        return taken

    def _close(self, loop: asyncio.AbstractEventLoop) -> None:
        self.connected = False
        if self._conn is not None:
            with contextlib.suppress(Exception):
                loop.remove_reader(self._conn.fileno())
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None
