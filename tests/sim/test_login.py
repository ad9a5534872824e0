"""Kite's login flow on the simulator, driven by the official KiteConnect client unchanged."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kex

from tests.sim.conftest import ThreadedSim
from ticker_worker.sim.server import SimConfig

KEY, SECRET, REDIRECT = "login-app", "s3cret-of-the-app", "http://127.0.0.1:9/cb?app=1"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


@pytest.fixture(scope="module")
def login_sim() -> Iterator[ThreadedSim]:
    server = ThreadedSim(SimConfig(
        port=0, accounts={KEY: "old-token"}, api_secrets={KEY: SECRET},
        redirect_urls={KEY: REDIRECT},
    ))
    yield server
    server.close()


def client(sim: ThreadedSim, token: str | None = None) -> KiteConnect:
    kite = KiteConnect(KEY, token, root=sim.http)
    kite._default_login_uri = sim.http + "/connect/login"
    return kite


def log_in(sim: ThreadedSim) -> dict[str, str]:
    """Open the login page, submit the form, and return the redirect's query."""
    page = urllib.request.urlopen(client(sim).login_url(), timeout=10).read().decode()
    assert 'name="password"' in page and KEY in page
    form = urllib.parse.urlencode({"api_key": KEY, "user_id": "AB1234", "password": "x",
                                   "totp": "123456"}).encode()
    opener = urllib.request.build_opener(_NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as redirect:
        opener.open(sim.http + "/connect/login", data=form, timeout=10)
    assert redirect.value.code == 302
    location = urllib.parse.urlsplit(redirect.value.headers["Location"])
    assert location._replace(query="").geturl() == REDIRECT.split("?")[0]
    return dict(urllib.parse.parse_qsl(location.query))


def test_login_url_page_and_redirect_follow_kite(login_sim: ThreadedSim) -> None:
    assert client(login_sim).login_url() == f"{login_sim.http}/connect/login?api_key={KEY}&v=3"
    query = log_in(login_sim)
    assert query["action"] == "login" and query["status"] == "success" and query["app"] == "1"
    assert len(query["request_token"]) == 32


def test_generate_session_gives_a_working_token_once(login_sim: ThreadedSim) -> None:
    request_token = log_in(login_sim)["request_token"]
    kite = client(login_sim)
    session = kite.generate_session(request_token, SECRET)
    assert session["user_id"] == "AB1234" and session["api_key"] == KEY
    assert kite.profile()["user_id"]  # the client adopted the new token
    with pytest.raises(kex.TokenException, match="invalid or has expired"):
        client(login_sim).generate_session(request_token, SECRET)  # a request token is single-use


def test_a_wrong_api_secret_is_a_403_token_exception(login_sim: ThreadedSim) -> None:
    request_token = log_in(login_sim)["request_token"]
    with pytest.raises(kex.TokenException, match="checksum") as refused:
        client(login_sim).generate_session(request_token, "not-the-secret")
    assert refused.value.code == 403


def test_invalidate_access_token_logs_the_token_out(login_sim: ThreadedSim) -> None:
    kite = client(login_sim)
    kite.generate_session(log_in(login_sim)["request_token"], SECRET)
    assert kite.invalidate_access_token() is True
    with pytest.raises(kex.TokenException):
        kite.profile()


def test_a_login_after_expiry_restores_the_key(login_sim: ThreadedSim) -> None:
    assert login_sim.call("POST", f"/_sim/expire?api_key={KEY}")[0] == 200
    with pytest.raises(kex.TokenException):
        client(login_sim, "old-token").profile()
    kite = client(login_sim)
    kite.generate_session(log_in(login_sim)["request_token"], SECRET)
    assert kite.profile()["user_id"]
    body = login_sim.stats()
    assert body["api_keys"][KEY]["state"] == "ok"


def test_the_login_page_refuses_an_unknown_api_key(login_sim: ThreadedSim) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(login_sim.http + "/connect/login?v=3&api_key=nobody", timeout=10)
    assert refused.value.code == 400
