"""The holder core's ports: what it needs from Postgres, Kite connections, Redis and the clock.

The composition root (holder/main.py) passes the real adapters; the unit suite passes fakes
(tests/unit/holder_fakes.py) and a manual clock, and drives the core with no sleeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from ticker_worker.core.acks import AckBook
from ticker_worker.core.reconcile import Desired, Plan
from ticker_worker.core.wire import Message
from ticker_worker.db.accounts import AccountRow
from ticker_worker.kite.ticker import Credentials, LinkEvents

Metadata = dict[int, dict[str, Any]]
Event = dict[str, Any]


class Link(Protocol):
    """One Kite ticker connection (kite/ticker.py's TickerConnection)."""

    account: str
    index: int
    tokens: dict[int, str]
    acks: AckBook
    cap: int | None
    connected: bool
    auth_failed: bool
    reconnects: int
    refusals: int
    last_message_at: float

    def start(self) -> None:
        """Connect in the background (and keep reconnecting)."""

    async def stop(self) -> None:
        """Close for good."""

    async def apply(self, messages: Sequence[Message]) -> None:
        """Take these messages into `tokens` and send them in order."""

    async def resend(self, tokens: list[int]) -> None:
        """Send these tokens again."""


class LinkFactory(Protocol):
    """Opens connection `index` of an account."""

    def __call__(self, account: str, index: int, credentials: Any,
                 events: LinkEvents) -> Link: ...


class Store(Protocol):
    """The holder's Postgres: desired state in, outcomes and events out (fenced by epoch)."""

    async def accounts(self) -> list[AccountRow]:
        """Every account row."""

    async def desired(self, full: bool, tokens: set[int] | None) -> tuple[list[Desired], Metadata]:
        """Rows to reconcile: every wanted or dirty row (full), else the dirty ones."""

    async def record(self, plan: Plan, meta: Metadata) -> list[Event]:
        """Write what `plan` made true with its events, atomically; return the events."""

    async def record_events(self, events: list[Event]) -> None:
        """Put events that change no row (stream gaps) into the outbox."""

    async def streaming_since(self) -> list[Any]:
        """Active rows with the time of their last recorded tick."""

    async def mark_unhealthy(self, account: str, reason: str) -> None:
        """Record that Kite refused an account's token."""


class Publisher(Protocol):
    """Delivers committed events (pub/sub, stream, backfill enqueue)."""

    async def publish(self, events: list[Event]) -> None:
        """Publish now; whatever fails stays in the outbox for the sweep."""


class TickSink(Protocol):
    """Where frames go, and what the core reads of the ticks (the TickPipeline)."""

    last_tick: dict[int, float]

    async def put(self, frame: bytes) -> None:
        """Queue a frame for decoding and publishing."""

    def expect_first(self, tokens: list[int]) -> None:
        """These were just placed: their next tick is their first."""

    def forget(self, tokens: list[int]) -> None:
        """These left the holder."""


class Clock(Protocol):
    """Time, so that the unit suite can turn it by hand."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch."""


__all__ = ["Clock", "Credentials", "Event", "Link", "LinkFactory", "Metadata", "Publisher",
           "Store", "TickSink"]
