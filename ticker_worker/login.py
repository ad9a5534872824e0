"""The daily Kite login: the login URL, the redirect callback, the token exchange and logout.

Everything Kite-facing goes through the official `KiteConnect` client (`login_url`,
`generate_session`, `invalidate_access_token`), aimed at `KITE_LOGIN_URL` / `KITE_API_ROOT`, so
the simulator and Kite are driven the same way. The callback is a one-shot local HTTP server on
the app's registered redirect URL.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlsplit

from kiteconnect import KiteConnect
from kiteconnect import exceptions as kite_errors

from ticker_worker.config import Settings
from ticker_worker.errors import LoginError
from ticker_worker.logs import redact, register_secret


def _client(settings: Settings, api_key: str, access_token: str | None = None) -> KiteConnect:
    kite = KiteConnect(api_key, access_token, root=settings.kite_api_root, timeout=15)
    # The official client builds its login URL from this class attribute; point it at ours.
    kite._default_login_uri = settings.kite_login_url
    return kite


def login_url(settings: Settings, api_key: str) -> str:
    """The account's login page, exactly as the official client builds it."""
    url: str = _client(settings, api_key).login_url()
    return url


def exchange(settings: Settings, api_key: str, api_secret: str, request_token: str) -> str:
    """Trade a request token for an access token (`generate_session`); LoginError on refusal."""
    register_secret(api_secret)
    try:
        session = _client(settings, api_key).generate_session(request_token, api_secret)
    except kite_errors.KiteException as exc:
        raise LoginError(f"Kite refused the login: {redact(str(exc))} "
                         f"({type(exc).__name__}, HTTP {exc.code})") from None
    token: str = session["access_token"]
    register_secret(token)
    return token


def logout(settings: Settings, api_key: str, access_token: str) -> None:
    """Invalidate an access token at Kite (`invalidate_access_token`)."""
    try:
        _client(settings, api_key, access_token).invalidate_access_token()
    except kite_errors.TokenException:
        pass  # already invalid (expired at 06:00, or logged out elsewhere): the goal holds
    except kite_errors.KiteException as exc:
        raise LoginError(f"Kite refused the logout: {redact(str(exc))}") from None


OnToken = Callable[[str], str]


class Callback:
    """A one-shot HTTP server on the redirect URL; hands the request token to `on_token`.

    `on_token` does the exchange and returns the line shown in the browser; an exception it
    raises is shown there too, then re-raised by `wait`.
    """

    def __init__(self, redirect_url: str, on_token: OnToken) -> None:
        parts = urlsplit(redirect_url)
        if parts.scheme != "http" or not parts.hostname:
            raise LoginError(f"the redirect URL {redirect_url!r} must be http://HOST:PORT/PATH on "
                             "this machine (set KITE_REDIRECT_URL)")
        self.path = parts.path or "/"
        self.on_token = on_token
        self.done = threading.Event()
        self.error: Exception | None = None
        self.message = ""
        try:
            self.server = HTTPServer((parts.hostname, parts.port or 80), self._handler())
        except OSError as exc:
            raise LoginError(f"cannot listen on {redirect_url} for the redirect: {exc}") from None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                if parts.path != outer.path or "request_token" not in query:
                    self._answer(404, "not the Kite login redirect")
                    return
                self._answer(*outer._finish(query))

            def _answer(self, status: int, message: str) -> None:
                body = (f"<!doctype html><title>ticker-worker login</title><p id='result'>"
                        f"{message}</p>").encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass  # the query string holds the request token: keep it out of stderr

        return Handler

    def _finish(self, query: dict[str, str]) -> tuple[int, str]:
        try:
            if query.get("status", "success") != "success":
                raise LoginError(f"Kite reported the login as {query.get('status')!r}")
            self.message = self.on_token(query["request_token"])
            return 200, self.message
        except Exception as exc:  # noqa: BLE001 - shown in the browser, re-raised by wait()
            self.error = exc
            return 400, f"login failed: {exc}"
        finally:
            self.done.set()

    def wait(self, timeout: float) -> None:
        """Serve until the redirect arrived and was handled, or raise LoginError on timeout."""
        self.server.timeout = 0.5
        deadline = time.monotonic() + timeout
        try:
            while not self.done.is_set():
                if time.monotonic() >= deadline:
                    raise LoginError(f"no login redirect within {timeout:.0f} s")
                self.server.handle_request()
        finally:
            self.server.server_close()
        if self.error is not None:
            raise self.error
