"""One Kite ticker WebSocket as an asyncio client: subscribe, watch, reconnect, resubscribe.

Why not the official `KiteTicker`: it runs a process-wide Twisted reactor that cannot restart,
its ping watchdog never fires against Kite (no pongs), a 403 costs ~45 minutes of retries,
every callback shares one thread and its parser is slow. One asyncio loop with aiohttp gives
us an explicit data watchdog, a 403 that stops at once, and per-connection resubscribe. The
wire format is checked against the official parser in tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import orjson

from ticker_worker.core import wire
from ticker_worker.core.acks import AckBook
from ticker_worker.core.wire import Message
from ticker_worker.kite.codec import frame_tokens

log = logging.getLogger(__name__)

REFUSAL_GRACE = 0.5  # seconds after an error frame for the accepted tokens' snapshots to land
REFUSAL_WINDOW = 3.0  # an error frame refers to tokens sent at most this long before it


class LinkEvents(Protocol):
    """What a connection tells its owner (the holder core)."""

    async def on_frame(self, conn: TickerConnection, frame: bytes) -> None:
        """A binary market-data frame arrived."""

    def on_connected(self, conn: TickerConnection) -> None:
        """The socket is open and the whole picture was sent again."""

    def on_lost(self, conn: TickerConnection, reason: str) -> None:
        """The socket was lost (`dropped`, `stale`, `error`) while it carried `conn.tokens`."""

    def on_auth_rejected(self, conn: TickerConnection) -> None:
        """Kite answered the handshake with 403: the token expired or was revoked."""

    def on_acked(self, conn: TickerConnection, tokens: list[int]) -> None:
        """First ticks on this connection since these tokens were (re)sent."""

    def on_refused(self, conn: TickerConnection, tokens: list[int], reason: str) -> None:
        """Kite refused these tokens (an error frame); they have left `conn.tokens`."""


@dataclass(frozen=True)
class Credentials:
    """What a handshake needs. The token is secret: this object is never logged."""

    api_key: str
    access_token: str

    def __repr__(self) -> str:
        return f"Credentials(api_key={self.api_key!r}, access_token=<hidden>)"


class AuthRejected(Exception):
    """Raised inside the client when Kite answers the handshake with 403."""


#: A socket that stayed up this long counts as healthy: its loss starts the backoff afresh.
HEALTHY_AFTER = 5.0


def backoff(attempt: int, cap: float, base: float = 0.5) -> float:
    """Exponential backoff with full jitter, capped: attempt 1 waits up to `base` seconds."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


