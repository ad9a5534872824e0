"""Token expiry (06:00 IST after issue): the rule, /health's last-hour warning, `status` text."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from ticker_worker.cli.status import time_left
from ticker_worker.core.ist import IST
from ticker_worker.core.sessions import token_expiry
from ticker_worker.db.accounts import expiry_fields
from ticker_worker.holder.snapshot import warnings


def test_a_token_dies_at_the_next_0600_ist() -> None:
    assert token_expiry(datetime(2026, 11, 30, 8, 0, tzinfo=IST)) == datetime(
        2026, 12, 1, 6, 0, tzinfo=IST)
    assert token_expiry(datetime(2026, 11, 30, 5, 59, tzinfo=IST)) == datetime(
        2026, 11, 30, 6, 0, tzinfo=IST)
    # 00:30 UTC is 06:00 IST exactly: a token issued then lives a full day.
    assert token_expiry(datetime(2026, 11, 30, 0, 30, tzinfo=UTC)) == datetime(
        2026, 12, 1, 6, 0, tzinfo=IST)


def _account(seconds_left: float | None) -> dict[str, object]:
    expires = None if seconds_left is None else datetime.fromtimestamp(
        time.time() + seconds_left, UTC)
    return {"name": "acct1", **expiry_fields(expires)}


def test_health_warns_only_in_the_last_hour() -> None:
    assert warnings([_account(7200), _account(None), _account(-60)]) == []
    [warning] = warnings([_account(1800)])
    assert "acct1" in warning and "accounts login acct1" in warning
    assert "expires in 29 min" in warning or "expires in 30 min" in warning


def test_status_shows_time_left() -> None:
    assert time_left(None) == "-"
    assert time_left(-5) == "expired"
    assert time_left(int(timedelta(hours=5, minutes=7).total_seconds())) == "5h07m"
