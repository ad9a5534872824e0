"""The `ticker-worker` command line (DESIGN 4.4). Each command group lives in its own module."""

from __future__ import annotations

import sys

import click

from ticker_worker import __version__
from ticker_worker.cli import accounts, db, instruments, tasks
from ticker_worker.errors import TickerWorkerError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ticker-worker")
def cli() -> None:
    """Live Kite market-data subscriptions across accounts, streamed to Redis."""


cli.add_command(db.db)
cli.add_command(accounts.accounts)
cli.add_command(instruments.instruments)
for command in tasks.COMMANDS:
    cli.add_command(command)


def _optional_commands() -> None:
    # Imported here so that a heavy dependency of one command never slows the others' start-up.
    from ticker_worker.sim.cli import sim

    cli.add_command(sim)


def main() -> None:
    """Console entry point: domain errors print one clear line and exit 1, never a traceback."""
    _optional_commands()
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
