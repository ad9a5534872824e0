"""The `ticker-worker` command line (DESIGN 4.4). Each command group lives in its own module.

Commands are imported when invoked, not up front: the long-running ones (`holder`, `sim`)
then carry only what they use (the official Kite client and Twisted stay out of the holder).
"""

from __future__ import annotations

import importlib
import sys

import click

from ticker_worker import __version__
from ticker_worker.errors import TickerWorkerError

COMMANDS = {
    "accounts": "ticker_worker.cli.accounts:accounts",
    "db": "ticker_worker.cli.db:db",
    "health": "ticker_worker.cli.holder:health",
    "holder": "ticker_worker.cli.holder:holder",
    "instruments": "ticker_worker.cli.instruments:instruments",
    "set-mode": "ticker_worker.cli.tasks:set_mode",
    "sim": "ticker_worker.sim.cli:sim",
    "status": "ticker_worker.cli.status:status",
    "subscribe": "ticker_worker.cli.tasks:subscribe",
    "unsubscribe": "ticker_worker.cli.tasks:unsubscribe",
    "up": "ticker_worker.cli.up:up",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attr = target.split(":")
        command: click.Command = getattr(importlib.import_module(module), attr)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ticker-worker")
def cli() -> None:
    """Live Kite market-data subscriptions across accounts, streamed to Redis."""


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
