"""The ticker WebSocket at `/`: handshake checks, and the `{"a": ..., "v": ...}` control messages.

Refusals happen before the upgrade, so the client sees the HTTP status (403 auth, 429 limit).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from aiohttp import WSMsgType, web

from ticker_worker.sim.hub import Connection, Hub
from ticker_worker.sim.market import MODES
from ticker_worker.sim.state import SIMULATOR, error_response

_UINT32_MAX = 0xFFFFFFFF


class ProtocolError(ValueError):
    """Raised when a client message is not a valid Kite ticker control message."""


@dataclass(frozen=True)
class Command:
    """A parsed control message; `mode` is an index into `MODES` for the `mode` action."""

    action: str
    tokens: list[int]
    mode: int = 0


def _tokens(value: object, action: str) -> list[int]:
    if not isinstance(value, list) or not all(
        type(t) is int and 0 <= t <= _UINT32_MAX for t in value
    ):
        raise ProtocolError(
            f"{action}: expected a flat list of integer instrument tokens, got {_preview(value)}"
        )
    return value


def _preview(value: object) -> str:
    text = orjson.dumps(value).decode() if value is not None else "null"
    return text if len(text) <= 60 else text[:57] + "..."


def parse_message(text: str) -> Command:
    """Parse a text frame; raise `ProtocolError` with a message fit for the client."""
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ProtocolError("message is not valid JSON") from None
    if not isinstance(message, dict) or "a" not in message or "v" not in message:
        raise ProtocolError('message must be a JSON object with keys "a" and "v"')
    action, value = message["a"], message["v"]
    if action in ("subscribe", "unsubscribe"):
        return Command(action, _tokens(value, action))
    if action != "mode":
        raise ProtocolError(
            f"unknown action {_preview(action)}; expected subscribe, unsubscribe or mode"
        )
    if not isinstance(value, list) or len(value) != 2:
        raise ProtocolError('mode: "v" must be [mode, [tokens]]')
    mode, tokens = value
    if mode not in MODES:
        raise ProtocolError(f"mode: unknown mode {_preview(mode)}; expected ltp, quote or full")
    return Command("mode", _tokens(tokens, "mode"), MODES.index(mode))


def apply_message(hub: Hub, conn: Connection, text: str) -> None:
    """Apply one control message to a connection, answering problems with a text error."""
    try:
        command = parse_message(text)
    except ProtocolError as exc:
        conn.push_error(str(exc))
        return
    if command.action == "subscribe":
        hub.subscribe(conn, command.tokens)  # answers with the packets, and any refusal
    elif command.action == "unsubscribe":
        hub.unsubscribe(conn, command.tokens)
    else:
        hub.set_mode(conn, command.mode, command.tokens)


async def ticker_socket(request: web.Request) -> web.StreamResponse:
    """Serve one KiteTicker connection: `GET /?api_key=K&access_token=T` upgraded to WS."""
    sim = request.app[SIMULATOR]
    api_key = request.query.get("api_key", "")
    account = sim.accounts.authenticate(api_key, request.query.get("access_token", ""))
    if account is None:
        return error_response(403, "TokenException", "Invalid `api_key` or `access_token`.")
    ws = web.WebSocketResponse(compress=False, timeout=2.0, max_msg_size=16 * 1024 * 1024)
    if not ws.can_prepare(request).ok:
        return error_response(400, "InputException", "This endpoint expects a WebSocket upgrade.")
    conn = sim.hub.open(account, ws)
    if conn is None:
        return error_response(
            429, "NetworkException",
            f"Too many connections: at most {sim.hub.max_connections} per api_key.",
        )
    try:
        await ws.prepare(request)
        conn.start(request.transport)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                apply_message(sim.hub, conn, msg.data)
            elif msg.type == WSMsgType.BINARY:
                conn.push_error("binary messages are not understood; send JSON text")
    finally:
        sim.hub.close(conn)
    return ws
