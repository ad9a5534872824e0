"""Active or standby: the lease in Postgres decides which holder streams (db/lease.py).

A standby looks at the lease five times a second, and at once when a holder announces that it
let the lease go (SIGTERM), and takes it once it has expired; the active holder renews it every
`ttl / 6` seconds. A holder whose renewal finds another epoch steps down
at once: it closes its sockets and publishes nothing more.

When a renewal cannot reach Postgres at all, the holder cannot tell a frozen server (nobody can
take over) from a partition (a standby may). It keeps streaming while no other holder is alive
(each announces itself in Redis), so one holder rides out a frozen Postgres; with a standby
alive, it stops publishing once its lease has run out by its own clock, so two holders never
publish at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis

from ticker_worker.db import lease as sql
from ticker_worker.holder.database import Database, in_conn
from ticker_worker.keys import RedisKeys

log = logging.getLogger(__name__)
STANDBY_PERIOD = 0.2  # seconds between a standby's looks at the lease
ANNOUNCE_PERIOD = 1.0  # seconds between presence announcements (Redis and the registry)
T = TypeVar("T")


class LeaseKeeper:
    """Holds, renews and gives up the lease; tells the holder when its role changes."""

    def __init__(self, db: Database, client: aioredis.Redis, keys: RedisKeys, ttl: float,
                 on_active: Callable[[int], Awaitable[None]],
                 on_standby: Callable[[], Awaitable[None]]) -> None:
        self.db, self.redis, self.keys, self.ttl = db, client, keys, ttl
        self.on_active, self.on_standby = on_active, on_standby
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.id = f"{self.host}-{self.pid}-{uuid.uuid4().hex[:6]}"
        self.epoch: int | None = None
        self.active = asyncio.Event()
        self.wake = asyncio.Event()  # set when a holder announces it let the lease go
        self.leaving = False  # released for good (SIGTERM): never take it again
        self._held: int | None = None  # the epoch to release once the sockets are closed
        self.renewed_at = 0.0  # monotonic time of the last successful renewal
        self.takeovers = 0
        self.others_alive = False
        self._announced_at = 0.0
        self.looked_at = float("-inf")  # monotonic time others_alive was last read from Redis
        self._stuck: asyncio.Future[Any] | None = None  # a lease call that outlived its wait

    @property
    def role(self) -> str:
        """`active` or `standby`."""
        return "active" if self.epoch is not None else "standby"

    def current_epoch(self) -> int | None:
        """The epoch our writes carry, or None as a standby."""
        return self.epoch

    def may_publish(self) -> bool:
        """Whether a tick may go out now: active, and either our lease is still ours by our own
        clock or no other holder could have taken it (none alive, by a recent look)."""
        if self.epoch is None:
            return False
        now = time.monotonic()
        if now - self.renewed_at < self.ttl:
            return True
        # "Nobody else is alive" is news only while fresh: a process resumed after a pause saw
        # it before the pause, and a standby may have started and taken over meanwhile.
        return not self.others_alive and now - self.looked_at < self.ttl

    async def run(self) -> None:
        """Take, renew or wait, until this holder leaves (SIGTERM)."""
        while not self.leaving:
            try:
                if self.epoch is None:
                    await self._try_take()
                else:
                    await self._renew()
            except Exception as exc:  # noqa: BLE001 - Postgres away: judged below
                log.warning("lease check failed: %s", exc)
            if time.monotonic() - self._announced_at >= ANNOUNCE_PERIOD:
                self._announced_at = time.monotonic()
                with contextlib.suppress(Exception):  # reported by the lease check already
                    await self._call(sql.seen, self.id, self.host, self.pid, self.role,
                                     self.epoch)
            if self.epoch is not None and not self.may_publish():
                await self.lost("lease not renewed in time and another holder is alive")
            await self._pause(self.ttl / 6 if self.epoch is not None else STANDBY_PERIOD)

    async def _pause(self, seconds: float) -> None:
        """Sleep until the next look, or until a holder announces it let the lease go."""
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
        # lands as the wake-up completes, and the shutdown would wait for this task for ever.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.wake.wait()
        self.wake.clear()

    async def _try_take(self) -> None:
        if self.leaving:
            return
        epoch = await self._call(sql.acquire, self.id, self.ttl)
        if epoch is None:
            return
        self.epoch, self.renewed_at = epoch, time.monotonic()
        self.takeovers += 1
        log.info("this holder is now active (epoch %d)", epoch)
        try:
            await self.on_active(epoch)
        except Exception:
            # Never hold a lease without streaming: give it back for another holder (or for
            # this one's next look) rather than renew it while the jobs wait for `active`.
            log.exception("taking over failed; giving the lease back")
            self.epoch = None
            await self.on_standby()
            await self._give_back(epoch)
            return
        self.active.set()

    async def _renew(self) -> None:
        assert self.epoch is not None
        asked = time.monotonic()
        if await self._call(sql.renew, self.id, self.epoch, self.ttl):
            self.renewed_at = asked
        else:
            await self.lost(f"epoch {self.epoch} was taken over by another holder")

    async def lost(self, reason: str) -> None:
        """Step down to standby: stop streaming and publishing at once."""
        if self.epoch is None:
            return
        log.error("stepping down to standby: %s", reason)
        self.epoch = None
        self.active.clear()
        await self.on_standby()

    def begin_leaving(self) -> None:
        """SIGTERM: stop publishing and renewing now, and keep the epoch for release().

        For good: the release's own announcement wakes this keeper too, and a holder on its way
        out must not win the lease back from the standby. While the sockets close, a pass that
        meets the stood-down core calls lost(), which must not forget the epoch to release."""
        if not self.leaving:
            self.leaving, self._held = True, self.epoch
        self.epoch = None
        self.active.clear()

    async def release(self) -> None:
        """Graceful hand-over (SIGTERM): let the lease go now so a standby takes it at once."""
        self.begin_leaving()
        epoch, self._held = self._held, None
        if epoch is not None:
            await self._give_back(epoch)
        with contextlib.suppress(Exception):  # the registry forgets silent holders by itself
            await self._call(sql.forget, self.id)

    async def _give_back(self, epoch: int) -> None:
        # Worth waiting for, up to the whole lease (a slow Postgres is not a reason to leave
        # the standby waiting for the expiry), behind any call still in the lane.
        try:
            async with asyncio.timeout(self.ttl):
                await self.db.run(in_conn(sql.release), self.id, epoch, lane="lease")
        except Exception as exc:  # noqa: BLE001 - it expires by itself within the ttl
            log.warning("lease not released (%r); it expires within %.1f s", exc, self.ttl)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        # Never wait on Postgres longer than a fraction of the lease: a frozen or cut-off server
        # must not stop this loop from judging the lease by its own clock. Nor queue a call
        # behind one still stuck in the lane: when the partition heals, a backlog of stale
        # calls (registry rows saying "active", takeovers nobody waits for) would run in a burst.
        if self._stuck is not None and not self._stuck.done():
            raise TimeoutError("the previous lease call is still waiting on Postgres")
        call = asyncio.ensure_future(self.db.run(in_conn(fn), *args, lane="lease"))
        try:
            return await asyncio.wait_for(asyncio.shield(call), self.ttl / 2)
        except TimeoutError:
            self._stuck = call
            call.add_done_callback(_retrieve)
            raise

    async def presence(self) -> None:
        """Announce ourselves in Redis and look for the others, once a second, forever.

        A loop of its own: a frozen Postgres slows the lease loop down, never this look, on
        which `may_publish` relies."""
        while True:
            key = self.keys.holder_alive(self.id)
            try:
                asked = time.monotonic()
                # Claim `active` only on a lease fresh by our own clock: a process resumed after a
                # pause must not announce a role it may have lost meanwhile.
                fresh = self.epoch is not None and asked - self.renewed_at < self.ttl
                await self.redis.set(key, "active" if fresh else "standby",
                                     px=int(self.ttl * 1000))
                others = [k async for k in self.redis.scan_iter(self.keys.holder_alive("*"))
                          if k.decode() != key]
                self.others_alive, self.looked_at = bool(others), asked
            except Exception:  # noqa: BLE001 - no Redis: nobody can publish ticks anyway
                pass
            await asyncio.sleep(ANNOUNCE_PERIOD)


def _retrieve(call: asyncio.Future[Any]) -> None:
    """Consume the outcome of a call nobody awaits any more (no "never retrieved" warning)."""
    if not call.cancelled():
        call.exception()
