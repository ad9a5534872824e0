"""`ticker-worker status`: accounts and connections with their load, subscriptions, tick rates."""

from __future__ import annotations

from typing import Any

import click
import orjson
from sqlalchemy import text

from ticker_worker.cli.common import cli_runtime, database_errors
from ticker_worker.cli.holder import read_state
from ticker_worker.db import accounts as account_repo
from ticker_worker.db import lease
from ticker_worker.db.accounts import expiry_fields


def _bar(used: int, capacity: int, width: int = 20) -> str:
    filled = round(width * used / capacity) if capacity else 0
    return "█" * filled + "·" * (width - filled)


def collect() -> dict[str, Any]:
    """The status document (DESIGN 4.4), from Postgres and the holder's state key."""
    rt = cli_runtime()
    with database_errors(), rt.engine.connect() as conn:
        counts = {r[0]: int(r[1]) for r in conn.execute(
            text("SELECT status, count(*) FROM subscriptions GROUP BY status"))}
        reasons = [tuple(r) for r in conn.execute(text(
            "SELECT reason, count(*) FROM subscriptions WHERE status IN ('queued', 'failed') "
            "GROUP BY reason ORDER BY 2 DESC LIMIT 5"))]
        rows = account_repo.list_all(conn)
        holders = lease.holders(conn)
    try:
        state = read_state()
    except Exception:  # noqa: BLE001 - Redis down: show what Postgres knows
        state = None
    ticker: dict[str, Any] = state["ticker"] if state else {}  # type: ignore[assignment]
    live = {a["name"]: a for a in ticker.get("accounts", [])}
    capacity = rt.settings.max_tokens_per_connection * rt.settings.max_connections_per_account
    accounts = []
    for row in rows:
        a = live.get(row.name, {})
        accounts.append({
            "name": row.name, "healthy": a.get("healthy", row.enabled and row.healthy),
            "enabled": row.enabled, "reason": a.get("reason", row.unhealthy_reason),
            "capacity": a.get("capacity", capacity), "used": a.get("used", 0),
            "connections": [{k: c[k] for k in ("index", "connected", "tokens")}
                            for c in a.get("connections", [])],
            **expiry_fields(row.token_expires_at),
        })
    return {
        "holder": state["status"] if state else "not running",
        "accounts": accounts,
        "subscriptions": counts,
        "queued_reasons": [{"reason": r, "count": n} for r, n in reasons],
        "ticks_per_second": ticker.get("ticks_per_second"),
        "last_tick_age": ticker.get("last_tick_age"),
        "awaiting_first_tick": ticker.get("awaiting_first_tick", 0),
        "awaiting_tokens": ticker.get("awaiting_tokens", []),
        "open_gaps": ticker.get("open_gaps", 0),
        "holders": holders,
    }


def time_left(seconds: int | None) -> str:
    """A token's remaining life as `5h07m`, `expired` or `-` (no token)."""
    if seconds is None:
        return "-"
    if seconds <= 0:
        return "expired"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _print_table(doc: dict[str, Any]) -> None:
    age = doc["last_tick_age"]
    click.echo(f"holder: {doc['holder']}    ticks/s: {doc['ticks_per_second'] or 0}    "
               f"last tick: {age if age is not None else '-'} s ago")
    click.echo("")
    click.echo(f"{'ACCOUNT':<14} {'STATE':<10} {'TOKEN LEFT':<10} {'LOAD':<22} {'USED':>11}  "
               "CONNECTIONS")
    for a in doc["accounts"]:
        state = "ok" if a["healthy"] else ("disabled" if not a["enabled"] else "UNHEALTHY")
        conns = "  ".join(f"#{c['index']}:{c['tokens']}{'' if c['connected'] else '(down)'}"
                          for c in a["connections"]) or "-"
        click.echo(f"{a['name']:<14} {state:<10} {time_left(a['token_expires_in']):<10} "
                   f"{_bar(a['used'], a['capacity']):<22} "
                   f"{a['used']:>5}/{a['capacity']:<5}  {conns}")
        if not a["healthy"] and a["reason"]:
            click.echo(f"{'':<14} reason: {a['reason']}")
    if not doc["accounts"]:
        click.echo("(no accounts: `ticker-worker accounts add NAME --api-key K`)")
    click.echo("")
    subs = doc["subscriptions"]
    click.echo("subscriptions: " + (", ".join(f"{k} {v}" for k, v in sorted(subs.items()))
                                    or "none"))
    for r in doc["queued_reasons"]:
        click.echo(f"  {r['count']} waiting: {r['reason']}")
    if doc["awaiting_first_tick"]:
        shown = ", ".join(str(t) for t in doc["awaiting_tokens"])
        click.echo(f"  {doc['awaiting_first_tick']} active but awaiting their first tick: {shown}")
    if doc["open_gaps"]:
        click.echo(f"  {doc['open_gaps']} silent since a fault (gap open, backfill follows)")
    click.echo("")
    for h in doc["holders"]:
        epoch = f"epoch {h['epoch']}" if h["epoch"] is not None else "no lease"
        click.echo(f"holder {h['id']}: {h['role']} ({epoch}, seen {h['lease_age']:.1f} s ago)")
    if not doc["holders"]:
        click.echo("holders: none running (`ticker-worker holder`)")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(as_json: bool) -> None:
    """Accounts x connections with load, subscriptions by status, tick rates."""
    doc = collect()
    if as_json:
        click.echo(orjson.dumps(doc).decode())
    else:
        _print_table(doc)
