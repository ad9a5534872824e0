"""`ticker-worker accounts login|logout|set-secret|new-secret-key`: the daily Kite login.

Secrets never come from the command line unless given as flags (for scripts): they are asked
for without echo, or read line by line from standard input when it is not a terminal.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import click

from ticker_worker import crypto
from ticker_worker import login as flow
from ticker_worker.bootstrap import Runtime
from ticker_worker.cli.common import cli_runtime, database_errors
from ticker_worker.core.ist import IST
from ticker_worker.core.sessions import token_expiry
from ticker_worker.db import accounts as repo
from ticker_worker.errors import LoginError


class SecretInput:
    """Asks for secrets without echo on a terminal; otherwise takes stdin's lines in order."""

    def __init__(self) -> None:
        self._lines: list[str] | None = None

    def ask(self, label: str, given: str | None, required: bool = False) -> str | None:
        """`given` when set, else the next answer; None for an empty optional answer."""
        if given is None:
            if sys.stdin.isatty():
                hint = "input hidden" if required else "input hidden, Enter to skip"
                given = click.prompt(f"{label} ({hint})", hide_input=True, default="",
                                     show_default=False)
            else:
                if self._lines is None:
                    self._lines = sys.stdin.read().splitlines()
                given = self._lines.pop(0) if self._lines else ""
        value = given.strip()
        if required and not value:
            raise click.UsageError(f"{label} is required (a flag, the prompt, or stdin)")
        return value or None


def _expiry_text(now: datetime) -> str:
    return f"{token_expiry(now).astimezone(IST):%Y-%m-%d %H:%M} IST"


def _store_token(rt: Runtime, name: str, access_token: str) -> str:
    with database_errors(), rt.engine.begin() as conn:
        repo.set_token(conn, name, access_token)  # nudges the holder, as set-token does
    return f"account {name} logged in; token valid until {_expiry_text(datetime.now(UTC))}"


@click.command("login")
@click.argument("name")
@click.option("--request-token", help="Exchange this request token (from the redirect URL's "
              "address bar) instead of waiting for the redirect.")
@click.option("--timeout", default=300.0, show_default=True, type=click.FloatRange(min=1),
              help="Seconds to wait for Kite's redirect.")
def login(name: str, request_token: str | None, timeout: float) -> None:
    """Log an account in: open the printed URL, log in, and the token is stored."""
    rt = cli_runtime()
    with database_errors(), rt.engine.connect() as conn:
        api_key, encrypted, _ = repo.credentials(conn, name)
    if not encrypted:
        raise LoginError(f"account {name} has no api secret to log in with: store it with "
                         f"`ticker-worker accounts set-secret {name}`")
    api_secret = crypto.decrypt(rt.settings.ticker_secret_key, encrypted,
                                f"the api secret of account {name}")

    def finish(token: str) -> str:
        return _store_token(rt, name, flow.exchange(rt.settings, api_key, api_secret, token))

    if request_token:
        click.echo(finish(request_token))
        return
    callback = flow.Callback(rt.settings.kite_redirect_url, finish)  # listen before printing
    click.echo(f"Open this URL in a browser and log in to Kite as the account's user:\n"
               f"{flow.login_url(rt.settings, api_key)}")
    click.echo(f"waiting for Kite's redirect on {rt.settings.kite_redirect_url} ...")
    callback.wait(timeout)
    click.echo(callback.message)


@click.command("logout")
@click.argument("name")
def logout(name: str) -> None:
    """Invalidate the account's access token at Kite and forget it."""
    rt = cli_runtime()
    with database_errors(), rt.engine.connect() as conn:
        api_key, _, access_token = repo.credentials(conn, name)
    if access_token:
        flow.logout(rt.settings, api_key, access_token)
    with database_errors(), rt.engine.begin() as conn:
        repo.log_out(conn, name)
    click.echo(f"account {name} logged out; its instruments move to the other accounts")


@click.command("set-secret")
@click.argument("name")
@click.option("--api-secret", help="The Kite app's api secret (asked without echo when left off).")
def set_secret(name: str, api_secret: str | None) -> None:
    """Store (or replace) an account's api secret, encrypted with TICKER_SECRET_KEY."""
    rt = cli_runtime()
    secret = SecretInput().ask("api secret", api_secret, required=True)
    assert secret is not None
    encrypted = crypto.encrypt(rt.settings.ticker_secret_key, secret)
    with database_errors(), rt.engine.begin() as conn:
        repo.set_secret(conn, name, encrypted)
    click.echo(f"account {name}: api secret stored (encrypted)")


@click.command("new-secret-key")
def new_secret_key() -> None:
    """Print a fresh key for TICKER_SECRET_KEY (store it outside the repository)."""
    click.echo(crypto.new_key())
