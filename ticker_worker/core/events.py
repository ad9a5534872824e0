"""The subscription event schema (DESIGN 4.3), a superset of the original service's (pure).

An event's id is derived from the transition it reports, never drawn at random: every retry and
redelivery of one transition (fast path, outbox sweep, a holder that took over) carries one id.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

# A fixed namespace: the ids of one deployment stay stable across versions of this package.
EVENT_NAMESPACE = uuid.UUID("6f0e4b53-2c1a-4c57-9d0e-1b6a3f4d8e21")


class EventType(StrEnum):
    """Past-tense names of what happened to a subscription."""

    CREATED = "subscription_created"
    REMOVED = "subscription_removed"
    QUEUED = "subscription_queued"
    GAP = "stream_gap"


def event_id(token: int, generation: int, event_type: EventType, discriminator: object) -> str:
    """The id of one transition: (instrument, generation, type, and what tells apart two
    transitions of one generation: the row's transition count, or a gap's start)."""
    name = f"{token}:{generation}:{event_type.value}:{discriminator}"
    return str(uuid.uuid5(EVENT_NAMESPACE, name))


def subscription_event(
    event_type: EventType,
    token: int,
    mode: str,
    account: str | None,
    connection: int | None,
    instrument: dict[str, Any] | None,
    now: datetime | None = None,
    *,
    generation: int = 0,
    sequence: int = 0,
    reason: str | None = None,
) -> dict[str, Any]:
    """One event document; `event_id` lets consumers deduplicate at-least-once delivery.

    `sequence` is the row's transition count after this transition: two transitions of one
    generation (placed, queued, placed again) get different ids, a retry of one gets the same.
    """
    metadata = dict(instrument or {})
    metadata.update({"requested_mode": mode, "account_id": account})
    doc: dict[str, Any] = {
        "event_id": event_id(token, generation, event_type, sequence),
        "event_type": event_type.value,
        "generation": generation,
        "instrument_token": token,
        "mode": mode,
        "account": account,
        "connection": connection,
        "metadata": metadata,
        "timestamp": (now or datetime.now(UTC)).isoformat(),
    }
    if reason is not None:
        doc["reason"] = reason
    return doc


def gap_event(
    token: int, mode: str, generation: int, account: str | None, connection: int | None,
    gap_start: datetime, gap_end: datetime, reason: str, now: datetime | None = None,
) -> dict[str, Any]:
    """A `stream_gap`: ticks of `token` may be missing in [gap_start, gap_end]; a backfill of
    that window follows. The id is derived from the gap's start, so one gap is one event."""
    start = gap_start.astimezone(UTC).isoformat()
    return {
        "event_id": event_id(token, generation, EventType.GAP, start),
        "event_type": EventType.GAP.value,
        "generation": generation,
        "instrument_token": token,
        "mode": mode,
        "account": account,
        "connection": connection,
        "gap_start": start,
        "gap_end": gap_end.astimezone(UTC).isoformat(),
        "reason": reason,
        "metadata": {"requested_mode": mode, "account_id": account},
        "timestamp": (now or datetime.now(UTC)).isoformat(),
    }
