"""End-to-end fixtures: one simulator per module, holders and workers per test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import Engine

from tests.conftest import insert_instruments
from tests.e2e.stack import Holder, Listener, Sim, holder_env
from ticker_worker.config import Settings
from ticker_worker.keys import RedisKeys


@pytest.fixture(scope="module")
def sim() -> Iterator[Sim]:
    server = Sim(tick_interval=0.2)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def universe(sim: Sim) -> list[dict[str, Any]]:
    """The simulator's instrument dump, loaded once per module with the official client."""
    from kiteconnect import KiteConnect

    return KiteConnect("k", "t", root=sim.http).instruments()


@pytest.fixture
def stocks(engine: Engine, universe: list[dict[str, Any]], sim: Sim) -> list[int]:
    """Registry rows for the indices and 60 NSE equities of the simulator; their tokens."""
    from ticker_worker.db.instruments import COLUMNS

    nse = [r for r in universe if r["exchange"] == "NSE" and r["instrument_type"] == "EQ"
           and r["segment"] == "NSE"][:60]
    indices = [r for r in universe if r["instrument_token"] in (256265, 260105)]
    rows = indices + nse
    insert_instruments(engine, [tuple(r[c] for c in COLUMNS) for r in rows])
    sim.call("POST", "/_sim/reset")
    return [r["instrument_token"] for r in nse]


@pytest.fixture
def keys(settings: Settings) -> RedisKeys:
    return RedisKeys(settings.ticker_redis_prefix)


@pytest.fixture
def listener(redis_client: redis.Redis, keys: RedisKeys) -> Iterator[Listener]:
    lst = Listener(redis_client, keys.events, keys.ticks)
    yield lst
    lst.stop()


@pytest.fixture
def start_holder(sim: Sim) -> Iterator[Any]:
    started: list[Holder] = []

    def start(**extra: object) -> Holder:
        h = Holder(holder_env(sim, **extra))
        started.append(h)
        return h

    yield start
    for h in started:
        h.stop()
