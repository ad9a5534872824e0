"""The holder's Postgres side: read desired state, record what a plan made true, tick times.

Row updates and their outbox events are written in one transaction, so an event exists if
and only if the change it reports was committed.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, text

from ticker_worker.core.events import EventType, subscription_event
from ticker_worker.core.reconcile import Desired, Plan
from ticker_worker.db import instruments

_FULL = text("""
SELECT instrument_token, mode, wanted, status, account, connection, generation,
       generation <> observed_generation AS dirty
FROM subscriptions WHERE wanted OR generation <> observed_generation
""")

# A nudge's pass reads the instruments' event metadata with the rows: one round trip.
_DIRTY = text("""
SELECT s.instrument_token, s.mode, s.wanted, s.status, s.account, s.connection, s.generation,
       i.tradingsymbol, i.exchange, i.segment, i.instrument_type, i.name, i.expiry, i.strike,
       i.lot_size, i.tick_size
FROM subscriptions s JOIN instruments i USING (instrument_token)
WHERE s.generation <> s.observed_generation
""")

Metadata = dict[int, dict[str, Any]]


def read_desired(conn: Connection, full: bool) -> tuple[list[Desired], Metadata]:
    """Dirty rows only (with their event metadata), or (full) every wanted and dirty row."""
    if full:
        return [Desired(*row) for row in conn.execute(_FULL)], {}
    desired, meta = [], {}
    for r in conn.execute(_DIRTY):
        desired.append(Desired(r[0], r[1], r[2], r[3], r[4], r[5], r[6], True))
        meta[r.instrument_token] = instruments.metadata_of(r)
    return desired, meta


_ACTIVATE = text("""
UPDATE subscriptions s SET status = 'active', account = v.account, connection = v.conn,
    reason = NULL, observed_generation = GREATEST(s.observed_generation, v.gen),
    activated_at = CASE WHEN s.status = 'active' THEN s.activated_at ELSE now() END,
    first_tick_at = CASE WHEN s.status = 'active' THEN s.first_tick_at END,
    updated_at = now()
FROM unnest(CAST(:tokens AS bigint[]), CAST(:accounts AS text[]), CAST(:conns AS int[]),
            CAST(:gens AS bigint[])) AS v(token, account, conn, gen)
WHERE s.instrument_token = v.token
""")

_QUEUE = text("""
UPDATE subscriptions s SET status = 'queued', reason = v.reason, account = NULL,
    connection = NULL, observed_generation = GREATEST(s.observed_generation, v.gen),
    updated_at = now()
FROM unnest(CAST(:tokens AS bigint[]), CAST(:reasons AS text[]), CAST(:gens AS bigint[]))
    AS v(token, reason, gen)
WHERE s.instrument_token = v.token
""")

_REMOVE = text("""
UPDATE subscriptions s SET status = 'removed', account = NULL, connection = NULL,
    reason = NULL, removed_at = now(), observed_generation = GREATEST(s.observed_generation, v.gen),
    updated_at = now()
FROM unnest(CAST(:tokens AS bigint[]), CAST(:gens AS bigint[])) AS v(token, gen)
WHERE s.instrument_token = v.token
""")

_SETTLE = text("""
UPDATE subscriptions s SET observed_generation = GREATEST(s.observed_generation, v.gen)
FROM unnest(CAST(:tokens AS bigint[]), CAST(:gens AS bigint[])) AS v(token, gen)
WHERE s.instrument_token = v.token
""")

_OUTBOX = text("""
INSERT INTO outbox (event_id, event_type, payload)
SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:types AS text[]), CAST(:payloads AS jsonb[]))
""")


def _events(conn: Connection, plan: Plan, known: Metadata) -> list[dict[str, Any]]:
    created = [(d, slot) for d, slot in plan.activated if d.status != "active"]
    removed = [d for d in plan.removed if d.status == "active"]
    tokens = [d.token for d, _ in created] + [d.token for d in removed]
    if not tokens:
        return []
    missing = [t for t in tokens if t not in known]
    meta = {**known, **instruments.metadata(conn, missing)} if missing else known
    now = datetime.now(UTC)
    events = [
        subscription_event(EventType.CREATED, d.token, d.mode, slot[0], slot[1],
                           meta.get(d.token), now)
        for d, slot in created
    ]
    events += [
        subscription_event(EventType.REMOVED, d.token, d.mode, d.account, d.connection,
                           meta.get(d.token), now)
        for d in removed
    ]
    return events


def record(conn: Connection, plan: Plan, known: Metadata | None = None) -> list[dict[str, Any]]:
    """Write the plan's outcome and its events (in the caller's transaction); return the events."""
    if plan.activated:
        conn.execute(_ACTIVATE, {
            "tokens": [d.token for d, _ in plan.activated],
            "accounts": [s[0] for _, s in plan.activated],
            "conns": [s[1] for _, s in plan.activated],
            "gens": [d.generation for d, _ in plan.activated]})
    if plan.queued:
        conn.execute(_QUEUE, {"tokens": [d.token for d, _ in plan.queued],
                              "reasons": [r for _, r in plan.queued],
                              "gens": [d.generation for d, _ in plan.queued]})
    if plan.removed:
        conn.execute(_REMOVE, {"tokens": [d.token for d in plan.removed],
                               "gens": [d.generation for d in plan.removed]})
    if plan.settled:
        conn.execute(_SETTLE, {"tokens": [d.token for d in plan.settled],
                               "gens": [d.generation for d in plan.settled]})
    events = _events(conn, plan, known or {})
    if events:
        conn.execute(_OUTBOX, {
            "ids": [uuid.UUID(e["event_id"]) for e in events],
            "types": [e["event_type"] for e in events],
            "payloads": [orjson.dumps(e).decode() for e in events]})
    return events


_TICKS = text("""
UPDATE subscriptions s
SET first_tick_at = COALESCE(s.first_tick_at, v.ts),
    last_tick_at = GREATEST(s.last_tick_at, v.ts)
FROM unnest(CAST(:tokens AS bigint[]), CAST(:ts AS timestamptz[])) AS v(token, ts)
WHERE s.instrument_token = v.token AND s.status = 'active'
""")


def record_ticks(conn: Connection, seen: dict[int, float]) -> None:
    """Store first/last tick times for many tokens in one statement."""
    if seen:
        conn.execute(_TICKS, {
            "tokens": list(seen),
            "ts": [datetime.fromtimestamp(t, UTC) for t in seen.values()]})


_UNPUBLISHED = text("""
SELECT payload FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT :limit
FOR UPDATE SKIP LOCKED
""")


def unpublished(conn: Connection, limit: int = 500) -> list[dict[str, Any]]:
    """Events still to deliver, oldest first, locked against another relay."""
    return [row[0] for row in conn.execute(_UNPUBLISHED, {"limit": limit})]


def mark_published(conn: Connection, event_ids: Sequence[str]) -> None:
    """Record delivery of these events."""
    if event_ids:
        conn.execute(
            text("UPDATE outbox SET published_at = now() "
                 "WHERE event_id = ANY(CAST(:ids AS uuid[]))"),
            {"ids": [uuid.UUID(e) for e in event_ids]})


def outbox_backlog(conn: Connection) -> int:
    """How many events wait for delivery."""
    return int(conn.execute(
        text("SELECT count(*) FROM outbox WHERE published_at IS NULL")).scalar_one())


def status_counts(conn: Connection) -> dict[str, int]:
    """Subscriptions by status."""
    rows = conn.execute(text("SELECT status, count(*) FROM subscriptions GROUP BY status"))
    return {r[0]: int(r[1]) for r in rows}
