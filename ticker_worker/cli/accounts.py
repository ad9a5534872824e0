"""`ticker-worker accounts`: broker accounts. Tokens are masked in every output."""

from __future__ import annotations

import time

import click
import orjson

from ticker_worker import crypto
from ticker_worker.cli.common import cli_runtime, database_errors
from ticker_worker.cli.login import SecretInput, login, logout, new_secret_key, set_secret
from ticker_worker.cli.status import time_left
from ticker_worker.db import accounts as repo
from ticker_worker.logs import mask


@click.group()
def accounts() -> None:
    """Manage Kite accounts (api key + daily access token)."""


@accounts.command("add")
@click.argument("name")
@click.option("--api-key", required=True, help="The Kite Connect app's api key.")
@click.option("--api-secret", help="The app's api secret, stored encrypted (asked without echo "
              "when left off; needs TICKER_SECRET_KEY).")
@click.option("--access-token", help="Today's access token, if you have one already (asked "
              "without echo when left off; `accounts login` gets one).")
def add(name: str, api_key: str, api_secret: str | None, access_token: str | None) -> None:
    """Add an account. Left-off secrets are asked for, or read from stdin (secret, then token)."""
    rt = cli_runtime()
    answers = SecretInput()
    secret = answers.ask("api secret", api_secret)
    token = answers.ask("access token", access_token)
    # Refused before anything is written when TICKER_SECRET_KEY is missing or malformed.
    encrypted = crypto.encrypt(rt.settings.ticker_secret_key, secret) if secret else None
    with database_errors(), rt.engine.begin() as conn:
        repo.add(conn, name, api_key, token, encrypted)
    click.echo(f"account {name} added (api key {api_key}, api secret "
               f"{'stored encrypted' if secret else 'none'}, token {mask(token)})")
    if not token:
        click.echo(f"next: `ticker-worker accounts login {name}` for today's access token")


@accounts.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_(as_json: bool) -> None:
    """List accounts with their state; tokens masked."""
    with database_errors(), cli_runtime().engine.connect() as conn:
        accounts_ = repo.list_all(conn)
    rows = [a.public() for a in accounts_]
    if as_json:
        click.echo(orjson.dumps(rows).decode())
        return
    if not rows:
        click.echo("no accounts: add one with `ticker-worker accounts add NAME --api-key K`")
        return
    click.echo(f"{'NAME':<16} {'API KEY':<20} {'TOKEN':<8} {'LEFT':<8} {'ENABLED':<8} HEALTH")
    for account, r in zip(accounts_, rows, strict=True):
        health = "ok" if r["healthy"] else f"unhealthy: {r['reason']}"
        enabled = "yes" if r["enabled"] else "no"
        expires = account.token_expires_at
        left = time_left(None if expires is None else round(expires.timestamp() - time.time()))
        click.echo(f"{r['name']:<16} {r['api_key']:<20} {r['access_token']:<8} {left:<8} "
                   f"{enabled:<8} {health}")


@accounts.command("set-token")
@click.argument("name")
@click.argument("access_token", required=False)
def set_token(name: str, access_token: str | None) -> None:
    """Store a new access token (asked without echo when left off)."""
    token = SecretInput().ask("access token", access_token, required=True)
    assert token is not None
    with database_errors(), cli_runtime().engine.begin() as conn:
        repo.set_token(conn, name, token)
    click.echo(f"account {name}: token updated ({mask(token)}), marked healthy")


@accounts.command("disable")
@click.argument("name")
def disable(name: str) -> None:
    """Stop using an account; its instruments move to the others."""
    with database_errors(), cli_runtime().engine.begin() as conn:
        repo.set_enabled(conn, name, False)
    click.echo(f"account {name} disabled")


@accounts.command("enable")
@click.argument("name")
def enable(name: str) -> None:
    """Use a disabled account again."""
    with database_errors(), cli_runtime().engine.begin() as conn:
        repo.set_enabled(conn, name, True)
    click.echo(f"account {name} enabled")


for _command in (login, logout, set_secret, new_secret_key):
    accounts.add_command(_command)
