"""Hand-written fakes of the holder core's ports (holder/ports.py), a Harness that wires a real
HolderCore to them, and run_until_idle(): passes until the core stops asking, with no sleeps, no
servers, time turned by hand.

The store is in fake_store.py (it applies plans as db/holder.py's SQL does), the connections and
Kite's side of the wire in fake_links.py; both are re-exported here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.unit.fake_links import Entry, FakeKite, FakeLink
from tests.unit.fake_store import FakeStore, Row
from ticker_worker.config import Settings
from ticker_worker.core.reconcile import Plan
from ticker_worker.holder.core import HolderCore
from ticker_worker.kite.codec import frame_tokens

__all__ = ["REFUSAL", "Asks", "Entry", "FakeKite", "FakeLink", "FakePublisher", "FakeStore", "FakeTicks",
           "Harness", "ManualClock", "Row", "iso", "run_until_idle"]


REFUSAL = "Maximum number of instruments per connection exceeded"  # a Kite error frame's text


def iso(seconds: float) -> str:
    """Wall-clock seconds as events write them."""
    return datetime.fromtimestamp(seconds, UTC).isoformat()


class ManualClock:
    """Both of the core's clocks, moved only by `advance`."""

    def __init__(self) -> None:
        self.wall = 1_767_225_600.0  # 2026-01-01 00:00 UTC
        self.mono = 1_000.0

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


class FakePublisher:
    """Collects what the core publishes."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def publish(self, events: list[dict[str, Any]]) -> None:
        self.events += events

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event_type"] == event_type]


class FakeTicks:
    """The TickPipeline as the core sees it: frames in, each token's last tick time out."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.last_tick: dict[int, float] = {}
        self.awaiting_first: set[int] = set()
        self.first_seen: dict[int, float] = {}

    async def put(self, frame: bytes) -> None:
        now = self.clock.time()
        for token in frame_tokens(frame):
            self.last_tick[token] = now
            if token in self.awaiting_first:
                self.awaiting_first.discard(token)
                self.first_seen[token] = now

    def expect_first(self, tokens: list[int]) -> None:
        self.awaiting_first.update(tokens)

    def forget(self, tokens: list[int]) -> None:
        for token in tokens:
            self.last_tick.pop(token, None)
            self.awaiting_first.discard(token)
            self.first_seen.pop(token, None)


class Asks:
    """The core's `ask` callback: remembers that another pass was asked for, and if full."""

    def __init__(self) -> None:
        self.pending: bool | None = None

    def __call__(self, full: bool) -> None:
        self.pending = bool(self.pending) or full

    def take(self) -> bool | None:
        """None when nothing was asked; else whether a full pass was."""
        taken, self.pending = self.pending, None
        return taken


@dataclass
class Harness:
    """A HolderCore wired to fakes; `per_conn` and `max_conns` are Kite's caps, made small."""

    per_conn: int = 5
    max_conns: int = 1
    accounts: Sequence[str] = ("a",)
    ack_timeout: float = 2.0
    batch_size: int = 1000
    clock: ManualClock = field(default_factory=ManualClock)
    store: FakeStore | None = None

    def __post_init__(self) -> None:
        if self.store is None:
            self.store = FakeStore(self.clock)
            for name in self.accounts:
                self.store.add_account(name)
        self.db: FakeStore = self.store
        self.settings = Settings(_env_file=None, max_tokens_per_connection=self.per_conn,
                                 max_connections_per_account=self.max_conns,
                                 ack_timeout=self.ack_timeout,
                                 subscribe_batch_size=self.batch_size)
        self.kite = FakeKite(self.clock)
        self.publisher = FakePublisher()
        self.ticks = FakeTicks(self.clock)
        self.asks = Asks()
        self.core = HolderCore(self.settings, self.db, self.kite.open_link, self.publisher,
                               self.ticks, self.clock, self.asks)

    def link(self, account: str = "a", index: int = 0) -> FakeLink:
        return self.kite.links[(account, index)]

    def row(self, token: int) -> Row:
        return self.db.rows[token]

    def assert_streaming(self) -> None:
        """No connection ever held more than `per_conn` tokens nor an account more than
        `max_conns` connections; every active row streams on exactly its recorded connection,
        and nothing else streams."""
        for slot in self.kite.links:
            assert self.kite.peak(slot) <= self.per_conn, f"{slot}: {self.kite.peak(slot)} held"
        for name in self.db.account_rows:
            assert sum(s[0] == name for s in self.kite.links) <= self.max_conns
        active = {t: (r.account, r.connection) for t, r in self.db.rows.items()
                  if r.wanted and r.status == "active"}
        for token, slot in active.items():
            assert self.kite.holding(token) == [slot], f"{token} recorded on {slot}"
        streamed = {t for link in self.kite.links.values() for t in link.wire}
        assert streamed == set(active), f"streamed but not active: {streamed - set(active)}"

    async def full(self) -> list[Plan]:
        """A timer pass (every wanted row), then whatever the core asks for, until idle."""
        return await run_until_idle(self.core, full=True)

    async def nudge(self, *tokens: int) -> list[Plan]:
        """A pass for the rows the commands' nudges named (all dirty rows when none)."""
        return await run_until_idle(self.core, full=False, tokens=set(tokens) or None)

    async def idle(self) -> list[Plan]:
        """The pass the core asked for (a nudge pass when it asked for none), until idle."""
        return await run_until_idle(self.core, full=bool(self.asks.take()))

    async def stream(self, *tokens: int) -> None:
        """Subscribe `tokens`, place them, and let each tick once (acknowledged)."""
        self.db.subscribe(*tokens)
        await self.nudge(*tokens)
        await self.tick_all()

    async def tick_all(self) -> None:
        """Every connected link ticks everything Kite holds on it."""
        for link in list(self.kite.links.values()):
            if link.connected and link.wire:
                await link.tick()


async def run_until_idle(core: HolderCore, full: bool = False, tokens: set[int] | None = None,
                         limit: int = 50) -> list[Plan]:
    """Run `core.reconcile` passes while the core asks for more, then `core.settle()`, until
    neither asks for another pass; return every pass's plan. `core.ask` must be an Asks."""
    asks = core.ask
    assert isinstance(asks, Asks), "build the core with an Asks as its `ask`"
    plans = [await core.reconcile(full, tokens)]
    for _ in range(limit):
        await _background(core)
        wanted = asks.take()
        if wanted is None:
            await core.settle()
            await _background(core)
            wanted = asks.take()
            if wanted is None:
                return plans
        plans.append(await core.reconcile(wanted, None))
    raise AssertionError(f"the core still asks for passes after {limit} of them")


async def _background(core: HolderCore) -> None:
    """Let the core's background tasks (marking an account unhealthy) finish."""
    while core._tasks:
        await asyncio.gather(*list(core._tasks), return_exceptions=True)
