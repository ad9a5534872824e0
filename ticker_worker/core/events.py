"""The subscription event schema (DESIGN 4.3), a superset of the original service's (pure)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    """Past-tense names of what happened to a subscription."""

    CREATED = "subscription_created"
    REMOVED = "subscription_removed"


def subscription_event(
    event_type: EventType,
    token: int,
    mode: str,
    account: str | None,
    connection: int | None,
    instrument: dict[str, Any] | None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """One event document; `event_id` lets consumers deduplicate at-least-once delivery."""
    metadata = dict(instrument or {})
    metadata.update({"requested_mode": mode, "account_id": account})
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type.value,
        "instrument_token": token,
        "mode": mode,
        "account": account,
        "connection": connection,
        "metadata": metadata,
        "timestamp": (now or datetime.now(UTC)).isoformat(),
    }
