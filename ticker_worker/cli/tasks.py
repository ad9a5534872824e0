"""`ticker-worker subscribe|unsubscribe|set-mode`: enqueue the command tasks by name."""

from __future__ import annotations

import time
from typing import Any

import click
from sqlalchemy import text

from ticker_worker.cli.common import cli_runtime, database_errors
from ticker_worker.core.model import Mode

MODES = click.Choice([m.value for m in Mode], case_sensitive=False)


def _app() -> Any:
    from ticker_worker.celery import app

    return app


def _send(name: str, *args: Any, timeout: float = 30) -> Any:
    result = _app().send_task(name, args=list(args))
    try:
        return result.get(timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - the task's own error, re-raised by Celery
        raise click.ClickException(f"{name} failed: {exc}") from None


def _wait_active(tokens: list[int], timeout: float) -> None:
    engine = cli_runtime().engine
    deadline = time.monotonic() + timeout
    with click.progressbar(length=len(tokens), label="waiting for active", show_pos=True) as bar:
        done = 0
        while True:
            with database_errors(), engine.connect() as conn:
                rows = conn.execute(
                    text("SELECT status, count(*) FROM subscriptions "
                         "WHERE instrument_token = ANY(:t) GROUP BY status"),
                    {"t": tokens},
                ).all()
            by_status = dict((r[0], r[1]) for r in rows)
            active = by_status.get("active", 0)
            bar.update(active - done)
            done = active
            if active == len(tokens):
                return
            if time.monotonic() > deadline:
                raise click.ClickException(f"not all active after {timeout:.0f}s: {by_status}")
            time.sleep(0.1)


@click.command()
@click.argument("tokens", nargs=-1, type=int, required=True)
@click.option("--mode", type=MODES, default="full", show_default=True)
@click.option("--wait", is_flag=True, help="Wait until every instrument is active.")
@click.option("--timeout", type=float, default=60, show_default=True)
def subscribe(tokens: tuple[int, ...], mode: str, wait: bool, timeout: float) -> None:
    """Subscribe instruments (sends ticker_worker.subscribe / subscribe_many)."""
    if len(tokens) == 1:
        result = _send("ticker_worker.subscribe", tokens[0], mode)
        click.echo(f"{result['instrument_token']}: {result['status']} ({result['mode']})")
        accepted = [tokens[0]]
    else:
        result = _send("ticker_worker.subscribe_many", list(tokens), mode, timeout=120)
        accepted = result["accepted"]
        click.echo(f"accepted {len(accepted)}, rejected {len(result['rejected'])}")
        for r in result["rejected"]:
            click.echo(f"  {r['instrument_token']}: {r['error']}", err=True)
    if wait and accepted:
        _wait_active(accepted, timeout)
        click.echo("active")


@click.command()
@click.argument("tokens", nargs=-1, type=int, required=True)
def unsubscribe(tokens: tuple[int, ...]) -> None:
    """Unsubscribe instruments (sends ticker_worker.unsubscribe)."""
    for token in tokens:
        result = _send("ticker_worker.unsubscribe", token)
        click.echo(f"{token}: {'unsubscribing' if result['changed'] else 'not subscribed'}")


@click.command("set-mode")
@click.argument("mode", type=MODES)
@click.argument("tokens", nargs=-1, type=int, required=True)
def set_mode(mode: str, tokens: tuple[int, ...]) -> None:
    """Change the mode of subscribed instruments (sends ticker_worker.set_mode)."""
    for token in tokens:
        result = _send("ticker_worker.set_mode", token, mode)
        click.echo(f"{token}: {result['mode']} ({'changed' if result['changed'] else 'unchanged'})")



