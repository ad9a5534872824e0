"""The holder's way to Postgres: every call on a worker thread, never on the event loop.

A frozen or partitioned Postgres then blocks a thread, not the ticks, /health or the watchdogs.
Calls go in lanes, so a slow one never delays another kind: `fast` for the reconcile pass (a
subscribe waits on it), `slow` for tick times, stats and the relay, `lease` for the lease. A call
in flight for longer than `stuck_after` marks the database unreachable at once.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Engine

from ticker_worker.core.reconcile import Desired, Plan
from ticker_worker.db import accounts as account_repo
from ticker_worker.db import holder as sql
from ticker_worker.db.accounts import AccountRow
from ticker_worker.errors import Fenced
from ticker_worker.holder.ports import Event, Metadata

T = TypeVar("T")
LANES = ("fast", "slow", "lease")


class Database:
    """Runs `fn(engine, *args)` on the lane's thread and keeps the time of each call in flight."""

    def __init__(self, engine: Engine, stuck_after: float = 1.0) -> None:
        self.engine = engine
        self.stuck_after = stuck_after
        self._lanes = {name: ThreadPoolExecutor(1, thread_name_prefix=f"db-{name}")
                       for name in LANES}
        self._inflight: dict[int, float] = {}
        self._ids = itertools.count()
        self.last_error: str | None = None

    async def run(self, fn: Callable[..., T], *args: Any, lane: str = "fast") -> T:
        """Call `fn(engine, *args)` on `lane`; record success or failure for health."""
        key = next(self._ids)
        self._inflight[key] = time.monotonic()
        try:
            result = await asyncio.get_running_loop().run_in_executor(
                self._lanes[lane], functools.partial(fn, self.engine, *args))
        except Fenced:
            raise
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {str(exc).strip()[:200]}"
            raise
        finally:
            del self._inflight[key]
        self.last_error = None
        return result

    def stuck_for(self) -> float:
        """Seconds the oldest call in flight has been waiting (0 when none)."""
        started = min(self._inflight.values(), default=None)
        return time.monotonic() - started if started is not None else 0.0

    @property
    def ok(self) -> bool:
        """Reachable: the last call succeeded and none is stuck."""
        return self.last_error is None and self.stuck_for() < self.stuck_after

    def problem(self) -> str | None:
        """Why the database counts as unreachable, or None."""
        stuck = self.stuck_for()
        if stuck >= self.stuck_after:
            return f"a database call has waited {stuck:.1f} s"
        return self.last_error

    def close(self) -> None:
        """Stop the lanes (a call stuck in a frozen server is left to its thread)."""
        for pool in self._lanes.values():
            pool.shutdown(wait=False, cancel_futures=True)
        self.engine.dispose()


class PgStore:
    """The Store port on Postgres: the holder's SQL (db/holder.py), fenced by the lease epoch."""

    def __init__(self, db: Database, epoch: Callable[[], int | None]) -> None:
        self.db, self._epoch = db, epoch

    def epoch(self) -> int:
        """The epoch our writes carry; Fenced when this holder is not active."""
        value = self._epoch()
        if value is None:
            raise Fenced(0)
        return value

    async def accounts(self) -> list[AccountRow]:
        return await self.db.run(in_conn(account_repo.list_all))

    async def desired(self, full: bool, tokens: set[int] | None) -> tuple[list[Desired], Metadata]:
        return await self.db.run(in_conn(sql.read_desired), full, tokens)

    async def record(self, plan: Plan, meta: Metadata) -> list[Event]:
        return await self.db.run(in_conn(sql.record), plan, self.epoch(), meta)

    async def record_events(self, events: list[Event]) -> None:
        await self.db.run(in_conn(sql.record_events), events, self.epoch())

    async def streaming_since(self) -> list[Any]:
        return await self.db.run(in_conn(sql.streaming_since))

    async def mark_unhealthy(self, account: str, reason: str) -> None:
        await self.db.run(in_conn(sql.mark_unhealthy), account, reason, self.epoch(),
                          lane="slow")

    async def record_ticks(self, seen: dict[int, float]) -> None:
        """First/last tick times."""
        await self.db.run(in_conn(sql.record_ticks), seen, self.epoch(), lane="slow")

    async def stats(self, with_registry: bool) -> tuple[dict[str, int], int, int | None]:
        """Subscriptions by status, the outbox backlog, and (now and then) the registry size."""
        return await self.db.run(in_conn(sql.stats), with_registry, lane="slow")


def in_conn(fn: Callable[..., T]) -> Callable[..., T]:
    """Adapt `fn(conn, ...)` to `fn(engine, ...)`: one autocommit connection per call."""
    @functools.wraps(fn)
    def call(engine: Engine, *args: Any) -> T:
        with engine.connect() as conn:
            return fn(conn, *args)
    return call
