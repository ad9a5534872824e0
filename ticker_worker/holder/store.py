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

# A nudge's pass reads the instruments' event metadata with the rows: one round trip. The
# lateral join keeps it to index lookups (a hash join would scan all ~100k instruments).
_DIRTY = """
SELECT s.instrument_token, s.mode, s.wanted, s.status, s.account, s.connection, s.generation,
       i.tradingsymbol, i.exchange, i.segment, i.instrument_type, i.name, i.expiry, i.strike,
       i.lot_size, i.tick_size
FROM subscriptions s CROSS JOIN LATERAL (
    SELECT * FROM instruments WHERE instruments.instrument_token = s.instrument_token) i
WHERE s.generation <> s.observed_generation {named}
"""
# A bulk change is taken in slices, so one pass never holds 27,000 events in memory at once.
_DIRTY_ALL = text(_DIRTY.format(named="ORDER BY s.instrument_token LIMIT :limit"))
PASS_LIMIT = 4000
_DIRTY_NAMED = text(_DIRTY.format(named="AND s.instrument_token = ANY(CAST(:tokens AS bigint[]))"))

Metadata = dict[int, dict[str, Any]]


def read_desired(
    conn: Connection, full: bool, tokens: set[int] | None = None
) -> tuple[list[Desired], Metadata]:
    """Every wanted and dirty row (full); else the dirty rows (only those of `tokens` when
    given, read by primary key), with their event metadata."""
    if full:
        return [Desired(*row) for row in conn.execute(_FULL)], {}
    desired, meta = [], {}
    rows = conn.execute(_DIRTY_NAMED, {"tokens": list(tokens)}) if tokens else \
        conn.execute(_DIRTY_ALL, {"limit": PASS_LIMIT})
    for r in rows:
        desired.append(Desired(r[0], r[1], r[2], r[3], r[4], r[5], r[6], True))
        meta[r.instrument_token] = instruments.metadata_of(r)
    return desired, meta


# Each outcome is one data-modifying CTE; `record` joins the non-empty ones and the outbox
# insert into a single statement, so a pass costs one round trip and commits atomically.
_ACTIVATE = """
UPDATE subscriptions s SET status = 'active', account = v.account, connection = v.conn,
    reason = NULL, observed_generation = GREATEST(s.observed_generation, v.gen),
    activated_at = CASE WHEN s.status = 'active' THEN s.activated_at ELSE now() END,
    first_tick_at = CASE WHEN s.status = 'active' THEN s.first_tick_at END,
    updated_at = now()
FROM unnest(CAST(:a_tokens AS bigint[]), CAST(:a_accounts AS text[]), CAST(:a_conns AS int[]),
            CAST(:a_gens AS bigint[])) AS v(token, account, conn, gen)
WHERE s.instrument_token = v.token
"""

_QUEUE = """
UPDATE subscriptions s SET status = 'queued', reason = v.reason, account = NULL,
    connection = NULL, observed_generation = GREATEST(s.observed_generation, v.gen),
    updated_at = now()
FROM unnest(CAST(:q_tokens AS bigint[]), CAST(:q_reasons AS text[]), CAST(:q_gens AS bigint[]))
    AS v(token, reason, gen)
WHERE s.instrument_token = v.token
"""

_REMOVE = """
UPDATE subscriptions s SET status = 'removed', account = NULL, connection = NULL,
    reason = NULL, removed_at = now(), observed_generation = GREATEST(s.observed_generation, v.gen),
    updated_at = now()
FROM unnest(CAST(:r_tokens AS bigint[]), CAST(:r_gens AS bigint[])) AS v(token, gen)
WHERE s.instrument_token = v.token
"""

_SETTLE = """
UPDATE subscriptions s SET observed_generation = GREATEST(s.observed_generation, v.gen)
FROM unnest(CAST(:s_tokens AS bigint[]), CAST(:s_gens AS bigint[])) AS v(token, gen)
WHERE s.instrument_token = v.token
"""

_OUTBOX = """
INSERT INTO outbox (event_id, event_type, payload)
SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:types AS text[]), CAST(:payloads AS jsonb[]))
"""


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


def _outcomes(plan: Plan) -> tuple[list[str], dict[str, Any]]:
    parts: list[str] = []
    params: dict[str, Any] = {}
    if plan.activated:
        parts.append(_ACTIVATE)
        params.update(a_tokens=[d.token for d, _ in plan.activated],
                      a_accounts=[s[0] for _, s in plan.activated],
                      a_conns=[s[1] for _, s in plan.activated],
                      a_gens=[d.generation for d, _ in plan.activated])
    if plan.queued:
        parts.append(_QUEUE)
        params.update(q_tokens=[d.token for d, _ in plan.queued],
                      q_reasons=[r for _, r in plan.queued],
                      q_gens=[d.generation for d, _ in plan.queued])
    if plan.removed:
        parts.append(_REMOVE)
        params.update(r_tokens=[d.token for d in plan.removed],
                      r_gens=[d.generation for d in plan.removed])
    if plan.settled:
        parts.append(_SETTLE)
        params.update(s_tokens=[d.token for d in plan.settled],
                      s_gens=[d.generation for d in plan.settled])
    return parts, params


def record(conn: Connection, plan: Plan, known: Metadata | None = None) -> list[dict[str, Any]]:
    """Write the plan's outcome and its events in one statement; return the events.

    One statement is atomic on its own, so `conn` may be in autocommit mode.
    """
    events = _events(conn, plan, known or {})
    parts, params = _outcomes(plan)
    if events:
        final = _OUTBOX
        params.update(ids=[uuid.UUID(e["event_id"]) for e in events],
                      types=[e["event_type"] for e in events],
                      payloads=[orjson.dumps(e).decode() for e in events])
    elif parts:
        final = "SELECT 1"
    else:
        return events
    ctes = ", ".join(f"o{i} AS ({sql})" for i, sql in enumerate(parts))
    conn.execute(text(f"WITH {ctes} {final}" if ctes else final), params)
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


# Events younger than a few seconds are most likely still on their fast path (published,
# their backfill being enqueued): leave them to it rather than publish them twice.
_UNPUBLISHED = text("""
SELECT payload FROM outbox
WHERE published_at IS NULL AND created_at < now() - make_interval(secs => :min_age)
ORDER BY seq LIMIT :limit
FOR UPDATE SKIP LOCKED
""")


def unpublished(
    conn: Connection, limit: int = 500, min_age: float = 5.0
) -> list[dict[str, Any]]:
    """Events still to deliver (older than `min_age` s), oldest first, locked against others."""
    return [row[0] for row in conn.execute(_UNPUBLISHED, {"limit": limit, "min_age": min_age})]


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
