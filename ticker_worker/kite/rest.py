"""Kite REST through the official `KiteConnect` client: credentials, instrument dump."""

from __future__ import annotations

from typing import Any

from kiteconnect import KiteConnect
from sqlalchemy import Connection

from ticker_worker.config import Settings
from ticker_worker.db import accounts
from ticker_worker.db.accounts import AccountRow
from ticker_worker.errors import NoHealthyAccount

SIM_CREDENTIALS = ("sim", "sim-token")


def client(settings: Settings, api_key: str, access_token: str, timeout: int = 15) -> KiteConnect:
    """A KiteConnect aimed at `KITE_API_ROOT`."""
    return KiteConnect(api_key, access_token, root=settings.kite_api_root, timeout=timeout)


def pick_account(conn: Connection, settings: Settings) -> tuple[str, str]:
    """(api_key, access_token) of a usable account; the simulator accepts demo credentials."""
    usable: list[AccountRow] = [a for a in accounts.list_all(conn) if a.enabled]
    usable.sort(key=lambda a: (not a.healthy, a.name))
    if usable:
        return usable[0].api_key, usable[0].access_token
    if settings.uses_simulator:
        return SIM_CREDENTIALS
    raise NoHealthyAccount(
        "no enabled account: add one with `ticker-worker accounts add NAME --api-key K "
        "--access-token T`"
    )


def fetch_instruments(kite: KiteConnect) -> list[dict[str, Any]]:
    """Kite's full instrument dump, parsed by the official client."""
    rows: list[dict[str, Any]] = kite.instruments()
    return rows
