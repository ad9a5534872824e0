"""A holder that steps down holds no socket, even when a reconcile pass was in flight then.

The pass reads the database first and sends afterwards: if the lease is lost while it waits on
the read, it must not open or restart a connection when the read returns (a standby holding
sockets would take Kite's connection slots from the new active holder).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.unit.holder_fakes import Harness
from ticker_worker.errors import Fenced


async def test_a_pass_in_flight_at_the_step_down_sends_nothing_after_it() -> None:
    h = Harness(per_conn=2, max_conns=2)
    h.db.subscribe(1, 2)
    await h.nudge(1, 2)
    await h.tick_all()
    h.db.subscribe(3)  # needs a second connection
    gate = asyncio.Event()
    read = h.db.desired

    async def slow_read(full: bool, tokens: Any) -> Any:
        await gate.wait()
        return await read(full, tokens)

    h.db.desired = slow_read  # type: ignore[method-assign]
    in_flight = asyncio.create_task(h.core.reconcile(False, {3}))
    await asyncio.sleep(0)
    sent_before = len(h.kite.sent())
    await h.core.close()  # the lease is lost meanwhile
    gate.set()
    with pytest.raises(Fenced):
        await in_flight
    assert list(h.kite.links) == [("a", 0)], "a connection was opened after the step-down"
    assert not h.link().running and h.link().stopped
    assert len(h.kite.sent()) == sent_before
    assert h.row(3).status == "pending"


async def test_taking_over_again_forgets_what_a_late_pass_left_behind() -> None:
    h = Harness()
    h.db.subscribe(1, 2)
    await h.nudge(1, 2)
    await h.tick_all()
    placed = dict(h.core.actual)
    await h.core.close()
    h.core.actual.update(placed)  # as a pass that planned before the step-down would leave it
    await h.core.resume()
    assert h.core.actual == {} and not h.core.stood_down
    await h.full()
    await h.tick_all()
    h.assert_streaming()
