"""The lease keeper's calls to Postgres: one stuck call (a partition, a frozen server) never
gets a queue of later calls behind it, which would run in a stale burst once it heals."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ticker_worker.holder.lease import LeaseKeeper
from ticker_worker.keys import RedisKeys


class StuckDatabase:
    """The Database port, its lease lane stuck until `heal()`."""

    def __init__(self) -> None:
        self.calls = 0
        self.healed = asyncio.Event()

    async def run(self, fn: Any, *args: Any, lane: str = "fast") -> Any:
        self.calls += 1
        await self.healed.wait()
        return 7  # the epoch an acquire returns

    def heal(self) -> None:
        self.healed.set()


async def test_a_stuck_lease_call_gets_no_queue_behind_it() -> None:
    db = StuckDatabase()
    became: list[int] = []

    async def on_active(epoch: int) -> None:
        became.append(epoch)

    async def on_standby() -> None:
        pass

    keeper = LeaseKeeper(db, None, RedisKeys("t"), 0.2, on_active, on_standby)  # type: ignore[arg-type]
    for _ in range(3):
        with pytest.raises(TimeoutError):
            await keeper._try_take()
    assert db.calls == 1, "later looks at the lease queued behind the stuck one"
    db.heal()
    await asyncio.sleep(0.01)  # the stuck call ends
    await keeper._try_take()
    assert db.calls == 2 and became == [7] and keeper.role == "active"


class FreeDatabase:
    """The Database port with the lease free: every acquire returns a new epoch."""

    def __init__(self) -> None:
        self.acquires = 0

    async def run(self, fn: Any, *args: Any, lane: str = "fast") -> Any:
        if fn.__name__ == "acquire":
            self.acquires += 1
            return self.acquires
        return None


async def test_a_released_lease_is_never_taken_back_by_the_holder_leaving() -> None:
    db = FreeDatabase()

    async def nothing(*args: Any) -> None:
        pass

    keeper = LeaseKeeper(db, None, RedisKeys("t"), 3.0, nothing, nothing)  # type: ignore[arg-type]
    await keeper._try_take()
    assert keeper.role == "active" and db.acquires == 1
    await keeper.release()
    keeper.wake.set()  # its own announcement of the release reaches it too
    await keeper._try_take()
    await keeper._pause(0.01)  # the wake-up is taken, not kept for later
    assert not keeper.wake.is_set()
    assert keeper.role == "standby" and db.acquires == 1, "the leaving holder took it back"


def record_releases(db: FreeDatabase) -> list[Any]:
    """The arguments of every lease release `db` runs, as they happen."""
    released: list[Any] = []
    real_run = db.run

    async def run(fn: Any, *args: Any, lane: str = "fast") -> Any:
        if fn.__name__ == "release":
            released.append(args)
        return await real_run(fn, *args, lane=lane)

    db.run = run  # type: ignore[method-assign]
    return released


async def test_a_takeover_that_fails_gives_the_lease_back() -> None:
    db = FreeDatabase()
    released = record_releases(db)
    stood_down: list[bool] = []

    async def on_active(epoch: int) -> None:
        raise RuntimeError("Postgres went away mid-takeover")

    async def on_standby() -> None:
        stood_down.append(True)

    keeper = LeaseKeeper(db, None, RedisKeys("t"), 3.0, on_active, on_standby)  # type: ignore[arg-type]
    await keeper._try_take()
    assert keeper.role == "standby" and not keeper.active.is_set()
    assert stood_down == [True], "what the failed takeover opened was not closed"
    assert len(released) == 1 and released[0][1] == 1, "the lease was kept, renewed for nothing"


async def test_a_step_down_while_leaving_still_releases_the_lease() -> None:
    db = FreeDatabase()
    released = record_releases(db)

    async def nothing(*args: Any) -> None:
        pass

    keeper = LeaseKeeper(db, None, RedisKeys("t"), 3.0, nothing, nothing)  # type: ignore[arg-type]
    await keeper._try_take()
    keeper.begin_leaving()  # SIGTERM: the sockets close first
    assert not keeper.may_publish()
    await keeper.lost("a pass met the stood-down core")  # as the Reconciler does
    await keeper.release()
    assert [a[1] for a in released] == [1], "the lease was left to expire: no hand-over"


async def test_the_keeper_stops_once_it_leaves_even_when_woken() -> None:
    keeper = LeaseKeeper(FreeDatabase(), None, RedisKeys("t"), 3.0,  # type: ignore[arg-type]
                         _nothing, _nothing)
    keeper._announced_at = float("inf")  # no registry writes in this test
    task = asyncio.ensure_future(keeper.run())
    await asyncio.sleep(0.01)
    await keeper.release()
    keeper.wake.set()
    await asyncio.wait_for(task, 1.0)  # returns by itself: no cancellation needed
    assert keeper.role == "standby"


async def _nothing(*args: Any) -> None:
    pass
