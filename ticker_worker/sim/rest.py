"""Kite's REST routes on the simulator: instruments, historical candles, quotes, user profile.

Every route checks `Authorization: token KEY:TOKEN` and the per-key rate limits first.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from ticker_worker.core import sessions
from ticker_worker.sim.accounts import Account
from ticker_worker.sim.candles import INTERVAL_MINUTES, MAX_DAYS, CandleMaker, make_candles
from ticker_worker.sim.market import TokenState
from ticker_worker.sim.state import SIMULATOR, Simulator, error_response, json_response
from ticker_worker.sim.universe import EXCHANGES

Handler = Callable[[web.Request, Simulator, Account], Awaitable[web.StreamResponse]]
Route = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Requests per second per api key, by route family (Kite's published limits).
RATE_LIMITS = {"historical": 3, "quote": 1, "other": 10}
_DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d")
_BAD_CREDENTIALS = "Incorrect `api_key` or `access_token`."


class InputError(ValueError):
    """Raised when a request parameter is invalid; answered as a 400 InputException."""


def kite_route(family: str) -> Callable[[Handler], Route]:
    """Wrap a handler with Kite's token check and the family's rate limit."""

    def wrap(handler: Handler) -> Route:
        async def route(request: web.Request) -> web.StreamResponse:
            sim = request.app[SIMULATOR]
            account = _authorize(sim, request.headers.get("Authorization", ""))
            if account is None:
                return error_response(403, "TokenException", _BAD_CREDENTIALS)
            limited = sim.config.rate_limits
            if limited and not sim.limiter.allow(account.api_key, family, RATE_LIMITS[family]):
                return error_response(429, "NetworkException", "Too many requests")
            try:
                return await handler(request, sim, account)
            except InputError as exc:
                return error_response(400, "InputException", str(exc))

        return route

    return wrap


def _authorize(sim: Simulator, header: str) -> Account | None:
    scheme, _, credentials = header.partition(" ")
    api_key, _, access_token = credentials.partition(":")
    if scheme != "token":
        return None
    return sim.accounts.authenticate(api_key, access_token)


@kite_route("other")
async def instruments(request: web.Request, sim: Simulator, account: Account) -> web.Response:
    """`GET /instruments[/{exchange}]`: the gzipped CSV dump."""
    exchange = request.match_info.get("exchange")
    if exchange is not None and exchange not in EXCHANGES:
        raise InputError(f"Invalid exchange {exchange!r}; expected one of {', '.join(EXCHANGES)}.")
    # Building a dump the first time takes a few hundred ms: keep the event loop free.
    body = await asyncio.get_running_loop().run_in_executor(None, sim.universe.csv_gz, exchange)
    return web.Response(body=body, headers={"Content-Type": "text/csv", "Content-Encoding": "gzip"})


def _parse_time(request: web.Request, name: str) -> datetime:
    text = request.query.get(name, "")
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    raise InputError(f"Invalid `{name}` date {text!r}; expected YYYY-MM-DD HH:MM:SS.")


def _flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "0")
    if value not in ("0", "1"):
        raise InputError(f"Invalid `{name}` value {value!r}; expected 0 or 1.")
    return value == "1"


@kite_route("historical")
async def historical(request: web.Request, sim: Simulator, account: Account) -> web.Response:
    """`GET /instruments/historical/{token}/{interval}`: deterministic candles."""
    interval = request.match_info["interval"]
    if interval not in INTERVAL_MINUTES:
        raise InputError(f"Invalid interval {interval!r}.")
    start, end = _parse_time(request, "from"), _parse_time(request, "to")
    if end < start:
        raise InputError("`from` date is after `to` date.")
    if (end - start).total_seconds() > MAX_DAYS[interval] * 86400:
        raise InputError(f"interval exceeds max limit: {MAX_DAYS[interval]} days")
    with_oi = _flag(request, "oi")
    if _flag(request, "continuous") and interval != "day":
        raise InputError("Continuous data is only available for day candles.")
    token_text = request.match_info["instrument_token"]
    instrument = sim.universe.by_token.get(int(token_text)) if token_text.isdigit() else None
    if instrument is None:
        raise InputError(f"Invalid instrument token {token_text!r}.")
    maker = CandleMaker(sim.config.seed, instrument)
    end = min(end, sim.clock.now_ist().replace(tzinfo=None))  # no candle in the future
    hours = None
    if sim.clock.real:  # nor outside the exchange's sessions and trading days
        hours = sessions.EXCHANGE_HOURS.get(instrument.exchange, sessions.NSE_EQUITY)
    # Long spans take a few hundred ms; a thread lets the loop keep streaming ticks meanwhile.
    rows = await asyncio.get_running_loop().run_in_executor(
        None, make_candles, maker, interval, start, end, with_oi, hours
    )
    return json_response({"candles": rows})


def _quotes(
    request: web.Request, sim: Simulator, cap: int, shape: Callable[[TokenState, int], Any]
) -> web.Response:
    keys = request.query.getall("i", [])
    if len(keys) > cap:
        raise InputError(f"Too many instruments: {len(keys)} given, at most {cap} per request.")
    now = int(sim.clock.now())
    data: dict[str, Any] = {}
    for key in keys:
        instrument = sim.universe.by_key.get(key)
        state = sim.market.state(instrument.instrument_token, now) if instrument else None
        if state is not None:  # instruments without data are absent, as on Kite
            data[key] = shape(state, now)
    return json_response(data)


@kite_route("quote")
async def quote(request: web.Request, sim: Simulator, account: Account) -> web.Response:
    """`GET /quote?i=EXCH:SYMBOL...`: full snapshots (at most 500)."""
    return _quotes(request, sim, 500, lambda s, now: s.snapshot(now))


@kite_route("quote")
async def quote_ohlc(request: web.Request, sim: Simulator, account: Account) -> web.Response:
    """`GET /quote/ohlc`: last price and day OHLC (at most 1000)."""
    return _quotes(request, sim, 1000, lambda s, _: {
        "instrument_token": s.token, "last_price": s.last_price(), "ohlc": s.ohlc(),
    })


@kite_route("quote")
async def quote_ltp(request: web.Request, sim: Simulator, account: Account) -> web.Response:
    """`GET /quote/ltp`: last price only (at most 1000)."""
    return _quotes(request, sim, 1000, lambda s, _: {
        "instrument_token": s.token, "last_price": s.last_price(),
    })


@kite_route("other")
async def profile(request: web.Request, sim: Simulator, account: Account) -> web.Response:
    """`GET /user/profile`: a fixed profile; a cheap token check for clients."""
    user_id = f"SIM{zlib.crc32(account.api_key.encode()) % 10000:04d}"
    return json_response({
        "user_id": user_id, "user_type": "individual", "email": f"{user_id.lower()}@example.com",
        "user_name": "Simulated Trader", "user_shortname": "Simulated", "broker": "ZERODHA",
        "exchanges": ["NSE", "BSE", "NFO", "BFO", "CDS", "BCD", "MCX"],
        "products": ["CNC", "NRML", "MIS", "BO", "CO"],
        "order_types": ["MARKET", "LIMIT", "SL", "SL-M"],
        "avatar_url": None, "meta": {"demat_consent": "physical"},
    })


def add_routes(router: web.UrlDispatcher) -> None:
    """Register the REST routes."""
    router.add_get("/instruments", instruments)
    router.add_get("/instruments/historical/{instrument_token}/{interval}", historical)
    router.add_get("/instruments/{exchange}", instruments)
    router.add_get("/quote", quote)
    router.add_get("/quote/ohlc", quote_ohlc)
    router.add_get("/quote/ltp", quote_ltp)
    router.add_get("/user/profile", profile)
