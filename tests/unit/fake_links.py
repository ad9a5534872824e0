"""Fake Kite connections for the holder core's unit suite: FakeLink behaves toward the core as
kite/ticker.py's TickerConnection does; FakeKite is the exchange's side of every socket and keeps
one journal of what crossed the wire, in order, with what each connection held after each message,
so a test can check Kite's caps at every point and the order of things across connections.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ticker_worker.core import wire
from ticker_worker.core.acks import AckBook
from ticker_worker.core.placement import Slot
from ticker_worker.core.wire import Message
from ticker_worker.kite.codec import encode_frame, encode_ltp


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def time(self) -> float: ...


@dataclass(frozen=True)
class Entry:
    """One thing that crossed a socket. `kind`: apply, resend or resubscribe (a control message
    from the holder, `action` subscribe/unsubscribe/mode), tick, connect, drop or stop.
    `held`: the tokens Kite had on that socket right after it."""

    slot: Slot
    kind: str
    action: str = ""
    tokens: tuple[int, ...] = ()
    mode: str | None = None
    held: int = 0


class FakeKite:
    """The exchange side of every connection, and the LinkFactory that opens them."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.links: dict[Slot, FakeLink] = {}
        self.journal: list[Entry] = []
        self.connect_at_start = True  # False: a new link waits for its test to reconnect() it

    def open_link(self, account: str, index: int, credentials: Callable[[], Any],
                  events: Any) -> FakeLink:
        link = FakeLink(self, account, index, events)
        self.links[(account, index)] = link
        return link

    def sent(self, slot: Slot | None = None) -> list[Entry]:
        """Control messages, in send order (on `slot` only, when given)."""
        return [e for e in self.journal if e.action and (slot is None or e.slot == slot)]

    def peak(self, slot: Slot) -> int:
        """The most tokens Kite held on `slot` at any point."""
        return max((e.held for e in self.journal if e.slot == slot), default=0)

    def first(self, slot: Slot, kind: str, token: int, action: str = "") -> int:
        """The journal position of the first `kind` (and `action`) entry naming `token`."""
        for i, e in enumerate(self.journal):
            if e.slot == slot and e.kind == kind and e.action == action and token in e.tokens:
                return i
        raise AssertionError(f"no {kind} {action} of {token} on {slot}")

    def holding(self, token: int) -> list[Slot]:
        """The connections on which Kite streams `token` now."""
        return [s for s, link in self.links.items() if token in link.wire]


class FakeLink:
    """One ticker connection: the core's side (`tokens`, `acks`, `cap`) kept exactly as
    TickerConnection keeps it; the exchange's side (`wire`) moved only by what is sent."""

    def __init__(self, kite: FakeKite, account: str, index: int, events: Any) -> None:
        self.kite, self.clock, self.events = kite, kite.clock, events
        self.account, self.index = account, index
        self.tokens: dict[int, str] = {}
        self.acks = AckBook()
        self.cap: int | None = None
        self.connected = self.auth_failed = self.stopped = self.running = False
        self.reconnects = self.refusals = 0
        self.last_message_at = 0.0
        self.wire: dict[int, str] = {}

    @property
    def slot(self) -> Slot:
        return self.account, self.index

    def _note(self, kind: str, action: str = "", tokens: Sequence[int] = (),
              mode: str | None = None) -> None:
        self.kite.journal.append(Entry(self.slot, kind, action, tuple(tokens), mode,
                                       len(self.wire)))

    def _send(self, kind: str, action: str, tokens: Sequence[int], mode: str | None) -> None:
        if action == "subscribe":
            self.wire.update(dict.fromkeys(tokens, "quote"))  # Kite's default mode
        elif action == "unsubscribe":
            for t in tokens:
                self.wire.pop(t, None)
        else:
            self.wire.update((t, mode or "") for t in tokens if t in self.wire)
        self._note(kind, action, tokens, mode)

    def _picture(self, kind: str, tokens: Sequence[int]) -> None:
        by_mode: dict[str, list[int]] = {}
        for t in tokens:
            by_mode.setdefault(self.tokens[t], []).append(t)
        for mode, group in by_mode.items():
            self._send(kind, "subscribe", group, None)
            self._send(kind, "mode", group, mode)

    # ---- the Link port ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the connect loop unless it runs (it keeps running through drops; it ends on
        a 403 or stop). Connects at once unless the test connects it later: a real one
        connects in the background, then sends what it was given meanwhile."""
        if self.running:
            return
        self.running, self.auth_failed = True, False
        if self.kite.connect_at_start:
            self.reconnect()

    async def stop(self) -> None:
        self.connected, self.stopped, self.running = False, True, False
        self.wire.clear()
        self._note("stop")

    async def apply(self, messages: Sequence[Message]) -> None:
        self.acks.forget(wire.carry(self.tokens, messages))
        if self.cap is not None and len(self.tokens) < self.cap:
            self.cap = None
        if not self.connected:
            return  # sent in full on the next connect
        for m in messages:
            if m.action == "subscribe":
                self.acks.sent(m.tokens, self.clock.monotonic())
            self._send("apply", m.action, m.tokens, m.mode)

    async def resend(self, tokens: list[int]) -> None:
        if self.connected:
            self._picture("resend", [t for t in tokens if t in self.tokens])

    # ---- what Kite and the network do -------------------------------------------------------

    async def tick(self, tokens: Sequence[int] | None = None) -> list[int]:
        """A market-data frame with `tokens` (default: all Kite holds here); the ones it
        acknowledges go to the core first, as TickerConnection._read does."""
        assert self.connected, f"{self.slot} is not connected"
        tokens = list(self.wire) if tokens is None else list(tokens)
        assert set(tokens) <= set(self.wire), f"{self.slot} does not stream {tokens}"
        self.last_message_at = self.clock.monotonic()
        acked = self.acks.seen(tokens) if self.acks.unacked else []
        self._note("tick", tokens=tokens)
        if acked:
            self.events.on_acked(self, acked)
        if tokens:
            await self.events.on_frame(self, encode_frame([encode_ltp(t, 100.0) for t in tokens]))
        return acked

    def refuse(self, tokens: Sequence[int], reason: str) -> list[int]:
        """Kite's error frame about `tokens`, settled as TickerConnection._settle_refusal does:
        the ones still unacknowledged leave the connection, which now counts as full."""
        refused = [t for t in tokens if t in self.acks.unacked and t in self.tokens]
        for t in refused:
            self.tokens.pop(t, None)
            self.wire.pop(t, None)
        self.acks.forget(refused)
        self.cap = len(self.tokens)
        self.refusals += len(refused)
        self._note("refuse", tokens=refused)
        if refused:
            self.events.on_refused(self, refused, f"refused by Kite: {reason}")
        return refused

    def drop(self, reason: str = "dropped") -> None:
        """The socket is lost (TickerConnection._lost)."""
        was_connected = self.connected
        self.connected = False
        self.wire.clear()
        self.acks.clear()
        self.cap = None
        self._note("drop")
        if was_connected:
            self.events.on_lost(self, reason)
        self.reconnects += 1

    def reject_auth(self) -> None:
        """Kite answers the (re)connect with 403."""
        self.auth_failed, self.running = True, False  # the real loop gives up on a 403
        self.drop("auth")
        self.events.on_auth_rejected(self)

    def reconnect(self) -> None:
        """Connected again: the whole picture is sent, then the core hears of it."""
        self.connected = True
        self.last_message_at = self.clock.monotonic()
        self._note("connect")
        self._picture("resubscribe", list(self.tokens))
        self.acks.sent(self.tokens, self.clock.monotonic())
        self.events.on_connected(self)
