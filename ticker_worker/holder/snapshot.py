"""What the holder is doing, as one JSON-able document: /health, the Redis state key, status."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ticker_worker.db.accounts import expiry_fields

if TYPE_CHECKING:
    from ticker_worker.holder.main import HolderApp

AWAITING_SHOWN = 20  # tokens listed by name; the count covers all


def _connections(app: HolderApp, name: str) -> list[dict[str, Any]]:
    now = time.monotonic()
    state = app.core.accounts[name]
    return [
        {"index": i, "connected": c.connected, "tokens": len(c.tokens), "reconnects": c.reconnects,
         "refused": c.refusals, "unacknowledged": len(c.acks.unacked),
         "last_message_age": round(now - c.last_message_at, 3) if c.last_message_at else None}
        for i, c in sorted(state.connections.items())
    ]


def accounts(app: HolderApp) -> list[dict[str, Any]]:
    """Accounts with their load and connections (no secrets)."""
    settings = app.settings
    capacity = settings.max_tokens_per_connection * settings.max_connections_per_account
    result = []
    for name in sorted(app.core.accounts):
        state = app.core.accounts[name]
        conns = _connections(app, name)
        result.append({
            "name": name, "healthy": state.usable, "enabled": state.row.enabled,
            "reason": None if state.usable else (
                "disabled" if not state.row.enabled else state.row.unhealthy_reason
                or "access token rejected (403)"),
            "capacity": capacity, "used": sum(c["tokens"] for c in conns), "connections": conns,
            **expiry_fields(state.row.token_expires_at),
        })
    return result


EXPIRY_WARNING = 3600  # seconds: /health warns in the last hour of an account's token


def warnings(accts: list[dict[str, Any]]) -> list[str]:
    """What an operator should act on soon: tokens in their last hour (log in again)."""
    return [f"account {a['name']}: access token expires in {a['token_expires_in'] // 60} min "
            f"(at {a['token_expires_at']}); run `ticker-worker accounts login {a['name']}`"
            for a in accts if a["token_expires_in"] is not None
            and 0 < a["token_expires_in"] <= EXPIRY_WARNING]


def problems(app: HolderApp, accts: list[dict[str, Any]]) -> list[str]:
    """Why the holder is unhealthy; empty when healthy. A standby is healthy when its database
    and Redis answer: it holds no streams."""
    found = []
    db_problem = app.db.problem()
    if db_problem:
        found.append(f"database: {db_problem}")
    if not app.ticks.redis_ok:
        found.append("redis: unreachable, ticks are not being published")
    for a in accts:
        for c in a["connections"]:
            if a["healthy"] and c["tokens"] and not c["connected"]:
                found.append(f"account {a['name']} connection {c['index']}: not connected")
    return found


def build(app: HolderApp, tick_rate: float) -> dict[str, Any]:
    """The full state document."""
    core, lease = app.core, app.lease
    accts = accounts(app)
    reasons = problems(app, accts)
    age = app.ticks.last_tick_age()
    return {
        "status": "unhealthy" if reasons else "healthy",
        "reasons": reasons,
        "warnings": warnings(accts),
        "role": lease.role,
        "holder": {"id": lease.id, "epoch": lease.epoch, "takeovers": lease.takeovers},
        "environment": app.settings.environment,
        "updated_at": time.time(),
        "ticker": {
            "running": lease.role == "active",
            "active_subscriptions": len(core.actual),
            "awaiting_first_tick": len(core.awaiting),
            "awaiting_tokens": core.awaiting[:AWAITING_SHOWN],
            "open_gaps": len(core.gaps.open),
            "accounts": accts,
            "ticks_per_second": round(tick_rate, 1),
            "last_tick_age": round(age, 3) if age is not None else None,
            "is_mock": app.settings.uses_simulator,
            **app.ticks.stats(),
        },
        **app.stats.document(),
        "reconcile": {"count": core.reconciles, "last_at": core.last_reconcile_at,
                      "last_seconds": round(core.reconcile_seconds, 4)},
        "dependencies": {
            "redis": "ok" if app.ticks.redis_ok else "unreachable",
            "database": "ok" if app.db.ok else "unreachable",
            "nudges": "listening" if app.listener.connected else "reconnecting",
            "instrument_registry": {
                "status": "ok" if app.stats.instruments else "empty",
                "cached_instruments": app.stats.instruments},
        },
    }
