"""`ticker-worker instruments`: the instrument registry."""

from __future__ import annotations

import time

import click

from ticker_worker.cli.common import cli_runtime, database_errors
from ticker_worker.db import instruments as repo
from ticker_worker.kite import rest


@click.group()
def instruments() -> None:
    """The instrument registry (Kite's instrument dump)."""


@instruments.command()
def sync() -> None:
    """Load Kite's instrument dump from KITE_API_ROOT into Postgres."""
    rt = cli_runtime()
    started = time.monotonic()
    with database_errors():
        with rt.engine.connect() as conn:
            api_key, token = rest.pick_account(conn, rt.settings)
        click.echo(f"downloading the instrument dump from {rt.settings.kite_api_root} ...")
        rows = rest.fetch_instruments(rest.client(rt.settings, api_key, token, timeout=60))
        with rt.engine.begin() as conn, click.progressbar(
            length=len(rows), label="storing instruments", show_pos=True
        ) as bar:
            total, unlisted = repo.sync(conn, rows, progress=bar.update)
    elapsed = time.monotonic() - started
    click.echo(f"synced {total} instruments in {elapsed:.1f}s; {unlisted} no longer listed")


@instruments.command()
def count() -> None:
    """How many instruments the registry holds."""
    with database_errors(), cli_runtime().engine.connect() as conn:
        click.echo(repo.count(conn))
