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
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import aiohttp
import orjson

log = logging.getLogger(__name__)

FrameHandler = Callable[["TickerConnection", bytes], Awaitable[None]]


@dataclass(frozen=True)
class Credentials:
    """What a handshake needs. The token is secret: this object is never logged."""

    api_key: str
    access_token: str

    def __repr__(self) -> str:
        return f"Credentials(api_key={self.api_key!r}, access_token=<hidden>)"


class AuthRejected(Exception):
    """Raised inside the client when Kite answers the handshake with 403."""


def backoff(attempt: int, cap: float, base: float = 0.5) -> float:
    """Exponential backoff with full jitter, capped: attempt 1 waits up to `base` seconds."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


class TickerConnection:
    """A Kite ticker connection that holds a set of tokens and keeps them streaming.

    `tokens` is the truth of what this connection should carry; after every (re)connect the
    whole set is sent on this connection only.
    """

    def __init__(
        self, account: str, index: int, ws_root: str, credentials: Callable[[], Credentials],
        session: aiohttp.ClientSession, on_frame: FrameHandler,
        on_auth_rejected: Callable[[TickerConnection], None], *, stale_after: float = 5.0,
        max_delay: float = 30.0, batch_size: int = 1000,
        on_connected: Callable[[TickerConnection], None] | None = None,
    ) -> None:
        self.account, self.index = account, index
        self.ws_root = ws_root.rstrip("/")
        self._credentials, self._session = credentials, session
        self._on_frame, self._on_auth_rejected = on_frame, on_auth_rejected
        self._on_connected = on_connected
        self.stale_after, self.max_delay, self.batch_size = stale_after, max_delay, batch_size
        self.tokens: dict[int, str] = {}
        self.connected = False
        self.reconnects = 0
        self.frames = 0
        self.last_message_at = 0.0
        self.auth_failed = False
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._task: asyncio.Task[None] | None = None
        self._send_lock = asyncio.Lock()

    @property
    def log_extra(self) -> dict[str, object]:
        """The ids that tie this connection's log lines together."""
        return {"account": self.account, "connection": self.index}

    def start(self) -> None:
        """Run the connect-read-reconnect loop in the background."""
        if self._task is None or self._task.done():
            self.auth_failed = False
            name = f"ticker-{self.account}-{self.index}"
            self._task = asyncio.create_task(self._run(), name=name)

    async def stop(self) -> None:
        """Close the socket and stop reconnecting."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._task = None
        await self._close()

    async def subscribe(self, tokens: Iterable[int], mode: str) -> None:
        """Hold `tokens` in `mode`; sends `subscribe` then `mode` when connected."""
        batch = list(tokens)
        for t in batch:
            self.tokens[t] = mode
        await self._send_batches("subscribe", batch, mode)

    async def set_mode(self, tokens: Iterable[int], mode: str) -> None:
        """Change the mode of tokens this connection holds."""
        batch = [t for t in tokens if t in self.tokens]
        for t in batch:
            self.tokens[t] = mode
        await self._send_batches(None, batch, mode)

    async def unsubscribe(self, tokens: Iterable[int]) -> None:
        """Stop holding `tokens`."""
        batch = [t for t in tokens if self.tokens.pop(t, None) is not None]
        await self._send_batches("unsubscribe", batch, None)

    async def drop(self) -> None:
        """Abort the socket (a dead or stale connection); the loop reconnects."""
        await self._close()

    async def _send_batches(self, action: str | None, tokens: list[int], mode: str | None) -> None:
        if not tokens or self._ws is None or not self.connected:
            return  # sent in full on the next connect
        async with self._send_lock:
            for i in range(0, len(tokens), self.batch_size):
                chunk = tokens[i:i + self.batch_size]
                try:
                    # Kite reads control messages from text frames only.
                    if action is not None:
                        await self._ws.send_str(orjson.dumps({"a": action, "v": chunk}).decode())
                    if mode is not None:
                        doc = {"a": "mode", "v": [mode, chunk]}
                        await self._ws.send_str(orjson.dumps(doc).decode())
                except (ConnectionError, RuntimeError) as exc:
                    log.warning("send failed (%s); resubscribing on reconnect", exc,
                                extra=self.log_extra)
                    return

    async def _resubscribe_all(self) -> None:
        by_mode: dict[str, list[int]] = {}
        for token, mode in self.tokens.items():
            by_mode.setdefault(mode, []).append(token)
        for mode, tokens in by_mode.items():
            await self._send_batches("subscribe", tokens, mode)

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                await self._connect_and_read()
                attempt = 0
            except AuthRejected:
                self.auth_failed = True
                log.error("handshake refused with 403: access token expired or invalid; "
                          "not retrying until the token is updated", extra=self.log_extra)
                self._on_auth_rejected(self)
                return
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                log.warning("connection lost: %s", exc.__class__.__name__, extra=self.log_extra)
            finally:
                await self._close()
            attempt += 1
            self.reconnects += 1
            await asyncio.sleep(backoff(attempt, self.max_delay))

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
        self.last_message_at = time.monotonic()
        log.info("connected; resubscribing %d tokens", len(self.tokens), extra=self.log_extra)
        await self._resubscribe_all()
        if self._on_connected is not None:
            self._on_connected(self)
        await self._read(self._ws)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            # Kite sends a heartbeat every second or two when idle: silence means a dead link.
            msg = await ws.receive(timeout=self.stale_after)
            self.last_message_at = time.monotonic()
            if msg.type == aiohttp.WSMsgType.BINARY:
                if len(msg.data) > 1:
                    self.frames += 1
                    await self._on_frame(self, msg.data)
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
            log.warning("kite error message: %s", doc.get("data"), extra=self.log_extra)

    async def _close(self) -> None:
        self.connected = False
        ws, self._ws = self._ws, None
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)
