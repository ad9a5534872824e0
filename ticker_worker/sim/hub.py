"""The ticker feed: open connections, their subscriptions, and the clock that streams ticks.

One global clock advances every subscribed instrument once per interval; each connection then
gets one binary frame with that step's packet for each of its instruments, in its chosen mode.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from aiohttp import web

from ticker_worker.kite.codec import HEARTBEAT
from ticker_worker.sim.accounts import Account
from ticker_worker.sim.market import MODES, QUOTE, Market, TokenState

log = logging.getLogger(__name__)
_COUNT = struct.Struct(">H")
#: A connection this many frames behind is skipped for a step (its ticks are dropped and
#: counted) rather than buffered without bound; volume still shows the consumer the gap.
MAX_PENDING_FRAMES = 4


class Connection:
    """One ticker WebSocket: its subscriptions by mode, and a sender task with its own queue."""

    def __init__(
        self, conn_id: int, account: Account, ws: web.WebSocketResponse, heartbeat: float
    ) -> None:
        self.id = conn_id
        self.account = account
        self.ws = ws
        self.heartbeat = heartbeat
        self.modes: dict[int, int] = {}  # every subscribed token -> mode index
        # Tokens the universe knows, by mode; unknown tokens are accepted but never tick.
        self.feeds: tuple[dict[int, TokenState], ...] = ({}, {}, {})
        self.pending: deque[bytes | str] = deque()
        self._wakeup = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self.transport: asyncio.Transport | None = None

    def start(self, transport: asyncio.Transport | None) -> None:
        """Begin sending, once the handshake is done."""
        self.transport = transport
        self._sender = asyncio.create_task(self._send_loop(), name=f"sim-conn-{self.id}")

    def stop(self) -> None:
        """Stop the sender task."""
        if self._sender is not None:
            self._sender.cancel()

    def abort(self) -> None:
        """Drop the TCP connection without a close handshake, like a network failure."""
        if self.transport is not None:
            self.transport.abort()

    def frame(self, closed: frozenset[int] = frozenset()) -> bytes | None:
        """One binary message with the current packet of every ticking subscription.

        Instruments of the `closed` segments (out of session on the market clock) are left out.
        """
        if closed:
            return self._frame_in_session(closed)
        parts: list[bytes] = [b""]
        append = parts.append
        ltp, quote, full = self.feeds
        for state in ltp.values():
            append(state.ltp_packet())
            state.sent += 1
        for state in quote.values():
            append(state.quote_packet())
            state.sent += 1
        for state in full.values():
            append(state.full_packet())
            state.sent += 1
        if len(parts) == 1:
            return None
        parts[0] = _COUNT.pack(len(parts) - 1)
        return b"".join(parts)

    def _frame_in_session(self, closed: frozenset[int]) -> bytes | None:
        packets: list[bytes] = []
        for feed, packet in zip(self.feeds, ("ltp_packet", "quote_packet", "full_packet"),
                                strict=True):
            for token, state in feed.items():
                if token & 0xFF not in closed:
                    packets.append(getattr(state, packet)())
                    state.sent += 1
        return _COUNT.pack(len(packets)) + b"".join(packets) if packets else None

    def push(self, message: bytes | str) -> None:
        """Queue a binary frame or a text message for the sender."""
        self.pending.append(message)
        self._wakeup.set()

    def push_error(self, message: str) -> None:
        """Queue a Kite-style text error; the official client calls `on_error(ws, 0, message)`."""
        self.push(orjson.dumps({"type": "error", "data": message}).decode())

    async def _send_loop(self) -> None:
        try:
            while not self.ws.closed:
                if not self.pending:
                    self._wakeup.clear()
                    try:
                        async with asyncio.timeout(self.heartbeat):
                            await self._wakeup.wait()
                    except TimeoutError:
                        if not self.account.muted:  # a muted socket sends nothing at all
                            await self.ws.send_bytes(HEARTBEAT)
                    continue
                message = self.pending.popleft()
                if self.account.muted:
                    continue
                if isinstance(message, str):
                    await self.ws.send_str(message)
                else:
                    await self.ws.send_bytes(message)
        except ConnectionError:
            log.debug("connection %s went away while sending", self.id)


class Hub:
    """Every open connection, the subscribed instruments, and the clock that drives them."""

    def __init__(
        self,
        market: Market,
        *,
        tick_interval: float,
        heartbeat_interval: float,
        max_tokens: int,
        max_connections: int,
    ) -> None:
        self.market = market
        self.tick_interval = tick_interval
        self.heartbeat_interval = heartbeat_interval
        self.max_tokens = max_tokens
        self.max_connections = max_connections
        self.connections: dict[int, Connection] = {}
        self.live: dict[int, TokenState] = {}  # subscribed somewhere, so advanced every step
        self._refs: dict[int, int] = {}
        self._next_id = 1
        self.ticks_dropped = 0
        # The market clock (sim/clock.py) sets these: simulated time, and closed segments.
        self.now: Callable[[], float] = time.time
        self.closed_segments: Callable[[float], frozenset[int]] = lambda _: frozenset()

    def of(self, api_key: str) -> list[Connection]:
        """The open connections of one api key."""
        return [c for c in self.connections.values() if c.account.api_key == api_key]

    def open(self, account: Account, ws: web.WebSocketResponse) -> Connection | None:
        """Register a connection, or return None when the key already has the maximum."""
        if len(self.of(account.api_key)) >= self.max_connections:
            return None
        conn = Connection(self._next_id, account, ws, self.heartbeat_interval)
        self._next_id += 1
        self.connections[conn.id] = conn
        return conn

    def close(self, conn: Connection) -> None:
        """Forget a connection and its subscriptions; safe to call twice."""
        if self.connections.pop(conn.id, None) is None:
            return
        conn.stop()
        self.unsubscribe(conn, list(conn.modes))

    def subscribe(self, conn: Connection, tokens: Iterable[int]) -> int:
        """Subscribe new tokens in `quote` mode, up to the cap; return how many were refused."""
        refused = 0
        now = int(self.now())
        for token in tokens:
            if token in conn.modes:
                continue  # duplicates are normal after a reconnect
            if len(conn.modes) >= self.max_tokens:
                refused += 1
                continue
            conn.modes[token] = QUOTE
            state = self.market.state(token, now)
            if state is not None:
                conn.feeds[QUOTE][token] = state
                self._refs[token] = self._refs.get(token, 0) + 1
                self.live[token] = state
        return refused

    def unsubscribe(self, conn: Connection, tokens: Iterable[int]) -> None:
        """Drop subscriptions; unknown or unsubscribed tokens are ignored."""
        for token in tokens:
            mode = conn.modes.pop(token, None)
            if mode is None or conn.feeds[mode].pop(token, None) is None:
                continue
            refs = self._refs.pop(token) - 1
            if refs:
                self._refs[token] = refs
            else:
                del self.live[token]

    def set_mode(self, conn: Connection, mode: int, tokens: Iterable[int]) -> None:
        """Change the mode of subscribed tokens; tokens not subscribed are ignored."""
        for token in tokens:
            old = conn.modes.get(token)
            if old is None or old == mode:
                continue
            conn.modes[token] = mode
            state = conn.feeds[old].pop(token, None)
            if state is not None:
                conn.feeds[mode][token] = state

    async def run(self) -> None:
        """The clock: one step per `tick_interval`, never bursting to catch up after a stall."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += self.tick_interval
            delay = next_at - loop.time()
            if delay < 0:
                next_at -= delay
            await asyncio.sleep(max(delay, 0))
            await self.step(int(self.now()))

    async def step(self, now: int) -> None:
        """Advance every live instrument once, then queue one frame per connection."""
        closed = self.closed_segments(now)
        for state in self.live.values():
            if not closed or state.token & 0xFF not in closed:
                state.advance(now)
        for conn in list(self.connections.values()):
            if conn.account.muted or conn.id not in self.connections:
                continue
            if len(conn.pending) >= MAX_PENDING_FRAMES:
                self.ticks_dropped += sum(len(feed) for feed in conn.feeds)
                continue
            frame = conn.frame(closed)
            if frame is not None:
                conn.push(frame)
                await asyncio.sleep(0)  # let senders start writing while we build the rest

    def stats(self, accounts: Iterable[Account], with_tokens: bool) -> dict[str, Any]:
        """The `/_sim/stats` document."""
        keys: dict[str, Any] = {}
        for account in accounts:
            conns = []
            for conn in self.of(account.api_key):
                counts = dict.fromkeys(MODES, 0)
                for mode in conn.modes.values():
                    counts[MODES[mode]] += 1
                entry: dict[str, Any] = {"id": conn.id, "tokens": len(conn.modes), "modes": counts}
                if with_tokens:
                    entry["token_list"] = sorted(conn.modes)
                conns.append(entry)
            keys[account.api_key] = {"state": account.state, "connections": conns}
        sent = {str(s.token): s.sent for s in self.market.states.values() if s.sent}
        return {
            "api_keys": keys,
            "ticks_sent": sent,
            "ticks_total": sum(sent.values()),
            "ticks_dropped": self.ticks_dropped,
        }

    def reset(self) -> None:
        """Abort every connection and forget all subscriptions and counters."""
        for conn in list(self.connections.values()):
            conn.abort()
            self.close(conn)
        self.ticks_dropped = 0