class TickerConnection:
    """A Kite ticker connection that holds a set of tokens and keeps them streaming.

    `tokens` is the truth of what this connection should carry; after every (re)connect the
    whole set is sent, as one consistent picture, on this connection only. Every message goes
    out under one lock, so nothing overtakes a resubscribe halfway through.
    """

    def __init__(
        self, account: str, index: int, ws_root: str, credentials: Callable[[], Credentials],
        session: aiohttp.ClientSession, events: LinkEvents, *, stale_after: float = 5.0,
        max_delay: float = 30.0, batch_size: int = 1000,
    ) -> None:
        self.account, self.index = account, index
        self.ws_root = ws_root.rstrip("/")
        self._credentials, self._session, self._events = credentials, session, events
        self.stale_after, self.max_delay, self.batch_size = stale_after, max_delay, batch_size
        self.tokens: dict[int, str] = {}
        self.acks = AckBook()
        self.cap: int | None = None  # lowered to what Kite accepted after a refusal
        self.refusals = 0
        self.connected = False
        self.reconnects = 0
        self.frames = 0
        self.last_message_at = 0.0
        self.connected_at = float("-inf")
        self.failures = 0  # connection attempts failed in a row (what the backoff grows with)
        self.auth_failed = False
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopped = False  # stop() ran: the loop must not connect again
        self._send_lock = asyncio.Lock()
        self._pending: list[asyncio.TimerHandle] = []

    @property
    def slot(self) -> tuple[str, int]:
        """(account, connection index)."""
        return self.account, self.index

    @property
    def log_extra(self) -> dict[str, object]:
        """The ids that tie this connection's log lines together."""
        return {"account": self.account, "connection": self.index}

    def start(self) -> None:
        """Run the connect-read-reconnect loop in the background."""
        if self._task is None or self._task.done():
            self.auth_failed, self._stopped = False, False
            name = f"ticker-{self.account}-{self.index}"
            self._task = asyncio.create_task(self._run(), name=name)

    async def stop(self) -> None:
        """Close the socket and stop reconnecting."""
        # The flag, not only the cancel: on Python 3.11, asyncio.wait_for (in _close) loses a
        # cancellation that lands as the socket's close completes, and the loop would go on to
        # reconnect (a stepped-down holder keeping Kite slots from the new active one).
        self._stopped = True
        for handle in self._pending:
            handle.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._task = None
        await self._close()

    async def apply(self, messages: Sequence[Message]) -> None:
        """Make `messages` true of `tokens`, then send them in order (when connected)."""
        self.acks.forget(wire.carry(self.tokens, messages))
        if self.cap is not None and len(self.tokens) < self.cap:
            self.cap = None  # room again: Kite took what it could, it will take more
        async with self._send_lock:
            if self._ws is None or not self.connected:
                return  # sent in full on the next connect
            now = time.monotonic()
            for m in messages:
                if m.action == "subscribe":
                    self.acks.sent(m.tokens, now)
            await self._send([m.body() for m in messages])

    async def resend(self, tokens: list[int]) -> None:
        """Send `tokens` again (no first tick within the ack timeout)."""
        by_mode: dict[str, list[int]] = {}
        for t in tokens:
            if t in self.tokens:
                by_mode.setdefault(self.tokens[t], []).append(t)
        async with self._send_lock:
            if self._ws is None or not self.connected:
                return
            await self._send(self._picture(by_mode))

    async def drop(self) -> None:
        """Abort the socket (a dead or stale connection); the loop reconnects."""
        await self._close()

    def _picture(self, by_mode: dict[str, list[int]]) -> list[dict[str, object]]:
        docs: list[dict[str, object]] = []
        for mode, tokens in by_mode.items():
            for i in range(0, len(tokens), self.batch_size):
                chunk = tokens[i:i + self.batch_size]
                docs += [{"a": "subscribe", "v": chunk}, {"a": "mode", "v": [mode, chunk]}]
        return docs

    async def _send(self, docs: list[dict[str, object]]) -> None:
        ws = self._ws
        try:
            for doc in docs:
                # Kite reads control messages from text frames only.
                if ws is None:
                    return
                await ws.send_str(orjson.dumps(doc).decode())
        except (ConnectionError, RuntimeError) as exc:
            log.warning("send failed (%s); resubscribing on reconnect", exc, extra=self.log_extra)

    async def _resubscribe_all(self) -> None:
        async with self._send_lock:  # one consistent picture: nothing slips in between
            by_mode: dict[str, list[int]] = {}
            for token, mode in self.tokens.items():
                by_mode.setdefault(mode, []).append(token)
            self.acks.sent(self.tokens, time.monotonic())
            await self._send(self._picture(by_mode))

    async def _run(self) -> None:
        self.failures = 0
        while not self._stopped:
            reason = "dropped"
            try:
                await self._connect_and_read()
            except AuthRejected:
                self.auth_failed = True
                log.error("handshake refused with 403: access token expired or invalid; "
                          "not retrying until the token is updated", extra=self.log_extra)
                await self._lost("auth")
                self._events.on_auth_rejected(self)
                return
            except TimeoutError:
                reason = "stale"
                log.warning("no message for %.1f s: dropping", self.stale_after,
                            extra=self.log_extra)
            except (aiohttp.ClientError, OSError) as exc:
                log.warning("connection lost: %s", exc.__class__.__name__, extra=self.log_extra)
            except Exception:
                reason = "error"
                log.exception("connection task failed; reconnecting", extra=self.log_extra)
            healthy = self.connected and time.monotonic() - self.connected_at >= HEALTHY_AFTER
            await self._lost(reason)
            if self._stopped:
                return
            # Only failures in a row grow the backoff: a socket dropped once a minute after
            # streaming fine reconnects at once every time, not after the 30 s cap.
            self.failures = 1 if healthy else self.failures + 1
            self.reconnects += 1
            await asyncio.sleep(backoff(self.failures, self.max_delay))

    async def _lost(self, reason: str) -> None:
        was_connected = self.connected
        await self._close()
        self.acks.clear()
        self.cap = None  # a new socket starts from nothing on Kite's side
        if was_connected:
            self._events.on_lost(self, reason)

    async def _connect_and_read(self) -> None:
        creds = self._credentials()
        url = f"{self.ws_root}/?api_key={creds.api_key}&access_token={creds.access_token}"
        try:
            self._ws = await self._session.ws_connect(
                url, headers={"X-Kite-Version": "3"}, autoping=False, max_msg_size=0,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0),
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 403:
                raise AuthRejected from None
            raise
        self.connected = True
        self.connected_at = self.last_message_at = time.monotonic()
        log.info("connected; resubscribing %d tokens", len(self.tokens), extra=self.log_extra)
        await self._resubscribe_all()
        # Level-triggered: every (re)connect is followed by a reconcile pass.
        self._events.on_connected(self)
        await self._read(self._ws)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            # Kite sends a heartbeat every second or two when idle: silence means a dead link.
            msg = await ws.receive(timeout=self.stale_after)
            self.last_message_at = time.monotonic()
            if msg.type == aiohttp.WSMsgType.BINARY:
                if len(msg.data) > 1:
                    self.frames += 1
                    if self.acks.unacked:
                        acked = self.acks.seen(frame_tokens(msg.data))
                        if acked:
                            self._events.on_acked(self, acked)
                    await self._events.on_frame(self, msg.data)
            elif msg.type == aiohttp.WSMsgType.TEXT:
                self._on_text(msg.data)
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                              aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
                raise aiohttp.ClientConnectionError(f"socket closed ({msg.type.name})")

    def _on_text(self, data: str) -> None:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if isinstance(doc, dict) and doc.get("type") == "error":
            message = str(doc.get("data"))
            log.warning("kite error message: %s", message, extra=self.log_extra)
            since = time.monotonic() - REFUSAL_WINDOW
            loop = asyncio.get_running_loop()
            self._pending = [h for h in self._pending if h.when() > loop.time()]
            self._pending.append(loop.call_later(REFUSAL_GRACE, self._settle_refusal, since,
                                                 message))

    def _settle_refusal(self, since: float, message: str) -> None:
        """The tokens sent just before an error frame that never ticked were refused."""
        refused = [t for t in self.acks.sent_since(since) if t in self.tokens]
        if not refused:
            return
        for t in refused:
            self.tokens.pop(t, None)
        self.acks.forget(refused)
        self.cap = len(self.tokens)
        self.refusals += len(refused)
        log.error("Kite refused %d token(s): %s", len(refused), message, extra=self.log_extra)
        self._events.on_refused(self, refused, f"refused by Kite: {message}")

    async def _close(self) -> None:
        self.connected = False
        ws, self._ws = self._ws, None
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)
