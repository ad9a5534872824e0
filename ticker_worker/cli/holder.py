"""`ticker-worker holder | status | health`: run the stream holder and look at it."""

from __future__ import annotations

import sys

import click
import orjson

from ticker_worker.bootstrap import runtime
from ticker_worker.logs import setup_logging


@click.command()
def holder() -> None:
    """Run the stream holder (Kite WebSockets, placement, ticks, events)."""
    from ticker_worker.holder.main import run

    rt = runtime()
    setup_logging(rt.settings.log_format, rt.settings.log_level, process="holder")
    sys.exit(run(rt))


def read_state() -> dict[str, object] | None:
    """The holder's latest state document from Redis, or None when no holder is alive."""
    rt = runtime()
    raw = rt.redis.get(rt.keys.holder_state)
    return orjson.loads(raw) if raw else None


@click.command()
def health() -> None:
    """Exit 0 when the holder is alive and healthy, 1 when not (for healthchecks)."""
    try:
        state = read_state()
    except Exception as exc:  # noqa: BLE001 - Redis down means we cannot tell: unhealthy
        click.echo(f"unhealthy: cannot read the holder's state from Redis ({exc})")
        sys.exit(1)
    if state is None:
        click.echo("unhealthy: no holder has reported in the last 10 s")
        sys.exit(1)
    click.echo(str(state["status"]))
    sys.exit(0 if state["status"] == "healthy" else 1)
