"""The ticker WebSocket with a raw aiohttp client: limits, bad messages, heartbeats, faults."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from tests.sim.conftest import ThreadedSim
from ticker_worker.kite.codec import decode_frame
from ticker_worker.sim.server import SimConfig
from ticker_worker.sim.universe import build_universe

Session = aiohttp.ClientSession
WS = aiohttp.ClientWebSocketResponse


def run(sim: ThreadedSim, body: Callable[[Session, str], Awaitable[Any]]) -> Any:
    """Run a client coroutine on a loop of its own (the simulator has another thread)."""

    async def main() -> Any:
        async with aiohttp.ClientSession() as session:
            return await asyncio.wait_for(body(session, sim.ws), 20)

    return asyncio.run(main())


def url(base: str, key: str, token: str = "t") -> str:
    return f"{base}/?api_key={key}&access_token={token}"


async def next_message(ws: WS, kind: aiohttp.WSMsgType, timeout: float = 3.0) -> Any:
    """The next message of one kind, skipping the others."""
    while True:
        msg = await asyncio.wait_for(ws.receive(), timeout)
        if msg.type == kind:
            return msg.data
        assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg


def test_a_fourth_connection_per_key_is_refused_with_429(fresh_sim: ThreadedSim) -> None:
    async def body(session: Session, base: str) -> None:
        sockets = [await session.ws_connect(url(base, "crowded")) for _ in range(3)]
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await session.ws_connect(url(base, "crowded"))
        assert caught.value.status == 429
        other = await session.ws_connect(url(base, "someone-else"))  # the cap is per key
        for ws in [*sockets, other]:
            await ws.close()

    run(fresh_sim, body)


def test_bad_credentials_get_403_before_the_upgrade(fresh_sim: ThreadedSim) -> None:
    async def body(session: Session, base: str) -> None:
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await session.ws_connect(f"{base}/?api_key=k&access_token=")
        assert caught.value.status == 403

    run(fresh_sim, body)


def test_subscribing_past_3000_keeps_3000_and_says_how_many_were_refused(
    fresh_sim: ThreadedSim,
) -> None:
    tokens = [i.instrument_token for i in build_universe(1).instruments[:3005]]

    async def body(session: Session, base: str) -> str:
        async with session.ws_connect(url(base, "greedy")) as ws:
            await ws.send_str(json.dumps({"a": "subscribe", "v": tokens}))
            await ws.send_str(json.dumps({"a": "subscribe", "v": tokens[:10]}))  # duplicates
            text: str = await next_message(ws, aiohttp.WSMsgType.TEXT)
            frame = await next_message(ws, aiohttp.WSMsgType.BINARY)
            assert len(decode_frame(frame)) == 3000
            return text

    error = json.loads(run(fresh_sim, body))
    assert error["type"] == "error" and "5 token(s) refused" in error["data"]


@pytest.mark.parametrize("message", [
    "not json",
    '{"a": "dance", "v": [1]}',
    '{"a": "subscribe", "v": ["408065"]}',
    '{"a": "subscribe", "v": [[408065, 5633]]}',
    '{"a": "mode", "v": ["turbo", [408065]]}',
    '{"a": "mode", "v": "full"}',
    '[1, 2]',
])
def test_bad_messages_get_a_text_error_and_the_socket_stays_open(
    fresh_sim: ThreadedSim, message: str
) -> None:
    async def body(session: Session, base: str) -> list[dict[str, Any]]:
        async with session.ws_connect(url(base, "sloppy")) as ws:
            await ws.send_str(message)
            error = json.loads(await next_message(ws, aiohttp.WSMsgType.TEXT))
            await ws.send_str(json.dumps({"a": "subscribe", "v": [408065]}))
            ticks = decode_frame(await next_message(ws, aiohttp.WSMsgType.BINARY))
            assert error["type"] == "error" and error["data"]
            return ticks

    assert [t["instrument_token"] for t in run(fresh_sim, body)] == [408065]


async def frames_seen(ws: WS, count: int) -> None:
    """Wait for `count` tick frames on a socket (a barrier: the simulator's clock moved)."""
    seen = 0
    while seen < count:
        seen += len(await next_message(ws, aiohttp.WSMsgType.BINARY)) > 1


async def buffered(ws: WS) -> aiohttp.WSMessage | None:
    """A message that has already arrived, or None (the short wait only lets the reader run)."""
    try:
        return await asyncio.wait_for(ws.receive(), 0.05)
    except TimeoutError:
        return None


def test_heartbeats_flow_without_subscriptions_and_stop_when_muted(
    fresh_sim: ThreadedSim,
) -> None:
    async def body(session: Session, base: str) -> None:
        async with session.ws_connect(url(base, "quiet")) as ws:
            assert await next_message(ws, aiohttp.WSMsgType.BINARY) == b"\x00"
            await ws.send_str(json.dumps({"a": "subscribe", "v": [5633]}))
            await next_message(ws, aiohttp.WSMsgType.BINARY)
            await asyncio.to_thread(fresh_sim.call, "POST", "/_sim/mute?api_key=quiet")
            async with session.ws_connect(url(base, "witness")) as witness:
                await witness.send_str(json.dumps({"a": "subscribe", "v": [5633]}))
                # Barrier: 8 steps (0.8 s, over a heartbeat interval) seen on the witness, so
                # whatever the muted socket had on the wire before the mute has arrived.
                await frames_seen(witness, 8)
                while await buffered(ws) is not None:
                    pass
                await frames_seen(witness, 12)  # 1.2 s more: over 2 heartbeats and 10 steps
                assert await buffered(ws) is None  # the muted socket sent nothing at all
            await asyncio.to_thread(fresh_sim.call, "POST", "/_sim/restore?api_key=quiet")
            ticks = decode_frame(await next_message(ws, aiohttp.WSMsgType.BINARY))
            assert ticks[0]["instrument_token"] == 5633

    run(fresh_sim, body)


def test_stats_report_connections_modes_and_ticks(fresh_sim: ThreadedSim) -> None:
    async def body(session: Session, base: str) -> dict[str, Any]:
        async with session.ws_connect(url(base, "counted")) as ws:
            await ws.send_str(json.dumps({"a": "subscribe", "v": [408065, 5633, 256265, 1]}))
            await ws.send_str(json.dumps({"a": "mode", "v": ["full", [408065]]}))
            await next_message(ws, aiohttp.WSMsgType.BINARY)
            await next_message(ws, aiohttp.WSMsgType.BINARY)
            return await asyncio.to_thread(fresh_sim.stats, True)

    stats = run(fresh_sim, body)
    [conn] = stats["api_keys"]["counted"]["connections"]
    assert stats["api_keys"]["counted"]["state"] == "ok"
    assert conn["tokens"] == 4  # unknown tokens are accepted (Kite does not validate them)
    assert conn["modes"] == {"ltp": 0, "quote": 3, "full": 1}
    assert conn["token_list"] == [1, 5633, 256265, 408065]
    assert "1" not in stats["ticks_sent"]  # ... but never tick
    assert stats["ticks_sent"]["408065"] >= 2
    assert stats["ticks_total"] == sum(stats["ticks_sent"].values())


def test_sends_record_when_each_connections_frame_of_a_step_left(fresh_sim: ThreadedSim) -> None:
    async def body(session: Session, base: str) -> dict[str, Any]:
        sockets = [await session.ws_connect(url(base, key)) for key in ("first", "second")]
        for ws, token in zip(sockets, (408065, 5633), strict=True):
            await ws.send_str(json.dumps({"a": "subscribe", "v": [token]}))
        for ws in sockets:  # the answer to the subscribe, then two step frames
            for _ in range(3):
                await next_message(ws, aiohttp.WSMsgType.BINARY)
        status, sends = await asyncio.to_thread(fresh_sim.call, "GET", "/_sim/sends")
        assert status == 200
        for ws in sockets:
            await ws.close()
        return dict(sends)

    sends = run(fresh_sim, body)
    by_key = {c["api_key"]: {s[0]: s[1:] for s in c["sends"]} for c in sends["connections"]}
    assert set(by_key) == {"first", "second"}
    common = set(by_key["first"]) & set(by_key["second"])
    assert common  # both connections' frames of at least one step were recorded
    steps = {entry[0]: entry[1:] for entry in sends["steps"]}
    for step in common:
        started, advanced, queued = steps[step]
        assert started <= advanced <= queued
        for key in by_key:
            began, ended = by_key[key][step]
            assert queued <= began <= ended  # no frame leaves before the step's last is built


def test_fault_routes_need_a_known_key(fresh_sim: ThreadedSim) -> None:
    status, body = fresh_sim.call("POST", "/_sim/drop?api_key=stranger")
    assert status == 404 and "stranger" in body["error"]
    assert fresh_sim.call("POST", "/_sim/mute")[0] == 400


async def handshake(session: Session, address: str) -> int:
    """The handshake's HTTP status (101 when upgraded; the socket is then closed)."""
    try:
        ws = await session.ws_connect(address)
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status
    await ws.close()
    return 101


def test_configured_accounts_accept_only_their_pairs_until_a_relogin() -> None:
    sim = ThreadedSim(SimConfig(port=0, tick_interval=0.1, accounts={"acct": "secret"}))

    async def body(session: Session, base: str) -> list[int]:
        statuses = [
            await handshake(session, url(base, "acct", "wrong")),
            await handshake(session, url(base, "other", "secret")),
        ]
        ws = await session.ws_connect(url(base, "acct", "secret"))
        await asyncio.to_thread(sim.call, "POST", "/_sim/expire?api_key=acct")
        while (msg := await ws.receive()).type == aiohttp.WSMsgType.BINARY:
            pass
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.extra == "access token expired"
        statuses.append(await handshake(session, url(base, "acct", "secret")))
        statuses.append(await handshake(session, url(base, "acct", "new-day")))
        return statuses

    try:
        assert run(sim, body) == [403, 403, 403, 101]
    finally:
        sim.close()
