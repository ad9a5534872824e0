"""Fault injection and introspection under `/_sim/`: drop, mute, expire, restore, stats, sends,
clock.

These answer plain JSON objects (not Kite's envelope); they need no credentials.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from ticker_worker.sim.accounts import Account
from ticker_worker.sim.clock import parse_instant
from ticker_worker.sim.hub import Connection
from ticker_worker.sim.state import SIMULATOR, Simulator

_CLOSE_TIMEOUT = 2.0
_EXPIRED_CLOSE_REASON = b"access token expired"


def _plain(data: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def _target(request: web.Request) -> tuple[Simulator, Account] | web.Response:
    sim = request.app[SIMULATOR]
    api_key = request.query.get("api_key")
    if not api_key:
        return _plain({"error": "the api_key query parameter is required"}, 400)
    account = sim.accounts.by_key.get(api_key)
    if account is None:
        return _plain({"error": f"unknown api_key {api_key!r}: it is neither configured nor "
                                "has it authenticated since the last reset"}, 404)
    return sim, account


def _report(sim: Simulator, account: Account) -> web.Response:
    return _plain({
        "api_key": account.api_key,
        "state": account.state,
        "connections": len(sim.hub.of(account.api_key)),
    })


async def drop(request: web.Request) -> web.Response:
    """Abort the key's sockets at the TCP level; clients see a 1006 and reconnect."""
    target = _target(request)
    if isinstance(target, web.Response):
        return target
    sim, account = target
    conns = sim.hub.of(account.api_key)
    for conn in conns:
        conn.abort()
    return _plain({"api_key": account.api_key, "state": account.state, "dropped": len(conns)})


async def mute(request: web.Request) -> web.Response:
    """Keep the key's sockets open but send nothing on them, not even heartbeats."""
    target = _target(request)
    if isinstance(target, web.Response):
        return target
    sim, account = target
    account.muted = True
    return _report(sim, account)


async def _close(conn: Connection) -> None:
    try:
        await asyncio.wait_for(
            conn.ws.close(code=1000, message=_EXPIRED_CLOSE_REASON), _CLOSE_TIMEOUT
        )
    except (TimeoutError, ConnectionError):
        conn.abort()


async def expire(request: web.Request) -> web.Response:
    """Revoke the key's access tokens (a new one is accepted) and close its sockets."""
    target = _target(request)
    if isinstance(target, web.Response):
        return target
    sim, account = target
    account.expire()
    await asyncio.gather(*(_close(conn) for conn in sim.hub.of(account.api_key)))
    return _report(sim, account)


async def restore(request: web.Request) -> web.Response:
    """Undo mute and expire for the key."""
    target = _target(request)
    if isinstance(target, web.Response):
        return target
    sim, account = target
    account.restore()
    return _report(sim, account)


async def stats(request: web.Request) -> web.Response:
    """Connections, subscriptions and tick counts; `?tokens=1` lists each connection's tokens."""
    sim = request.app[SIMULATOR]
    with_tokens = request.query.get("tokens", "0").lower() in ("1", "true", "yes")
    return _plain(sim.hub.stats(sim.accounts.by_key.values(), with_tokens))


async def sends(request: web.Request) -> web.Response:
    """When each recent step was built and each connection's frame of it began to leave."""
    return _plain(request.app[SIMULATOR].hub.sends())


async def reset(request: web.Request) -> web.Response:
    """Drop every socket; clear statistics, fault states, rate windows and prices."""
    sim = request.app[SIMULATOR]
    sim.reset()
    await asyncio.sleep(0)  # let the aborted handlers unwind before the next test connects
    return _plain({"reset": True})


async def clock(request: web.Request) -> web.Response:
    """`GET` the market clock; `POST ?now=ISO` jumps the simulated time (tests, demos)."""
    sim = request.app[SIMULATOR]
    if request.method == "POST":
        try:
            sim.clock.set(parse_instant(request.query.get("now", "")))
        except ValueError as exc:
            return _plain({"error": str(exc)}, 400)
    return _plain(sim.clock.describe())


def add_routes(router: web.UrlDispatcher) -> None:
    """Register the `/_sim/` routes."""
    router.add_post("/_sim/drop", drop)
    router.add_post("/_sim/mute", mute)
    router.add_post("/_sim/expire", expire)
    router.add_post("/_sim/restore", restore)
    router.add_post("/_sim/reset", reset)
    router.add_get("/_sim/stats", stats)
    router.add_get("/_sim/sends", sends)
    router.add_get("/_sim/clock", clock)
    router.add_post("/_sim/clock", clock)
