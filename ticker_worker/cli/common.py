"""Helpers shared by the CLI commands: the runtime, database errors shown as one clear line."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click
from sqlalchemy.exc import OperationalError, ProgrammingError

from ticker_worker.bootstrap import Runtime, runtime
from ticker_worker.logs import setup_logging


def cli_runtime() -> Runtime:
    """The runtime for a CLI command, with readable logging set up."""
    rt = runtime()
    setup_logging(rt.settings.log_format, "WARNING")
    return rt


@contextmanager
def database_errors() -> Iterator[None]:
    """Turn an unreachable or unmigrated database into an actionable message."""
    try:
        yield
    except OperationalError as exc:
        raise click.ClickException(
            f"cannot reach Postgres ({exc.orig}). Is it running, and is DATABASE_URL right?"
        ) from None
    except ProgrammingError as exc:
        if "does not exist" in str(exc.orig):
            raise click.ClickException(
                "the database schema is missing: run `ticker-worker db upgrade` first"
            ) from None
        raise
