"""A real Kite day against the simulator: the morning login makes an account stream, the 06:00
expiry takes it out, and the next login brings its instruments back (DESIGN 5, issue 10)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, time
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.e2e import morning
from tests.e2e.stack import Holder, Listener, Sim, holder_env, sub_rows, wait_status
from tests.procs import wait_for
from ticker_worker import commands
from ticker_worker.core.sessions import IST
from ticker_worker.db import accounts
from ticker_worker.keys import RedisKeys

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sim() -> Iterator[Sim]:
    server = morning.login_sim()
    yield server
    server.stop()


def ticked(listener: Listener, keys: RedisKeys, token: int) -> int:
    return sum(1 for frame in listener.get(keys.ticks) for t in frame
               if t["instrument_token"] == token)


def account_row(engine: Engine) -> accounts.AccountRow:
    with engine.connect() as conn:
        return next(a for a in accounts.list_all(conn) if a.name == "acct1")


def test_login_expiry_and_login_again(
    engine: Engine, sim: Sim, stocks: list[int], listener: Listener, keys: RedisKeys,
) -> None:
    morning.add_account(sim)
    holder = Holder(holder_env(sim))
    try:
        watched = stocks[:3]
        commands.subscribe_many(engine, watched, "quote")
        wait_status(engine, watched, "queued")  # no account has a token yet
        assert "logged in" in morning.log_in(sim, morning.url_browser)
        wait_status(engine, watched, "active")
        wait_for(lambda: all(ticked(listener, keys, t) for t in watched), 20, "ticks")
        _expiry_is_reported(holder)

        sim.fault("expire", morning.KEY)  # what 06:00 IST does to every token
        wait_for(lambda: not account_row(engine).healthy, 30, "the account to turn unhealthy")
        wait_status(engine, watched, "queued", timeout=30)
        listener.clear()

        morning.log_in(sim, morning.url_browser)
        wait_status(engine, watched, "active", timeout=30)
        wait_for(lambda: all(ticked(listener, keys, t) for t in watched), 20, "ticks again")
        assert account_row(engine).healthy
        assert {r.account for t, r in sub_rows(engine).items() if t in watched} == {"acct1"}
    finally:
        holder.stop()


def _expiry_is_reported(holder: Holder) -> None:
    def account() -> dict[str, Any] | None:
        doc = holder.health() or {}
        accts = doc.get("ticker", {}).get("accounts", [])
        return next((a for a in accts if a["name"] == "acct1" and a["healthy"]), None)

    acct = wait_for(account, 20, "acct1 healthy in /health")
    assert 0 < acct["token_expires_in"] <= 24 * 3600  # type: ignore[index]
    expires = datetime.fromisoformat(acct["token_expires_at"])  # type: ignore[index]
    assert expires.astimezone(IST).time() == time(6, 0)
    assert 'ticker_account_token_expiry_seconds{account="acct1"}' in holder.metrics()
