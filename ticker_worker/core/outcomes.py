"""What a plan makes true, as events: one per status transition a caller must hear of (pure).

pending/queued -> active: `subscription_created`; pending/active -> queued: `subscription_queued`;
active/queued -> removed: `subscription_removed`; any -> failed: `subscription_removed` with the
reason. Each event carries the row's generation and its transition count after the change, so a
retry of one transition repeats its id and two transitions never share one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ticker_worker.core.events import EventType, subscription_event
from ticker_worker.core.reconcile import Desired, Plan

Metadata = dict[int, dict[str, Any]]


def transitions(plan: Plan) -> list[tuple[EventType, Desired, str | None, int | None, str | None]]:
    """(event type, row, account, connection, reason) for each transition that is announced."""
    out: list[tuple[EventType, Desired, str | None, int | None, str | None]] = []
    for d, slot in plan.activated:
        if d.status != "active":
            out.append((EventType.CREATED, d, slot[0], slot[1], None))
    for d, reason in plan.queued:
        if d.status != "queued":
            out.append((EventType.QUEUED, d, None, None, reason))
    for d in plan.removed:
        if d.status in ("active", "queued"):
            out.append((EventType.REMOVED, d, d.account, d.connection, None))
    for d, reason in plan.failed:
        if d.status != "failed":
            out.append((EventType.REMOVED, d, d.account, d.connection, reason))
    return out


def events(plan: Plan, meta: Metadata, now: datetime) -> list[dict[str, Any]]:
    """The event documents of a plan, in the order of `transitions`."""
    return [
        subscription_event(kind, d.token, d.mode, account, conn, meta.get(d.token), now,
                           generation=d.generation, sequence=d.transitions + 1, reason=reason)
        for kind, d, account, conn, reason in transitions(plan)
    ]


def needs_metadata(plan: Plan) -> list[int]:
    """Tokens whose events need the instrument's metadata."""
    return [d.token for _, d, _, _, _ in transitions(plan)]
