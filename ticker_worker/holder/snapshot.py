"""What the holder is doing, as one JSON-able document: /health, the Redis state key, status."""

from __future__ import annotations

import time
from typing import Any

from ticker_worker.db.accounts import expiry_fields
from ticker_worker.holder.service import Holder


def _connections(holder: Holder, name: str) -> list[dict[str, Any]]:
    now = time.monotonic()
    state = holder.accounts[name]
    return [
        {"index": i, "connected": c.connected, "tokens": len(c.tokens), "reconnects": c.reconnects,
         "last_message_age": round(now - c.last_message_at, 3) if c.last_message_at else None}
        for i, c in sorted(state.connections.items())
    ]


def accounts(holder: Holder) -> list[dict[str, Any]]:
    """Accounts with their load and connections (no secrets)."""
    settings = holder.settings
    capacity = settings.max_tokens_per_connection * settings.max_connections_per_account
    result = []
    for name in sorted(holder.accounts):
        state = holder.accounts[name]
        conns = _connections(holder, name)
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


def is_healthy(holder: Holder, accts: list[dict[str, Any]]) -> bool:
    """Healthy: Postgres and Redis reachable, and every loaded connection of a usable account up."""
    streams_ok = all(c["connected"] for a in accts if a["healthy"] for c in a["connections"]
                     if c["tokens"])
    return holder.db_ok and holder.ticks.redis_ok and streams_ok


def build(holder: Holder, tick_rate: float) -> dict[str, Any]:
    """The full state document."""
    accts = accounts(holder)
    healthy = is_healthy(holder, accts)
    age = holder.ticks.last_tick_age()
    return {
        "status": "healthy" if healthy else "unhealthy",
        "warnings": warnings(accts),
        "environment": holder.settings.environment,
        "updated_at": time.time(),
        "ticker": {
            "running": True,
            "active_subscriptions": len(holder.actual),
            "accounts": accts,
            "ticks_per_second": round(tick_rate, 1),
            "last_tick_age": round(age, 3) if age is not None else None,
            "is_mock": holder.settings.uses_simulator,
            **holder.ticks.stats(),
        },
        "subscriptions": holder.counts,
        "outbox_backlog": holder.outbox_backlog,
        "reconcile": {"count": holder.reconciles, "last_at": holder.last_reconcile_at,
                      "last_seconds": round(holder.reconcile_seconds, 4)},
        "dependencies": {
            "redis": "ok" if holder.ticks.redis_ok else "unreachable",
            "database": "ok" if holder.db_ok else "unreachable",
            "nudges": "listening" if holder.listener.connected else "reconnecting",
            "instrument_registry": {"status": "ok" if holder.instruments else "empty",
                                    "cached_instruments": holder.instruments},
        },
    }
