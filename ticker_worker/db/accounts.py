"""Broker accounts in Postgres. Access tokens and (encrypted) api secrets are stored here and
never leave in output or logs."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, text

from ticker_worker.core.sessions import token_expiry
from ticker_worker.errors import AccountError
from ticker_worker.keys import FULL_PASS, NUDGE_CHANNEL
from ticker_worker.logs import mask, register_secret

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
NO_TOKEN = "no access token yet: run `ticker-worker accounts login NAME`"
LOGGED_OUT = "logged out: run `ticker-worker accounts login NAME`"


@dataclass(frozen=True)
class AccountRow:
    """An account as the holder and backfill see it."""

    name: str
    api_key: str
    access_token: str
    enabled: bool
    healthy: bool
    unhealthy_reason: str | None
    token_expires_at: datetime | None = None

    def public(self) -> dict[str, object]:
        """A printable view: the token masked."""
        expires = self.token_expires_at
        return {
            "name": self.name, "api_key": self.api_key, "access_token": mask(self.access_token),
            "enabled": self.enabled, "healthy": self.healthy, "reason": self.unhealthy_reason,
            "token_expires_at": expires.isoformat() if expires else None,
        }


def expiry_fields(expires: datetime | None) -> dict[str, object]:
    """When the account's access token dies (06:00 IST) and how many seconds are left."""
    if expires is None:
        return {"token_expires_at": None, "token_expires_in": None}
    return {"token_expires_at": expires.isoformat(),
            "token_expires_in": round(expires.timestamp() - time.time())}


_COLUMNS = ("name, api_key, coalesce(access_token, ''), enabled, healthy, unhealthy_reason, "
            "token_expires_at")


def _check(name: str, api_key: str | None = None, token: str | None = None) -> None:
    if not NAME_RE.match(name):
        raise AccountError(
            f"invalid account name {name!r}: use letters, digits, '_', '.', '-' (max 64)"
        )
    if api_key is not None and not api_key.strip():
        raise AccountError("api key must not be empty")
    if token is not None and not token.strip():
        raise AccountError("access token must not be empty")


def list_all(conn: Connection) -> list[AccountRow]:
    """Every account, by name."""
    rows = conn.execute(text(f"SELECT {_COLUMNS} FROM accounts ORDER BY name")).all()
    accounts = [AccountRow(*r) for r in rows]
    for a in accounts:
        register_secret(a.access_token)
    return accounts


def add(
    conn: Connection, name: str, api_key: str, access_token: str | None,
    api_secret_encrypted: str | None = None, now: datetime | None = None,
) -> None:
    """Add an account; refuse a duplicate name or api key with a clear error.

    Without an access token the account waits, unhealthy, for its first `accounts login`.
    """
    _check(name, api_key, access_token)
    if access_token is not None:
        register_secret(access_token)
    clash = conn.execute(
        text("SELECT name FROM accounts WHERE name = :n OR api_key = :k"),
        {"n": name, "k": api_key},
    ).first()
    if clash:
        raise AccountError(f"an account with this name or api key exists already: {clash.name}")
    expires = token_expiry(now or datetime.now(UTC)) if access_token else None
    conn.execute(
        text("INSERT INTO accounts (name, api_key, access_token, api_secret_encrypted, healthy, "
             "unhealthy_reason, token_expires_at) VALUES (:n, :k, :t, :s, :h, :r, :e)"),
        {"n": name, "k": api_key, "t": access_token, "s": api_secret_encrypted,
         "h": access_token is not None, "r": None if access_token else NO_TOKEN, "e": expires},
    )
    _nudge_holder(conn)


def credentials(conn: Connection, name: str) -> tuple[str, str | None, str | None]:
    """(api_key, encrypted api secret, access token) of one account, for login and logout."""
    _check(name)
    row = conn.execute(
        text("SELECT api_key, api_secret_encrypted, access_token FROM accounts WHERE name = :n"),
        {"n": name},
    ).first()
    if row is None:
        raise AccountError(f"no account named {name!r} (see `ticker-worker accounts list`)")
    if row.access_token:
        register_secret(row.access_token)
    return row.api_key, row.api_secret_encrypted, row.access_token


def set_secret(conn: Connection, name: str, api_secret_encrypted: str) -> None:
    """Store a (Fernet-encrypted) api secret."""
    _update(conn, name, "UPDATE accounts SET api_secret_encrypted = :s WHERE name = :n",
            s=api_secret_encrypted)


def log_out(conn: Connection, name: str) -> None:
    """Forget the access token after Kite invalidated it; the holder moves the instruments."""
    _update(conn, name, "UPDATE accounts SET access_token = NULL, token_expires_at = NULL, "
            "healthy = false, unhealthy_reason = :r WHERE name = :n", r=LOGGED_OUT)


def _update(conn: Connection, name: str, sql: str, **params: object) -> None:
    _check(name)
    if conn.execute(text(sql), {"n": name, **params}).rowcount == 0:
        raise AccountError(f"no account named {name!r} (see `ticker-worker accounts list`)")
    _nudge_holder(conn)


def _nudge_holder(conn: Connection) -> None:
    # The holder re-reads accounts on a full pass; ask for one as soon as this commits.
    conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": NUDGE_CHANNEL, "p": FULL_PASS})


def set_token(
    conn: Connection, name: str, access_token: str, now: datetime | None = None
) -> None:
    """Store a new access token and mark the account healthy again (the daily re-login)."""
    _check(name, token=access_token)
    register_secret(access_token)
    _update(
        conn, name,
        "UPDATE accounts SET access_token = :t, healthy = true, unhealthy_reason = NULL, "
        "token_updated_at = now(), token_expires_at = :e WHERE name = :n",
        t=access_token, e=token_expiry(now or datetime.now(UTC)),
    )


def set_enabled(conn: Connection, name: str, enabled: bool) -> None:
    """Enable or disable an account; the holder moves a disabled account's instruments away."""
    _update(conn, name, "UPDATE accounts SET enabled = :e WHERE name = :n", e=enabled)


def mark_health(conn: Connection, name: str, healthy: bool, reason: str | None = None) -> None:
    """Record what the holder learnt about an account's credentials."""
    conn.execute(
        text("UPDATE accounts SET healthy = :h, unhealthy_reason = :r WHERE name = :n"),
        {"n": name, "h": healthy, "r": reason},
    )
