"""`ticker-worker accounts`: broker accounts. Tokens are masked in every output."""

from __future__ import annotations

import click
import orjson

from ticker_worker.cli.common import cli_runtime, database_errors
from ticker_worker.db import accounts as repo
from ticker_worker.logs import mask


@click.group()
def accounts() -> None:
    """Manage Kite accounts (api key + daily access token)."""


@accounts.command("add")
@click.argument("name")
@click.option("--api-key", required=True, help="The Kite Connect app's api key.")
@click.option("--access-token", required=True, help="Today's access token (masked in output).")
def add(name: str, api_key: str, access_token: str) -> None:
    """Add an account."""
    with database_errors(), cli_runtime().engine.begin() as conn:
        repo.add(conn, name, api_key, access_token)
    click.echo(f"account {name} added (api key {api_key}, token {mask(access_token)})")


@accounts.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_(as_json: bool) -> None:
    """List accounts with their state; tokens masked."""
    with database_errors(), cli_runtime().engine.connect() as conn:
        rows = [a.public() for a in repo.list_all(conn)]
    if as_json:
        click.echo(orjson.dumps(rows).decode())
        return
    if not rows:
        click.echo("no accounts: add one with `ticker-worker accounts add NAME --api-key K "
                   "--access-token T`")
        return
    click.echo(f"{'NAME':<16} {'API KEY':<20} {'TOKEN':<8} {'ENABLED':<8} HEALTH")
    for r in rows:
        health = "ok" if r["healthy"] else f"unhealthy: {r['reason']}"
        enabled = "yes" if r["enabled"] else "no"
        click.echo(
            f"{r['name']:<16} {r['api_key']:<20} {r['access_token']:<8} {enabled:<8} {health}"
        )


@accounts.command("set-token")
@click.argument("name")
@click.argument("access_token")
def set_token(name: str, access_token: str) -> None:
    """Store a new access token (after the daily 06:00 IST expiry)."""
    with database_errors(), cli_runtime().engine.begin() as conn:
        repo.set_token(conn, name, access_token)
    click.echo(f"account {name}: token updated ({mask(access_token)}), marked healthy")


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
