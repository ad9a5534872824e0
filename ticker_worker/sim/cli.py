"""The `sim` command: run the Kite simulator in the foreground (`ticker-worker sim`)."""

from __future__ import annotations

import click

from ticker_worker.sim.server import SimConfig, run


def _accounts(values: tuple[str, ...]) -> dict[str, str] | None:
    if not values:
        return None
    accounts: dict[str, str] = {}
    for value in values:
        api_key, sep, access_token = value.partition(":")
        if not sep or not api_key or not access_token:
            raise click.BadParameter(f"expected KEY:TOKEN, got {value!r}", param_hint="--accounts")
        accounts[api_key] = access_token
    return accounts


@click.command("sim")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8765, show_default=True, type=int, help="Port (0 picks one).")
@click.option("--seed", default=1, show_default=True, type=int, help="Seed for prices and data.")
@click.option(
    "--tick-interval", default=1.0, show_default=True, type=click.FloatRange(min=0.001),
    help="Seconds between ticks of each subscribed instrument.",
)
@click.option(
    "--heartbeat-interval", default=1.0, show_default=True, type=click.FloatRange(min=0.01),
    help="Seconds of silence before a 1-byte heartbeat.",
)
@click.option(
    "--accounts", "accounts", multiple=True, metavar="KEY:TOKEN",
    help="Accept only these api_key:access_token pairs (repeatable). Default: any pair.",
)
@click.option("--no-rate-limits", is_flag=True, help="Disable the per-key REST rate limits.")
@click.option(
    "--slow-consumer-timeout", default=10.0, show_default=True, type=click.FloatRange(min=0.01),
    help="Close a connection whose client has read nothing for this many seconds while a "
         "send waits.",
)
def sim(
    host: str,
    port: int,
    seed: int,
    tick_interval: float,
    heartbeat_interval: float,
    accounts: tuple[str, ...],
    no_rate_limits: bool,
    slow_consumer_timeout: float,
) -> None:
    """Run the Kite simulator: ticker WebSocket and REST API on one port."""
    run(SimConfig(
        host=host, port=port, seed=seed, tick_interval=tick_interval,
        heartbeat_interval=heartbeat_interval, accounts=_accounts(accounts),
        rate_limits=not no_rate_limits, slow_consumer_timeout=slow_consumer_timeout,
    ))
