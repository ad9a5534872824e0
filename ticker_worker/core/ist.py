"""India Standard Time, Kite's clock: sessions, contract expiries, token expiry, tick times."""

from __future__ import annotations

from datetime import timedelta, timezone

IST = timezone(timedelta(hours=5, minutes=30), "IST")
