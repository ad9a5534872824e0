"""One simulator instance: its configuration and the components every route shares.

Routes reach it through `request.app[SIMULATOR]`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import orjson
from aiohttp import web

from ticker_worker.sim.accounts import Accounts, Logins, RestRateWindows
from ticker_worker.sim.clock import MarketClock
from ticker_worker.sim.hub import Hub
from ticker_worker.sim.market import Market
from ticker_worker.sim.universe import Universe, build_universe

_MAX_PACKETS_PER_FRAME = 0xFFFF  # the frame header counts packets in a uint16


@dataclass
class SimConfig:
    """Simulator settings; `accounts` maps api_key to access_token (None: accept any pair)."""

    host: str = "127.0.0.1"
    port: int = 8765
    seed: int = 1
    tick_interval: float = 1.0
    heartbeat_interval: float = 1.0
    accounts: dict[str, str] | None = None
    max_tokens_per_connection: int = 3000
    max_connections_per_key: int = 3
    rate_limits: bool = True
    market: str = "always-open"  # or "real": sessions and holidays (sim/clock.py)
    now: datetime | None = None  # the simulated time to start at (None: the wall clock)
    api_secrets: dict[str, str] = field(default_factory=dict)  # api_key -> api_secret
    redirect_urls: dict[str, str] = field(default_factory=dict)  # api_key -> redirect URL
    #: Seconds a send may wait on a client that stopped reading before its socket is closed.
    slow_consumer_timeout: float = 10.0

    def __post_init__(self) -> None:
        if min(self.tick_interval, self.heartbeat_interval, self.slow_consumer_timeout) <= 0:
            raise ValueError(
                "tick_interval, heartbeat_interval and slow_consumer_timeout must be positive"
            )
        if not 0 < self.max_tokens_per_connection <= _MAX_PACKETS_PER_FRAME:
            raise ValueError(f"max_tokens_per_connection must be 1..{_MAX_PACKETS_PER_FRAME}")


class Simulator:
    """The shared state behind the WebSocket, REST and control routes."""

    def __init__(self, config: SimConfig, universe: Universe | None = None) -> None:
        self.config = config
        self.universe = universe or build_universe(config.seed)
        self.market = Market(self.universe, config.seed)
        self.clock = MarketClock(config.market, config.now)
        self.accounts = Accounts(config.accounts)
        self.logins = Logins(config.api_secrets, config.redirect_urls)
        self.limiter = RestRateWindows()
        self.hub = Hub(
            self.market,
            tick_interval=config.tick_interval,
            heartbeat_interval=config.heartbeat_interval,
            max_tokens=config.max_tokens_per_connection,
            max_connections=config.max_connections_per_key,
            slow_consumer_timeout=config.slow_consumer_timeout,
        )
        self.hub.now = self.clock.now
        self.hub.closed_segments = self.clock.closed_segments

    def reset(self) -> None:
        """Drop every socket and clear statistics, fault states, rate windows and prices."""
        self.hub.reset()
        self.market.reset()
        self.accounts.reset()
        self.limiter.reset()


SIMULATOR = web.AppKey("simulator", Simulator)


def json_response(data: object, status: int = 200) -> web.Response:
    """A JSON response with Kite's success envelope."""
    body = orjson.dumps({"status": "success", "data": data})
    return web.Response(body=body, status=status, content_type="application/json")


def error_response(status: int, error_type: str, message: str) -> web.Response:
    """A JSON response with Kite's error envelope; the client raises `error_type`."""
    body = orjson.dumps(
        {"status": "error", "message": message, "data": None, "error_type": error_type}
    )
    return web.Response(body=body, status=status, content_type="application/json")
