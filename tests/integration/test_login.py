"""`accounts add|login|logout` as an operator runs them, against the simulator's login flow.

The CLI runs as a real process (its settings come from the environment); the browser's part is
played here by urllib (tests/e2e/test_morning_login.py plays it with headless Chromium).
"""

from __future__ import annotations

import os
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.fernet import Fernet
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kex
from sqlalchemy import Engine, text

from tests.procs import VENV_BIN, Proc, free_port, wait_for
from tests.sim.conftest import ThreadedSim
from ticker_worker.core.ist import IST
from ticker_worker.sim.server import SimConfig

KEY, SECRET = "morning-app", "the-app-secret-1234"
SECRET_KEY = Fernet.generate_key().decode()


@pytest.fixture(scope="module")
def callback_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def login_sim(callback_port: int) -> Iterator[ThreadedSim]:
    server = ThreadedSim(SimConfig(
        port=0, accounts={KEY: "yesterday-token"}, api_secrets={KEY: SECRET},
        redirect_urls={KEY: f"http://127.0.0.1:{callback_port}/kite/callback"},
    ))
    yield server
    server.close()


@pytest.fixture
def env(login_sim: ThreadedSim, callback_port: int, engine: Engine) -> dict[str, str]:
    return {
        "KITE_API_ROOT": login_sim.http, "KITE_WS_ROOT": login_sim.ws,
        "KITE_LOGIN_URL": login_sim.http + "/connect/login",
        "KITE_REDIRECT_URL": f"http://127.0.0.1:{callback_port}/kite/callback",
        "TICKER_SECRET_KEY": SECRET_KEY,
    }


def cli(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "ticker-worker"), "accounts", *args], input=stdin, text=True,
        capture_output=True, env={**os.environ, **env}, timeout=60,
    )


def account(engine: Engine) -> dict[str, object]:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM accounts WHERE name = 'acct'")).mappings().first()
    return dict(row) if row else {}


def request_token(sim: ThreadedSim) -> str:
    """Submit the login form without following the redirect; the request token it carries."""
    class Stop(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    form = urllib.parse.urlencode({"api_key": KEY, "user_id": "AB1234", "password": "pw",
                                   "totp": "000000"}).encode()
    with pytest.raises(urllib.error.HTTPError) as redirect:
        urllib.request.build_opener(Stop).open(sim.http + "/connect/login", data=form, timeout=10)
    query = urllib.parse.urlsplit(redirect.value.headers["Location"]).query
    return dict(urllib.parse.parse_qsl(query))["request_token"]


def test_add_stores_the_secret_encrypted_and_waits_for_a_login(
    env: dict[str, str], engine: Engine,
) -> None:
    done = cli(env, "add", "acct", "--api-key", KEY, stdin=f"{SECRET}\n\n")
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr
    row = account(engine)
    assert row["access_token"] is None and row["healthy"] is False
    stored = str(row["api_secret_encrypted"])
    assert SECRET not in stored
    assert Fernet(SECRET_KEY.encode()).decrypt(stored.encode()).decode() == SECRET


def test_a_secret_is_refused_without_a_secret_key(env: dict[str, str], engine: Engine) -> None:
    done = cli({**env, "TICKER_SECRET_KEY": ""}, "add", "acct", "--api-key", KEY,
               "--api-secret", SECRET)
    assert done.returncode == 1
    assert "TICKER_SECRET_KEY is not set" in done.stderr and "new-secret-key" in done.stderr
    assert "Traceback" not in done.stderr
    assert account(engine) == {}


def test_a_wrong_secret_key_is_a_clear_error(env: dict[str, str], engine: Engine) -> None:
    assert cli(env, "add", "acct", "--api-key", KEY, "--api-secret", SECRET).returncode == 0
    other = {**env, "TICKER_SECRET_KEY": Fernet.generate_key().decode()}
    done = cli(other, "login", "acct", "--request-token", "whatever")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "not the key it was stored with" in done.stderr
    done = cli({**env, "TICKER_SECRET_KEY": "not-a-key"}, "login", "acct")
    assert done.returncode == 1 and "not a valid key" in done.stderr


def test_login_with_a_pasted_request_token(
    env: dict[str, str], engine: Engine, login_sim: ThreadedSim,
) -> None:
    assert cli(env, "add", "acct", "--api-key", KEY, "--api-secret", SECRET).returncode == 0
    done = cli(env, "login", "acct", "--request-token", request_token(login_sim))
    assert done.returncode == 0, done.stderr
    row = account(engine)
    token = str(row["access_token"])
    assert row["healthy"] is True and token not in done.stdout
    expires = row["token_expires_at"]
    assert isinstance(expires, datetime)
    local = expires.astimezone(IST)
    assert (local.hour, local.minute) == (6, 0)
    assert timedelta(0) < expires - datetime.now(UTC) <= timedelta(days=1)
    listed = cli(env, "list")
    assert listed.returncode == 0 and token not in listed.stdout and SECRET not in listed.stdout
    assert re.search(r"acct .* \d+h\d\dm ", listed.stdout), listed.stdout  # the token's time left
    done = cli(env, "logout", "acct")
    assert done.returncode == 0, done.stderr
    row = account(engine)
    assert row["access_token"] is None and row["healthy"] is False
    assert "logged out" in str(row["unhealthy_reason"])
    with pytest.raises(kex.TokenException):  # invalidated at Kite, not only forgotten here
        KiteConnect(KEY, token, root=login_sim.http).profile()


def test_a_wrong_api_secret_fails_with_kites_error_and_changes_nothing(
    env: dict[str, str], engine: Engine, login_sim: ThreadedSim,
) -> None:
    done = cli(env, "add", "acct", "--api-key", KEY, "--api-secret", "wrong-secret",
               "--access-token", "yesterday-token")
    assert done.returncode == 0, done.stderr
    before = account(engine)
    done = cli(env, "login", "acct", "--request-token", request_token(login_sim))
    assert done.returncode == 1
    assert "Invalid `checksum`" in done.stderr and "TokenException" in done.stderr
    assert "wrong-secret" not in done.stderr
    assert account(engine) == before


def test_login_through_the_callback(
    env: dict[str, str], engine: Engine, login_sim: ThreadedSim,
) -> None:
    assert cli(env, "add", "acct", "--api-key", KEY, "--api-secret", SECRET).returncode == 0
    proc = Proc("login", [str(VENV_BIN / "ticker-worker"), "accounts", "login", "acct"], env)
    try:
        wait_for(lambda: "waiting for" in proc.output(), what="the CLI to listen")
        url = next(ln for ln in proc.output().splitlines() if ln.startswith("http"))
        assert url == f"{login_sim.http}/connect/login?api_key={KEY}&v=3"
        urllib.request.urlopen(url, timeout=10).read()
        form = urllib.parse.urlencode({"api_key": KEY, "user_id": "AB1234", "password": "pw",
                                       "totp": "000000"}).encode()
        # urllib follows the redirect to the CLI's callback, as a browser would.
        page = urllib.request.urlopen(login_sim.http + "/connect/login", data=form,
                                      timeout=20).read().decode()
        assert "logged in" in page
        assert proc.popen.wait(20) == 0, proc.output()
    finally:
        proc.stop()
    assert account(engine)["healthy"] is True
