"""The `sim` command: run the Kite simulator in the foreground (`ticker-worker sim`)."""

from __future__ import annotations

from datetime import datetime

import click

from ticker_worker.sim.clock import MARKETS, parse_instant
from ticker_worker.sim.server import SimConfig, run


def _pairs(values: tuple[str, ...], option: str, what: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        api_key, sep, rest = value.partition(":")
        if not sep or not api_key or not rest:
            raise click.BadParameter(f"expected KEY:{what}, got {value!r}", param_hint=option)
        pairs[api_key] = rest
    return pairs


def _accounts(values: tuple[str, ...]) -> dict[str, str] | None:
    return _pairs(values, "--accounts", "TOKEN") if values else None


def _instant(_: click.Context, __: click.Parameter, value: str | None) -> datetime | None:
    try:
        return parse_instant(value) if value else None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


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
    "--api-secret", "api_secrets", multiple=True, metavar="KEY:SECRET",
    help="The api secret of a key, checked by POST /session/token (repeatable). A key without "
    "one accepts any checksum.",
)
@click.option(
    "--redirect-url", "redirect_urls", multiple=True, metavar="KEY:URL",
    help="Where the login page redirects for a key (repeatable); default: the product's "
    "callback URL.",
)
@click.option("--market", type=click.Choice(MARKETS), default="always-open", show_default=True,
              help="always-open streams around the clock; real follows sessions and holidays.")
@click.option("--now", callback=_instant, metavar="ISO",
              help="Start the simulated clock at this instant (no offset: IST).")
@click.option(
    "--slow-consumer-timeout", default=10.0, show_default=True, type=click.FloatRange(min=0.01),
    help="Close a connection whose client has read nothing for this many seconds while a "
         "send waits.",
)
def sim(
    host: str, port: int, seed: int, tick_interval: float, heartbeat_interval: float,
    accounts: tuple[str, ...], no_rate_limits: bool, api_secrets: tuple[str, ...],
    redirect_urls: tuple[str, ...], market: str, now: datetime | None,
    slow_consumer_timeout: float,
) -> None:
    """Run the Kite simulator: ticker WebSocket, REST API and login page on one port."""
    run(SimConfig(
        host=host, port=port, seed=seed, tick_interval=tick_interval,
        heartbeat_interval=heartbeat_interval, accounts=_accounts(accounts),
        rate_limits=not no_rate_limits, market=market, now=now,
        api_secrets=_pairs(api_secrets, "--api-secret", "SECRET"),
        redirect_urls=_pairs(redirect_urls, "--redirect-url", "URL"),
        slow_consumer_timeout=slow_consumer_timeout,
    ))
