"""`ticker-worker db`: schema migrations."""

from __future__ import annotations

import click

from ticker_worker.cli.common import cli_runtime, database_errors
from ticker_worker.db import migrate


@click.group()
def db() -> None:
    """Database schema management."""


@db.command()
@click.option("--revision", default="head", show_default=True)
def upgrade(revision: str) -> None:
    """Create the database if needed and run the Alembic migrations."""
    rt = cli_runtime()
    with database_errors():
        migrate.upgrade(rt.settings.database_url, revision)
    click.echo(f"database migrated to {revision}")


@db.command()
@click.option("--revision", default="base", show_default=True)
@click.confirmation_option(prompt="This drops ticker_worker's tables. Continue?")
def downgrade(revision: str) -> None:
    """Migrate the database down (drops data)."""
    rt = cli_runtime()
    with database_errors():
        migrate.downgrade(rt.settings.database_url, revision)
    click.echo(f"database migrated down to {revision}")
