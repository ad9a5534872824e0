"""A real Kite day against the simulator: the morning login makes an account stream, the 06:00
expiry takes it out, and the next login brings its instruments back (DESIGN 5, issue 10)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from kiteconnect import KiteConnect
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import Engine

from tests.browser import screenshot
from tests.e2e import morning
from tests.e2e.stack import Holder, Listener, Sim, holder_env, sub_rows, wait_status
from tests.procs import wait_for
from ticker_worker import commands
from ticker_worker.core.ist import IST
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


def chromium_browser(driver: WebDriver) -> morning.Browser:
    """The browser's part in headless Chromium: open the URL, fill the form, submit."""

    def browse(url: str) -> str:
        driver.get(url)
        screenshot(driver, "kite-sim-login-page")
        driver.find_element(By.ID, "userid").send_keys("AB1234")
        driver.find_element(By.ID, "password").send_keys("not-checked")
        driver.find_element(By.ID, "totp").send_keys("123456")
        driver.find_element(By.ID, "login").click()
        WebDriverWait(driver, 30).until(
            lambda d: d.current_url.startswith(morning.REDIRECT) and d.find_elements(
                By.ID, "result"))
        screenshot(driver, "kite-login-callback")
        text: str = driver.find_element(By.ID, "result").text
        return text

    return browse


def test_the_whole_morning_in_headless_chromium(
    engine: Engine, sim: Sim, stocks: list[int], listener: Listener, keys: RedisKeys,
    browser: WebDriver,
) -> None:
    morning.add_account(sim)
    holder = Holder(holder_env(sim))
    try:
        watched = stocks[:2]
        commands.subscribe_many(engine, watched, "full")
        wait_status(engine, watched, "queued")
        page = morning.log_in(sim, chromium_browser(browser))
        assert "acct1 logged in" in page
        assert "request_token=" in browser.current_url  # Kite's redirect, as the app sees it
        wait_status(engine, watched, "active")
        wait_for(lambda: all(ticked(listener, keys, t) for t in watched), 20, "ticks")
        doc = wait_for(lambda: (holder.health() or {}).get("status") == "healthy"
                       and holder.health(), 20, "a healthy holder")
        assert [a["healthy"] for a in doc["ticker"]["accounts"]] == [True]  # type: ignore[index]
    finally:
        holder.stop()


def test_a_request_token_pasted_from_the_address_bar(
    engine: Engine, sim: Sim, stocks: list[int], listener: Listener, keys: RedisKeys,
    browser: WebDriver,
) -> None:
    morning.add_account(sim)
    holder = Holder(holder_env(sim))
    try:
        watched = stocks[:2]
        commands.subscribe_many(engine, watched, "quote")
        wait_status(engine, watched, "queued")
        # Nothing listens on the callback: the browser shows an error page, and the operator
        # copies the request token from its address bar.
        kite = KiteConnect(morning.KEY, root=sim.http)
        kite._default_login_uri = sim.http + "/connect/login"
        browser.get(kite.login_url())
        for field, value in (("userid", "AB1234"), ("password", "pw"), ("totp", "123456")):
            browser.find_element(By.ID, field).send_keys(value)
        browser.find_element(By.ID, "login").click()
        WebDriverWait(browser, 30).until(lambda d: "request_token=" in d.current_url)
        token = parse_qs(urlsplit(browser.current_url).query)["request_token"][0]
        done = morning.accounts_cli(sim, "login", "acct1", "--request-token", token)
        assert done.returncode == 0, done.stderr
        wait_status(engine, watched, "active")
        wait_for(lambda: all(ticked(listener, keys, t) for t in watched), 20, "ticks")
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
