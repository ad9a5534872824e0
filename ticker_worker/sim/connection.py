"""One simulated ticker WebSocket: its subscriptions by mode, its send queue and its sender.

A subscribe or mode change is answered with the current packets of the tokens it touched (Kite
does the same); a client that stops reading for `slow_consumer_timeout` seconds is disconnected,
as a server does when its send buffer stays full.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import orjson
from aiohttp import web

from ticker_worker.kite.codec import HEARTBEAT
from ticker_worker.sim.accounts import Account
from ticker_worker.sim.market import TokenState

log = logging.getLogger(__name__)
_COUNT = struct.Struct(">H")
#: Refusals kept per connection for `/_sim/stats` (the count keeps growing past it).
MAX_REFUSALS_KEPT = 20
_PACKERS = ("ltp_packet", "quote_packet", "full_packet")
#: Step frames whose send times are kept for `/_sim/sends`.
SENDS_KEPT = 512


class Connection:
    """One ticker WebSocket: its subscriptions by mode, and a sender task with its own queue."""

    def __init__(
        self,
        conn_id: int,
        account: Account,
        ws: web.WebSocketResponse,
        heartbeat: float,
        slow_consumer_timeout: float,
    ) -> None:
        self.id = conn_id
        self.account = account
        self.ws = ws
        self.heartbeat = heartbeat
        self.slow_consumer_timeout = slow_consumer_timeout
        self.slow = False  # closed because its client stopped reading
        self.high_water = 0  # the most tokens it ever held at once
        self.refused = 0
        self.refusals: deque[dict[str, Any]] = deque(maxlen=MAX_REFUSALS_KEPT)
        self.modes: dict[int, int] = {}  # every subscribed token -> mode index
        # Tokens the universe knows, by mode; unknown tokens are accepted but never tick.
        self.feeds: tuple[dict[int, TokenState], ...] = ({}, {}, {})
        self.pending: deque[bytes | str] = deque()
        # id() of each queued step frame -> its step; (step, write began, write ended) of those
        # sent. An id is unique while its frame waits in `pending`.
        self._step_of: dict[int, int] = {}
        self.sends: deque[tuple[int, float, float]] = deque(maxlen=SENDS_KEPT)
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

    def snapshot(self, tokens: Iterable[int]) -> bytes | None:
        """One binary message with the current packet of each given ticking token, in its mode."""
        parts: list[bytes] = [b""]
        for token in tokens:
            mode = self.modes.get(token)
            state = None if mode is None else self.feeds[mode].get(token)
            if mode is not None and state is not None:
                parts.append(getattr(state, _PACKERS[mode])())
                state.sent += 1
        if len(parts) == 1:
            return None
        parts[0] = _COUNT.pack(len(parts) - 1)
        return b"".join(parts)

    def refuse(self, tokens: list[int], reason: str) -> None:
        """Record a refusal for the stats and tell the client with Kite's text error frame."""
        self.refused += len(tokens)
        self.refusals.append({"tokens": tokens, "reason": reason})
        self.push_error(reason)

    def push(self, message: bytes | str) -> None:
        """Queue a binary frame or a text message for the sender."""
        self.pending.append(message)
        self._wakeup.set()

    def push_step(self, step: int, frame: bytes) -> None:
        """Queue a step's frame; its send times are recorded under `step`."""
        self._step_of[id(frame)] = step
        self.push(frame)

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
                            await self._send(HEARTBEAT)
                    continue
                message = self.pending.popleft()
                # Popped first, muted or not: a stale id must not label a later message.
                step = self._step_of.pop(id(message), None)
                if self.account.muted:
                    continue
                if step is not None:
                    began = time.monotonic()
                    await self._send(message)
                    self.sends.append((step, began, time.monotonic()))
                else:
                    await self._send(message)
        except ConnectionError:
            log.debug("connection %s went away while sending", self.id)

    async def _send(self, message: bytes | str) -> None:
        # aiohttp waits for the transport to drain once its buffer passes the high-water mark;
        # a send that cannot finish for this long means the client stopped reading.
        try:
            async with asyncio.timeout(self.slow_consumer_timeout):
                if isinstance(message, str):
                    await self.ws.send_str(message)
                else:
                    await self.ws.send_bytes(message)
        except TimeoutError:
            log.warning(
                "connection %s (%s): client read nothing for %.1fs; closing it as a slow consumer",
                self.id, self.account.api_key, self.slow_consumer_timeout,
            )
            self.slow = True
            self.abort()
            raise ConnectionError("slow consumer") from None
