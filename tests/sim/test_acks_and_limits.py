"""The simulator acknowledges subscribes and mode changes with packets, records the token cap's
high-water mark and refusals, and closes a connection whose client stopped reading."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.procs import wait_for
from tests.sim.conftest import ThreadedSim
from tests.sim.test_kiteticker import run_scenario
from tests.sim.test_ticker_socket import WS, Session, next_message, run, url
from ticker_worker.kite.codec import decode_frame
from ticker_worker.sim.server import SimConfig
from ticker_worker.sim.universe import build_universe

BINARY = aiohttp.WSMsgType.BINARY


@pytest.fixture(scope="module")
def quiet_sim() -> Iterator[ThreadedSim]:
    """A simulator whose clock never steps during a test: every packet seen is an answer."""
    server = ThreadedSim(SimConfig(port=0, tick_interval=3600, heartbeat_interval=0.2))
    yield server
    server.close()


async def next_ticks(ws: WS) -> list[dict[str, Any]]:
    """The next non-heartbeat binary frame, decoded."""
    while True:
        frame = await next_message(ws, BINARY)
        if len(frame) > 1:
            return decode_frame(frame)


def send(ws: WS, action: str, value: object) -> Any:
    return ws.send_str(json.dumps({"a": action, "v": value}))


def test_a_subscribe_is_answered_with_the_current_packets_without_a_clock_step(
    quiet_sim: ThreadedSim,
) -> None:
    async def body(session: Session, base: str) -> list[list[dict[str, Any]]]:
        async with session.ws_connect(url(base, "ack")) as ws:
            await send(ws, "subscribe", [408065, 256265, 1])  # 1 is unknown: never ticks
            first = await next_ticks(ws)
            await send(ws, "mode", ["full", [408065]])
            second = await next_ticks(ws)
            await send(ws, "subscribe", [408065, 5633])  # only the new token is answered
            third = await next_ticks(ws)
            return [first, second, third]

    first, second, third = run(quiet_sim, body)
    assert sorted((t["instrument_token"], t["mode"]) for t in first) == [
        (256265, "quote"), (408065, "quote"),
    ]
    assert [(t["instrument_token"], t["mode"]) for t in second] == [(408065, "full")]
    assert second[0]["last_price"] == next(
        t["last_price"] for t in first if t["instrument_token"] == 408065
    )  # the same step, in another mode
    assert [(t["instrument_token"], t["mode"]) for t in third] == [(5633, "quote")]


def test_the_official_kiteticker_parses_the_answers(quiet_sim: ThreadedSim) -> None:
    first, second = run_scenario(quiet_sim, "ack", "ack-oracle")["frames"]
    assert sorted((t["instrument_token"], t["mode"]) for t in first) == [
        (256265, "quote"), (408065, "quote"),
    ]
    [full] = second
    assert (full["instrument_token"], full["mode"]) == (408065, "full")
    assert len(full["depth"]["buy"]) == 5 and full["last_trade_time"]


def test_stats_keep_the_high_water_mark_and_every_refusal(fresh_sim: ThreadedSim) -> None:
    tokens = [i.instrument_token for i in build_universe(1).instruments[:3005]]

    async def body(session: Session, base: str) -> dict[str, Any]:
        async with session.ws_connect(url(base, "capped")) as ws:
            await send(ws, "subscribe", tokens)
            await next_message(ws, aiohttp.WSMsgType.TEXT)
            await send(ws, "unsubscribe", tokens[:100])
            await send(ws, "subscribe", [*tokens[:100], 7])  # the 3001st, one over the cap
            await next_message(ws, aiohttp.WSMsgType.TEXT)
            return await asyncio.to_thread(fresh_sim.stats)

    stats = run(fresh_sim, body)
    [conn] = stats["api_keys"]["capped"]["connections"]
    assert conn["tokens"] == 3000 and conn["high_water"] == 3000
    assert conn["refused"] == 6
    assert conn["refusals"] == [
        {"tokens": tokens[3000:], "reason": "subscribe: 5 token(s) refused: a connection holds "
                                            "at most 3000 instruments"},
        {"tokens": [7], "reason": "subscribe: 1 token(s) refused: a connection holds at most "
                                  "3000 instruments"},
    ]
    assert stats["high_water"] == 3000 and stats["refused_total"] == 6


def _handshake(port: int, key: str) -> socket.socket:
    """A WebSocket opened by hand, so that the test decides when (never) to read."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    nonce = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((
        f"GET /?api_key={key}&access_token=t HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {nonce}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)  # byte by byte: nothing past the headers is consumed
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def _send_text(sock: socket.socket, text: str) -> None:
    payload = text.encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    length = len(payload)
    if length < 126:
        header = struct.pack(">BB", 0x81, 0x80 | length)
    elif length < 1 << 16:
        header = struct.pack(">BBH", 0x81, 0x80 | 126, length)
    else:
        header = struct.pack(">BBQ", 0x81, 0x80 | 127, length)
    sock.sendall(header + mask + masked)


def _connections(sim: ThreadedSim, key: str) -> list[dict[str, Any]]:
    return list(sim.stats()["api_keys"].get(key, {}).get("connections", []))


def test_a_client_that_stops_reading_is_closed_and_a_reading_one_is_not() -> None:
    sim = ThreadedSim(SimConfig(port=0, tick_interval=0.05, slow_consumer_timeout=0.5))
    tokens = [i.instrument_token for i in build_universe(1).instruments[:3000]]
    stalled = _handshake(sim.server.port, "stalled")
    try:
        _send_text(stalled, json.dumps({"a": "subscribe", "v": tokens}))
        _send_text(stalled, json.dumps({"a": "mode", "v": ["full", tokens]}))  # 550 kB a step

        async def reader(session: Session, base: str) -> int:
            async with session.ws_connect(url(base, "reading")) as ws:
                await send(ws, "subscribe", tokens[:10])
                await asyncio.to_thread(
                    wait_for, lambda: sim.stats()["slow_consumers_closed"] == 1, 15,
                    "the stalled client to be closed",
                )
                ticks = [await next_ticks(ws) for _ in range(3)]  # the reader still ticks
                assert len(_connections(sim, "reading")) == 1
                return len(ticks)

        assert run(sim, reader) == 3
        assert _connections(sim, "stalled") == []
    finally:
        stalled.close()
        sim.close()
