"""The `ticker-worker` command line (DESIGN 4.4). Each command group lives in its own module."""

from __future__ import annotations

import sys

import click

from ticker_worker import __version__
from ticker_worker.cli import accounts, db, holder, instruments, status, tasks, up
from ticker_worker.errors import TickerWorkerError
from ticker_worker.sim.cli import sim


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ticker-worker")
def cli() -> None:
    """Live Kite market-data subscriptions across accounts, streamed to Redis."""


cli.add_command(db.db)
cli.add_command(accounts.accounts)
cli.add_command(instruments.instruments)
cli.add_command(holder.holder)
cli.add_command(holder.health)
cli.add_command(status.status)
cli.add_command(sim)
cli.add_command(up.up)
for command in tasks.COMMANDS:
    cli.add_command(command)


def main() -> None:
    """Console entry point: domain errors print one clear line and exit 1, never a traceback."""
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except TickerWorkerError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(1)
